"""The `bptt` command line: the Typer app. It imports the commands; nothing imports it.

Exit codes (cli/output.py): 0 ok, 1 bad input or runtime error, 2 usage error, 3 a --fail-on
label was hit, 4 gradcheck failed, 130 interrupted, 141 closed pipe, 143 terminated.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Annotated, Any

import typer
from typer.core import TyperGroup

from bptt_cli import signals
from bptt_cli._version import __version__
from bptt_cli.cli.commands import compare_truncation, export, gradcheck, paths, spectrum, sweep, trace, train
from bptt_cli.cli.output import EXIT_CODES, EXIT_INTERRUPTED, EXIT_TERMINATED, EXIT_USAGE, fail, interruption_reported

# click's exception classes, reached through Typer's public BadParameter (no private import)
_CLICK_EXCEPTION = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")
_USAGE_ERROR = next(c for c in typer.BadParameter.__mro__ if c.__name__ == "UsageError")

HELP = (
    "Gradient dynamics of recurrent networks, measured exactly: BPTT two ways, the gradient "
    "signal back through time, the spectrum of the recurrent map, truncation, and a verdict "
    "(exploding, vanishing, stable, diverged) with its evidence.\n\n"
    "Exit codes: " + ", ".join(f"{k} {v}" for k, v in EXIT_CODES.items()) + "."
)


class BpttGroup(TyperGroup):
    """Typer's group, with its errors in bptt's convention: one line `bptt: error: ...` on stderr
    (and a JSON error document on stdout under --json), exit code 2 for a usage error."""

    def main(self, args: Sequence[str] | None = None, *a: Any, standalone_mode: bool = True, **kw: Any) -> Any:
        argv = list(sys.argv[1:] if args is None else args)
        try:
            rv = super().main(argv, *a, standalone_mode=False, **kw)
        except _CLICK_EXCEPTION as e:
            if type(e).__name__ == "NoArgsIsHelpError":
                typer.echo(e.ctx.get_help())
                rv = EXIT_USAGE
            else:
                command = argv[0] if argv and argv[0] in self.commands else None
                code = EXIT_USAGE if isinstance(e, _USAGE_ERROR) else e.exit_code
                try:
                    # Typer prefixes a rejected choice with pydantic's "Value error, ": not ours to show
                    message = e.format_message().replace("\n", " ").replace("Value error, ", "")
                    fail(command, message, code, json="--json" in argv)
                except typer.Exit as stop:
                    rv = stop.exit_code
        except typer.Abort:  # click's form of an end of input (or a Ctrl-C) while it parsed
            rv = EXIT_INTERRUPTED
        code = rv if isinstance(rv, int) else 0
        if code == EXIT_INTERRUPTED and not interruption_reported():  # Typer's silent Ctrl-C while parsing
            sys.stderr.write("bptt: interrupted before the command started; nothing was written\n")
            code = EXIT_TERMINATED if signals.received["sigterm"] else code
        if standalone_mode:
            sys.exit(code)
        return code


app = typer.Typer(
    name="bptt",
    cls=BpttGroup,
    help=HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)

for name, module in (
    ("paths", paths),
    ("gradcheck", gradcheck),
    ("spectrum", spectrum),
    ("trace", trace),
    ("train", train),
    ("compare-truncation", compare_truncation),
    ("export", export),
    ("sweep", sweep),
):
    app.command(name, context_settings=getattr(module, "CONTEXT", None))(module.command)


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
