"""The figures of `bptt sweep`: where over the grid the gradient signal survives, and what the
mean-field theory said it would do.

Which figures a sweep gets depends on its grid (an axis with a single value is a constant of the
sweep, named in the title, not a dimension of a figure):

- two or more numeric axes: the phase diagram sweep-<metric>.png, a heat map of the metric over
  the first two numeric axes (x the first, y the second, in the order of `--grid`), and the verdict
  map sweep-verdicts.png over the same axes. Further axes facet both figures, a panel per
  combination of their values, up to MAX_FACETS panels; with more combinations than that, the
  further axes are taken at their first value, and the title says so.
- one numeric axis: sweep-lines.png, the metric against the axis (a line per combination of the
  categorical axes' values, up to MAX_SERIES), the theory's value dashed where it has one, markers
  coloured by verdict.
- no numeric axis: sweep-<metric>.png, a bar per point, coloured by verdict.

The edge of chaos: a point on a fresh gaussian tanh network carries mean-field theory's top
Lyapunov exponent for its own g = ||W_h||_F / sqrt(H) and input std (analyses/sweep.py
`headline`). The phase diagram and the verdict map draw the contour lambda_theory = 0 of those
values (dashed black), the lines a vertical line where the theory's lambda crosses 0. That g is
not the spectral radius that `--spectral-radius` sets (they differ by a few percent at finite H),
so the contour of the points' own values is drawn, not the curve g = edge_of_chaos(input_std)
over the axes. Points without theory draw no curve.

A cell, line point or bar without a value (the point failed, did not run, or its analysis gives
no such number) is grey. Figures come from phase_figure, lines_figure and bars_figure (tests
inspect them before saving); the edge-of-chaos artists carry the gid EDGE_GID.
"""

from __future__ import annotations

import itertools
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bptt_cli.core.validate import OptionError
from bptt_cli.plots import pyplot, save

# the keys of analyses/sweep.py `headline` per analysis: what `--metric` may name ('verdict' is
# the label; 'label' is accepted for it too)
HEADLINE_KEYS: dict[str, tuple[str, ...]] = {
    "spectrum": ("label", "basis", "gain", "theory_lyapunov", "theory_gain", "lyapunov", "rho", "sigma_max"),
    "trace": ("label", "basis", "gain", "theory_lyapunov", "theory_gain", "horizon", "loss"),
    "train": (
        "label",
        "basis",
        "gain",
        "theory_lyapunov",
        "theory_gain",
        "loss",
        "metric",
        "rho",
        "horizon",
        "diverged_at",
    ),
    "compare-truncation": ("label", "basis", "gain", "theory_lyapunov", "theory_gain"),
}


DEFAULT_METRIC = {"spectrum": "lyapunov", "trace": "gain", "train": "loss", "compare-truncation": "verdict"}
CATEGORICAL = ("verdict", "basis")  # drawn as categories, not a colour scale
CENTRE = {"lyapunov": 0.0, "theory_lyapunov": 0.0, "gain": 1.0, "theory_gain": 1.0, "rho": 1.0, "sigma_max": 1.0}
THEORY = {"lyapunov": "theory_lyapunov", "gain": "theory_gain"}  # the theory's value of a measured metric
DESCRIPTION = {
    "verdict": "verdict",
    "basis": "what decided the verdict",
    "gain": "measured per-step gain of the gradient signal",
    "lyapunov": "measured top Lyapunov exponent (log gain per step)",
    "theory_lyapunov": "mean-field Lyapunov exponent (log gain per step)",
    "theory_gain": "mean-field per-step gain",
    "rho": "spectral radius of W_h",
    "sigma_max": "largest singular value of W_h",
    "horizon": "memory horizon (steps back)",
    "loss": "loss",
    "metric": "task metric",
    "diverged_at": "diverged at step",
}
VERDICT_COLOURS = {
    "stable": "#2ca02c",
    "vanishing": "#e6b800",
    "exploding": "#d62728",
    "diverged": "#67000d",
    "undetermined": "#d62ad6",
    "error": "#8c8c8c",
    "none": "#c8c8c8",
    "not run": "#ffffff",
}
VERDICT_LETTERS = {
    "stable": "S",
    "vanishing": "V",
    "exploding": "E",
    "diverged": "D",
    "undetermined": "U",
    "error": "!",
}
NO_VALUE = "#c8c8c8"  # a cell without a number
EDGE_LABEL = "edge of chaos (mean-field theory)"
EDGE_GID = "edge-of-chaos"
MAX_FACETS = 6
MAX_SERIES = 8
MAX_ANNOTATED = 144  # cells: a bigger map is not written on


