"""Watching the gradients while training: what `fit` records at its log steps.

rho(W_h) comes from core.eigen.dominant_eigenvalue (warm-started, a few matrix-vector
products), the start fraction ||dl_T/dh_1|| / ||dl_T/dh_T|| from core.signal.trace on a few
sequences of the batch, and log ||dL/dh_t|| per time step from the adjoints the gradient
already computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bptt_cli.analyses.tasks import Batch
from bptt_cli.core.bptt import GradResult
from bptt_cli.core.cells import Cell
from bptt_cli.core.eigen import dominant_eigenvalue
from bptt_cli.core.signal import SignalTrace, trace


@dataclass(frozen=True)
class Watcher:
    """Settings of the per-log-step measurements."""

    power_iters: int = 5
    sequences: int = 1
    loss: str = "xent"

    def rho(self, cell: Cell, v0: np.ndarray | None) -> tuple[float | None, np.ndarray | None]:
        """|lambda_1(W_h)| warm-started from v0, and the vector for the next call (None, None for a
        cell without one recurrent matrix)."""
        W = cell.recurrent_matrix()
        if W is None:
            return None, None
        res = dominant_eigenvalue(
            W.astype(np.float64, copy=False), max_iter=self.power_iters, v0=v0, rng=np.random.default_rng(0)
        )
        return float(res.abs_eigenvalue), np.asarray(res.vector)

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


def watch_row(
    watcher: Watcher | None,
    step: int,
    g: GradResult,
    cell: Cell,
    batch: Batch,
    h0: np.ndarray | None,
    power_vector: np.ndarray | None,
    *,
    metric: float | None,
    grad_norm: float,
    clipped: bool,
    clip_count: int,
    seconds: float,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """One history row (plain values) describing the parameters the step's gradient was taken at,
    and the power-iteration vector to warm-start the next row from."""
    row: dict[str, Any] = {
        "step": step,
        "loss": g.loss,
        "metric": metric,
        "grad_norm": grad_norm,
        "clipped": bool(clipped),
        "clip_count": int(clip_count),
        "rho": None,
        "start_fraction": None,
        "log_dh": None,
        "seconds": seconds,
    }
    if watcher is not None:
        row["rho"], power_vector = watcher.rho(cell, power_vector)
        row["start_fraction"] = watcher.start_fraction(cell, batch, h0)
        row["log_dh"] = adjoint_log_norms(g.adjoints).tolist()
    return row, power_vector


def final_trace(cell: Cell, heldout: Batch, *, loss: str, sequences: int = 32) -> SignalTrace:
    """core.signal.trace of the model on the first `sequences` held-out sequences (zero initial state)."""
    k = min(sequences, heldout.size)
    return trace(
        cell,
        heldout.x[:, :k],
        heldout.targets[:, :k],
        loss=loss,
        mask=heldout.mask[:, :k],
        jacobian="bound",
    )
