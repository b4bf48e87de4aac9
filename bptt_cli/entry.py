"""The `bptt` console script: signals first, then the (heavy) imports, then the command.

A Ctrl-C or SIGTERM while numpy, scipy and the commands are still being imported ends with one
line and exit 130 / 143 instead of a traceback through the import machinery.
"""

from __future__ import annotations

import os
import sys

from bptt_cli import signals


def main() -> None:
    """Console-script entry point (pyproject.toml [project.scripts])."""
    signals.install()
    try:
        from bptt_cli.cli.app import main as run_app
    except KeyboardInterrupt as e:  # nothing has run yet, so nothing was written
        sys.stderr.write("bptt: interrupted before the command started; nothing was written\n")
        _exit_now(signals.exit_code(e))
    try:
        run_app()
    except KeyboardInterrupt as e:  # one that no command caught (between Typer's handling and ours)
        sys.stderr.write("bptt: interrupted\n")
        _exit_now(signals.exit_code(e))
    except SystemExit as e:
        if e.code in (signals.EXIT_INTERRUPTED, signals.EXIT_TERMINATED):
            _exit_now(e.code)  # the command has said what it kept; see _exit_now
        raise


def _exit_now(code: int) -> None:
    """Exit with `code` now. An interrupt that arrived inside an import or a parse can leave the
    interpreter marked "interrupted", and a normal exit would then end by re-raising SIGINT (exit
    status -2) instead of 130; the files are all closed and renamed into place by now."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a reader that left, or a closed stream: nothing to lose
            pass
    os._exit(code)
