"""The `bptt` console script: signals first, then the (heavy) imports, then the command.

A Ctrl-C or SIGTERM while numpy, scipy and the commands are still being imported ends with one
line and exit 130 / 143 instead of a traceback through the import machinery.
"""

from __future__ import annotations

import sys

from bptt_cli import signals


def main() -> None:
    """Console-script entry point (pyproject.toml [project.scripts])."""
    signals.install()
    try:
        from bptt_cli.cli.app import main as run_app

        run_app()
    except KeyboardInterrupt as e:  # before a command's own handler took over: nothing was written
        sys.stderr.write("bptt: interrupted before the command started; nothing was written\n")
        sys.exit(signals.exit_code(e))
