"""What a verdict on one network on its data rests on, gathered the same way for train, trace
and spectrum, so that one checkpoint on one data set gets one label from each of them.

The judgment itself is `core.verdict.judge_network`; this module only collects its inputs:
the traced signal, the span the task depends on, the Lyapunov gain, rho and sigma_max of W_h,
and notes about the trajectory (a fixed point).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from bptt_cli.analyses.source import Source
from bptt_cli.analyses.tasks import Batch, Task, needed_span
from bptt_cli.core.cells import Cell
from bptt_cli.core.eigen import dense_spectral_radius
from bptt_cli.core.lyapunov import settled_at
from bptt_cli.core.signal import SignalTrace
from bptt_cli.core.theory import MeanField, mean_field
from bptt_cli.core.verdict import DEFAULT_TOL, Verdict, judge_network


def network_verdict(
    cell: Cell,
    signal: SignalTrace | None,
    *,
    task: Task | None,
    batch: Batch,
    which: str = "last",
    lyapunov_gain: float | None = None,
    rho: float | None = None,
    sigma_max: float | None = None,
    span: int | None = None,
    tol: float = DEFAULT_TOL,
    eps: float = 1e-3,
    evidence: dict[str, Any] | None = None,
) -> Verdict:
    """judge_network on a cell and the batch it ran on.

    task, batch : the task the batch is from (None for random or file inputs): with the last
        loss's signal, the verdict is taken at the span the task depends on (`needed_span`)
    rho, sigma_max : of W_h, when the caller has them already (else numpy's eigvals and the cell's SVD)
    span : how far back the last loss depends on the inputs, for the user's own data (--span); a
        task's span comes from the task
    """
    W = cell.recurrent_matrix()
    if sigma_max is None:
        sigma_max = getattr(cell, "sigma_max", None)
    if W is not None and rho is None:
        rho = dense_spectral_radius(W)
    if which != "last":
        span = None
    elif span is None and task is not None:
        span = needed_span(task, batch)
    ev = dict(evidence or {})
    if signal is not None:
        ev.setdefault("suggested_window", signal.suggested_window)
        ev.setdefault("suggested_window_extrapolated", window_extrapolated(signal))
    return judge_network(
        signal,
        which=which,
        span=span,
        task="your data" if task is None else task.name,
        lyapunov_gain=lyapunov_gain,
        rho=rho,
        sigma_max=sigma_max,
        gamma=cell.gamma or 1.0,
        linear=bool(getattr(getattr(cell, "activation", None), "linear", False)),
        tol=tol,
        eps=eps,
        evidence=ev,
    )


def window_extrapolated(signal: SignalTrace) -> bool:
    """The suggested window comes from the fitted gain, beyond the T - 1 steps traced."""
    return signal.horizon.method == "extrapolated"


def fixed_point_note(cell: Cell, x: np.ndarray, h0: np.ndarray | None) -> str | None:
    """A warning when the trajectory x drives from h0 sits at a fixed point for at least the
    second half of its steps. Started there (it never moves): its exponents and signal are the
    fixed point's, which may be unstable and say nothing of the attractor a generic start
    reaches. Converged there: it is an attracting fixed point, and the numbers are its."""
    if getattr(getattr(cell, "activation", None), "linear", False):
        return None  # J_t = W_h wherever the state is: a fixed point changes nothing
    T = x.shape[0]
    t = settled_at(cell.run(x, h0).states)
    if t is None or T - t + 1 < max(2, T // 2):
        return None
    if t == 1:
        start = "h0 = 0" if h0 is None else "this h0"
        return (
            f"the trajectory never leaves its start ({start} is a fixed point of these inputs): the Lyapunov "
            "exponents and the traced signal are the fixed point's, not those of the attractor a generic "
            "start reaches. Try --h0 random or non-zero inputs"
        )
    return (
        f"the trajectory settles at a fixed point from step {t} on: the Lyapunov exponents and the "
        "traced signal are those of that attracting fixed point"
    )


def mean_field_prediction(src: Source, input_scale: float) -> MeanField | None:
    """Mean-field theory (core/theory.py) for a fresh gaussian tanh RNN on random inputs: its gain g
    is the matrix's own, ||W_h||_F / sqrt(H) (W_h ~ N(0, g^2/H)), and W_x x_t has variance
    input_scale^2 per unit (W_x ~ N(0, 1/D)). None for any other network or data, where the
    theory's assumptions do not hold."""
    cell = src.cell
    W = cell.recurrent_matrix()
    if (
        src.origin != "init"
        or W is None
        or getattr(getattr(cell, "activation", None), "name", None) != "tanh"
        or src.task is not None
        or src.data.startswith("inputs from")
        or not src.model.startswith("fresh gaussian")
    ):
        return None
    g = float(np.linalg.norm(W)) / math.sqrt(W.shape[0])
    return mean_field(g, input_scale, 0.0)
