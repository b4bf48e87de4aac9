"""What `bptt train` shows: the live progress bar, the finished run, its verdict and evidence."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from bptt_cli.analyses.train import TrainResult
from bptt_cli.cli.output import Output
from bptt_cli.cli.render.common import evidence_rows, fmt, table, title, verdict_line

# what the task's no-skill number is (analyses.tasks.Task.chance), in words
BASELINES = {"recall": "chance", "adding": "always predicting 1", "text": "unigram perplexity of the file"}


class TrainProgress:
    """A rich progress bar on stderr with the last logged loss, metric and gradient norm; silent under -q."""

    def __init__(self, o: Output) -> None:
        self.o = o
        self._progress: Progress | None = None

    def start(self, task: Any, done: int, total: int) -> None:
        if self.o.quiet:
            return
        self.metric = task.metric
        self._progress = Progress(
            TextColumn("[bold]train[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[status]}"),
            TimeElapsedColumn(),
            console=Console(stderr=True, highlight=False),
            transient=False,
        )
        self._task = self._progress.add_task("train", total=total, completed=done, status="")
        self._progress.start()

    def update(self, row: dict) -> None:
        if self._progress is None:
            return
        if "event" in row:
            event = row["event"]
            self._progress.console.print(
                Text(f"step {row['step']}: {event.get('message', event['kind'])}", style="yellow")
            )
            return
        status = f"loss {fmt(row.get('loss'))}  {self.metric} {fmt(row.get('metric'))}  |g| {fmt(row.get('grad_norm'))}"
        self._progress.update(self._task, completed=row["step"], status=status)

    def stop(self, step: int | None = None) -> None:
        if self._progress is not None:
            if step is not None:
                self._progress.update(self._task, completed=step)
            self._progress.stop()
            self._progress = None


def _baseline(task: str, value: float | None) -> str:
    return "" if value is None else f"  ({BASELINES.get(task, 'baseline')}: {fmt(value)})"


def render(o: Output, result: TrainResult) -> None:
    r, c, v = result.results(), result.config, result.verdict
    rows = [
        ["task", f"{r['task']['task']} (T={result.task.seq_len}, B={c.batch}, H={c.hidden}, {c.truncation})"],
        ["network", result.fit.cell.describe()],
        ["steps", f"{r['steps_done']} of {r['steps_requested']}" + (" (interrupted)" if r["interrupted"] else "")],
        [f"held-out {r['metric']}", fmt(r["final_metric"]) + _baseline(r["task"]["task"], r["chance"])],
        ["final training loss", fmt(r["final_loss"])],
        ["gradient norm (last log)", fmt(r["final_grad_norm"])],
        ["rho(W_h) (final)", fmt(r["final_rho"])],
        ["signal reaching step 1 (held out)", fmt(r["final_start_fraction"])],
        ["clipped steps", str(r["clip_count"]) if (c.clip, c.clip_value) != (None, None) else "clipping off"],
        ["events", ", ".join(f"{e['kind']}@{e['step']}" for e in r["events"]) or "none"],
        ["time", f"{r['seconds']:.1f} s"],
    ]
    o.show(title(f"bptt train: {r['task']['task']}"))
    o.show(table(["", "value"], rows))
    o.show(verdict_line(v))
    if v.evidence:
        o.show(title("evidence"))
        shown = ("steps_done", "rho", "clip_count", r["metric"])  # in the table above
        o.show(table(["quantity", "value"], evidence_rows(v.evidence, shown)))
    if result.sample is not None:
        o.show("sample:", Text(result.sample))
    files = r["files"]
    o.line(f"files: {files['folder']}/ (model.npz, config.json, metrics.jsonl, summary.json)")
    for p in r["plots"]:
        o.line(f"plot: {p}")
    for note in r["notes"]:
        o.note(note)
