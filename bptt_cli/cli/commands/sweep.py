"""`bptt sweep ANALYSIS [its options] --grid NAME=VALUES ...`: one analysis over a grid, on local
workers or a Dask cluster; every point is what `bptt ANALYSIS [options] --NAME VALUE` gives."""

import shlex
from pathlib import Path
from typing import Annotated, Any

import typer

from bptt_cli import signals
from bptt_cli.analyses import sweep as analysis
from bptt_cli.analyses.grid import grid_points, parse_grid, point_args
from bptt_cli.analyses.sweep import check_size
from bptt_cli.cli.commands import compare_truncation, spectrum, trace, train
from bptt_cli.cli.options import JsonOpt, QuietOpt, a_path
from bptt_cli.cli.output import Output, exit_interrupted, handle_errors
from bptt_cli.cli.render.sweep import SweepProgress, render
from bptt_cli.core.validate import OptionError

MODULES = {"spectrum": spectrum, "trace": trace, "train": train, "compare-truncation": compare_truncation}
OWN = ("--out", "--plots", "--no-plots", "--json", "--quiet", "-q", "--resume", "--fail-on", "--help")  # not per point
CONTEXT = {"allow_extra_args": True, "ignore_unknown_options": True}
# click's exception class, reached through Typer's public BadParameter (Typer vendors click)
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _parser(name: str) -> Any:
    """The analysis command's own parser (its options, types, ranges and choices)."""
    app = typer.Typer(add_completion=False)
    app.command(name)(MODULES[name].command)
    return typer.main.get_command(app)


def _parse(cmd: Any, name: str, argv: list[str]) -> dict[str, Any]:
    try:
        with cmd.make_context(f"bptt {name}", list(argv)) as ctx:
            return dict(ctx.params)
    except _CLICK_EXCEPTION as e:
        raise OptionError(f"{name} options {shlex.join(argv)}: {e.format_message()}") from None


def plan(
    name: str, args: list[str], specs: list[str], yes: bool = False
) -> tuple[tuple, int, list[analysis.PlannedPoint]]:
    """Every point's config, built and checked by the analysis' own parser before anything runs."""
    given = [a.split("=")[0] for a in args if a.startswith("-")]
    own = sorted(set(given) & set(OWN))  # what reaches here: --fail-on, --resume (the sweep takes --out, --json, ...)
    if own:
        raise OptionError(
            f"{', '.join(own)}: not an option of a sweep's points (a point has no run folder or exit code)"
        )
    axes = parse_grid(specs)
    check_size(axes, yes)
    cmd = _parser(name)
    opts = {o: p for p in cmd.params for o in (*p.opts, *p.secondary_opts)}
    for a in axes:
        p = opts.get(f"--{a.name}")
        if p is None or f"--{a.name}" in OWN:
            names = sorted(o[2:] for o in opts if o.startswith("--") and o not in OWN)
            raise OptionError(f"`--grid {a.name}=...`: not an option of bptt {name} (one of: {', '.join(names)})")
        if getattr(p, "is_flag", False):
            raise OptionError(f"`--grid {a.name}=...`: --{a.name} is a switch; sweep options that take a value")
        if set(p.opts) & set(given):
            raise OptionError(f"--{a.name} is both an option and a grid axis; give it once")
    seed = int(_parse(cmd, name, args)["seed"])
    build = MODULES[name].make_config
    planned = []
    for point in grid_points(axes, seed):
        argv = [*args, *point_args(axes, point), *(["--no-plots"] if name == "train" else [])]
        command = shlex.join(["bptt", name, *argv])
        params = _parse(cmd, name, argv)
        try:
            config = build({**params, "command_line": command} if name == "train" else params)
        except OptionError as e:
            raise OptionError(f"point {point.key}: {e}") from None
        planned.append(analysis.PlannedPoint(point, command, config))
    return axes, seed, planned


@handle_errors("sweep")
def command(
    ctx: typer.Context,
    name: Annotated[
        str,
        typer.Argument(
            metavar="ANALYSIS",
            help=f"The analysis at every point: {', '.join(analysis.ANALYSES)}; its options follow it.",
        ),
    ],
    grid: Annotated[
        list[str],
        typer.Option(
            "--grid",
            metavar="NAME=VALUES",
            help="An axis (repeat for more; the grid is their product): an option of the analysis and its values, "
            "as a list (0.5,1,2), a range START:STOP:N (N values, both ends) or a log range START:STOP:N:log.",
        ),
    ] = [],  # noqa: B006 - Typer's way of saying "none given"
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            parser=a_path,
            metavar="PATH",
            help="The sweep's folder: sweep.jsonl (a line per finished point) and the plots; the same command with "
            "the same --out continues an interrupted sweep. [default: runs/sweep-TIME]",
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            "--workers", "-j", min=1, metavar="N", help="Worker processes (one BLAS thread each). [default: the cores]"
        ),
    ] = None,
    scheduler: Annotated[
        str | None,
        typer.Option(
            "--scheduler",
            metavar="ADDRESS",
            help="Run on Dask: tcp://HOST:PORT of a running scheduler, or local (a LocalCluster of --workers "
            "processes, its dashboard address printed). Needs the cluster extra (pip install -e '.[cluster]').",
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", metavar="SECONDS", help="How long to wait for the Dask scheduler.")
    ] = 10.0,
    retries: Annotated[
        int, typer.Option("--retries", min=0, metavar="N", help="Reruns of a point whose worker was lost.")
    ] = 2,
    yes: Annotated[bool, typer.Option("--yes", help=f"Run a grid of more than {analysis.BIG_GRID} points.")] = False,
    plots: Annotated[
        bool | None, typer.Option("--plots/--no-plots", help="The phase diagram and the lines. [default: plots]")
    ] = None,
    metric: Annotated[
        str | None,
        typer.Option("--metric", metavar="NAME", help="What the phase diagram colours: lyapunov, gain, horizon, ..."),
    ] = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Run one analysis (spectrum, trace, train, compare-truncation) at every point of a grid of its
    options, on local worker processes or a Dask cluster: each point's verdict and numbers, the
    mean-field theory beside them, and a phase diagram. Every option not listed here goes to the
    analysis, for every point (see bptt ANALYSIS --help). Example: bptt sweep spectrum --hidden 256
    --input-scale 0.01 --grid spectral-radius=0.5:3:11."""
    if name not in analysis.ANALYSES:
        raise OptionError(f"ANALYSIS must be one of {', '.join(analysis.ANALYSES)}; got {name!r}")
    axes, seed, planned = plan(name, list(ctx.args), grid, yes)
    n = workers or analysis.default_workers()
    config = analysis.SweepConfig(
        name, tuple(ctx.args), axes, seed, out, n, scheduler, timeout, retries, yes, plots, metric
    )
    o = Output(json, quiet, "sweep")
    progress = SweepProgress(o)
    try:
        result = analysis.run(config, planned, on_start=progress.start, on_point=progress.update)
    except KeyboardInterrupt as e:
        progress.stop()
        if progress.log is None:
            o.notice("interrupted before any point ran; nothing was written")
            exit_interrupted(signals.exit_code(e))
        o.notice(
            f"interrupted: every finished point is kept in {progress.log} ({progress.finished} from this run); "
            f"continue with the same command{'' if out else f' and --out {progress.log.parent}'}"
        )
        exit_interrupted(signals.exit_code(e))
    progress.stop()
    render(o, result)
    o.emit(config.as_dict(), result.results())
    if result.failed or result.missing:
        raise typer.Exit(1)
