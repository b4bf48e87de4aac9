"""Tables that never hide a digit: numbers formatted to a fixed number of significant digits,
and a table too wide for the terminal is stacked (one block of `column: value` lines per row)
instead of squeezed behind ellipses. Titles and captions are paragraphs that wrap to the
terminal's width. No numbers are computed here."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bptt_cli.core.signal import SignalTrace

COLOURS = {"stable": "green", "exploding": "red", "diverged": "red", "vanishing": "yellow", "undetermined": "magenta"}


def fmt(x: Any, digits: int = 4) -> str:
    """A number for a table cell: general format, 'nan'/'inf' spelled out, None as '-'."""
    if x is None:
        return "-"
    if isinstance(x, (bool, np.bool_)):
        return "yes" if x else "no"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    if isinstance(x, (complex, np.complexfloating)):
        if x.imag == 0:
            return fmt(x.real, digits)
        sign = "+" if x.imag >= 0 else "-"
        return f"{fmt(x.real, digits)}{sign}{fmt(abs(x.imag), digits)}i"
    if isinstance(x, (float, np.floating)):
        f = float(x)
        if not math.isfinite(f):
            return str(f)
        return f"{f:.{digits}g}"
    return str(x)


def fmt_ln(ln: float, digits: int = 4) -> str:
    """A norm given by its natural log, printed as a number even beyond float range (1.5e+1760)."""
    if math.isnan(ln):
        return "nan"
    if ln == -math.inf:
        return "0"
    if ln == math.inf:
        return "inf"
    e10 = ln / math.log(10.0)
    exp = math.floor(e10)
    mant = 10 ** (e10 - exp)
    if mant >= 10 - 0.5 * 10 ** (1 - digits):  # rounds up to 10.0 in the mantissa
        mant, exp = mant / 10, exp + 1
    return f"{mant:.{digits - 1}f}e{exp:+d}" if abs(exp) >= 4 else f"{math.exp(ln):.{digits}g}"


def cell_text(c: Any) -> str:
    return c if isinstance(c, str) else fmt(c)


_NUMBER = re.compile(r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$|^-$|^(nan|inf|-inf)$")


def _numeric(c: Any) -> bool:
    """A number, None, or a string that spells one (fmt_ln's '1.5e+1760'): right-aligned, never wrapped."""
    if isinstance(c, str):
        return bool(_NUMBER.match(c))
    return c is None or isinstance(c, (int, float, complex, np.number)) and not isinstance(c, bool)


class FitTable:
    """A table that fits the console: rendered as rows when it does, stacked when it does not.

    Numeric columns never wrap; text columns may wrap at spaces. `numeric` cells are formatted
    with `fmt` and right-aligned.
    """

    def __init__(self, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
        self.columns = list(columns)
        self.rows = [[c for c in r] for r in rows]

    def _table(self) -> Table:
        t = Table(box=None, padding=(0, 1), collapse_padding=True, pad_edge=False, header_style="bold")
        for j, name in enumerate(self.columns):
            numeric = bool(self.rows) and all(_numeric(r[j]) for r in self.rows)
            t.add_column(escape(name), justify="right" if numeric else "left", no_wrap=numeric, overflow="fold")
        for r in self.rows:
            t.add_row(*[escape(cell_text(c)) for c in r])
        return t

    def _needed_width(self) -> int:
        """The width the table needs with no cell wrapped: widest cell of each column plus padding."""
        widths = [len(n) for n in self.columns]
        for r in self.rows:
            for j, c in enumerate(r):
                widths[j] = max(widths[j], len(cell_text(c)))
        return sum(widths) + len(widths) - 1

    def _longest_words(self) -> int:
        """The width the table needs when its text columns wrap at spaces."""
        widths = []
        for j, name in enumerate(self.columns):
            cells = [cell_text(r[j]) for r in self.rows]
            numeric = bool(self.rows) and all(_numeric(r[j]) for r in self.rows)
            parts = cells if numeric else [w for c in cells for w in c.split()] or [""]
            widths.append(max([len(name)] + [len(p) for p in parts]))
        return sum(widths) + len(widths) - 1

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        width = options.max_width
        if self._needed_width() <= width or self._longest_words() <= width:
            yield self._table()
            return
        label = max(len(n) for n in self.columns)
        for i, r in enumerate(self.rows):
            if i:
                yield Text("")
            for name, c in zip(self.columns, r, strict=True):
                yield Text(f"{name:>{label}}  {cell_text(c)}")


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> FitTable:
    return FitTable(columns, rows)


def title(text: str) -> Text:
    """A table's title: a bold paragraph that wraps at the console's width."""
    return Text(text, style="bold")


def caption(text: str) -> Text:
    return Text(text, style="dim")


def verdict_line(verdict: dict | Any) -> Text:
    """'verdict: LABEL (basis: BASIS) - message', the label coloured."""
    v = verdict if isinstance(verdict, dict) else verdict.as_dict()
    t = Text("verdict: ")
    t.append(v["label"], style=f"bold {COLOURS.get(v['label'], 'white')}")
    t.append(f" (basis: {v['basis']}) - {v['message']}")
    return t


# what the verdicts' evidence keys mean, for the evidence tables (the JSON keeps the keys)
EVIDENCE_LABELS = {
    "gain": "per-step gain (fitted)",
    "r2": "r^2 of the fit",
    "points": "points fitted",
    "ln_net_change": "ln of the net change",
    "steps": "steps spanned",
    "tol": "verdict tolerance",
    "eps": "eps",
    "rho": "rho(W_h)",
    "sigma_max": "sigma_max(W_h)",
    "lyapunov_gain": "Lyapunov gain per step",
    "start_fraction": "signal reaching step 1",
    "suggested_window": "suggested truncation window",
    "suggested_window_extrapolated": "window extrapolated beyond T",
    "steps_done": "steps done",
    "spikes": "gradient spikes",
    "first_spikes": "first spikes at steps",
    "vanishing_stretches": "vanishing stretches (steps)",
    "clip_count": "clipped steps",
    "clip_share": "share of steps clipped",
    "diverged_at": "diverged at step",
    "nonfinite_at": "non-finite at step",
    "span_needed": "steps back the task needs",
    "signal_at_span": "signal there, relative to T",
    "ln_signal_at_span": "ln of the signal there",
    "horizon": "steps the signal reaches back",
    "horizon_method": "how the reach was found",
    "gain_not_claimed": "no per-step gain, because",
    "fitted_slope_gain": "exp(slope) of the poor fit",
    "linear": "linear network",
    "sigma_statement": "what sigma_max says",
    "rho_statement": "what rho says",
    "gain_bound": "per-step gain at most",
    "unbiased": "unbiased estimators",
    "biased": "biased estimators",
    "reached_target": "reached the target",
    "diverged": "diverged (strategy: step)",
    "wrong_sign": "wrong gradient sign",
    "full_gradient_signal": "the full gradient's signal",
    "accuracy": "held-out accuracy",
    "mse": "held-out mse",
    "perplexity": "held-out perplexity",
}
_SKIP = {"fit", "sigma_statement", "rho_statement", "blow_up", "weaker_bases"}  # in the message already


def _evidence_value(value: Any) -> str:
    if isinstance(value, dict) and {"label", "message"} <= set(value):
        return f"{value['label']}: {value['message']}"  # a nested verdict
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_evidence_value(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_evidence_value(v) for v in value) or "none"
    return cell_text(value)


def evidence_rows(evidence: dict[str, Any], shown: Iterable[str] = ()) -> list[list[str]]:
    """The evidence of a verdict as (label, value) rows: human labels, nested bounds flattened.
    Keys in `shown` (already in the command's own table), and values that are None or empty, are
    left out of the table; the JSON document keeps every key."""
    rows = []
    leave_out = _SKIP | set(shown)
    for key, value in evidence.items():
        if key in leave_out or value is None or (isinstance(value, (list, tuple, dict)) and not value):
            continue
        if key == "bounds" and isinstance(value, dict):
            rows += [[EVIDENCE_LABELS.get(k, k), cell_text(v)] for k, v in value.items() if k.endswith("statement")]
            continue
        rows.append([EVIDENCE_LABELS.get(key, key.replace("_", " ")), _evidence_value(value)])
    return rows


def signal_summary(s: SignalTrace) -> str:
    """One line: the horizon of the last loss's signal, the truncation window it suggests (marked
    when it is extrapolated beyond the T - 1 steps traced) and the signal's fraction at t = 1."""
    h, T = s.horizon, s.seq_len
    horizon = f"{h.steps:.4g} steps ({h.method})" if h.steps is not None else f"{h.method} (the signal does not decay)"
    if s.suggested_window is None:
        window = "none (use full BPTT with clipping)"
    elif h.method == "extrapolated":
        window = f"{s.suggested_window} (extrapolated beyond T = {T})"
    else:
        window = str(s.suggested_window)
    return (
        f"horizon (eps = {h.eps:g}): {horizon}; suggested truncation window: {window}; "
        f"||dl_T/dh_1|| / ||dl_T/dh_T|| = {fmt_ln(s.log_start_fraction)}"
    )
