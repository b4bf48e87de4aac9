"""`bptt train`: train a small RNN on a built-in task or a text file, watch its gradients while it
learns, and say whether training explodes, vanishes or stays healthy."""

import shlex
import signal
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from bptt_cli.analyses import train as analysis
from bptt_cli.cli.options import (
    Activation,
    ActivationOpt,
    AlphabetOpt,
    CellKind,
    ClipOpt,
    DelayOpt,
    Dtype,
    DtypeOpt,
    EpsOpt,
    FailOnOpt,
    HiddenOpt,
    Init,
    InitOpt,
    JsonOpt,
    LogEveryOpt,
    LrOpt,
    Optimizer,
    OptimizerOpt,
    QuietOpt,
    Sampling,
    SeedOpt,
    SpectralRadiusOpt,
    TextClean,
    TextCleanOpt,
    TextOpt,
    TrainTask,
    TruncationOpt,
    VerdictTolOpt,
    a_path,
    choice,
    config_from,
    parse_fail_on,
    plain,
)
from bptt_cli.cli.output import EXIT_INTERRUPTED, EXIT_TERMINATED, Output, exit_for, exit_interrupted, handle_errors
from bptt_cli.cli.render.train import TrainProgress, render
from bptt_cli.signals import Terminated

D = analysis.TrainConfig


