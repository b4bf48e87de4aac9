"""`export`: a bptt model written out as a PyTorch state dict (or an .npz with the same keys).

The file loads, strictly, into

    model = nn.ModuleDict({"rnn": nn.RNN(D, H, ...), "head": nn.Linear(H, V)})

(nn.GRU / nn.LSTM for those kinds, num_layers and bias as the model has them) once its one
extra entry, bptt_meta (bptt's record of the nonlinearity and the sizes), is left out; the
result carries the two lines that do it (io/torch_state.py has the format). bptt's vanilla RNN
(W_x, W_h, b, W_y, c) becomes a 1-layer nn.RNN with bias_ih = b and bias_hh = 0: PyTorch adds
both biases, so its h_t is bptt's.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bptt_cli.core.activations import NAMES as ACTIVATIONS
from bptt_cli.core.net import NetParams, check_net_params
from bptt_cli.core.rnn import Params
from bptt_cli.core.validate import DTYPES, OptionError, check_choice, options
from bptt_cli.io.checkpoint import load_checkpoint
from bptt_cli.io.models import MODEL_FILE
from bptt_cli.io.torch_state import (
    FORMATS,
    HEAD_MODULE,
    META_KEY,
    NONLINEARITIES,
    RNN_MODULE,
    TORCH_CLASS,
    check_target,
    export_state_dict,
    format_of,
    torch_lines,
    vanilla_as_net,
    write_state_dict,
)

MODEL_ARG = "RUN_OR_CHECKPOINT"  # how the messages name the positional argument (its metavar)


@dataclass(frozen=True)
class ExportConfig:
    """The command's options.

    model : a run folder (its model.npz) or a bptt checkpoint
    to : the file to write; never overwritten
    format : 'pt' | 'npz'; None: npz for a name ending in .npz, else pt
    activation : an RNN's nonlinearity; None: the checkpoint's, else tanh
    dtype : 'float64' | 'float32'; None: the model's
    """

    model: Path
    to: Path
    format: str | None = None
    activation: str | None = None
    dtype: str | None = None

    def __post_init__(self) -> None:
        with options():
            if self.format is not None:
                check_choice("--format", self.format, FORMATS)
            if self.activation is not None:
                check_choice("--activation", self.activation, ACTIVATIONS)
            if self.dtype is not None:
                check_choice("--dtype", self.dtype, tuple(DTYPES))


@dataclass(frozen=True)
class ExportResult:
    """What was written.

    path, format : the file and its format ('pt' | 'npz')
    params : the network as written (PyTorch's layout, in the file's dtype)
    activation : the nn.RNN's nonlinearity (None for gru and lstm)
    activation_from : 'option' | 'checkpoint' | 'default' | 'caller' (None for gru and lstm)
    keys : the state dict's keys, bptt_meta last
    pytorch : the two lines of PyTorch that rebuild the model and load the file
    source : what was exported ('checkpoint PATH', or 'parameters')
    notes : what the user should know (an activation bptt chose)
    """

    path: Path
    format: str
    params: NetParams
    activation: str | None
    activation_from: str | None
    keys: tuple[str, ...]
    pytorch: tuple[str, ...]
    source: str
    notes: tuple[str, ...] = ()

    def results(self) -> dict[str, Any]:
        p = self.params
        return {
            "file": str(self.path),
            "format": self.format,
            "source": self.source,
            "network": {
                "kind": p.kind,
                "torch_class": TORCH_CLASS[p.kind],
                "nonlinearity": self.activation,
                "nonlinearity_from": self.activation_from,
                "num_layers": p.num_layers,
                "bias": p.bias,
                "input_size": p.input_size,
                "hidden_size": p.hidden_size,
                "output_size": p.output_size,
                "dtype": str(p.dtype),
            },
            "modules": {"rnn": RNN_MODULE, "head": HEAD_MODULE if p.output_size else None},
            "meta_key": META_KEY,
            "keys": list(self.keys),
            "pytorch": list(self.pytorch),
        }


def export_network(
    params: Params | NetParams,
    activation: str | None,
    to: str | Path,
    *,
    fmt: str | None = None,
    dtype: str | None = None,
    activation_from: str = "caller",
    source: str = "parameters",
    option: str = "--to",
) -> ExportResult:
    """Write `params` as a state dict PyTorch loads strictly (module docstring).

    Parameters
    ----------
    params : Params | NetParams
        bptt's vanilla RNN (exported as a 1-layer nn.RNN, bias_hh = 0) or a stacked network,
        exported layer by layer as it is.
    activation : str or None
        The nn.RNN's nonlinearity, tanh or relu; None for a gru or lstm.
    to : path
        The file to write; refused when it exists or its folder does not.
    fmt : 'pt' | 'npz', optional
        Default: npz for a name ending in .npz, else pt (torch.save, which needs torch).
    dtype : 'float64' | 'float32', optional
        The tensors' type; default the model's.
    activation_from, source, option
        How the result and the messages name where the activation and the model came from, and
        the option that gave `to`.

    Returns
    -------
    ExportResult

    Raises
    ------
    ValueError
        One line naming the option or the file: an existing target, an activation nn.RNN does
        not have (identity), invalid parameters, torch missing for a .pt file.
    """
    to = Path(to)
    net = vanilla_as_net(params) if isinstance(params, Params) else check_net_params(params)
    if dtype is not None:
        net = net.astype(DTYPES[check_choice("--dtype", dtype, tuple(DTYPES))])
    fmt = format_of(to, fmt)
    check_target(to, option)
    if net.kind != "rnn":
        activation, activation_from = None, None
    arrays = export_state_dict(net, activation)
    path = write_state_dict(to, arrays, fmt, option)
    return ExportResult(
        path=path,
        format=fmt,
        params=net,
        activation=activation,
        activation_from=activation_from if net.kind == "rnn" else None,
        keys=tuple(arrays),
        pytorch=torch_lines(net, activation, path, fmt),
        source=source,
    )


def saved_activation(config: dict[str, Any]) -> str | None:
    """The activation a checkpoint was made with (`bptt train` keeps its options under "options")."""
    options_ = config.get("options") if isinstance(config.get("options"), dict) else config
    value = options_.get("activation")
    return value if isinstance(value, str) else None


def run(config: ExportConfig) -> ExportResult:
    """Read the checkpoint (or the run folder's model.npz) and export it (`export_network`)."""
    path = Path(config.model)
    if path.is_dir():
        if not (path / MODEL_FILE).is_file():
            raise ValueError(f"{MODEL_ARG} {path}: a folder without {MODEL_FILE} (not a bptt run folder)")
        path = path / MODEL_FILE
    fmt = format_of(config.to, config.format)
    check_target(Path(config.to))  # before reading anything: the cheap refusal first
    ckpt = load_checkpoint(path, option=MODEL_ARG)
    params = ckpt.params
    kind = params.kind if isinstance(params, NetParams) else "rnn"
    saved = saved_activation(ckpt.config)
    notes: list[str] = []
    if kind != "rnn":
        if config.activation is not None:
            raise OptionError(
                f"`--activation` applies to an RNN; {MODEL_ARG} {path} holds a {kind}, whose nonlinearities are fixed"
            )
        activation, source = None, None
    elif config.activation is not None:
        activation, source = config.activation, "option"
    elif saved is not None:
        activation, source = saved, "checkpoint"
    else:
        activation, source = "tanh", "default"
        notes.append("the checkpoint records no activation: exported as tanh (choose with --activation)")
    if kind == "rnn" and activation not in NONLINEARITIES:
        named = (
            f"--activation {activation}" if source == "option" else f"{MODEL_ARG} {path}: its activation {activation}"
        )
        raise ValueError(f"{named}: nn.RNN's nonlinearity is tanh or relu, so PyTorch has no module for this network")
    result = export_network(
        params,
        activation,
        config.to,
        fmt=fmt,
        dtype=config.dtype,
        activation_from=source or "",
        source=f"checkpoint {path}",
    )
    return replace(result, notes=tuple(notes))


def tensors(result: ExportResult) -> int:
    """How many of the file's entries are the model's tensors (bptt_meta aside)."""
    return len([k for k in result.keys if k != META_KEY])
