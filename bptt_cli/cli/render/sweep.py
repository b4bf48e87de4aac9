"""The tables of `bptt sweep`: a progress bar over points, then one row per point and the verdict counts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.text import Text

from bptt_cli.analyses.sweep import SweepPoint, SweepResult
from bptt_cli.cli.output import Output
from bptt_cli.cli.render.common import COLOURS, caption, fmt, table, title

# the headline columns each analysis' table shows, in order (analyses/sweep.py `headline`)
COLUMNS = {
    "spectrum": ("rho", "sigma_max", "lyapunov", "theory_lyapunov", "gain"),
    "trace": ("gain", "theory_gain", "horizon", "loss"),
    "train": ("loss", "metric", "rho", "horizon", "diverged_at"),
    "compare-truncation": (),
}
MAX_ROWS = 200  # a bigger grid lists its first and last points; sweep.jsonl has them all


class SweepProgress:
    """A rich progress bar over points on stderr, with the running verdict counts; silent under -q."""

    def __init__(self, o: Output) -> None:
        self.o = o
        self._progress: Progress | None = None
        self.counts: dict[str, int] = {}
        self.finished = 0
        self.log: Path | None = None

    def start(self, todo: int, done: int, executor: Any, log: Path) -> None:
        self.log = log
        if done:
            self.o.line(f"resuming: {done} points already in the sweep's log, {todo} to run")
        if getattr(executor, "name", None) == "dask":
            self.o.line(f"Dask: {executor.workers} workers, dashboard {executor.dashboard} (with bokeh installed)")
        console = Console(stderr=True, highlight=False)
        if self.o.quiet or not todo or not console.is_terminal:  # a log file gets the table, not bar frames
            return
        self._progress = Progress(
            TextColumn("[bold]sweep[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=False,
        )
        self._task = self._progress.add_task("sweep", total=todo, status="")
        self._progress.start()

    def update(self, point: SweepPoint) -> None:
        self.finished += 1
        label = point.value.get("headline", {}).get("label") if point.ok else "error"
        self.counts[label] = self.counts.get(label, 0) + 1
        if self._progress is None:
            return
        if not point.ok:
            self._progress.console.print(Text(f"point {point.key}: {point.value['error']}", style="red"))
        status = "  ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))
        self._progress.update(self._task, advance=1, status=status)

    def stop(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


def _label(point: SweepPoint) -> Text:
    if not point.ok:
        return Text("error", style="red")
    label = point.value["headline"]["label"]
    return Text(label, style=COLOURS.get(label, ""))


def render(o: Output, r: SweepResult) -> None:
    c = r.config
    axes = [a.name for a in c.grid]
    columns = COLUMNS.get(c.analysis, ())
    n = len(r.points) + len(r.missing)
    shape = f"{n} points" if len(c.grid) == 1 else " x ".join(str(len(a.texts)) for a in c.grid) + f" = {n} points"
    o.show(
        title(
            f"sweep: {c.analysis} over {' x '.join(axes)} ({shape}), "
            f"{r.executor} with {r.workers} worker{'s' if r.workers != 1 else ''}"
        )
    )
    points = list(r.points)
    shown = points if len(points) <= MAX_ROWS else points[: MAX_ROWS // 2] + points[-MAX_ROWS // 2 :]
    rows = []
    for p in shown:
        h = p.value.get("headline", {})
        rows.append([*(fmt(p.coords[a]) for a in axes), _label(p), *(fmt(h.get(k)) for k in columns)])
    o.show(table([*axes, "verdict", *columns], rows))
    if len(shown) < len(points):
        o.show(caption(f"{len(points) - len(shown)} points not listed here; all are in {r.log or 'the JSON document'}"))
    counts = ", ".join(f"{k} {v}" for k, v in sorted(r.counts().items()))
    o.show(caption(f"verdicts: {counts}. {fmt(r.seconds, 3)} s in all."))
    for p in r.failed:
        o.note(f"point {p.key} failed: {p.value['error']} (reproduce: {p.command})")
    if r.missing:
        o.note(f"{len(r.missing)} points did not finish (their workers were lost every retry); rerun to try them again")
    if r.log is not None:
        o.line(f"points: {r.log}")
    for path in r.plots:
        o.line(f"plot: {path}")
