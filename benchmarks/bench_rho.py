"""What logging an exact rho(W_h) costs `bptt train`: numpy's eigvals (all H eigenvalues) and
warm-started Krylov-Schur, each against one training step, and how far the old five-iteration
power estimate was from the truth.

For H in 32, 64, 128, 256, 512, one process, the sides interleaved (round after round of: one
training step of the default recall run at hidden size H (T = 30, B = 32, Adam), numpy eigvals
of W_h, Krylov-Schur warm-started from the previous log step's vector on a W_h that moved by
one update's worth of noise). The medians give
  - eigvals / step: what one exact rho costs in training steps,
  - the watching overhead of eigvals at the default --log-every 10: eigvals / (10 x step),
  - the same for Krylov, with its relative error against eigvals,
  - the old estimate's relative error: five power iterations warm-started from the previous
    vector, the method before this redesign (0.769 vs 1.087 at step 10 of the default run).
Prints the table and writes benchmarks/results/bench_rho.json. Run:

    .venv/bin/python benchmarks/bench_rho.py [--sizes 32,64,128,256,512] [--rounds 15]
"""

from __future__ import annotations

import os

for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # one BLAS thread, as bptt train runs by default

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

from bptt_cli.analyses import tasks  # noqa: E402
from bptt_cli.analyses.training import optim  # noqa: E402
from bptt_cli.core.cells import RNNCell  # noqa: E402
from bptt_cli.core.eigen import dense_spectral_radius, dominant_eigenvalue  # noqa: E402
from bptt_cli.core.rnn import init_params  # noqa: E402

LOG_EVERY = 10


def old_power_estimate(W: np.ndarray, v: np.ndarray, iters: int = 5) -> tuple[float, np.ndarray]:
    """The watcher before the redesign: `iters` plain power iterations from v, |Rayleigh| ratio."""
    lam = 0.0
    for _ in range(iters):
        w = W @ v
        lam = float(np.linalg.norm(w))
        v = w / lam
    return lam, v


def bench(H: int, rounds: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    task = tasks.make_task("recall", seq_len=30)
    params = init_params(rng, input_size=task.input_size, hidden_size=H, output_size=task.output_size)
    cell = RNNCell(params, "tanh")
    opt = optim.Optimizer("adam", lr=3e-3)
    state = optim.init_state(opt, params)
    batch, _ = tasks.sample_batch(task, rng, 32)
    W = params.W_h.copy()
    v_krylov = v_power = None
    times: dict[str, list[float]] = {"step": [], "eigvals": [], "krylov": []}
    errors: dict[str, list[float]] = {"krylov": [], "old_power": []}
    for _ in range(rounds):
        t0 = time.perf_counter()
        g = cell.gradients(batch.x, batch.targets, loss=task.loss, mask=batch.mask)
        new, state = optim.step(opt, cell.params, g.grads, state)
        times["step"].append(time.perf_counter() - t0)

        W = W + 1e-3 * rng.standard_normal((H, H)) / np.sqrt(H)  # a W_h that moved since the last log step
        t0 = time.perf_counter()
        exact = dense_spectral_radius(W)
        times["eigvals"].append(time.perf_counter() - t0)

        t0 = time.perf_counter()
        res = dominant_eigenvalue(W, max_iter=300, tol=1e-10, v0=v_krylov, rng=np.random.default_rng(0))
        times["krylov"].append(time.perf_counter() - t0)
        v_krylov = np.asarray(res.vector)
        errors["krylov"].append(abs(res.abs_eigenvalue - exact) / exact)

        if v_power is None:
            v_power = np.random.default_rng(0).standard_normal(H)
            v_power /= np.linalg.norm(v_power)
        lam, v_power = old_power_estimate(W, v_power)
        errors["old_power"].append(abs(lam - exact) / exact)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "H": H,
        "median_seconds": med,
        "eigvals_per_step": med["eigvals"] / med["step"],
        "eigvals_overhead_at_log_every_10": med["eigvals"] / (LOG_EVERY * med["step"]),
        "krylov_overhead_at_log_every_10": med["krylov"] / (LOG_EVERY * med["step"]),
        "krylov_max_rel_error": float(np.max(errors["krylov"])),
        "old_power_median_rel_error": float(np.median(errors["old_power"])),
        "old_power_max_rel_error": float(np.max(errors["old_power"])),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="32,64,128,256,512")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    rows = [bench(int(H), args.rounds, args.seed) for H in args.sizes.split(",")]
    head = f"{'H':>5} {'step ms':>8} {'eigvals ms':>10} {'eig/step':>8} {'eig ovh@10':>10} {'kry ovh@10':>10} "
    head += f"{'kry err':>8} {'old err':>8}"
    print(head)
    for r in rows:
        m = r["median_seconds"]
        print(
            f"{r['H']:>5} {1e3 * m['step']:>8.3f} {1e3 * m['eigvals']:>10.3f} {r['eigvals_per_step']:>8.3f} "
            f"{r['eigvals_overhead_at_log_every_10']:>10.1%} {r['krylov_overhead_at_log_every_10']:>10.1%} "
            f"{r['krylov_max_rel_error']:>8.1e} {r['old_power_median_rel_error']:>8.1%}"
        )
    out = Path(__file__).parent / "results" / "bench_rho.json"
    out.parent.mkdir(exist_ok=True)
    machine = {"python": platform.python_version(), "numpy": np.__version__, "machine": platform.processor()}
    out.write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