class StopFlag:
    """While training: the first Ctrl-C or SIGTERM asks the run to stop after the current step
    (it is then saved); a second one stops it at once (the last checkpoint is kept)."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def __call__(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return EXIT_TERMINATED if self.signum == signal.SIGTERM else EXIT_INTERRUPTED

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:
            raise Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        self.signum = signum

    def __enter__(self) -> "StopFlag":
        for sig in self.SIGNALS:
            try:
                if signal.getsignal(sig) is signal.SIG_IGN:
                    continue  # ignored by whoever started us (nohup, a background job): keep it so
                self._previous[sig] = signal.signal(sig, self._handle)
            except (ValueError, OSError):  # not the main thread: signals keep their meaning
                pass
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def command_line(ctx: typer.Context) -> str:
    """The command as typed (when run as a program), else the options given, canonically."""
    if Path(sys.argv[0]).name in ("bptt", "__main__.py") and sys.argv[1:2] == ["train"]:
        return shlex.join(["bptt", *sys.argv[1:]])
    words = ["bptt", "train"]
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name).name != "COMMANDLINE":
            continue
        value, flag = ctx.params[param.name], max(param.opts, key=len)
        if isinstance(value, bool):
            words += [flag if value else (param.secondary_opts or [flag])[0]]
        else:
            words += [flag, str(plain(value))]
    return shlex.join(words)


def given_options(ctx: typer.Context) -> dict[str, Any]:
    """The options typed on the command line (not their defaults), as the config takes them."""
    return {k: plain(v) for k, v in ctx.params.items() if ctx.get_parameter_source(k).name == "COMMANDLINE"}


def make_config(params: dict) -> "analysis.TrainConfig":
    """A new run's config from the command's parameters and its `command_line` (also each point of
    `bptt sweep train`)."""
    return config_from(D, params, fail_on=parse_fail_on(params.get("fail_on")))


@handle_errors("train")
def command(
    ctx: typer.Context,
    task: Annotated[TrainTask, choice("--task", TrainTask, "What to learn")] = TrainTask(D.task),
    text: TextOpt = None,
    text_clean: TextCleanOpt = TextClean(D.text_clean),
    sampling: Annotated[
        Sampling, choice("--sampling", Sampling, "text: partitioning (the state carried) or random windows")
    ] = Sampling(D.sampling),
    sample_len: Annotated[
        int, typer.Option("--sample-len", min=0, metavar="N", help="text: characters to generate at the end.")
    ] = D.sample_len,
    prime: Annotated[
        str, typer.Option("--prime", metavar="TEXT", help="text: the start of the generated sample.")
    ] = D.prime,
    delay: DelayOpt = D.delay,
    alphabet: AlphabetOpt = D.alphabet,
    truncation: TruncationOpt = D.truncation,
    optimizer: OptimizerOpt = Optimizer(D.optimizer),
    lr: LrOpt = D.lr,
    clip: ClipOpt = None,
    clip_value: Annotated[
        float | None,
        typer.Option("--clip-value", metavar="X", help="Element-wise clipping into [-v, v], v > 0. [default: off]"),
    ] = None,
    init: InitOpt = Init(D.init),
    spectral_radius: SpectralRadiusOpt = None,
    activation: ActivationOpt = Activation(D.activation),
    hidden: HiddenOpt = D.hidden,
    seq_len: Annotated[
        int | None,
        typer.Option("--seq-len", "-T", min=1, metavar="N", help="Sequence length T. [default: recall 30, others 50]"),
    ] = None,
    batch: Annotated[int, typer.Option("--batch", "-B", min=1, metavar="N", help="Batch size B.")] = D.batch,
    steps: Annotated[
        int | None,
        typer.Option(
            "--steps", min=1, metavar="N", help=f"Training steps in total. [default: {analysis.DEFAULT_STEPS}]"
        ),
    ] = None,
    epochs: Annotated[
        float | None,
        typer.Option("--epochs", metavar="X", help="text: passes over the training text, instead of --steps."),
    ] = None,
    dtype: DtypeOpt = Dtype(D.dtype),
    log_every: LogEveryOpt = D.log_every,
    verdict_tol: VerdictTolOpt = D.verdict_tol,
    eps: EpsOpt = D.eps,
    fail_on: FailOnOpt = None,
    seed: SeedOpt = D.seed,
    out: Annotated[
        Path | None,
        typer.Option("--out", parser=a_path, metavar="PATH", help="The run folder. [default: runs/train-TIME]"),
    ] = None,
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume", parser=a_path, metavar="PATH", help="Continue the run in this folder (or its model.npz)."
        ),
    ] = None,
    cell: Annotated[
        CellKind, choice("--cell", CellKind, "The recurrent cell (PyTorch's equations for gru and lstm)")
    ] = CellKind(D.cell),
    layers: Annotated[int, typer.Option("--layers", min=1, metavar="N", help="Stacked layers of the cell.")] = D.layers,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the figures into the run folder.")] = D.plots,
    checkpoint_every: Annotated[
        str,
        typer.Option(
            "--checkpoint-every",
            metavar="N|TIME",
            help="Save the checkpoint every N steps or every TIME of wall clock (30s, 5m, 1h), so that a "
            "killed run resumes from there.",
        ),
    ] = D.checkpoint_every,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a vanilla RNN (from scratch, numpy) and watch its gradients: loss, task metric,
    gradient norm, rho(W_h) and how much of the last loss's signal reaches the first step.
    Ends with a verdict (exploding / vanishing / stable / diverged) and its evidence, and keeps
    the run: a checkpoint, metrics.jsonl, summary.json and plots."""
    line = command_line(ctx)
    given = {**given_options(ctx), "command_line": line}
    if "fail_on" in given:
        given["fail_on"] = parse_fail_on(fail_on)
    checkpoint = None
    if resume is not None:
        config, checkpoint = D.resumed(resume, given)
    else:
        config = make_config({**locals(), "command_line": line})
    o = Output(json, quiet, "train")
    progress = TrainProgress(o)
    with StopFlag() as stop:
        try:
            result = analysis.run(
                config, checkpoint=checkpoint, on_row=progress.update, on_start=progress.start, should_stop=stop
            )
        finally:
            progress.stop()
    render(o, result)
    doc = result.document()
    o.emit(doc["config"], doc["results"], doc["verdict"])
    if result.fit.stopped:  # everything is saved, but the run did not finish
        folder = shlex.quote(str(result.folder))
        o.notice(
            f"interrupted at step {result.fit.state.step} of {result.total_steps}: the run is saved in "
            f"{result.folder}/ (model.npz, metrics.jsonl, summary.json); continue with: bptt train --resume {folder}"
        )
        exit_interrupted(stop.exit_code)
    exit_for(result.verdict.label, result.config.fail_on)
