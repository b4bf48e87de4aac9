"""SIGINT and SIGTERM from the first instruction on: both end a command with one line and a
known exit code (130, 143), never a traceback, whatever the command was doing (importing numpy,
validating, computing). `bptt train` replaces these handlers while it trains: its first signal
stops after the current step and saves the run, the second stops at once (cli/commands/train.py).

Standard library only: this module runs before anything heavy is imported.
"""

from __future__ import annotations

import signal
from types import FrameType

EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C): 128 + 2, as the shell reports it
EXIT_TERMINATED = 143  # SIGTERM: 128 + 15


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Python raises KeyboardInterrupt for SIGINT, so that one handler
    (`except KeyboardInterrupt`) cleans up after both."""


def exit_code(e: BaseException) -> int:
    """The exit code of an interruption: 143 for SIGTERM, 130 for Ctrl-C (or what it carries)."""
    code = getattr(e, "exit_code", None)
    if isinstance(code, int):
        return code
    return EXIT_TERMINATED if isinstance(e, Terminated) else EXIT_INTERRUPTED


received = {"sigterm": False}  # Typer reports any interruption as 130: this tells a SIGTERM apart


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    received["sigterm"] = True
    raise Terminated


def install() -> None:
    """SIGTERM raises Terminated; SIGINT keeps Python's KeyboardInterrupt (re-installed in case a
    parent process left it ignored, as a shell does for background jobs: then Ctrl-C stays ignored)."""
    try:
        signal.signal(signal.SIGTERM, raise_terminated)
    except (ValueError, OSError):  # not the main thread, or a platform without SIGTERM
        pass
