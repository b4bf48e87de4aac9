"""Dominant eigenvalue of a random W_h (rho = 1.1): bptt's dominant_eigenvalue vs numpy eigvals vs scipy eigs.

For H in 256, 512, 1024, 2048: a Gaussian matrix scaled to spectral radius exactly 1.1 (setup,
not timed), then one timed call each of
  - bptt krylov   (restarted Arnoldi / Krylov-Schur on matvecs, tol 1e-8),
  - bptt subspace (2-D block power iteration + Rayleigh-Ritz, tol 1e-8),
  - numpy.linalg.eigvals (all H eigenvalues, LAPACK dgeev),
  - scipy.sparse.linalg.eigs(k=1, which="LM", tol=1e-8) (ARPACK).
Accuracy is | |lambda| - 1.1 | / 1.1 (eigvals of the scaled matrix agree with 1.1 to ~1e-15).
A second table counts wrong answers of the two Krylov methods over several matrices per size.
Prints both tables and writes benchmarks/results/bench_spectrum.json. Run:

    .venv/bin/python benchmarks/bench_spectrum.py [--sizes 256,512,1024,2048] [--seed 0]
"""

from __future__ import annotations

import os

# One BLAS thread for every method: on a small shared VM, multi-threaded OpenBLAS calls on
# matrix-vector sized work spend their time synchronising threads, which swamps the measurement.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy  # noqa: E402
from scipy.sparse.linalg import LinearOperator, eigs  # noqa: E402

from bptt_cli.core.eigen import dominant_eigenvalue  # noqa: E402
from bptt_cli.core.rnn import scale_to_spectral_radius  # noqa: E402

RHO = 1.1
TOL = 1e-8
SUBSPACE_BUDGET = 5000  # block iterations; past it the subspace method reports not converged


def timed(fn):
    t0 = time.perf_counter()
    value = fn()
    return value, time.perf_counter() - t0


def bench(H: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    W = scale_to_spectral_radius(rng.standard_normal((H, H)) / np.sqrt(H), RHO)
    rows = {}
    r, t = timed(lambda: dominant_eigenvalue(W, tol=TOL, max_iter=200_000, rng=np.random.default_rng(seed)))
    rows["krylov"] = dict(seconds=t, abs_eigenvalue=r.abs_eigenvalue, converged=r.converged, matvecs=r.matvecs)
    r, t = timed(
        lambda: dominant_eigenvalue(
            W, method="subspace", tol=TOL, max_iter=SUBSPACE_BUDGET, rng=np.random.default_rng(seed)
        )
    )
    rows["subspace"] = dict(seconds=t, abs_eigenvalue=r.abs_eigenvalue, converged=r.converged, matvecs=r.matvecs)
    ev, t = timed(lambda: np.linalg.eigvals(W))
    rows["eigvals"] = dict(seconds=t, abs_eigenvalue=float(np.max(np.abs(ev))), converged=True, matvecs=None)
    count = [0]

    def mv(v):
        count[0] += 1
        return W @ v

    op = LinearOperator((H, H), matvec=mv, dtype=np.float64)
    e, t = timed(lambda: eigs(op, k=1, which="LM", tol=TOL, return_eigenvectors=False, v0=np.ones(H)))
    rows["eigs"] = dict(seconds=t, abs_eigenvalue=float(abs(e[0])), converged=True, matvecs=count[0])
    for row in rows.values():
        row["rel_error"] = abs(row["abs_eigenvalue"] - RHO) / RHO
    return {"H": H, "methods": rows}


def accuracy(H: int, seeds: int) -> dict:
    """How often each Krylov method returns a wrong |lambda_1| (off by > 1e-6), over several matrices.

    Random matrices have many eigenvalues just inside |lambda_1| (circular law), and a Krylov
    method can converge to one of them; ARPACK gets its default random start here.
    """
    wrong = {"krylov": 0, "eigs": 0}
    seconds = {"krylov": 0.0, "eigs": 0.0}
    for seed in range(1, seeds + 1):
        rng = np.random.default_rng(1000 + seed)
        W = scale_to_spectral_radius(rng.standard_normal((H, H)) / np.sqrt(H), RHO)
        r, t = timed(lambda W=W, seed=seed: dominant_eigenvalue(W, tol=TOL, rng=np.random.default_rng(seed)))
        wrong["krylov"] += int(abs(r.abs_eigenvalue - RHO) > 1e-6 or not r.converged)
        seconds["krylov"] += t
        e, t = timed(lambda W=W: eigs(W, k=1, which="LM", tol=TOL, return_eigenvectors=False))
        wrong["eigs"] += int(abs(abs(e[0]) - RHO) > 1e-6)
        seconds["eigs"] += t
    return {"H": H, "matrices": seeds, "wrong": wrong, "seconds": seconds}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="256,512,1024,2048")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--accuracy-seeds", type=int, default=8, help="matrices per size for the wrong-answer count")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    np.linalg.eigvals(np.eye(8))  # load LAPACK before timing
    results = []
    header = (
        f"{'H':>5} | {'krylov s':>9} {'matvecs':>7} {'rel err':>8} | {'subspace s':>10} {'conv':>4} {'rel err':>8} | "
        f"{'eigvals s':>9} | {'eigs s':>7} {'matvecs':>7} {'rel err':>8} | {'eigvals/krylov':>14} {'krylov/eigs':>11}"
    )
    print(header)
    print("-" * len(header))
    for H in sizes:
        res = bench(H, args.seed)
        m = res["methods"]
        k, s, e, a = m["krylov"], m["subspace"], m["eigvals"], m["eigs"]
        res["eigvals_over_krylov"] = e["seconds"] / k["seconds"]
        res["krylov_over_eigs"] = k["seconds"] / a["seconds"]
        results.append(res)
        print(
            f"{H:>5} | {k['seconds']:>9.3f} {k['matvecs']:>7} {k['rel_error']:>8.1e} | "
            f"{s['seconds']:>10.3f} {'yes' if s['converged'] else 'no':>4} {s['rel_error']:>8.1e} | "
            f"{e['seconds']:>9.3f} | "
            f"{a['seconds']:>7.3f} {a['matvecs']:>7} {a['rel_error']:>8.1e} | "
            f"{res['eigvals_over_krylov']:>14.2f} {res['krylov_over_eigs']:>11.2f}",
            flush=True,
        )
    print(f"\nwrong |lambda_1| (off by > 1e-6) over {args.accuracy_seeds} random matrices per size, tol {TOL:g}:")
    print(f"{'H':>5} | {'krylov wrong':>12} {'krylov s':>9} | {'eigs wrong':>10} {'eigs s':>7}")
    acc = []
    for H in sizes:
        a = accuracy(H, args.accuracy_seeds)
        acc.append(a)
        w, t = a["wrong"], a["seconds"]
        print(f"{H:>5} | {w['krylov']:>12} {t['krylov']:>9.3f} | {w['eigs']:>10} {t['eigs']:>7.3f}", flush=True)
    machine = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "blas_threads": os.environ["OPENBLAS_NUM_THREADS"],
    }
    out = Path(__file__).resolve().parent / "results" / "bench_spectrum.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {"rho": RHO, "tol": TOL, "seed": args.seed, "machine": machine, "results": results, "accuracy": acc},
            indent=2,
        )
    )
    print(f"machine: {machine}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
