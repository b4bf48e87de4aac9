"""`bptt paths`: the notes' worked example, 55 path walks against 10 recursion steps."""

from typing import Annotated

import typer

from bptt_cli.analyses import paths as analysis
from bptt_cli.analyses.common import config_dict
from bptt_cli.cli.options import (
    BatchOpt,
    HiddenOpt,
    InputOpt,
    JsonOpt,
    OutOpt,
    PlotsOpt,
    QuietOpt,
    SeedOpt,
    SeqLenOpt,
    config_from,
)
from bptt_cli.cli.output import Output, handle_errors
from bptt_cli.cli.render.paths import render
from bptt_cli.core.validate import OptionError

D = analysis.PathsConfig


def parse_lengths(text: str | None) -> tuple[int, ...]:
    """'25,50,100' -> (25, 50, 100)."""
    if text is None:
        return ()
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise OptionError(f"`--lengths` takes comma-separated integers like 25,50,100; got {text!r}") from None


@handle_errors("paths")
def command(
    seq_len: SeqLenOpt = D.seq_len,
    hidden: HiddenOpt = D.hidden,
    input: InputOpt = D.input,
    batch: BatchOpt = D.batch,
    spectral_radius: Annotated[
        float, typer.Option("--spectral-radius", metavar="X", help="Spectral radius of W_h (>= 0).")
    ] = D.spectral_radius,
    lengths: Annotated[
        str | None,
        typer.Option(
            "--lengths",
            metavar="TEXT",
            help="Also time both methods at these T (e.g. 25,50,100,200,400) and fit each one's scaling "
            "exponent (the log-log plot goes to --out).",
        ),
    ] = None,
    repeats: Annotated[
        int, typer.Option("--repeats", min=1, metavar="N", help="Timing repeats per length (median).")
    ] = D.repeats,
    seed: SeedOpt = D.seed,
    out: OutOpt = None,
    plots: PlotsOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """The notes' worked example: a linear RNN h_t = W_h h_(t-1) + W_x x_t with l_t = 1/2 ||h_t||^2.

    The naive method walks all T(T+1)/2 loss-to-state paths (55 for T = 10); BPTT's recursion
    takes T steps and gives the same gradients to rounding error.
    """
    config = config_from(D, locals(), lengths=parse_lengths(lengths))
    result = analysis.run(config)
    o = Output(json, quiet, "paths")
    render(o, result)
    o.emit(config_dict(config), result.results())