# ---------------------------------------------------------------------------- the metric


def metric_choices(analysis: str) -> tuple[str, ...]:
    """What `--metric` may name for this analysis."""
    return ("verdict", *(k for k in HEADLINE_KEYS[analysis] if k != "label"))


def check_metric(analysis: str, metric: str | None) -> None:
    """An OptionError (a ValueError) naming `--metric` and its choices unless `metric` is None or a
    headline number of `analysis`: the command checks it before any point runs."""
    if analysis not in HEADLINE_KEYS:
        raise OptionError(f"not a sweepable analysis: {analysis!r} (one of {', '.join(HEADLINE_KEYS)})")
    if metric is None or metric == "label":
        return
    choices = metric_choices(analysis)
    if metric not in choices:
        raise OptionError(f"`--metric` for a {analysis} sweep takes one of {', '.join(choices)}; got {metric!r}")


def resolve_metric(result: Any, metric: str | None) -> str:
    """The metric the figures show: the analysis' default for None, else `metric` if this sweep has it."""
    analysis = result.config.analysis
    if metric is None:
        return DEFAULT_METRIC.get(analysis, "verdict")
    if metric in ("verdict", "label"):
        return "verdict"
    present = {k for p in result.points if p.ok for k in (p.value.get("headline") or {})}
    if metric in present or metric in HEADLINE_KEYS.get(analysis, ()):
        return metric
    choices = ["verdict", *sorted((present or set(HEADLINE_KEYS.get(analysis, ()))) - {"label"})]
    raise OptionError(f"`--metric` for this {analysis} sweep takes one of {', '.join(choices)}; got {metric!r}")


def _number(x: Any) -> float:
    if x is None or isinstance(x, bool):
        return math.nan
    try:
        return float(x)
    except (TypeError, ValueError):
        return math.nan


def _headline(point: Any) -> dict:
    return (point.value.get("headline") or {}) if point is not None and point.ok else {}


def numeric_value(point: Any, metric: str) -> float:
    """The point's number (NaN without one; +inf for a horizon whose signal never decays)."""
    v = _number(_headline(point).get(metric))
    if metric == "horizon" and math.isnan(v) and point is not None and point.ok:
        h = (point.value.get("results") or {}).get("horizon")
        ev = (point.value.get("verdict") or {}).get("evidence") or {}
        if (isinstance(h, dict) and h.get("method") == "never") or ev.get("horizon_method") == "never":
            return math.inf
    return v


def category_value(point: Any, metric: str) -> str:
    """The point's category: its verdict (or basis), 'error', 'not run' or 'none'."""
    if point is None:
        return "not run"
    if not point.ok:
        return "error"
    v = _headline(point).get("label" if metric == "verdict" else metric)
    return "none" if v is None else str(v)


def theory_lyapunov(point: Any) -> float:
    """Mean-field theory's lambda for the point (NaN where the theory does not apply)."""
    h = _headline(point)
    v = _number(h.get("theory_lyapunov"))
    if math.isnan(v):
        g = _number(h.get("theory_gain"))
        v = math.log(g) if g > 0 else math.nan
    if math.isnan(v) and point is not None and point.ok:
        v = _number(((point.value.get("results") or {}).get("theory") or {}).get("lyapunov"))
    return v


# ---------------------------------------------------------------------------- the grid


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(b, bool):
        return a == b or math.isclose(a, b, rel_tol=1e-12, abs_tol=0.0)
    return a == b or str(a) == str(b)


