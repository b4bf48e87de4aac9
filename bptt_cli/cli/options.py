"""Every option of the command line, once: one name, one meaning and one default everywhere.

The choices come from the core and analyses constants and the defaults from the analyses'
config dataclasses, so the help cannot drift from what is validated. Ranges that Typer checks
itself (`min=`) show in --help as [x>=1]; the other rules are stated in the help text and
checked by the configs (a usage error, exit code 2).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from bptt_cli.analyses.source import DATA_TASKS
from bptt_cli.analyses.tasks import SAMPLINGS, TASKS
from bptt_cli.analyses.text import CLEANINGS
from bptt_cli.analyses.training.optim import OPTIMIZERS
from bptt_cli.core.activations import NAMES as ACTIVATION_NAMES
from bptt_cli.core.eigen import METHODS, REFERENCES
from bptt_cli.core.losses import LOSSES
from bptt_cli.core.net import KINDS
from bptt_cli.core.rnn import INITS
from bptt_cli.core.signal import JACOBIAN_MODES
from bptt_cli.core.truncation import SPEC_FORMS
from bptt_cli.core.validate import DTYPES, OptionError
from bptt_cli.core.verdict import LABELS


def _choices(name: str, values: tuple[str, ...] | list[str]) -> type[Enum]:
    return Enum(name, {v.replace("-", "_"): v for v in values}, type=str)  # type: ignore[return-value]


def one_of(choices: type[Enum]) -> str:
    """The choices in words for a help text (they wrap between words at any width)."""
    values = [m.value for m in choices]  # type: ignore[attr-defined]
    return ", ".join(values[:-1]) + f" or {values[-1]}" if len(values) > 1 else values[0]


def choice(flag: str, enum: type[Enum], text: str, default: str = "") -> Any:
    """A choice option: metavar NAME and the choices in the help text, so that --help never breaks
    one of them in the middle (Typer's [a|b|c] metavar does, in a narrow column)."""
    return typer.Option(flag, metavar="NAME", help=f"{text}: {one_of(enum)}.{' ' + default if default else ''}")


Activation = _choices("Activation", ACTIVATION_NAMES)
Loss = _choices("Loss", LOSSES)
Init = _choices("Init", INITS)
Dtype = _choices("Dtype", tuple(DTYPES))
DataTask = _choices("DataTask", DATA_TASKS)
TrainTask = _choices("TrainTask", TASKS)
Sampling = _choices("Sampling", SAMPLINGS)
Optimizer = _choices("Optimizer", OPTIMIZERS)
Method = _choices("Method", METHODS)
Reference = _choices("Reference", (*REFERENCES, "none"))
Jacobian = _choices("Jacobian", JACOBIAN_MODES)
SignalChoice = _choices("SignalChoice", ("last", "all"))
CompareTask = _choices("CompareTask", ("recall", "adding", "sine", "influence"))
TextClean = _choices("TextClean", CLEANINGS)
CellKind = _choices("CellKind", KINDS)


def a_path(text: str) -> Path:
    """A PATH option's value: an empty one is refused (Path('') would be the current folder)."""
    if not text:
        raise typer.BadParameter("an empty path; name a file or folder (use . for the current folder)")
    return Path(text)


# ---------------------------------------------------------------- every command

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout; tables go to stderr.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No tables, progress or warnings.")]
SeedOpt = Annotated[
    int, typer.Option("--seed", min=0, metavar="N", help="Seed of the random generator: same seed, same numbers.")
]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", parser=a_path, metavar="PATH", help="Folder for the plots and files.", show_default=False),
]
PlotsOpt = Annotated[
    bool | None,
    typer.Option("--plots/--no-plots", help="Write the plots into --out. [default: plots when --out is given]"),
]
FailOnOpt = Annotated[
    str | None,
    typer.Option(
        "--fail-on",
        metavar="LABELS",
        help=f"Exit with code 3 when the verdict is one of these (comma-separated: {', '.join(LABELS)}).",
    ),
]

# ---------------------------------------------------------------- the network

