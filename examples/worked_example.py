"""The notes' worked example (section 6.2.2) on the library API.

A linear RNN h_t = W_h h_{t-1} + W_x x_t with l_t = 1/2 ||h_t||^2 and T = 10. Loss l_s reaches
an earlier state h_t (t <= s) along exactly one path, whose contribution to dL/dh_t is, in
the notes' row-vector convention, h_s W_h^(s-t). There are 10 + 9 + ... + 1 = 55 such paths;
the 10 that end at h_1 are C_1 .. C_10, and their sum is dL/dh_1. BPTT's recursion
delta_{t-1} = h_{t-1} + delta_t W_h gets the same dL/dh_1 in 10 steps.

Run:  python examples/worked_example.py [--seed N] [--hidden H]
"""

from __future__ import annotations

import argparse

import numpy as np

import bptt_cli

T = 10


def worked_example(seed: int = 0, hidden: int = 4) -> dict:
    """The network, every path contribution, and both methods' results for sequence 1."""
    rng = np.random.default_rng(seed)
    # no bias, no output layer (output_size=0): exactly the notes' model
    params = bptt_cli.init_params(rng, input_size=3, hidden_size=hidden, output_size=0, spectral_radius=0.9)
    x = rng.normal(size=(T, 1, 3))  # (T, B=1, D)
    hs = bptt_cli.forward(params, x, activation="identity").h[:, 0, :]  # (T + 1, H): h_0 .. h_T
    W_h = params.W_h
    # paths[(s, t)]: what l_s sends to h_t along its one path, h_s W_h^(s - t)  (row vector)
    paths = {(s, t): hs[s] @ np.linalg.matrix_power(W_h, s - t) for s in range(1, T + 1) for t in range(1, s + 1)}
    kw = dict(loss="half-square", activation="identity")
    efficient = bptt_cli.gradients(params, x, None, method="efficient", **kw)
    naive = bptt_cli.gradients(params, x, None, method="naive", **kw)
    return dict(params=params, paths=paths, efficient=efficient, naive=naive)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--hidden", type=int, default=4)
    args = ap.parse_args()
    ex = worked_example(args.seed, args.hidden)
    paths, eff, naive = ex["paths"], ex["efficient"], ex["naive"]
    np.set_printoptions(precision=6, suppress=False, floatmode="fixed", sign=" ")

    print(f"Linear RNN, T = {T}, H = {args.hidden}, l_t = 1/2 ||h_t||^2, seed {args.seed}")
    print(f"\nAll {len(paths)} loss-to-state paths l_s -> h_t (t <= s), contribution h_s W_h^(s-t):")
    for s in range(1, T + 1):
        norms = "  ".join(f"{np.linalg.norm(paths[(s, t)]):.3e}" for t in range(s, 0, -1))
        print(f"  l_{s:<2} -> h_{s}..h_1 ({s:2d} paths): ||C|| = {norms}")

    print("\nThe 10 paths that end at h_1 (of the 55): C_s = h_s W_h^(s-1), the share of l_s in dL/dh_1")
    for s in range(1, T + 1):
        print(f"  C_{s:<2} = {paths[(s, 1)]}")
    path_sum = sum(paths[(s, 1)] for s in range(1, T + 1))
    recursion = eff.adjoints[0, 0]  # dL/dh_1 from the O(T) recursion
    print(f"\n  sum of the 10 paths     = {path_sum}")
    print(f"  recursion's dL/dh_1     = {recursion}")
    print(f"  max |sum - recursion|   = {np.max(np.abs(path_sum - recursion)):.3e}")

    # every dL/dh_t is the sum of the paths that end at h_t: all 55 are used once
    per_state = np.array([sum(paths[(s, t)] for s in range(t, T + 1)) for t in range(1, T + 1)])  # (T, H)
    all_diff = np.max(np.abs(per_state - eff.adjoints[:, 0, :]))
    print(f"  all 55 paths summed per state vs the recursion's dL/dh_1..dL/dh_10: max |diff| = {all_diff:.3e}")

    dW = np.max(np.abs(eff.grads.W_h - naive.grads.W_h))
    print(f"\nnaive (every path): {naive.paths} path walks; efficient (recursion): {eff.paths} steps")
    print(f"max |dL/dW_h naive - efficient| = {dW:.3e}")


if __name__ == "__main__":
    main()