@dataclass
class _Grid:
    """The sweep's points by their axes' value indices, and the axes sorted into figure roles."""

    result: Any

    def __post_init__(self) -> None:
        self.axes = tuple(self.result.config.grid)
        self.varying = [a for a in self.axes if len(a.texts) > 1]
        self.fixed = [a for a in self.axes if len(a.texts) == 1]
        self.numeric = [a for a in self.varying if a.numeric]
        self.by_index: dict[tuple[int, ...], Any] = {}
        for p in self.result.points:
            idx = []
            for a in self.axes:
                v = p.coords.get(a.name)
                i = next((i for i in range(len(a.texts)) if _same(a.value(i), v)), None)
                if i is None:
                    break
                idx.append(i)
            else:
                self.by_index[tuple(idx)] = p

    def point(self, at: dict[str, int]) -> Any:
        return self.by_index.get(tuple(at.get(a.name, 0) for a in self.axes))

    def combos(self, axes: list[Any], limit: int) -> tuple[list[dict[str, int]], list[Any]]:
        """Every combination of these axes' value indices, or (over `limit`) their first values
        only; and the axes so taken at their first value."""
        if math.prod(len(a.texts) for a in axes) <= limit:
            return [
                dict(zip((a.name for a in axes), c, strict=True))
                for c in itertools.product(*(range(len(a.texts)) for a in axes))
            ], []
        return [{a.name: 0 for a in axes}], list(axes)

    def named(self, at: dict[str, int]) -> str:
        by = {a.name: a for a in self.axes}
        return ", ".join(f"{n} = {by[n].texts[i]}" for n, i in at.items())

    def subtitle(self, dropped: list[Any]) -> str:
        c = self.result.config
        words = [f"bptt sweep {c.analysis} {' '.join(c.args)}".strip()]
        if self.fixed:
            words.append(self.named({a.name: 0 for a in self.fixed}))
        if dropped:
            words.append(
                f"taken at {self.named({a.name: 0 for a in dropped})} (the first value; "
                f"{math.prod(len(a.texts) for a in dropped)} panels would be too many)"
            )
        return textwrap.fill("; ".join(words), 110)


def _order(axis: Any) -> list[int]:
    return sorted(range(len(axis.texts)), key=lambda i: axis.numbers[i])


def _edges(values: np.ndarray, log: bool) -> np.ndarray:
    """Cell edges halfway between neighbouring grid values (in log space on a log axis)."""
    v = np.log(values) if log else np.asarray(values, dtype=float)
    mid = 0.5 * (v[1:] + v[:-1])
    e = np.concatenate([[2 * v[0] - mid[0]], mid, [2 * v[-1] - mid[-1]]])
    return np.exp(e) if log else e


def _tick(axis: Any, i: int) -> str:
    """The value as typed, or (a long range value) to 3 digits."""
    text = axis.texts[i]
    return text if len(text) <= 6 else f"{axis.numbers[i]:.3g}"


