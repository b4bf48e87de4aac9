"""The figures of `bptt train`, drawn from the rows of metrics.jsonl.

Each figure needs only the logged rows, so the plots of a resumed or interrupted run are
drawn from the same file a reader can open. Missing values (null in the log: a non-finite
number, or a quantity not measured at that step) are left out of the curves.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bptt_cli.plots import pyplot, save


def _series(rows: Sequence[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    """(steps, values) of the rows that carry a finite `key`."""
    pts = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and np.isfinite(r[key])]
    if not pts:
        return np.empty(0), np.empty(0)
    steps, values = zip(*pts, strict=True)
    return np.asarray(steps, float), np.asarray(values, float)


def _mark(ax, diverged_at: int | None, events: Sequence[dict] = ()) -> None:  # noqa: ANN001 - an Axes
    """Vertical lines at the blow-up (the loss and weights left the run's range) and at divergence."""
    for e in events:
        if e.get("kind") == "blow-up":
            ax.axvline(e["step"], color="C1", linestyle="--", linewidth=1, label=f"blew up at step {e['step']}")
    if diverged_at is not None:
        ax.axvline(diverged_at, color="red", linestyle="--", linewidth=1, label=f"non-finite at step {diverged_at}")


def _log_if_wide(ax, values: np.ndarray, ratio: float = 100.0) -> None:  # noqa: ANN001 - an Axes
    """A log y-axis when the values are positive and span more than `ratio`: a linear axis
    dominated by one huge value flattens everything else."""
    if values.size and np.all(values > 0) and values.max() > ratio * values.min():
        ax.set_yscale("log")


def curves_plot(
    path: Path,
    rows: Sequence[dict],
    *,
    metric: str,
    chance: float | None = None,
    diverged_at: int | None = None,
    events: Sequence[dict] = (),
) -> Path:
    """Training loss (left) and the task metric on held-out data (right) against the step."""
    plt = pyplot()
    fig, (ax_l, ax_m) = plt.subplots(1, 2, figsize=(10, 3.8))
    steps, loss = _series(rows, "loss")
    ax_l.plot(steps, loss, color="C0", marker="." if loss.size < 40 else None)
    _log_if_wide(ax_l, loss, ratio=10.0)
    ax_l.set_xlabel("training step")
    ax_l.set_ylabel("training loss")
    ax_l.set_title("loss")
    steps, values = _series(rows, "metric")
    ax_m.plot(steps, values, color="C2", marker="." if values.size < 40 else None)
    _log_if_wide(ax_m, values)
    if chance is not None:
        ax_m.axhline(chance, color="grey", linestyle=":", label=f"chance / baseline {chance:.3g}")
    ax_m.set_xlabel("training step")
    ax_m.set_ylabel(metric)
    ax_m.set_title(f"{metric} (held out)")
    for ax in (ax_l, ax_m):
        _mark(ax, diverged_at, events)
        ax.grid(True, alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=8)
    return save(fig, path)


def grad_norm_plot(
    path: Path,
    rows: Sequence[dict],
    *,
    clip: float | None,
    diverged_at: int | None = None,
    events: Sequence[dict] = (),
) -> Path:
    """Global gradient norm before clipping, log scale, with the clip threshold, the clipped
    steps, the detected spikes (every step is checked, not only logged ones) and the stretches
    of vanishing norms."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    steps, norms = _series(rows, "grad_norm")
    positive = norms > 0
    ax.plot(
        steps[positive],
        norms[positive],
        color="C0",
        marker="." if positive.sum() < 40 else None,
        label="||g|| before clipping",
    )
    clipped = [r["step"] for r in rows if r.get("clipped") and isinstance(r.get("grad_norm"), (int, float))]
    if clipped:
        at = {s: n for s, n in zip(steps, norms, strict=True)}
        xs = [s for s in clipped if at.get(s, 0) > 0]
        ax.scatter(xs, [at[s] for s in xs], s=8, color="C3", zorder=3, label=f"clipped ({len(clipped)} logged)")
    spikes = [e for e in events if e.get("kind") == "spike" and isinstance(e.get("grad_norm"), (int, float))]
    if spikes:
        ax.scatter(
            [e["step"] for e in spikes],
            [e["grad_norm"] for e in spikes],
            marker="^",
            s=30,
            color="C1",
            zorder=4,
            label=f"spike ({len(spikes)})",
        )
    for i, e in enumerate(e for e in events if e.get("kind") == "vanishing" and "since" in e):
        ax.axvspan(e["since"], e["step"], color="grey", alpha=0.2, label="vanishing stretch" if i == 0 else None)
    if clip is not None:
        ax.axhline(clip, color="C2", linestyle="--", label=f"clip threshold {clip:g}")
    _mark(ax, diverged_at, events)
    if positive.any():
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("global gradient norm")
    ax.set_title("gradient norm")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def rho_plot(path: Path, rows: Sequence[dict], *, diverged_at: int | None = None, events: Sequence[dict] = ()) -> Path:
    """|lambda_1(W_h)| at the logged steps over training (hollow markers: Krylov estimates not
    converged to the tolerance), against the line rho = 1; log scale when the range demands."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.8))
    steps, rho = _series(rows, "rho")
    ax.plot(steps, rho, color="C4", marker="." if rho.size < 40 else None, label="rho(W_h)")
    rough = [(r["step"], r["rho"]) for r in rows if r.get("rho_exact") is False and isinstance(r.get("rho"), float)]
    if rough:
        xs, ys = zip(*rough, strict=True)
        ax.scatter(xs, ys, facecolors="none", edgecolors="C3", zorder=3, label="estimate (not converged)")
    ax.axhline(1.0, color="grey", linestyle=":", label="rho = 1")
    _mark(ax, diverged_at, events)
    _log_if_wide(ax, np.append(rho, 1.0))
    ax.set_xlabel("training step")
    ax.set_ylabel("spectral radius of W_h")
    ax.set_title("rho(W_h) over training")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def heatmap_data(rows: Sequence[dict], key: str = "log_dh") -> tuple[np.ndarray, np.ndarray]:
    """(steps (N,), grid (N, T)) of the rows carrying a per-time-step list under `key`.

    Rows of another length (a run whose T changed) are skipped; null entries become NaN.
    """
    logged = [r for r in rows if isinstance(r.get(key), list) and r[key]]
    if not logged:
        return np.empty(0), np.empty((0, 0))
    T = len(logged[-1][key])
    logged = [r for r in logged if len(r[key]) == T]
    grid = np.array([[np.nan if v is None else v for v in r[key]] for r in logged], dtype=float)  # (N, T)
    return np.asarray([r["step"] for r in logged], float), grid


def heatmap_plot(path: Path, rows: Sequence[dict], *, key: str = "log_dh") -> Path | None:
    """log ||dL/dh_t|| over (training step, time step t): where in the sequence the gradient dies.

    None when no row carries the per-step norms.
    """
    steps, grid = heatmap_data(rows, key)
    if grid.size == 0:
        return None
    N, T = grid.shape
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 4.2))
    finite = np.isfinite(grid)
    vmin, vmax = np.percentile(grid[finite], [1, 99]) if finite.any() else (0.0, 1.0)
    # steps may be unevenly spaced (resume, divergence): pcolormesh takes the real step values
    edges_s = np.concatenate([steps, [steps[-1] + (steps[-1] - steps[-2] if N > 1 else 1)]])
    edges_t = np.arange(T + 1) + 0.5
    mesh = ax.pcolormesh(edges_t, edges_s, np.ma.masked_invalid(grid), cmap="viridis", vmin=vmin, vmax=vmax)
    fig.colorbar(mesh, ax=ax, label="log ||dL/dh_t||")
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("time step t in the sequence")
    ax.set_ylabel("training step")
    ax.set_title("where the gradient dies: log ||dL/dh_t|| (batch mean)")
    return save(fig, path)


def training_plots(
    folder: Path,
    rows: Sequence[dict],
    *,
    metric: str,
    clip: float | None,
    chance: float | None = None,
    diverged_at: int | None = None,
    events: Sequence[dict] = (),
) -> list[Path]:
    """Every figure of a training run, written into `folder`; returns the paths written.

    `events` are train.fit's spike / vanishing / diverged events (dicts with 'step', 'kind').
    """
    folder = Path(folder)
    paths = [
        curves_plot(
            folder / "train-curves.png", rows, metric=metric, chance=chance, diverged_at=diverged_at, events=events
        ),
        grad_norm_plot(folder / "train-grad-norm.png", rows, clip=clip, diverged_at=diverged_at, events=events),
        rho_plot(folder / "train-rho.png", rows, diverged_at=diverged_at, events=events),
    ]
    heat = heatmap_plot(folder / "train-grad-heatmap.png", rows)
    if heat is not None:
        paths.append(heat)
    return paths
