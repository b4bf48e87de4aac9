"""The plot of `bptt trace`: both gradient signals against steps back, the fitted line, the horizon.

Norms are drawn as log10 values on a linear axis (ticks labelled 1e<n>): an exploding signal
passes float64's 1e308 long before a long trace ends, so the raw norms cannot be plotted.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from bptt_cli.core.signal import SignalTrace
from bptt_cli.plots import pyplot, save

LN10 = math.log(10.0)


def trace_plot(path: Path, result: SignalTrace, *, signal: str = "last") -> Path:
    """Write the figure; `signal` ('last' | 'all') is the one the verdict used (drawn bold)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    T = result.seq_len
    k = np.arange(T)  # steps back from T
    last, total = result.last, result.total
    with np.errstate(invalid="ignore"):
        ax.fill_between(
            k,
            last.log_min[::-1] / LN10,
            last.log_max[::-1] / LN10,
            color="C0",
            alpha=0.15,
            lw=0,
            label="min .. max over the batch",
        )
    ax.plot(
        k,
        last.log_mean[::-1] / LN10,
        color="C0",
        lw=2.0 if signal == "last" else 1.2,
        label="||dl_T/dh_t|| (last loss)",
    )
    ax.plot(
        k, total.log_mean[::-1] / LN10, color="C1", lw=2.0 if signal == "all" else 1.2, label="||dL/dh_t|| (all losses)"
    )
    fit = result.fit
    if fit.points >= 2:
        kk = np.array([fit.first, fit.last], float)
        ax.plot(
            kk,
            (fit.intercept + fit.slope * kk) / LN10,
            color="k",
            ls="--",
            lw=1,
            label=f"fit: gain {fit.gain:.4g} per step (r^2 {fit.r2:.4f}, k = {fit.first}..{fit.last})",
        )
    h = result.horizon
    start = last.log_mean[-1]
    if math.isfinite(start):
        level = (start + math.log(h.eps)) / LN10
        ax.axhline(level, color="grey", ls=":", lw=1, label=f"eps = {h.eps:g} of ||dl_T/dh_T||")
    if h.steps is not None and h.steps <= T - 1:
        ax.axvline(h.steps, color="C3", ls="-.", lw=1, label=f"horizon {h.steps:.4g} steps ({h.method})")
    elif h.steps is not None:
        ax.plot([], [], " ", label=f"horizon {h.steps:.4g} steps ({h.method}, beyond T)")
    else:
        ax.plot([], [], " ", label=f"horizon: {h.method}")
    ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"1e{v:g}"))
    ax.set_xlabel("steps back k = T - t")
    ax.set_ylabel("norm (log scale)")
    ax.set_title(f"gradient signal back through time (T = {T})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)