def _set_axis(ax: Any, which: str, axis: Any, order: list[int], edges: np.ndarray) -> None:
    from matplotlib.ticker import NullFormatter

    if axis.log:
        (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    values = [axis.numbers[i] for i in order]
    (ax.set_xlim if which == "x" else ax.set_ylim)(edges[0], edges[-1])
    (ax.set_xlabel if which == "x" else ax.set_ylabel)(axis.name)
    if len(values) <= 12:
        (ax.set_xticks if which == "x" else ax.set_yticks)(values, labels=[_tick(axis, i) for i in order])
        (ax.xaxis if which == "x" else ax.yaxis).set_minor_formatter(NullFormatter())


# ---------------------------------------------------------------------------- colours


def _norm_cmap(metric: str, values: np.ndarray) -> tuple[Any, Any]:
    """A diverging scale centred on 0 (exponents) or 1 (gains; log when they span decades), else viridis."""
    from matplotlib import colormaps, colors

    v = values[np.isfinite(values)]
    c = CENTRE.get(metric)
    if c is not None:
        cmap = colormaps["RdBu_r"].with_extremes(bad=NO_VALUE)
        if v.size == 0:
            return colors.TwoSlopeNorm(c, c - 1, c + 1), cmap
        lo, hi = float(v.min()), float(v.max())
        if c == 1.0 and lo > 0 and hi / lo > 30:
            m = max(hi, 1 / lo)
            return colors.LogNorm(1 / m, m), cmap
        span = max(hi - c, c - lo, 1e-12)
        return colors.TwoSlopeNorm(c, min(lo, c - 0.1 * span), max(hi, c + 0.1 * span)), cmap
    cmap = colormaps["viridis"].with_extremes(bad=NO_VALUE)
    if v.size == 0:
        return colors.Normalize(0, 1), cmap
    lo, hi = float(v.min()), float(v.max())
    if lo > 0 and hi / lo >= 100:
        return colors.LogNorm(lo, hi), cmap
    if lo == hi:
        lo, hi = lo - 0.5 * (abs(lo) or 1), hi + 0.5 * (abs(hi) or 1)
    return colors.Normalize(lo, hi), cmap


def _beyond(z: np.ndarray, norm: Any) -> np.ndarray:
    """The values to draw, NaN masked (grey) and +-inf put past the scale's ends (its end colours):
    matplotlib would mask an infinity as invalid."""
    from matplotlib import colors

    lo, hi = float(norm.vmin), float(norm.vmax)
    if isinstance(norm, colors.LogNorm):
        over, under = 10 * hi, lo / 10
    else:
        over, under = hi + (hi - lo) + 1, lo - (hi - lo) - 1
    z = np.where(np.isposinf(z), over, np.where(np.isneginf(z), under, z))
    return np.ma.masked_invalid(z)


def _palette(metric: str, labels: list[str]) -> dict[str, str]:
    """Colours for the categories present: the verdicts' fixed ones, or tab10 for another category."""
    if metric == "verdict":
        return {k: VERDICT_COLOURS.get(k, "#17becf") for k in VERDICT_COLOURS if k in labels} | {
            k: "#17becf" for k in labels if k not in VERDICT_COLOURS
        }
    special = {k: VERDICT_COLOURS[k] for k in ("error", "none", "not run")}
    own = sorted({k for k in labels if k not in special})
    return {k: f"C{i % 10}" for i, k in enumerate(own)} | {k: special[k] for k in special if k in labels}


def _text_colour(rgba: Any) -> str:
    r, g, b = rgba[:3]
    return "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"


def _fmt(v: float, metric: str) -> str:
    if math.isinf(v):
        return "never" if metric == "horizon" and v > 0 else ("inf" if v > 0 else "-inf")
    if 1e3 <= abs(v) < 1e5:
        return f"{v:.0f}"
    return f"{v:.3g}" if 1e-3 <= abs(v) < 1e5 or v == 0 else f"{v:.0e}"


def _verdict_colour(point: Any) -> str:
    return VERDICT_COLOURS.get(category_value(point, "verdict"), "#17becf")


# ---------------------------------------------------------------------------- the figures


def _edge_contour(ax: Any, xs: np.ndarray, ys: np.ndarray, T: np.ndarray) -> Any:
    """Dashed black lambda_theory = 0 over the grid, if the theory's values change sign in it."""
    finite = np.isfinite(T)
    if finite.sum() < 3 or not (np.nanmin(np.where(finite, T, np.nan)) < 0 < np.nanmax(np.where(finite, T, np.nan))):
        return None
    cs = ax.contour(xs, ys, np.ma.masked_invalid(T), levels=[0.0], colors="k", linestyles="--", linewidths=1.8)
    cs.set_gid(EDGE_GID)
    return cs


def _theory_note(T: np.ndarray) -> str | None:
    t = T[np.isfinite(T)]
    if t.size == 0:
        return None
    if t.max() < 0:
        return "mean-field theory: lambda < 0 over the whole grid (ordered; no edge of chaos in range)"
    if t.min() > 0:
        return "mean-field theory: lambda > 0 over the whole grid (chaotic; no edge of chaos in range)"
    return None


def phase_figure(result: Any, metric: str | None = None) -> Any:
    """The heat map of `metric` (or, for 'verdict' or 'basis', the category map) over the first two
    numeric axes, faceted by the rest (module docstring), with the theory's edge of chaos."""
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plt = pyplot()
    metric = resolve_metric(result, metric)
    grid = _Grid(result)
    if len(grid.numeric) < 2:
        raise ValueError("a phase diagram needs two numeric grid axes of two or more values each")
    x, y = grid.numeric[:2]
    xo, yo = _order(x), _order(y)
    xs, ys = np.array([x.numbers[i] for i in xo]), np.array([y.numbers[i] for i in yo])
    xe, ye = _edges(xs, x.log), _edges(ys, y.log)
    others = [a for a in grid.varying if a is not x and a is not y]
    combos, dropped = grid.combos(others, MAX_FACETS)
    panels = [[[grid.point({**at, x.name: i, y.name: j}) for i in xo] for j in yo] for at in combos]
    categorical = metric in CATEGORICAL
    T = np.array([[[theory_lyapunov(p) for p in row] for row in pts] for pts in panels], dtype=float)

    n = len(panels)
    ncols = 2 if n == 4 else min(n, 3)
    nrows = math.ceil(n / ncols)
    fig, axs = plt.subplots(
        nrows, ncols, squeeze=False, figsize=(4.4 * ncols + 1.6, 3.8 * nrows + 1.2), layout="constrained"
    )
    flat = list(axs.flat)
    for ax in flat[n:]:
        ax.set_visible(False)
    annotate = xs.size * ys.size <= MAX_ANNOTATED
    fontsize = 8 if xs.size * ys.size <= 36 else 6
    handles: list[Any] = []
    if categorical:
        from matplotlib import colors

        labels = [[[category_value(p, metric) for p in row] for row in pts] for pts in panels]
        palette = _palette(metric, sorted({c for pts in labels for row in pts for c in row}))
        keys = list(palette)
        cmap = colors.ListedColormap([palette[k] for k in keys])
        norm = colors.BoundaryNorm(np.arange(len(keys) + 1) - 0.5, len(keys))
        for ax, lab in zip(flat, labels, strict=False):
            codes = np.array([[keys.index(c) for c in row] for row in lab])
            ax.pcolormesh(xe, ye, codes, cmap=cmap, norm=norm, shading="flat", edgecolors="white", linewidth=0.5)
            if annotate:
                for j, row in enumerate(lab):
                    for i, c in enumerate(row):
                        text = VERDICT_LETTERS.get(c, "") if metric == "verdict" else ""
                        if text:
                            ax.text(
                                xs[i],
                                ys[j],
                                text,
                                ha="center",
                                va="center",
                                fontsize=fontsize,
                                color=_text_colour(colors.to_rgba(palette[c])),
                            )
        handles += [Patch(facecolor=palette[k], edgecolor="0.6", label=k) for k in keys]
    else:
        Z = np.array([[[numeric_value(p, metric) for p in row] for row in pts] for pts in panels], dtype=float)
        norm, cmap = _norm_cmap(metric, Z)
        for ax, z, pts in zip(flat, Z, panels, strict=False):
            mesh = ax.pcolormesh(xe, ye, _beyond(z, norm), cmap=cmap, norm=norm, shading="flat")
            if annotate:
                for j in range(ys.size):
                    for i in range(xs.size):
                        v, p = z[j, i], pts[j][i]
                        if np.isnan(v):
                            text, colour = ("not run" if p is None else "error" if not p.ok else "n/a"), "0.25"
                        else:
                            text, colour = _fmt(v, metric), _text_colour(cmap(norm(min(max(v, -1e300), 1e300))))
                        ax.text(xs[i], ys[j], text, ha="center", va="center", fontsize=fontsize, color=colour)
        extend = "neither"
        if np.isposinf(Z).any() or np.isneginf(Z).any():
            extend = (
                "both" if np.isposinf(Z).any() and np.isneginf(Z).any() else "max" if np.isposinf(Z).any() else "min"
            )
        label = DESCRIPTION.get(metric, metric) + (
            " (top colour: never decays)" if metric == "horizon" and extend in ("max", "both") else ""
        )
        fig.colorbar(mesh, ax=flat[:n], label=label, extend=extend, shrink=0.9)
        if np.isnan(Z).any():
            handles.append(Patch(facecolor=NO_VALUE, edgecolor="0.6", label="no value (error, not run or none)"))
    drawn = [_edge_contour(ax, xs, ys, t) for ax, t in zip(flat, T, strict=False)]
    if any(c is not None for c in drawn):
        handles.append(Line2D([], [], color="k", ls="--", lw=1.8, label=EDGE_LABEL))
    else:
        note = _theory_note(T)
        if note:
            handles.append(Line2D([], [], ls="none", label=note))
    for ax, at in zip(flat, combos, strict=False):
        _set_axis(ax, "x", x, xo, xe)
        _set_axis(ax, "y", y, yo, ye)
        if at and not dropped:
            ax.set_title(grid.named(at), fontsize=9)
    what = "verdicts" if metric == "verdict" else DESCRIPTION.get(metric, metric)
    fig.suptitle(f"{result.config.analysis} sweep: {what}\n{grid.subtitle(dropped)}", fontsize=9.5)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncols=min(len(handles), 4), fontsize=8, frameon=False)
    return fig


