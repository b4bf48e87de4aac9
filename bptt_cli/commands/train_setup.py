"""The plumbing of `bptt train` that is not the command itself: option choices, --fail-on,
the command line for config.json, the Ctrl-C flag, and reading a checkpoint to resume from.
"""

import shlex
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import typer
from typer._click.core import ParameterSource

from bptt_cli.checkpoint import Checkpoint, load_checkpoint
from bptt_cli.runfiles import MODEL

FAIL_LABELS = ("exploding", "vanishing", "diverged")
CHECKPOINT_KIND = "bptt-train"
# the options a resumed run takes from the checkpoint
SAVED_OPTIONS = (
    "task",
    "text",
    "sampling",
    "optimizer",
    "init",
    "activation",
    "dtype",
    "delay",
    "alphabet",
    "truncation",
    "clip",
    "clip_value",
    "spectral_radius",
    "hidden",
    "seq_len",
    "batch",
    "lr",
    "seed",
    "steps",
    "log_every",
    "sample_len",
    "prime",
)
# what a resumed run may set anew; everything else comes from the checkpoint
RESUMABLE = {
    "steps",
    "epochs",
    "log_every",
    "out",
    "resume",
    "fail_on",
    "plots",
    "threads",
    "json",
    "quiet",
    "sample_len",
    "prime",
}


class TaskName(str, Enum):
    recall = "recall"
    adding = "adding"
    sine = "sine"
    text = "text"


class Sampling(str, Enum):
    sequential = "sequential"
    random = "random"


class OptimizerName(str, Enum):
    sgd = "sgd"
    momentum = "momentum"
    adam = "adam"
    adagrad = "adagrad"


def usage_error(option: str, message: str) -> None:
    """cli.usage_error, imported when needed: cli.py imports the commands at its end."""
    from bptt_cli.cli import usage_error as _usage_error

    _usage_error(option, message)


def parse_fail_on(text: str | None) -> list[str]:
    """'exploding,diverged' -> ['exploding', 'diverged']; a usage error for anything else."""
    if text is None:
        return []
    labels = [s.strip().lower() for s in text.split(",") if s.strip()]
    bad = [s for s in labels if s not in FAIL_LABELS]
    if bad or not labels:
        usage_error("--fail-on", f"expected a comma-separated list of {', '.join(FAIL_LABELS)}; got {text!r}")
    return list(dict.fromkeys(labels))


def command_line(ctx: typer.Context) -> str:
    """The command as typed (when run as a program) or, else, the options given, canonically."""
    prog = Path(sys.argv[0]).name if sys.argv else ""
    if prog in ("bptt", "__main__.py") and len(sys.argv) > 1 and sys.argv[1] == "train":
        return shlex.join(["bptt", *sys.argv[1:]])
    words = ["bptt", "train"]
    for param in ctx.command.params:
        if ctx.get_parameter_source(param.name) != ParameterSource.COMMANDLINE:
            continue
        value = ctx.params[param.name]
        flag = max(param.opts, key=len)
        if isinstance(value, bool):
            words += [flag] if value else []
        else:
            words += [flag, str(value.value if isinstance(value, Enum) else value)]
    return shlex.join(words)


class StopFlag:
    """The first Ctrl-C asks training to stop after the current step; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: Any = None

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self) -> "StopFlag":
        try:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: Ctrl-C keeps its default meaning
            self._previous = None
        return self

    def __exit__(self, *exc: object) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def resume_source(resume: Path) -> Path:
    """--resume takes the run folder (its model.npz) or the checkpoint file itself."""
    return resume / MODEL if resume.is_dir() else resume


def load_resume(ctx: typer.Context, resume: Path) -> tuple[dict, Checkpoint]:
    """The saved options and the checkpoint; usage error for an option that would change the run."""
    ckpt = load_checkpoint(resume_source(resume))
    saved = ckpt.config.get("options") if ckpt.config.get("kind") == CHECKPOINT_KIND else None
    if not isinstance(saved, dict) or not isinstance(ckpt.config.get("train_state"), dict):
        raise ValueError(f"--resume {resume}: the checkpoint was not written by `bptt train` (no training state)")
    missing = [name for name in SAVED_OPTIONS if name not in saved]
    if missing:
        raise ValueError(f"--resume {resume}: the checkpoint's options lack {missing[0]!r}; it is from another version")
    for name, value in ctx.params.items():
        if name in RESUMABLE or ctx.get_parameter_source(name) != ParameterSource.COMMANDLINE:
            continue
        value = value.value if isinstance(value, Enum) else value
        value = str(value) if isinstance(value, Path) else value
        if name in saved and saved[name] != value:
            usage_error(
                f"--{name.replace('_', '-')}",
                f"cannot change it when resuming: the checkpoint's run has {saved[name]!r}; "
                "only --steps/--epochs, --log-every, --out, --fail-on, --plots, --threads, --sample-len, --prime "
                "may change",
            )
    return saved, ckpt
