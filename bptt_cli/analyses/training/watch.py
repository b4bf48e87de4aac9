"""Watching the gradients while training: what `fit` records every step and at its log steps.

Every step: the loss, the gradient norm before clipping, the norm of the parameters (cheap
scalars). At log steps: rho(W_h), exact (numpy's eigvals) up to H = DENSE_RHO_MAX and above it
Krylov-Schur warm-started from the last log step, with its residual and convergence flag; the
start fraction ||dl_T/dh_1|| / ||dl_T/dh_T|| from core.signal.trace on a few sequences of the
batch; and log ||dL/dh_t|| per time step from the adjoints the gradient already computed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bptt_cli.analyses.tasks import Batch
from bptt_cli.core.bptt import GradResult
from bptt_cli.core.cells import Cell
from bptt_cli.core.eigen import dense_spectral_radius, dominant_eigenvalue
from bptt_cli.core.signal import SignalTrace, trace

# numpy's eigvals up to this H; above it warm-started Krylov-Schur (with its convergence flag)
# costs less per log step (benchmarks/bench_rho.py measures where the two cross)
DENSE_RHO_MAX = 256
RHO_TOL = 1e-10


@dataclass(frozen=True)
class Rho:
    """rho(W_h) at a log step: its value, whether it is exact (eigvals, or a converged Krylov
    answer) or an estimate, and the relative residual of the Krylov answer (0 for eigvals)."""

    value: float | None
    exact: bool
    residual: float
    vector: np.ndarray | None = None


@dataclass(frozen=True)
class Watcher:
    """Settings of the per-log-step measurements."""

    power_iters: int = 300
    sequences: int = 1
    loss: str = "xent"

    def rho(self, cell: Cell, v0: np.ndarray | None) -> Rho:
        """|lambda_1(W_h)|: exact up to DENSE_RHO_MAX, else Krylov-Schur warm-started from v0 (at most
        `power_iters` matvecs); None for a cell without one recurrent matrix."""
        W = cell.recurrent_matrix()
        if W is None:
            return Rho(None, False, float("nan"))
        W = W.astype(np.float64, copy=False)
        if W.shape[0] <= DENSE_RHO_MAX:
            return Rho(dense_spectral_radius(W), True, 0.0)
        res = dominant_eigenvalue(W, max_iter=self.power_iters, tol=RHO_TOL, v0=v0, rng=np.random.default_rng(0))
        return Rho(float(res.abs_eigenvalue), bool(res.converged), float(res.residual), np.asarray(res.vector))

    def start_fraction(self, cell: Cell, batch: Batch, h0: np.ndarray | None) -> float | None:
        """Share of the last loss's gradient signal that reaches the first step (core.signal's definition)."""
        k = min(self.sequences, batch.size)
        res = trace(
            cell,
            batch.x[:, :k],
            batch.targets[:, :k],
            loss=self.loss,
            mask=batch.mask[:, :k],
            h0=None if h0 is None else h0[:k],
        )
        return float(res.start_fraction)


def adjoint_log_norms(adjoints: np.ndarray) -> np.ndarray:
    """log of the batch-mean ||dL/dh_t|| for t = 1..T: adjoints (T, B, H) -> (T,); -inf where zero."""
    norms = np.sqrt(np.einsum("tbh,tbh->tb", adjoints, adjoints))  # (T, B); einsum is faster than linalg.norm
    with np.errstate(divide="ignore"):
        return np.log(norms.mean(axis=1))  # (T,)


def step_row(
    step: int, loss: float, grad_norm: float, param_norm: float, clipped: bool, clip_count: int, seconds: float
) -> dict[str, Any]:
    """The row every step writes: its scalars, and the watched quantities unset (None)."""
    return {
        "step": step,
        "loss": loss,
        "grad_norm": grad_norm,
        "param_norm": param_norm,
        "clipped": bool(clipped),
        "clip_count": int(clip_count),
        "log": False,
        "metric": None,
        "rho": None,
        "rho_exact": None,
        "rho_residual": None,
        "start_fraction": None,
        "log_dh": None,
        "seconds": seconds,
    }


def watch_log_step(
    row: dict[str, Any],
    watcher: Watcher | None,
    g: GradResult,
    cell: Cell,
    batch: Batch,
    h0: np.ndarray | None,
    power_vector: np.ndarray | None,
    metric: float | None,
) -> np.ndarray | None:
    """Fill a log step's row with what is watched (in place); return the Krylov vector to warm-start
    the next log step from."""
    row.update(log=True, metric=metric)
    if watcher is None:
        return power_vector
    rho = watcher.rho(cell, power_vector)
    row.update(rho=rho.value, rho_exact=rho.exact, rho_residual=rho.residual)
    row["start_fraction"] = watcher.start_fraction(cell, batch, h0)
    row["log_dh"] = adjoint_log_norms(g.adjoints).tolist()
    return rho.vector


def final_trace(cell: Cell, heldout: Batch, *, loss: str, sequences: int = 32) -> SignalTrace:
    """core.signal.trace of the model on the first `sequences` held-out sequences (zero initial state)."""
    k = min(sequences, heldout.size)
    return trace(
        cell,
        heldout.x[:, :k],
        heldout.targets[:, :k],
        loss=loss,
        mask=heldout.mask[:, :k],
        # the cheap bound where the cell has one (the vanilla RNN); else exact only while cheap
        jacobian="bound" if math.isfinite(cell.growth_bound()) else "auto",
    )
