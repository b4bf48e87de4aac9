"""`bptt export`: a bptt model as a PyTorch state dict (nn.RNN / nn.GRU / nn.LSTM + nn.Linear)."""

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from bptt_cli.analyses import export as analysis
from bptt_cli.analyses.common import config_dict
from bptt_cli.cli.options import (
    AnalysedActivationOpt,
    Dtype,
    JsonOpt,
    QuietOpt,
    a_path,
    choice,
    config_from,
)
from bptt_cli.cli.output import Output, handle_errors
from bptt_cli.io.torch_state import FORMATS, META_KEY, TORCH_CLASS

Format = Enum("Format", {v: v for v in FORMATS}, type=str)  # type: ignore[misc]


@handle_errors("export")
def command(
    model: Annotated[
        Path,
        typer.Argument(
            metavar=analysis.MODEL_ARG,
            parser=a_path,
            help="A bptt run folder (its model.npz) or a bptt checkpoint.",
            show_default=False,
        ),
    ],
    to: Annotated[
        Path,
        typer.Option(
            "--to",
            parser=a_path,
            metavar="PATH",
            help="The file to write (never overwritten): model.pt, or model.npz for numpy.",
            show_default=False,
        ),
    ],
    format: Annotated[
        Format | None,
        choice("--format", Format, "The file's format", "[default: npz for a name ending in .npz, else pt]"),
    ] = None,
    activation: AnalysedActivationOpt = None,
    dtype: Annotated[
        Dtype | None, choice("--dtype", Dtype, "Floating-point type of the tensors", "[default: the model's]")
    ] = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Write a bptt model as a PyTorch state dict: the keys of
    nn.ModuleDict({"rnn": nn.RNN(D, H, ...), "head": nn.Linear(H, V)}) (nn.GRU or nn.LSTM for
    those; num_layers and bias as the model has them) and one entry bptt_meta, the nonlinearity
    and the sizes, which bptt reads back (--model FILE). PyTorch loads the file strictly without
    that entry; the command prints the two lines that rebuild the model and load it:

    model.load_state_dict({k: v for k, v in torch.load(FILE, weights_only=True).items() if k != "bptt_meta"})

    bptt's vanilla RNN becomes a 1-layer nn.RNN with bias_ih = b and bias_hh = 0."""
    config = config_from(analysis.ExportConfig, locals())
    result = analysis.run(config)
    o = Output(json, quiet, "export")
    render(o, result)
    o.emit(config_dict(config), result.results())


def render(o: Output, result: analysis.ExportResult) -> None:
    """What was written, and the PyTorch that loads it (printed whole, to be copied)."""
    p = result.params
    act = f"{result.activation}, " if result.activation else ""
    o.show(
        f"exported a {p.num_layers}-layer {TORCH_CLASS[p.kind]} ({act}D = {p.input_size}, H = {p.hidden_size}, "
        f"V = {p.output_size}{'' if p.bias else ', no bias'}, {p.dtype}): {analysis.tensors(result)} tensors "
        f"and {META_KEY}, bptt's record of the model"
    )
    o.line(f"from: {result.source}")
    o.line(f"wrote: {result.path}")
    for note in result.notes:
        o.note(note)
    o.show("in PyTorch (the load is strict; the comprehension leaves bptt_meta out):")
    o.line("  import torch" + ("; import numpy as np" if result.format == "npz" else ""))
    o.line("  from torch import nn")
    for line in result.pytorch:
        o.line(f"  {line}")
    call = "model.head(model.rnn(x)[0])" if p.output_size else "model.rnn(x)[0]"
    o.line(f"  y = {call}  # x: (T, B, D), time first, as in bptt")
