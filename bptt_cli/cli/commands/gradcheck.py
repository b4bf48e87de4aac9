"""`bptt gradcheck`: a random small RNN, its gradients checked three ways."""

from typing import Annotated

import typer

from bptt_cli.analyses import gradcheck as analysis
from bptt_cli.analyses.common import config_dict
from bptt_cli.cli.options import (
    Activation,
    ActivationOpt,
    BatchOpt,
    Dtype,
    DtypeOpt,
    HiddenOpt,
    InputOpt,
    JsonOpt,
    Loss,
    LossOpt,
    OutputOpt,
    QuietOpt,
    SeedOpt,
    SeqLenOpt,
    config_from,
)
from bptt_cli.cli.output import EXIT_GRADCHECK, Output, handle_errors
from bptt_cli.cli.render.gradcheck import render

D = analysis.GradcheckConfig


@handle_errors("gradcheck")
def command(
    seq_len: SeqLenOpt = D.seq_len,
    batch: BatchOpt = D.batch,
    input: InputOpt = D.input,
    hidden: HiddenOpt = D.hidden,
    output: OutputOpt = D.output,
    activation: ActivationOpt = Activation(D.activation),
    loss: LossOpt = Loss(D.loss),
    dtype: DtypeOpt = Dtype(D.dtype),
    mask: Annotated[bool, typer.Option("--mask/--no-mask", help="Score a random half of the steps only.")] = D.mask,
    coords: Annotated[
        int, typer.Option("--coords", min=1, metavar="N", help="Coordinates per parameter for finite differences.")
    ] = D.coords,
    fd_step: Annotated[
        float, typer.Option("--fd-step", metavar="X", help="Central finite-difference step (> 0).")
    ] = D.fd_step,
    seed: SeedOpt = D.seed,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Check BPTT on a random small RNN three ways: efficient vs finite differences, naive vs
    finite differences, efficient vs naive. Exit code 4 if any relative error exceeds its
    tolerance."""
    config = config_from(D, locals())
    result = analysis.run(config)
    o = Output(json, quiet, "gradcheck")
    render(o, result)
    o.emit(config_dict(config), result.results())
    if not result.passed:
        raise typer.Exit(EXIT_GRADCHECK)