def _crossings(xs: np.ndarray, t: np.ndarray, log: bool) -> list[float]:
    """Where the theory's lambda changes sign between neighbouring grid values (linear interpolation)."""
    u = np.log(xs) if log else xs
    out = []
    for k in range(len(xs) - 1):
        a, b = t[k], t[k + 1]
        if np.isfinite(a) and np.isfinite(b) and (a < 0 <= b or b < 0 <= a) and a != b:
            c = u[k] + (u[k + 1] - u[k]) * (0 - a) / (b - a)
            out.append(float(np.exp(c) if log else c))
    return out


def lines_figure(result: Any, metric: str | None = None) -> Any:
    """The metric against the first numeric axis: a line per combination of the other axes' values,
    the theory dashed, markers coloured by verdict, the neutral line, the theory's edge of chaos."""
    from matplotlib import colors
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plt = pyplot()
    metric = resolve_metric(result, metric)
    grid = _Grid(result)
    if not grid.numeric:
        raise ValueError("lines need a numeric grid axis of two or more values")
    x = grid.numeric[0]
    xo = _order(x)
    xs = np.array([x.numbers[i] for i in xo])
    others = [a for a in grid.varying if a is not x]
    combos, dropped = grid.combos(others, MAX_SERIES)
    series = [[grid.point({**at, x.name: i}) for i in xo] for at in combos]
    strip = metric in CATEGORICAL
    height = min(4.6, 1.6 + 0.55 * len(series)) if strip else 4.6
    fig, ax = plt.subplots(figsize=(7.4, height), layout="constrained")
    handles: list[Any] = []
    edges_at: list[float] = []
    if strip:  # a strip: a row per series, a square per point
        labels = [[category_value(p, metric) for p in pts] for pts in series]
        palette = _palette(metric, sorted({c for row in labels for c in row}))
        keys = list(palette)
        codes = np.array([[keys.index(c) for c in row] for row in labels])
        ax.pcolormesh(
            _edges(xs, x.log),
            np.arange(len(series) + 1) - 0.5,
            codes,
            cmap=colors.ListedColormap([palette[k] for k in keys]),
            norm=colors.BoundaryNorm(np.arange(len(keys) + 1) - 0.5, len(keys)),
            edgecolors="white",
            linewidth=0.5,
        )
        ax.set_yticks(range(len(series)), labels=[grid.named(at) or metric for at in combos])
        handles += [Patch(facecolor=palette[k], edgecolor="0.6", label=k) for k in keys]
        for j, pts in enumerate(series):  # the theory's edge across its own row
            at_x = _crossings(xs, np.array([theory_lyapunov(p) for p in pts]), x.log)
            if at_x:
                ax.vlines(at_x, j - 0.5, j + 0.5, colors="k", linestyles="-.", linewidths=1.4, gid=EDGE_GID)
            edges_at += at_x
        _set_axis(ax, "x", x, xo, _edges(xs, x.log))
    else:
        theory_key = THEORY.get(metric)
        ys_all = []
        for s, (at, pts) in enumerate(zip(combos, series, strict=True)):
            colour = f"C{s % 10}" if len(series) > 1 else "tab:blue"
            ys = np.array([numeric_value(p, metric) for p in pts], dtype=float)
            ys_all.append(ys)
            name = grid.named(at)
            ax.plot(
                xs,
                np.where(np.isfinite(ys), ys, np.nan),
                color=colour,
                lw=1.6,
                label=f"measured{', ' + name if name else ''}",
            )
            ok = np.isfinite(ys)
            ax.scatter(
                xs[ok],
                ys[ok],
                c=[_verdict_colour(p) for p, k in zip(pts, ok, strict=True) if k],
                edgecolors=colour,
                s=48,
                linewidths=1.2,
                zorder=3,
            )
            tr = ax.get_xaxis_transform()  # x in data, y in axes fraction: for points off the scale
            for xv, yv, p in zip(xs, ys, pts, strict=True):
                if np.isnan(yv):
                    ax.scatter([xv], [0.03], transform=tr, marker="x", color=VERDICT_COLOURS["error"], s=40, zorder=3)
                elif np.isinf(yv):
                    ax.scatter(
                        [xv],
                        [0.97 if yv > 0 else 0.03],
                        transform=tr,
                        marker="^" if yv > 0 else "v",
                        color=_verdict_colour(p),
                        edgecolors=colour,
                        s=48,
                        zorder=3,
                    )
            if theory_key is not None:
                ts = np.array([numeric_value(p, theory_key) for p in pts], dtype=float)
                if np.isfinite(ts).any():
                    ax.plot(
                        xs,
                        ts,
                        color=colour,
                        ls="--",
                        lw=1.2,
                        alpha=0.85,
                        label=f"mean-field theory{', ' + name if name else ''}",
                    )
            edges_at += _crossings(xs, np.array([theory_lyapunov(p) for p in pts]), x.log)
        c = CENTRE.get(metric)
        if c is not None:
            ax.axhline(
                c, color="grey", ls=":", lw=1, label="lambda = 0 (neutral)" if c == 0 else f"{metric} = 1 (neutral)"
            )
        if x.log:
            ax.set_xscale("log")
        allv = np.concatenate(ys_all)
        pos = allv[np.isfinite(allv)]
        if (
            metric not in ("lyapunov", "theory_lyapunov")
            and pos.size
            and pos.min() > 0
            and pos.max() / pos.min() >= (30 if c else 100)
        ):
            ax.set_yscale("log")
        ax.set_xlabel(x.name)
        ax.set_ylabel(DESCRIPTION.get(metric, metric))
        ax.grid(True, which="both", alpha=0.3)
        if len(xs) <= 12:
            from matplotlib.ticker import NullFormatter

            ax.set_xticks(xs, labels=[_tick(x, i) for i in xo])
            ax.xaxis.set_minor_formatter(NullFormatter())
    for k, xv in enumerate([] if strip else sorted(set(edges_at))):
        ax.axvline(xv, color="k", ls="-.", lw=1.2, gid=EDGE_GID, label=EDGE_LABEL if k == 0 else None)
    if not strip:  # the axes' own legend entries, then the verdicts
        present = sorted({category_value(p, "verdict") for pts in series for p in pts}, key=list(VERDICT_COLOURS).index)
        verdicts = [
            Line2D(
                [],
                [],
                ls="none",
                marker="o",
                markersize=7,
                markerfacecolor=VERDICT_COLOURS[k],
                markeredgecolor="0.4",
                label=k,
            )
            for k in present
        ]
        h, _ = ax.get_legend_handles_labels()
        ax.legend(handles=h + verdicts, fontsize=7.5, loc="best", framealpha=0.85)
    else:
        if edges_at:
            handles.append(Line2D([], [], color="k", ls="-.", lw=1.2, label=EDGE_LABEL))
        ax.legend(handles=handles, fontsize=7.5, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    what = "verdicts" if metric == "verdict" else DESCRIPTION.get(metric, metric)
    ax.set_title(f"{result.config.analysis} sweep: {what} against {x.name}\n{grid.subtitle(dropped)}", fontsize=9)
    return fig


def bars_figure(result: Any, metric: str | None = None) -> Any:
    """A bar per point of a grid without numeric axes, coloured by verdict (the theory as a mark);
    for a categorical metric, a square per point."""
    from matplotlib import colors
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    plt = pyplot()
    metric = resolve_metric(result, metric)
    grid = _Grid(result)
    combos, _ = grid.combos(grid.varying, 10**9)
    pts = [grid.point(at) for at in combos]
    if len(grid.varying) == 1:  # the values, the axis' name below
        (a,) = grid.varying
        names = [a.texts[at[a.name]] for at in combos]
        ax_name = a.name
    else:
        names = [grid.named(at) or "the point" for at in combos]
        ax_name = ""
    fig, ax = plt.subplots(figsize=(max(5.5, 0.8 * len(pts) + 3.0), 4.4), layout="constrained")
    pos = np.arange(len(pts))
    if metric in CATEGORICAL:
        labels = [category_value(p, metric) for p in pts]
        palette = _palette(metric, sorted(set(labels)))
        keys = list(palette)
        ax.pcolormesh(
            np.arange(len(pts) + 1) - 0.5,
            [0, 1],
            np.array([[keys.index(c) for c in labels]]),
            cmap=colors.ListedColormap([palette[k] for k in keys]),
            norm=colors.BoundaryNorm(np.arange(len(keys) + 1) - 0.5, len(keys)),
            edgecolors="white",
            linewidth=1,
        )
        ax.set_yticks([])
        ax.legend(
            handles=[Patch(facecolor=palette[k], edgecolor="0.6", label=k) for k in keys],
            fontsize=8,
            loc="upper left",
            bbox_to_anchor=(1.01, 1.0),
            frameon=False,
        )
    else:
        ys = np.array([numeric_value(p, metric) for p in pts], dtype=float)
        ok = np.isfinite(ys)
        ax.bar(pos[ok], ys[ok], color=[_verdict_colour(p) for p, k in zip(pts, ok, strict=True) if k], edgecolor="0.3")
        for i in np.flatnonzero(~ok):
            text = (
                "never"
                if np.isposinf(ys[i]) and metric == "horizon"
                else "n/a"
                if pts[i] is not None and pts[i].ok
                else "error"
                if pts[i] is not None
                else "not run"
            )
            ax.text(pos[i], 0.03, text, transform=ax.get_xaxis_transform(), ha="center", fontsize=8, color="0.35")
        handles: list[Any] = []
        theory_key = THEORY.get(metric)
        if theory_key is not None:
            ts = np.array([numeric_value(p, theory_key) for p in pts], dtype=float)
            if np.isfinite(ts).any():
                ax.scatter(pos, ts, marker="_", s=500, color="k", linewidths=2, zorder=3)
                handles.append(Line2D([], [], color="k", lw=2, label="mean-field theory"))
        c = CENTRE.get(metric)
        if c is not None:
            ax.axhline(c, color="grey", ls=":", lw=1)
        present = sorted({category_value(p, "verdict") for p in pts}, key=list(VERDICT_COLOURS).index)
        handles += [Patch(facecolor=VERDICT_COLOURS[k], edgecolor="0.3", label=k) for k in present]
        ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
        ax.set_ylabel(DESCRIPTION.get(metric, metric))
        ax.grid(True, axis="y", alpha=0.3)
    tilt = len(pts) > 6 or max(len(n) for n in names) * len(pts) > 40
    ax.set_xticks(pos, labels=names, rotation=30 if tilt else 0, ha="right" if tilt else "center")
    ax.set_xlabel(ax_name)
    ax.set_xlim(-0.6, len(pts) - 0.4)
    what = "verdicts" if metric == "verdict" else DESCRIPTION.get(metric, metric)
    ax.set_title(f"{result.config.analysis} sweep: {what}\n{grid.subtitle([])}", fontsize=9)
    return fig


def _stem(metric: str) -> str:
    return "sweep-verdicts" if metric == "verdict" else f"sweep-{metric}"


def sweep_plots(folder: Path, result: Any, metric: str | None = None) -> tuple[Path, ...]:
    """Write the sweep's figures (module docstring) into `folder`; return their paths.

    metric : a headline key of the points, or 'verdict'; None for the analysis' default
             (spectrum: lyapunov, trace: gain, train: loss, compare-truncation: verdict)
    """
    metric = resolve_metric(result, metric)
    folder = Path(folder)
    grid = _Grid(result)
    if len(grid.numeric) >= 2:
        paths = [] if metric == "verdict" else [save(phase_figure(result, metric), folder / f"{_stem(metric)}.png")]
        paths.append(save(phase_figure(result, "verdict"), folder / "sweep-verdicts.png"))
        return tuple(paths)
    if grid.numeric:
        return (save(lines_figure(result, metric), folder / "sweep-lines.png"),)
    return (save(bars_figure(result, metric), folder / f"{_stem(metric)}.png"),)
