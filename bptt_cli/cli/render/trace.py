"""What `bptt trace` shows."""

from __future__ import annotations

import numpy as np
from rich.text import Text

from bptt_cli.analyses.trace import TraceResult
from bptt_cli.cli.output import Output
from bptt_cli.cli.render.common import caption, fmt, fmt_ln, signal_summary, table, title, verdict_line

STAT_NAMES = {"mean_fprime": "mean f'"}


def selected_steps(T: int, head: int = 5, between: int = 8) -> list[int]:
    """Steps back k to show: the first and last `head`, and `between` log-spaced in the middle."""
    ks = set(range(min(head, T))) | set(range(max(0, T - head), T))
    if T > 2 * head:
        ks |= {int(round(v)) for v in np.geomspace(head, T - head, between)}
    return sorted(k for k in ks if 0 <= k < T)


def render(o: Output, r: TraceResult) -> None:
    s, src = r.signal, r.source
    T, B = s.seq_len, src.batch.x.shape[1]
    stats = list(s.gain_stats)
    parts = list(s.parts) if len(s.parts) > 1 else []  # a state of one piece: the columns above say it
    rows = []
    for k in selected_steps(T):
        t = T - 1 - k
        rows.append(
            [
                t + 1,
                k,
                fmt_ln(s.last.log_mean[t]),
                fmt_ln(s.last.log_min[t], 3),
                fmt_ln(s.last.log_max[t], 3),
                fmt_ln(s.total.log_mean[t]),
                float(s.jacobian_norm[t]),
                *[fmt_ln(s.parts[n].log_mean[t]) for n in parts],
                *[float(s.gain_stats[n][t]) for n in stats],
            ]
        )
    o.show(
        title(
            f"trace: {src.cell.describe()}, {src.loss} loss, {src.data}, {src.start}, T={T} B={B} "
            f"H={src.cell.hidden_size} "
            f"({src.model})"
        )
    )
    o.show(
        table(
            [
                "t",
                "k",
                "||dl_T/dh_t||",
                "min",
                "max",
                "||dL/dh_t||",
                "||J_t||",
                *[f"last on {n}" for n in parts],
                *[STAT_NAMES.get(n, n) for n in stats],
            ],
            rows,
        )
    )
    how = {
        "exact": "exact spectral norms",
        "bound": "the bound max f'(a_t) sigma_max(W_h)",
        "none": "too costly to compute exactly",
    }[s.jacobian_kind]
    on = "; last on P: ||dl_T/dP_t|| on that part of the state (l0.h: layer 0's h, l0.c: its cell)" if parts else ""
    o.show(caption(f"k: steps back from T; batch means of per-sequence norms; ||J_t||: {how}{on}"))
    fit, fit_t = s.fit, s.fit_total
    o.show(title("theory beside measurement (per-step gain of the gradient signal)"))
    o.show(
        table(
            ["quantity", "value", "what it says"],
            [
                ["rho(W_h)", r.rho, "linear net: the gain; nonlinear: no guarantee either way"],
                ["sigma_max(W_h)", r.sigma_max, "< 1/gamma guarantees vanishing; > 1/gamma is needed to explode"],
                ["Lyapunov gain", r.lyapunov_gain, "top exponent of the Jacobian product along this trajectory"],
                *(
                    []
                    if r.theory is None
                    else [
                        [
                            "mean-field theory",
                            r.theory.gain,
                            f"sqrt(chi) for g = ||W_h||_F / sqrt(H) = {r.theory.g:.4g}",
                        ]
                    ]
                ),
                ["measured gain, last loss", fit.gain, f"r^2 {fmt(fit.r2)} over k = {fit.first}..{fit.last}"],
                ["measured gain, all losses", fit_t.gain, f"r^2 {fmt(fit_t.r2)} over k = {fit_t.first}..{fit_t.last}"],
            ],
        )
    )
    o.show(Text(signal_summary(s)))
    for note in r.notes:
        o.note(note)
    o.show(verdict_line(r.verdict))
    for p in r.plots:
        o.line(f"plot: {p}")
