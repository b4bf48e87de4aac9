"""Where a command's output goes, how it fails, and with which exit code (docs/design.md section 3).

- `--json`: stdout holds exactly one strict JSON document; tables and progress go to stderr.
- An error is one line on stderr, `bptt: error: ...`, and under --json also a JSON error
  document on stdout; a traceback only with BPTT_DEBUG=1.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text

from bptt_cli import signals
from bptt_cli.blas import blas_threads, default_threads
from bptt_cli.core.validate import OptionError
from bptt_cli.io.jsondoc import document, dumps, error_document

EXIT_OK = 0
EXIT_ERROR = 1  # bad input (a file, a value the computation rejects) or a runtime error
EXIT_USAGE = 2  # an option's value breaks its rule, an unknown option
EXIT_FAIL_ON = 3  # the verdict is one of --fail-on's labels
EXIT_GRADCHECK = 4  # gradcheck: a check exceeded its tolerance
EXIT_INTERRUPTED = signals.EXIT_INTERRUPTED  # Ctrl-C
EXIT_PIPE = 141  # the reader closed the pipe (as shell tools exit on SIGPIPE)
EXIT_TERMINATED = signals.EXIT_TERMINATED  # SIGTERM

EXIT_CODES = {
    EXIT_OK: "ok",
    EXIT_ERROR: "bad input or runtime error",
    EXIT_USAGE: "usage error",
    EXIT_FAIL_ON: "a --fail-on label was hit",
    EXIT_GRADCHECK: "gradcheck failed",
    EXIT_INTERRUPTED: "interrupted",
    EXIT_PIPE: "closed pipe",
    EXIT_TERMINATED: "terminated (SIGTERM)",
}


class _Console(Console):
    """rich's Console, with a reader that closed the pipe ending the command as write_stdout does
    (exit 141, quietly) instead of rich's exit 1."""

    def on_broken_pipe(self) -> None:
        self.quiet = True
        stream = sys.stderr if self.stderr else sys.stdout
        os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
        raise typer.Exit(EXIT_PIPE)


class Output:
    """A command's human output (stdout, or stderr when stdout carries JSON) and its JSON document."""

    def __init__(self, json: bool, quiet: bool, command: str) -> None:
        self.json, self.quiet, self.command = json, quiet, command
        self.console = _Console(stderr=json, highlight=False)

    def show(self, *renderables: Any) -> None:
        if not self.quiet:
            self.console.print(*renderables)

    def line(self, text: str) -> None:
        """One line printed as it is: never wrapped (a reader copies paths), no markup."""
        if not self.quiet:
            self.console.print(text, soft_wrap=True, markup=False, highlight=False)

    def notice(self, text: str) -> None:
        """What the user must hear even under -q (what an interrupted run kept): one line on stderr."""
        sys.stderr.write(f"bptt: {text}\n")
        sys.stderr.flush()

    def note(self, text: str) -> None:
        """A warning about the result (wrapped to the terminal, silent under -q)."""
        self.show(Text(f"note: {text}", style="yellow"))

    def emit(self, config: dict, results: dict, verdict: dict | None = None) -> None:
        """The JSON document, when --json is on: stdout, nothing else there."""
        if self.json:
            write_stdout(dumps(document(self.command, config, results, verdict=verdict)) + "\n")


def write_stdout(text: str) -> None:
    """Write to stdout; a reader that closed the pipe ends the command quietly with 141."""
    if sys.stdout is None:
        raise OSError("stdout is closed: nothing can be printed (redirect it to a file or /dev/null)")
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        # stdout pointed at devnull so that the interpreter's final flush is silent too
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(EXIT_PIPE) from None


# Typer turns a Ctrl-C that arrives while it parses the command line into a silent exit 130;
# the app tells that one from a command's own (reported) interruption by this flag.
_reported = {"interruption": False}


def interruption_reported() -> bool:
    return _reported["interruption"]


def exit_interrupted(code: int) -> None:
    """Exit with an interruption's code after the command has said what it kept."""
    _reported["interruption"] = True
    raise typer.Exit(code)


def fail(command: str | None, message: str, code: int, *, json: bool, kept: dict | None = None) -> None:
    """The error convention: one line on stderr, the JSON error document under --json, exit `code`."""
    if code in (EXIT_INTERRUPTED, EXIT_TERMINATED):
        _reported["interruption"] = True
    sys.stderr.write(f"bptt: error: {message}\n")
    if json and sys.stdout is not None:
        try:
            write_stdout(dumps(error_document(command, message, code, kept)) + "\n")
        except (typer.Exit, OSError):
            pass
    raise typer.Exit(code)


F = TypeVar("F", bound=Callable[..., Any])


def first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def handle_errors(command: str) -> Callable[[F], F]:
    """Run the command on BPTT_THREADS BLAS threads (one by default) and turn its errors into
    the convention: an OptionError is a usage error (2), a ValueError or OSError bad input (1),
    Ctrl-C 130, anything else a bug in bptt (1, saying so)."""

    def wrap(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            json, quiet = bool(kwargs.get("json")), bool(kwargs.get("quiet"))
            warnings.showwarning = _silent if quiet else _one_line  # -q: no warnings; else one line each
            if sys.stdout is None and (json or not quiet):  # `>&-`: fail before any work, not after it
                fail(
                    command,
                    "stdout is closed: nothing can be printed (redirect it to a file, or use -q)",
                    1,
                    json=False,
                )
            try:
                with blas_threads(default_threads()):  # bptt_cli/blas.py: one thread is fastest here
                    return fn(*args, **kwargs)
            except (typer.Exit, typer.Abort):
                raise
            except KeyboardInterrupt as e:
                kept = getattr(e, "kept", None)
                if kept is not None:  # a training run stopped at once: what is on disk, and how to go on
                    fail(command, f"interrupted: {kept['message']}", signals.exit_code(e), json=json, kept=kept)
                fail(
                    command,
                    "interrupted before the command finished; nothing was kept",
                    signals.exit_code(e),
                    json=json,
                )
            except BrokenPipeError:
                raise typer.Exit(EXIT_PIPE) from None
            except Exception as e:  # noqa: BLE001 - the one place that turns errors into a line
                if os.environ.get("BPTT_DEBUG") == "1":
                    raise
                if isinstance(e, OptionError):
                    fail(command, first_line(e), EXIT_USAGE, json=json)
                if isinstance(e, (ValueError, OSError)):
                    fail(command, first_line(e), EXIT_ERROR, json=json)
                fail(
                    command,
                    f"internal error ({type(e).__name__}: {first_line(e)}); set BPTT_DEBUG=1 for the traceback",
                    EXIT_ERROR,
                    json=json,
                )

        return wrapper  # type: ignore[return-value]

    return wrap


def _one_line(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
    sys.stderr.write(f"bptt: warning: {first_line(Exception(str(message)))}\n")


def _silent(*args: Any, **kwargs: Any) -> None:
    return None


def exit_for(label: str | None, fail_on: tuple[str, ...]) -> None:
    """Exit 3 when the verdict's label is one of --fail-on's."""
    if label is not None and label in fail_on:
        raise typer.Exit(EXIT_FAIL_ON)
