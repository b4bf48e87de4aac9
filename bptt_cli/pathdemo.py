"""The notes' demonstration: BPTT's O(T) recursion against the O(T^2) path enumeration.

The worked example (notes section 6.2.2): a linear RNN h_t = W_h h_{t-1} + W_x x_t with
l_t = 1/2 ||h_t||^2 and T = 10. dL/dh_1 is the sum of 10 path contributions
C_s = dl_s/dh_s * W_h^(s-1) (in the notes' row-vector convention); the naive method walks
all 55 loss-to-state paths, the recursion takes 10 steps and gets the same numbers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bptt_cli.bptt import GradResult, _local_loss_gradient, gradients
from bptt_cli.losses import check_mask
from bptt_cli.model import (
    Params,
    activation_derivative,
    check_inputs,
    check_params,
    check_positive_int,
    forward_states,
    init_params,
)


@dataclass(frozen=True)
class Example:
    params: Params
    x: np.ndarray  # (T, B, D)
    efficient: GradResult
    naive: GradResult
    contributions: np.ndarray  # (T, B, H): C_s, the path from l_s to h_1, s = 1..T
    max_abs_diff: float  # over every gradient, dL/dh_0 and dL/dh_t
    max_rel_diff: float


def linear_example(
    rng: np.random.Generator,
    *,
    seq_len: int = 10,
    hidden: int = 4,
    input_size: int = 3,
    batch: int = 1,
    spectral_radius: float = 0.9,
    dtype: str = "float64",
) -> tuple[Params, np.ndarray]:
    """The worked example's network (linear, no bias, no output layer) and its inputs."""
    T = check_positive_int("seq_len", seq_len)
    B = check_positive_int("batch", batch)
    params = init_params(
        rng, input_size=input_size, hidden_size=hidden, output_size=0, spectral_radius=spectral_radius, dtype=dtype
    )
    x = rng.normal(size=(T, B, params.input_size)).astype(params.dtype)
    return params, x


def path_contributions(
    params: Params,
    x: np.ndarray,
    *,
    step: int = 1,
    activation: str = "identity",
    loss: str = "half-square",
    targets: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """C_s for s = step..T: what loss l_s alone sends back to h_step, walked one path at a time.

    Returns (T, B, H) with zeros for s < step; summed over s it is dL/dh_step.
    """
    check_params(params)
    x, h0 = check_inputs(params, x, None)
    T, B, _ = x.shape
    if not 1 <= step <= T:
        raise ValueError(f"`step` must be in 1..T = 1..{T}; got {step}")
    mask = check_mask(mask, T, B, params.dtype)
    hs = forward_states(params, x, h0, activation)
    _, dl, _, _ = _local_loss_gradient(params, hs, loss, targets, mask)  # dl_s/dh_s, (T, B, H)
    fprime = activation_derivative(hs[1:], activation)  # (T, B, H)
    out = np.zeros_like(dl)
    for s in range(step - 1, T):  # 0-based index of loss l_{s+1}
        v = dl[s].copy()
        for t in range(s, step - 1, -1):  # back from h_{s+1} to h_step
            v = (fprime[t] * v) @ params.W_h
        out[s] = v
    return out


def run_example(params: Params, x: np.ndarray, *, activation: str = "identity") -> Example:
    """Both methods on the example, the path contributions to dL/dh_1, and their differences."""
    eff = gradients(params, x, None, loss="half-square", activation=activation, method="efficient")
    naive = gradients(params, x, None, loss="half-square", activation=activation, method="naive")
    contrib = path_contributions(params, x, step=1, activation=activation)
    pairs = [(getattr(eff.grads, k), getattr(naive.grads, k)) for k in ("W_x", "W_h", "b")]
    pairs += [(eff.dh0, naive.dh0), (eff.adjoints, naive.adjoints)]
    abs_diff = max(float(np.max(np.abs(a - b))) for a, b in pairs)
    rel_diff = max(float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), np.finfo(float).tiny)) for a, b in pairs)
    return Example(params, x, eff, naive, contrib, abs_diff, rel_diff)


@dataclass(frozen=True)
class Timing:
    seq_len: int
    efficient_s: float  # median wall time of one efficient backward (with its forward)
    naive_s: float
    efficient_steps: int
    naive_paths: int


def time_methods(
    lengths: list[int],
    rng: np.random.Generator,
    *,
    repeats: int = 5,
    hidden: int = 4,
    input_size: int = 3,
    batch: int = 1,
    spectral_radius: float = 0.9,
) -> list[Timing]:
    """Median wall time of both methods at each sequence length (same network for all)."""
    repeats = check_positive_int("repeats", repeats)
    if not lengths:
        raise ValueError("`lengths` must name at least one sequence length")
    for T in lengths:
        check_positive_int("lengths", T)
    params, _ = linear_example(
        rng, seq_len=1, hidden=hidden, input_size=input_size, batch=batch, spectral_radius=spectral_radius
    )
    rows = []
    for T in lengths:
        x = rng.normal(size=(T, batch, input_size))
        res, times = {}, {}
        for method in ("efficient", "naive"):
            samples = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                res[method] = gradients(params, x, None, loss="half-square", activation="identity", method=method)
                samples.append(time.perf_counter() - t0)
            times[method] = float(np.median(samples))
        rows.append(Timing(T, times["efficient"], times["naive"], res["efficient"].paths, res["naive"].paths))
    return rows


def fit_exponent(lengths: list[int], seconds: list[float]) -> tuple[float, float]:
    """Least-squares slope of log(time) against log(T), and its r^2: time ~ T^slope."""
    if len(lengths) < 2:
        raise ValueError("`lengths` needs at least two sequence lengths to fit a scaling exponent")
    lx, ly = np.log(np.asarray(lengths, float)), np.log(np.asarray(seconds, float))
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else 1.0
    return float(slope), r2
