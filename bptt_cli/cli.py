"""The `bptt` command line: parse, validate, call the library, render. No math here.

This module holds the Typer app, the option aliases every command shares, and the
output and error conventions; each command is one function in bptt_cli/commands/.

Conventions (../DESIGN.md section 3):
- `--json`: exactly one strict JSON document on stdout; tables and progress go to stderr.
- errors: one line on stderr, exit 1 (usage errors exit 2, as Typer does); a traceback
  only with BPTT_DEBUG=1.
"""

from __future__ import annotations

import functools
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import typer
from rich.console import Console

from bptt_cli import __version__
from bptt_cli.blas import blas_threads, default_threads
from bptt_cli.report import dumps

app = typer.Typer(
    name="bptt",
    help="Gradient dynamics of recurrent networks: exact BPTT, the gradient signal through "
    "time, the spectrum of W_h, truncation, and a verdict on exploding or vanishing gradients.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)


class Activation(str, Enum):
    tanh = "tanh"
    relu = "relu"
    identity = "identity"


class Loss(str, Enum):
    xent = "xent"
    mse = "mse"
    half_square = "half-square"


class Init(str, Enum):
    gaussian = "gaussian"
    orthogonal = "orthogonal"
    identity = "identity"


class Dtype(str, Enum):
    float64 = "float64"
    float32 = "float32"


# ---------------------------------------------------------------- shared option aliases

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout; tables go to stderr.")]
QuietOpt = Annotated[
    bool, typer.Option("--quiet", "-q", help="No tables or progress (the JSON document is still printed).")
]
SeedOpt = Annotated[int, typer.Option("--seed", min=0, help="Seed of the random generator; same seed, same numbers.")]
OutOpt = Annotated[
    Path | None,
    typer.Option("--out", file_okay=False, help="Folder for plots and files [default: runs/COMMAND-TIME]."),
]
ActivationOpt = Annotated[Activation, typer.Option("--activation", help="Hidden activation f.")]
LossOpt = Annotated[Loss, typer.Option("--loss", help="Per-step loss.")]
InitOpt = Annotated[Init, typer.Option("--init", help="Initialiser of W_h.")]
DtypeOpt = Annotated[Dtype, typer.Option("--dtype", help="Floating-point type of the computation.")]
SpectralRadiusOpt = Annotated[
    float | None,
    typer.Option("--spectral-radius", min=0.0, help="Rescale W_h to exactly this spectral radius."),
]
SeqLenOpt = Annotated[int, typer.Option("--seq-len", "-T", min=1, help="Sequence length T.")]
BatchOpt = Annotated[int, typer.Option("--batch", "-B", min=1, help="Batch size B.")]
InputOpt = Annotated[int, typer.Option("--input", "-D", min=1, help="Input size D.")]
HiddenOpt = Annotated[int, typer.Option("--hidden", "-H", min=1, help="Hidden size H.")]
OutputOpt = Annotated[int, typer.Option("--output", "-V", min=1, help="Output size V (classes for xent).")]


# ---------------------------------------------------------------- output


@dataclass
class Output:
    """Where a command's human output goes: stdout, or stderr when stdout carries JSON."""

    json: bool
    quiet: bool

    def __post_init__(self) -> None:
        self.console = Console(stderr=self.json, highlight=False)

    def show(self, *renderables: Any) -> None:
        if not self.quiet:
            self.console.print(*renderables)

    def emit(self, doc: dict) -> None:
        """The JSON document, when --json is on: stdout, nothing else there."""
        if not self.json:
            return
        try:
            sys.stdout.write(dumps(doc) + "\n")
            sys.stdout.flush()
        except BrokenPipeError:
            # The reader closed the pipe early (`| head`): exit quietly as shell tools do on
            # SIGPIPE, with stdout pointed at devnull so the interpreter's final flush is silent.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(141) from None


def out_dir(out: Path | None, command: str) -> Path:
    """The run's output folder (created): --out, or runs/<command>-<timestamp>."""
    path = out if out is not None else Path("runs") / f"{command}-{time.strftime('%Y%m%d-%H%M%S')}"
    if path.exists() and not path.is_dir():
        raise OSError(f"--out {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"--out {path}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(path, os.W_OK):
        raise OSError(f"--out {path}: the folder is not writable")
    return path


# ---------------------------------------------------------------- errors


def fail(message: str, code: int = 1) -> NoReturn:
    """One line on stderr, then exit with `code`."""
    sys.stderr.write(f"bptt: error: {message}\n")
    raise typer.Exit(code)


def usage_error(option: str, message: str) -> NoReturn:
    """A malformed option value: Typer's usage error, exit code 2."""
    raise typer.BadParameter(message, param_hint=f"'{option}'")


F = TypeVar("F", bound=Callable[..., Any])


def command(fn: F) -> F:
    """Register `fn` as a command and give it the error convention.

    ValueError and OSError from the library are the user's input: their message, exit 1.
    Anything else is a bug in bptt: one line saying so. BPTT_DEBUG=1 shows the traceback.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            with blas_threads(default_threads()):  # see bptt_cli/blas.py: one thread is fastest here
                return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.BadParameter):
            raise
        except KeyboardInterrupt:
            sys.stderr.write("bptt: interrupted\n")
            raise typer.Exit(130) from None
        except Exception as e:  # noqa: BLE001 - the one place that turns errors into a line
            if os.environ.get("BPTT_DEBUG") == "1":
                raise
            text = (str(e).strip().splitlines() or [type(e).__name__])[0]
            if isinstance(e, (ValueError, OSError)):
                fail(text)
            fail(f"internal error ({type(e).__name__}: {text}); set BPTT_DEBUG=1 for the traceback")

    app.command()(wrapper)
    return fn


def _version(value: bool) -> None:
    if value:
        typer.echo(f"bptt {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """bptt: why RNN gradients explode or vanish, measured exactly."""


def main() -> None:
    """Console-script entry point."""
    app()


# Commands register themselves on `app` when imported (they import the aliases above).
# One line per command, so that adding a command touches one line.
import bptt_cli.commands.compare_truncation  # noqa: E402, F401
import bptt_cli.commands.gradcheck  # noqa: E402, F401
import bptt_cli.commands.paths  # noqa: E402, F401
import bptt_cli.commands.spectrum  # noqa: E402, F401
import bptt_cli.commands.trace  # noqa: E402, F401
import bptt_cli.commands.train  # noqa: E402, F401
