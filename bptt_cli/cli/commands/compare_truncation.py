"""`bptt compare-truncation`: bias, spread and cost of full, regular and randomized truncation,
and what each does to training (or, with --task influence, to the sign of the gradient)."""

from typing import Annotated

import typer

from bptt_cli.analyses import truncation as analysis
from bptt_cli.analyses.common import config_dict
from bptt_cli.cli.options import (
    Activation,
    ActivationOpt,
    AlphabetOpt,
    BatchOpt,
    ClipOpt,
    CompareTask,
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
    ModelOpt,
    Optimizer,
    OptimizerOpt,
    OutOpt,
    PlotsOpt,
    QuietOpt,
    SeedOpt,
    SpectralRadiusOpt,
    StepsOpt,
    VerdictTolOpt,
    choice,
    config_from,
    parse_fail_on,
)
from bptt_cli.cli.output import Output, exit_for, handle_errors
from bptt_cli.cli.render.truncation import render
from bptt_cli.core.truncation import SPEC_FORMS

D = analysis.CompareConfig


def make_config(params: dict) -> "analysis.CompareConfig":
    """The analysis' config from the command's parameters (also each point of `bptt sweep compare-truncation`)."""
    return config_from(D, params, strategies=tuple(s.strip() for s in params["strategies"].split(",")))


@handle_errors("compare-truncation")
def command(
    strategies: Annotated[
        str, typer.Option("--strategies", "-s", metavar="TEXT", help=f"Comma-separated truncation specs: {SPEC_FORMS}.")
    ] = ",".join(D.strategies),
    task: Annotated[
        CompareTask,
        choice(
            "--task",
            CompareTask,
            "An RNN task, or influence (Tallec & Ollivier's linear system; the network options do not apply)",
        ),
    ] = CompareTask(D.task),
    seq_len: Annotated[
        int | None,
        typer.Option(
            "--seq-len",
            "-T",
            min=1,
            metavar="N",
            help="Sequence length T. [default: recall 30, influence 200, others 50]",
        ),
    ] = None,
    delay: DelayOpt = D.delay,
    alphabet: AlphabetOpt = D.alphabet,
    batch: BatchOpt = D.batch,
    model: ModelOpt = None,
    hidden: HiddenOpt = D.hidden,
    init: InitOpt = Init(D.init),
    spectral_radius: SpectralRadiusOpt = None,
    activation: ActivationOpt = Activation(D.activation),
    dtype: DtypeOpt = Dtype(D.dtype),
    samples: Annotated[
        int,
        typer.Option(
            "--samples", "-n", metavar="N", help="Draws per random strategy (at least 2; 1 will do without one)."
        ),
    ] = D.samples,
    steps: StepsOpt = D.steps,
    optimizer: OptimizerOpt = Optimizer(D.optimizer),
    lr: Annotated[
        float | None, typer.Option("--lr", metavar="X", help="Learning rate (> 0). [default: 0.003, influence 0.01]")
    ] = None,
    clip: ClipOpt = None,
    target: Annotated[
        float | None,
        typer.Option(
            "--target",
            metavar="X",
            help="Steps to reach it. [default: recall accuracy 0.9, adding/sine mse 0.05, influence 0.01]",
        ),
    ] = None,
    log_every: LogEveryOpt = D.log_every,
    verdict_tol: VerdictTolOpt = D.verdict_tol,
    eps: EpsOpt = D.eps,
    fail_on: FailOnOpt = None,
    seed: SeedOpt = D.seed,
    out: OutOpt = None,
    plots: PlotsOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compare full BPTT, regular truncation (chunk:K) and randomized truncation (random:P): each
    estimator's bias against the full gradient (with its standard error), its cosine, spread and
    share of backward work at one parameter point, then training with each. --task influence
    shows the influence-balancing problem, where short truncation gets the sign of the gradient
    wrong."""
    labels = parse_fail_on(fail_on)
    config = make_config(locals())
    result = analysis.run(config)
    o = Output(json, quiet, "compare-truncation")
    render(o, result)
    o.emit({**config_dict(config), "fail_on": list(labels)}, result.results(), result.verdict.as_dict())
    exit_for(result.verdict.label, labels)
