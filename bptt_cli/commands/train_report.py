"""What `bptt train` shows: the live progress bar, the summary of a finished run, its tables.

Not a command itself (no @command here): the rendering half of bptt_cli/commands/train.py.
"""

import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from bptt_cli.report import document, fmt, table
from bptt_cli.runfiles import CONFIG, METRICS, MODEL, SUMMARY, read_metrics

if TYPE_CHECKING:  # cli.py imports the commands at its end: no import of it at load time here
    from bptt_cli.cli import Output


class TrainProgress:
    """A rich progress bar on stderr with the last logged loss, metric and gradient norm.

    Under --quiet it is silent; under --json it is on stderr like every human output
    (stdout keeps the one JSON document).
    """

    def __init__(self, o: "Output", total: int, metric: str, *, start: int = 0) -> None:
        self.metric = metric
        self.total = total
        self._progress: Progress | None = None
        if not o.quiet:
            from rich.console import Console

            self._progress = Progress(
                TextColumn("[bold]train[/]"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[status]}"),
                TimeElapsedColumn(),
                console=Console(stderr=True, highlight=False),
                transient=False,
            )
            self._task = self._progress.add_task("train", total=total, completed=start, status="")

    def update(self, row: dict) -> None:
        if self._progress is None:
            return
        if "event" in row:
            event = row["event"]
            if event.get("kind") in ("spike", "diverged", "vanishing"):
                self._progress.console.print(f"[yellow]step {row['step']}: {event.get('message', event['kind'])}[/]")
            return
        status = f"loss {fmt(row.get('loss'))}  {self.metric} {fmt(row.get('metric'))}  |g| {fmt(row.get('grad_norm'))}"
        self._progress.update(self._task, completed=row["step"], status=status)

    def finish(self, step: int) -> None:
        """Show the step training actually stopped at (it may lie between two log steps)."""
        if self._progress is not None:
            self._progress.update(self._task, completed=step)

    def __enter__(self) -> "TrainProgress":
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def run_summary(result: Any, task: Any, config: dict, folder: Path, *, plots: list[Path]) -> dict:
    """The results of a run as plain data (the `results` of the JSON document)."""
    last = next((r for r in reversed(result.history) if "loss" in r), {})
    summary: dict[str, Any] = {
        "task": task.config(),
        "steps_done": int(result.state.step),
        "steps_requested": config["steps"],
        "interrupted": bool(result.stopped),
        "diverged_at": result.diverged_at,
        "metric": task.metric,
        "final_metric": result.final_metric,
        "chance": task.chance,
        "final_loss": last.get("loss"),
        "final_grad_norm": last.get("grad_norm"),
        "final_rho": result.final_rho,
        "final_start_fraction": None if result.final_trace is None else result.final_trace.start_fraction,
        "clip_count": int(result.state.clip_count),
        "events": list(result.events),
        "seconds": float(result.seconds),
        "files": {
            "folder": str(folder),
            "model": str(folder / MODEL),
            "config": str(folder / CONFIG),
            "metrics": str(folder / METRICS),
            "summary": str(folder / SUMMARY),
        },
        "plots": [str(p) for p in plots],
    }
    return summary


def results_document(config: dict, summary: dict, verdict: dict) -> dict:
    return document("train", config, summary, verdict=verdict)


def render(o: "Output", doc: dict, sample: str | None = None) -> None:
    """The human output: the run, the verdict and its evidence, where the files went."""
    r, v, c = doc["results"], doc["verdict"], doc["config"]
    rows = [
        ["task", f"{r['task']['task']} (T={c['seq_len']}, B={c['batch']}, H={c['hidden']}, {c['truncation']})"],
        ["steps", f"{r['steps_done']} of {r['steps_requested']}" + (" (interrupted)" if r["interrupted"] else "")],
        [f"held-out {r['metric']}", fmt(r["final_metric"]) + _baseline(r["task"]["task"], r["chance"])],
        ["final training loss", fmt(r["final_loss"])],
        ["gradient norm (last log)", fmt(r["final_grad_norm"])],
        ["rho(W_h) (final)", fmt(r["final_rho"])],
        ["signal reaching step 1 (held out)", fmt(r["final_start_fraction"])],
        ["clipped steps", str(r["clip_count"]) if (c["clip"], c["clip_value"]) != (None, None) else "clipping off"],
        ["events", ", ".join(f"{e['kind']}@{e['step']}" for e in r["events"]) or "none"],
        ["time", f"{r['seconds']:.1f} s"],
    ]
    o.show(table(f"bptt train: {r['task']['task']}", ["", "value"], rows))
    colour = {"stable": "green", "diverged": "red", "exploding": "red", "vanishing": "yellow"}.get(v["label"], "white")
    o.show(f"verdict: [bold {colour}]{v['label']}[/] (basis: {v['basis']}) - {v['message']}")
    evidence = v.get("evidence") or {}
    if evidence:
        o.show(table("evidence", ["quantity", "value"], [[k, _cell(val)] for k, val in evidence.items()]))
    if sample is not None:
        o.show("sample:", Text(sample))
    files = r["files"]
    # paths printed as they are, never wrapped: a reader copies them (and "[" in a path is not markup)
    _line(o, f"files: {files['folder']}/ (model.npz, config.json, metrics.jsonl, summary.json)")
    for p in r["plots"]:
        _line(o, f"plot: {p}")
    if r["interrupted"] or (r["diverged_at"] is None and r["steps_done"] < r["steps_requested"]):
        _line(
            o, f"stopped at step {r['steps_done']}; continue with: bptt train --resume {shlex.quote(files['folder'])}"
        )


def _line(o: "Output", text: str) -> None:
    if not o.quiet:
        o.console.print(text, soft_wrap=True, markup=False, highlight=False)


# what the task's no-skill number is (tasks.Task.chance), in words
BASELINES = {"recall": "chance", "adding": "always predicting 1", "text": "unigram perplexity of the file"}


def _baseline(task: str, value: float | None) -> str:
    return "" if value is None else f"  ({BASELINES.get(task, 'baseline')}: {fmt(value)})"


def _cell(value: Any) -> str:
    if isinstance(value, (dict, list)):
        return str(value)
    return fmt(value) if not isinstance(value, str) else value


def metrics_rows(folder: Path) -> list[dict]:
    """The logged rows of the whole run (a resumed run's too), without event lines."""
    return [r for r in read_metrics(folder / METRICS) if "event" not in r]
