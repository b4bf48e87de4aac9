"""`bptt sweep`: one analysis at every point of a grid, each point exactly what the command gives.

The command line (cli/commands/sweep.py) turns each point into the analysis' own config, through
that command's own parser and checks, before any point runs: a bad value anywhere in the grid is
a usage error before any work. This module runs the configs on an executor
(analyses/executors.py), writes each finished point to sweep.jsonl as it arrives
(io/sweeplog.py), and gathers the result: per point its coordinates, seed, verdict, headline
numbers, the analysis' full results, and the mean-field prediction where the theory applies.

A point is a pure function of its config (its seed included): run_point imports nothing of the
command line, so a Dask worker that has bptt installed can run it.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bptt_cli.analyses.executors import make_executor
from bptt_cli.analyses.grid import Axis, GridPoint, grid_size
from bptt_cli.blas import blas_threads, default_threads
from bptt_cli.core.validate import OptionError, check_float, check_int
from bptt_cli.io.jsondoc import jsonable
from bptt_cli.io.runfolder import new_folder
from bptt_cli.io.sweeplog import SweepLog
from bptt_cli.plots.sweep import check_metric

ANALYSES = ("spectrum", "trace", "train", "compare-truncation")
BIG_GRID = 1000  # points: more needs --yes (a typo in a range should not start a day of work)


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _runner(analysis: str) -> Callable[[Any], Any]:
    """The library analysis behind a sweepable command."""
    if analysis == "spectrum":
        from bptt_cli.analyses.spectrum import run
    elif analysis == "trace":
        from bptt_cli.analyses.trace import run
    elif analysis == "train":
        from bptt_cli.analyses.train import run
    elif analysis == "compare-truncation":
        from bptt_cli.analyses.truncation import run
    else:
        raise ValueError(f"not a sweepable analysis: {analysis!r} (one of {', '.join(ANALYSES)})")
    return run


def _get(d: Any, *path: Any) -> Any:
    for k in path:
        if isinstance(d, dict):
            d = d.get(k)
        elif isinstance(d, list) and isinstance(k, int) and -len(d) <= k < len(d):
            d = d[k]
        else:
            return None
    return d


def headline(analysis: str, results: dict, verdict: dict) -> dict:
    """The few numbers a sweep's table and plots show for a point (None where the analysis has none).

    gain : the per-step gain of the gradient signal that the verdict measured (its evidence)
    lyapunov : the measured top Lyapunov exponent (spectrum)
    theory_lyapunov, theory_gain : mean-field theory's, for a fresh gaussian tanh network
    """
    ev = verdict.get("evidence", {})
    out = {
        "label": verdict.get("label"),
        "basis": verdict.get("basis"),
        "gain": ev.get("gain"),
        "theory_lyapunov": _get(results, "theory", "lyapunov"),
        "theory_gain": _get(results, "theory", "gain"),
    }
    if analysis == "spectrum":
        out |= {
            "lyapunov": _get(results, "lyapunov", "exponents", 0),
            "rho": results.get("rho"),
            "sigma_max": _get(results, "singular_values", "max"),
        }
    elif analysis == "trace":
        out |= {"horizon": _get(results, "horizon", "steps"), "loss": results.get("loss_value")}
    elif analysis == "train":
        out |= {
            "loss": results.get("final_loss"),
            "metric": results.get("final_metric"),
            "rho": results.get("final_rho"),
            "horizon": ev.get("horizon"),
            "diverged_at": results.get("diverged_at"),
        }
    return out


def run_point(analysis: str, config: Any) -> dict:
    """Run one point; return {results, verdict, headline} or {error}: plain JSON values, the same
    whichever executor ran it (no timings: sweep.jsonl is identical across executors).

    An error of the point's own (a ValueError: its network blew up past what the analysis
    takes, a file it cannot read) is this point's result, not the sweep's end. A train point
    trains in a temporary folder that is removed afterwards (its full result is kept here).
    """
    run = _runner(analysis)
    try:
        with blas_threads(default_threads()):
            if analysis == "train":
                with tempfile.TemporaryDirectory(prefix="bptt-sweep-") as tmp:
                    result = run(replace(config, out=Path(tmp) / "run", plots=False))
                    results = {k: v for k, v in result.results().items() if k not in ("files", "plots")}
            else:
                result = run(config)
                results = result.results()
    except (ValueError, OSError, ArithmeticError) as e:
        return {"error": f"{type(e).__name__}: {e}".splitlines()[0]}
    verdict = result.verdict.as_dict()
    plain, _ = jsonable({"results": results, "verdict": verdict})  # in the worker: the conversion runs in parallel
    return {**plain, "headline": headline(analysis, plain["results"], plain["verdict"])}


def check_size(grid: tuple[Axis, ...], yes: bool) -> None:
    n = grid_size(grid)
    if n > BIG_GRID and not yes:
        raise OptionError(f"the grid has {n} points (more than {BIG_GRID}): pass --yes to run them all")


@dataclass(frozen=True)
class SweepConfig:
    """What a sweep is (the analysis, its options, the grid, the seed) and how it runs.

    args : the analysis' own options, as typed (shared by every point)
    workers : local worker processes, or the LocalCluster's workers (scheduler 'local')
    scheduler : None (local processes), 'local' (a LocalCluster), or a Dask scheduler's address
    """

    analysis: str
    args: tuple[str, ...]
    grid: tuple[Axis, ...]
    seed: int = 0
    out: Path | None = None  # None: a new runs/sweep-TIME
    workers: int = 1
    scheduler: str | None = None
    timeout: float = 10.0
    retries: int = 2
    yes: bool = False
    plots: bool | None = None
    metric: str | None = None

    def __post_init__(self) -> None:
        if self.analysis not in ANALYSES:
            raise OptionError(f"ANALYSIS must be one of {', '.join(ANALYSES)}; got {self.analysis!r}")
        check_int("--workers", self.workers, min=1)
        check_float("--timeout", self.timeout, lo=0.0, lo_open=True)
        check_int("--retries", self.retries, min=0)
        if self.scheduler is not None and not (self.scheduler == "local" or "://" in self.scheduler):
            raise OptionError(f"`--scheduler` takes tcp://HOST:PORT or local; got {self.scheduler!r}")
        check_size(self.grid, self.yes)
        check_metric(self.analysis, self.metric)

    def header(self) -> dict:
        """What sweep.json keeps: a rerun continues this sweep only if these match."""
        return {
            "analysis": self.analysis,
            "args": list(self.args),
            "grid": [a.as_dict() for a in self.grid],
            "seed": self.seed,
        }

    def as_dict(self) -> dict:
        return {
            **self.header(),
            "out": None if self.out is None else str(self.out),
            "workers": self.workers,
            "scheduler": self.scheduler,
            "timeout": self.timeout,
            "retries": self.retries,
            "points": grid_size(self.grid),
        }


@dataclass(frozen=True)
class SweepPoint:
    """A point as the sweep keeps it: where it is, how it is reproduced, and what it gave."""

    index: int
    key: str
    coords: dict
    seed: int
    command: str
    value: dict  # run_point's: results, verdict, headline (or error)
    resumed: bool = False  # read back from sweep.jsonl, not run now

    @property
    def ok(self) -> bool:
        return "error" not in self.value

    def row(self) -> dict:
        """Its line in sweep.jsonl."""
        return {
            "index": self.index,
            "key": self.key,
            "coords": self.coords,
            "seed": self.seed,
            "command": self.command,
            **self.value,
        }


@dataclass(frozen=True)
class SweepResult:
    config: SweepConfig
    points: tuple[SweepPoint, ...]  # in grid order; only those that finished, ok or with an error
    missing: tuple[str, ...]  # the keys of points that did not finish (workers lost every retry)
    executor: str
    workers: int
    dashboard: str | None
    seconds: float
    log: Path
    plots: tuple[Path, ...] = field(default=())

    @property
    def failed(self) -> tuple[SweepPoint, ...]:
        return tuple(p for p in self.points if not p.ok)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.points:
            label = p.value.get("headline", {}).get("label") if p.ok else "error"
            out[label] = out.get(label, 0) + 1
        return out

    def results(self) -> dict:
        return {
            "analysis": self.config.analysis,
            "grid": [a.as_dict() for a in self.config.grid],
            "executor": self.executor,
            "workers": self.workers,
            "dashboard": self.dashboard,
            "seconds": self.seconds,
            "finished": len(self.points),
            "resumed": sum(p.resumed for p in self.points),
            "failed": len(self.failed),
            "missing": list(self.missing),
            "counts": self.counts(),
            "log": str(self.log),
            "plots": [str(p) for p in self.plots],
            "points": [p.row() for p in self.points],
        }


@dataclass(frozen=True)
class PlannedPoint:
    """A grid point with the analysis config the command line built for it."""

    point: GridPoint
    command: str
    config: Any


def run(
    config: SweepConfig,
    planned: list[PlannedPoint],
    *,
    on_start: Callable[[int, int, Any], None] | None = None,
    on_point: Callable[[SweepPoint], None] | None = None,
    executor: Any = None,
) -> SweepResult:
    """Run every planned point not already in OUT/sweep.jsonl; return them all in grid order.

    on_start : called with (points to run, points already done, the executor, sweep.jsonl's path)
        before the first point runs
    on_point : called with each point as it finishes (a progress bar)
    executor : one of analyses/executors.py's (tests); default from --workers and --scheduler
    """
    start = time.perf_counter()
    # the executor first: an unreachable scheduler leaves no folder behind
    ex = executor or make_executor(config.workers, config.scheduler, timeout=config.timeout, retries=config.retries)
    try:
        folder = config.out or new_folder(Path("runs"), f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")
        log = SweepLog(folder, config.header())
    except BaseException:
        ex.close()
        raise
    try:
        done = dict(log.done)
        by_key = {p.point.key: p for p in planned}
        kept = {
            k: SweepPoint(p.point.index, k, p.point.coords, p.point.seed, p.command, _value(done[k]), resumed=True)
            for k, p in by_key.items()
            if k in done
        }
        todo = [p for p in planned if p.point.key not in kept]
        finished: dict[str, SweepPoint] = dict(kept)
        try:
            if todo:
                ex.start()
            if on_start is not None:
                on_start(len(todo), len(kept), ex, log.path)

            def on_done(key: str, value: dict) -> None:
                p = by_key[key]
                sp = SweepPoint(p.point.index, key, p.point.coords, p.point.seed, p.command, value)
                if sp.ok:  # an error is not a finished point: a rerun tries it again
                    log.write(sp.row())
                finished[key] = sp
                if on_point is not None:
                    on_point(sp)

            missing = ex.run(run_point, [(p.point.key, (config.analysis, p.config)) for p in todo], on_done)
        finally:
            ex.close()
    finally:
        log.close()
    points = tuple(sorted(finished.values(), key=lambda p: p.index))
    result = SweepResult(
        config,
        points,
        tuple(missing),
        ex.name,
        ex.workers,
        getattr(ex, "dashboard", None),
        time.perf_counter() - start,
        log.path,
    )
    if config.plots is not False and points:
        from bptt_cli.plots.sweep import sweep_plots

        result = replace(result, plots=sweep_plots(folder, result, config.metric))
    return result


def _value(row: dict) -> dict:
    """run_point's part of a sweep.jsonl line."""
    return {k: row[k] for k in ("results", "verdict", "headline", "error") if k in row}