ModelOpt = Annotated[
    Path | None,
    typer.Option(
        "--model",
        parser=a_path,
        metavar="PATH",
        help="The model to analyse: a bptt checkpoint or run folder, or a matrix file "
        "(.npy, .npz, PyTorch .pt/.pth) whose W_h gets a random input and output layer.",
        show_default=False,
    ),
]
KeyOpt = Annotated[
    str | None,
    typer.Option(
        "--key",
        metavar="NAME",
        help="In --model's file: the recurrent module's prefix (rnn, encoder.lstm) when it holds several, or "
        "one array's name to read as the matrix W_h.",
    ),
]
HeadOpt = Annotated[
    str | None,
    typer.Option(
        "--head",
        metavar="PREFIX",
        help="The nn.Linear output layer in --model's state dict (default: found by its shape).",
    ),
]
HiddenOpt = Annotated[int, typer.Option("--hidden", "-H", min=1, metavar="N", help="Hidden size H of a fresh network.")]
InitOpt = Annotated[Init, choice("--init", Init, "Initialiser of W_h of a fresh network")]
SpectralRadiusOpt = Annotated[
    float | None,
    typer.Option("--spectral-radius", metavar="X", help="Rescale W_h to exactly this spectral radius (>= 0)."),
]
ActivationOpt = Annotated[Activation, choice("--activation", Activation, "Hidden activation f")]
AnalysedActivationOpt = Annotated[
    Activation | None,
    choice("--activation", Activation, "Hidden activation f", "[default: the checkpoint's, else tanh]"),
]
DtypeOpt = Annotated[Dtype, choice("--dtype", Dtype, "Floating-point type of the computation")]
InputOpt = Annotated[int, typer.Option("--input", "-D", min=1, metavar="N", help="Input size D of a fresh network.")]
OutputOpt = Annotated[int, typer.Option("--output", "-V", min=1, metavar="N", help="Output size V (classes for xent).")]
LossOpt = Annotated[Loss, choice("--loss", Loss, "Per-step loss")]
AnalysedLossOpt = Annotated[Loss | None, choice("--loss", Loss, "Per-step loss", "[default: the task's, else xent]")]

# ---------------------------------------------------------------- the data

SeqLenOpt = Annotated[int, typer.Option("--seq-len", "-T", min=1, metavar="N", help="Sequence length T.")]
DataSeqLenOpt = Annotated[
    int | None,
    typer.Option(
        "--seq-len", "-T", min=1, metavar="N", help="Sequence length T. [default: the task's or the file's, else 200]"
    ),
]
BatchOpt = Annotated[int, typer.Option("--batch", "-B", min=1, metavar="N", help="Batch size B.")]
DataBatchOpt = Annotated[
    int | None, typer.Option("--batch", "-B", min=1, metavar="N", help="Batch size B. [default: the file's, else 32]")
]
DataTaskOpt = Annotated[
    DataTask | None,
    choice(
        "--task",
        DataTask,
        "The inputs: random N(0, s^2), or a held-out batch of a task",
        "[default: the checkpoint's, else random]",
    ),
]
TextOpt = Annotated[
    Path | None,
    typer.Option(
        "--text", parser=a_path, metavar="PATH", help="The UTF-8 text file of --task text.", show_default=False
    ),
]
TextCleanOpt = Annotated[
    TextClean,
    choice(
        "--text-clean",
        TextClean,
        "text: the file as it is, or as d2l prepares it (lowercase, each run of non-letters one space)",
    ),
]
InputScaleOpt = Annotated[
    float,
    typer.Option(
        "--input-scale", metavar="X", help="Std s of random N(0, s^2) inputs (>= 0; large values saturate tanh)."
    ),
]
InputsOpt = Annotated[
    Path | None,
    typer.Option(
        "--inputs",
        parser=a_path,
        metavar="PATH",
        help="Your inputs, a .npy file (T, B, D) or (T, D): T, B and D come from it, every sequence is used.",
        show_default=False,
    ),
]
TargetsOpt = Annotated[
    Path | None,
    typer.Option(
        "--targets",
        parser=a_path,
        metavar="PATH",
        help="The targets of --inputs, a .npy file: integer classes (T, B) for xent, floats (T, B, V) for mse. "
        "[default: none; the loss is then 1/2 ||h_t||^2 of the states]",
        show_default=False,
    ),
]
SpanOpt = Annotated[
    int | None,
    typer.Option(
        "--span",
        min=1,
        metavar="N",
        help="How many steps back your --targets depend on your --inputs: the verdict judges the last "
        "loss's signal there (as a task's span) instead of over the whole sequence.",
    ),
]
BatchFirstOpt = Annotated[
    bool,
    typer.Option("--batch-first", help="--inputs and --targets are (B, T, ...), as PyTorch's batch_first=True."),
]
H0Opt = Annotated[
    str,
    typer.Option(
        "--h0",
        metavar="zeros|random|PATH",
        help="Initial state: zeros, N(0, 1) per unit, or a .npy file of shape (H,) or (B, H). "
        "With zero input, h0 = 0 can be a fixed point the state never leaves.",
    ),
]
DelayOpt = Annotated[
    int, typer.Option("--delay", min=1, metavar="N", help="recall: the target at t is the input at t - delay.")
]
DataDelayOpt = Annotated[
    int | None,
    typer.Option(
        "--delay", min=1, metavar="N", help="recall: the target at t is the input at t - delay. [default: 10]"
    ),
]
AlphabetOpt = Annotated[
    int, typer.Option("--alphabet", min=2, metavar="N", help="recall: the number of symbols (chance 1/K).")
]
DataAlphabetOpt = Annotated[
    int | None,
    typer.Option("--alphabet", min=2, metavar="N", help="recall: the number of symbols (chance 1/K). [default: 8]"),
]

