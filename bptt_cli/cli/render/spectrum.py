"""What `bptt spectrum` shows."""

from __future__ import annotations

import numpy as np
from rich.text import Text

from bptt_cli.analyses.spectrum import SpectrumResult
from bptt_cli.cli.output import Output
from bptt_cli.cli.render.common import caption, fmt, signal_summary, table, title, verdict_line


def render(o: Output, r: SpectrumResult) -> None:
    if r.eig is None:
        _trajectory_only(o, r)
    else:
        _with_matrix(o, r)
    _trajectory(o, r)
    for note in r.notes:
        o.note(note)
    for p in r.plots:
        o.line(f"plot: {p}")
    o.show(verdict_line(r.verdict))


def _trajectory_only(o: Output, r: SpectrumResult) -> None:
    """A GRU, an LSTM or a stack: no one matrix W_h; its Jacobian along the trajectory instead."""
    o.show(title(f"state-to-state Jacobian along the trajectory: {r.source.model}"))
    s = r.signal
    if s is None:
        return
    rows = [
        ["||J_t||_2, mean over steps", fmt(float(np.nanmean(s.jacobian_norm))) if s.jacobian_kind != "none" else "-"]
    ]
    rows += [[f"{name}, mean over steps", fmt(float(np.mean(v)))] for name, v in s.gain_stats.items()]
    o.show(table(["quantity", "value"], rows))
    o.show(
        caption(
            "J_t = ds_t/ds_{t-1} over the full state (every layer's h, and c for an LSTM); an LSTM's mean forget "
            "gate is its cell path's per-step gain, a GRU's mean z the share of h_{t-1} it keeps"
        )
    )


def _with_matrix(o: Output, r: SpectrumResult) -> None:
    e, ref1, c = r.eig, r.reference_top, r.config
    rows = [
        ["lambda_1", fmt(e.eigenvalue, 8), "-" if ref1 is None else fmt(ref1, 8)],
        ["|lambda_1|", fmt(e.abs_eigenvalue, 12), "-" if ref1 is None else fmt(abs(ref1), 12)],
        ["complex pair", fmt(e.is_complex_pair), "-" if ref1 is None else fmt(ref1.imag != 0)],
        ["converged", fmt(e.converged), ""],
        ["iterations / matvecs", f"{e.iterations} / {e.matvecs}", ""],
        ["residual", fmt(e.residual, 3), "" if r.reference_residual is None else fmt(r.reference_residual, 3)],
        ["|lambda_2/lambda_1| est.", fmt(e.ratio_estimate), ""],
    ]
    if ref1 is not None:
        rows.append(["|lambda_1| difference", fmt(abs(e.abs_eigenvalue - abs(ref1)), 3), ""])
    o.show(title(f"dominant eigenvalue of W_h: {r.source.model}"))
    ref_name = "reference" if ref1 is None else f"reference ({r.reference_method})"
    o.show(table(["", e.method, ref_name], rows))
    if e.converged:
        o.show(caption("residual = ||W u - lambda u|| / |lambda|"))
    else:
        o.show(
            caption(
                f"NOT converged within --max-iter {c.max_iter}: residual {e.residual:.3g} > tol {c.tol:g}; "
                "the estimate is the best seen, not a result"
            )
        )
    b = r.bounds
    o.show(title(f"singular values and the Pascanu bounds (gamma = max|f'| = {b['gamma']:g})"))
    o.show(
        table(
            ["quantity", "value", "meaning"],
            [
                ["sigma_max", b["sigma_max"], b["sigma_statement"]],
                ["sigma_min", float(r.sigma[-1]), ""],
                ["rho (uncertain)" if r.rho_uncertain else "rho", b["rho"], b["rho_statement"]],
            ],
        )
    )


def _trajectory(o: Output, r: SpectrumResult) -> None:
    if r.lyapunov is not None:
        ly = r.lyapunov
        warm = r.source.batch.x.shape[0] - ly.steps
        o.show(
            title(
                f"Lyapunov exponents along the trajectory ({ly.steps} steps after {warm} warm-up, "
                f"batch {r.source.batch.x.shape[1]}, {r.source.data}, {r.source.start})"
            )
        )
        o.show(
            table(
                ["i", "exponent (log per step)", "gain per step"],
                [[i + 1, float(x), float(g)] for i, (x, g) in enumerate(zip(ly.exponents, ly.gains, strict=True))],
            )
        )
        if r.theory is not None:
            th = r.theory
            o.show(
                caption(
                    f"mean-field theory for this matrix's g = ||W_h||_F / sqrt(H) = {th.g:.4g} and "
                    f"input std {th.input_std:g}: top exponent {th.lyapunov:.4g}, gain {th.gain:.4g} per step"
                )
            )
    if r.signal is not None:
        fit = r.signal.fit
        o.show(title("the last loss's gradient signal along the same trajectory"))
        o.show(Text(f"per-step gain {fmt(fit.gain)} (r^2 {fmt(fit.r2)}); {signal_summary(r.signal)}"))