# ---------------------------------------------------------------- judging

VerdictTolOpt = Annotated[
    float, typer.Option("--verdict-tol", metavar="X", help="A per-step gain within 1 +- tol is stable (0 <= tol < 1).")
]
EpsOpt = Annotated[
    float,
    typer.Option(
        "--eps",
        metavar="X",
        help="Horizon: the fraction of the signal at T still counted, in (0, 1); also the "
        "net change below which a non-exponential signal is vanishing.",
    ),
]
LyapunovOpt = Annotated[
    int, typer.Option("--lyapunov", min=0, metavar="N", help="Top K Lyapunov exponents along the trajectory (0: none).")
]
WarmupOpt = Annotated[
    int | None,
    typer.Option(
        "--warmup", min=0, metavar="N", help="Leading steps that only align the QR frame. [default: min(50, T/4)]"
    ),
]

# ---------------------------------------------------------------- training

StepsOpt = Annotated[int, typer.Option("--steps", min=0, metavar="N", help="Training steps (0: no training).")]
LrOpt = Annotated[float, typer.Option("--lr", metavar="X", help="Learning rate (> 0).")]
ClipOpt = Annotated[
    float | None,
    typer.Option(
        "--clip", metavar="X", help="Gradient-norm clipping g <- g min(1, THETA/||g||), THETA > 0. [default: off]"
    ),
]
OptimizerOpt = Annotated[Optimizer, choice("--optimizer", Optimizer, "Update rule")]
LogEveryOpt = Annotated[
    int, typer.Option("--log-every", min=1, metavar="N", help="Watch and log every this many steps.")
]
TruncationOpt = Annotated[
    str, typer.Option("--truncation", metavar="TEXT", help=f"Backward pass while training: {SPEC_FORMS}.")
]


def parse_fail_on(text: str | None) -> tuple[str, ...]:
    """'exploding,diverged' -> ('exploding', 'diverged'); a usage error for anything else."""
    if text is None:
        return ()
    labels = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [s for s in labels if s not in LABELS]
    if bad or not labels:
        raise OptionError(f"`--fail-on` takes a comma-separated list of {', '.join(LABELS)}; got {text!r}")
    return tuple(dict.fromkeys(labels))


def plain(value: Any) -> Any:
    """An option's value as the config takes it (an Enum member becomes its string)."""
    return value.value if isinstance(value, Enum) else value


def config_from(cls: type, params: dict[str, Any], **extra: Any) -> Any:
    """Build the config dataclass `cls` from a command's parameters (those it has fields for)."""
    fields = cls.__dataclass_fields__
    values = {k: plain(v) for k, v in params.items() if k in fields}
    return cls(**{**values, **extra})
