"""At 80 columns (the width of any pipe) nothing is cut: no table hides digits behind an
ellipsis, titles wrap, and --help never breaks a choice in the middle."""

import pytest
from typer.testing import CliRunner

from bptt_cli.cli.app import app

runner = CliRunner()
WIDTH = 80
RUNS = {
    "paths": ["paths"],
    "paths timed": ["paths", "--lengths", "4,8", "--repeats", "1"],
    "gradcheck": ["gradcheck"],
    "spectrum": ["spectrum", "-H", "16", "-T", "60", "--lyapunov", "3"],
    "spectrum not converged": ["spectrum", "-H", "64", "--max-iter", "3", "--lyapunov", "0"],
    "trace": ["trace", "-H", "8", "-T", "60"],
    "trace exploding": [
        "trace", "--activation", "identity", "--init", "orthogonal", "--spectral-radius", "1.5",
        "-T", "10000", "-B", "1", "-H", "4", "--input-scale", "0", "--lyapunov", "0",
    ],
    "train": ["train", "--steps", "20", "--hidden", "8", "--no-plots"],
    "compare-truncation": ["compare-truncation", "-H", "8", "--steps", "10", "--samples", "4"],
    "compare-truncation influence": [
        "compare-truncation", "--task", "influence", "--steps", "20", "--samples", "8", "--batch", "4",
    ],
}  # fmt: skip
UNWRAPPED = ("plot: ", "files: ", "note: ", "stopped at step")  # paths, printed whole so that they can be copied


def narrow(args: list[str]):
    r = runner.invoke(app, args, env={"COLUMNS": str(WIDTH)})
    assert r.exit_code == 0, r.stdout + r.stderr
    return r.stdout


@pytest.mark.parametrize("name", list(RUNS))
def test_no_cut_numbers_at_80_columns(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = narrow(RUNS[name])
    assert "…" not in out and "..." not in out.replace("-> ... ->", "")  # paths' '... ->' is a path, not a cut
    for line in out.splitlines():
        if not line.startswith(UNWRAPPED):
            assert len(line) <= WIDTH, line


def test_a_table_too_wide_is_stacked_not_cut():
    """The renderer's fallback: at 30 columns a wide table becomes one block of lines per row."""
    from rich.console import Console

    from bptt_cli.cli.render.common import table

    console = Console(width=30, record=True, file=open("/dev/null", "w"))  # noqa: SIM115
    console.print(table(["quantity", "a long column name", "value"], [["rho", "1.0000000000001", 3.204e-05]]))
    text = console.export_text()
    assert "3.204e-05" in text and "1.0000000000001" in text and "…" not in text
    assert all(len(line) <= 30 for line in text.splitlines())


COMMANDS = ["paths", "gradcheck", "spectrum", "trace", "train", "compare-truncation", "export"]


def choice_lists(command: str) -> list[str]:
    """The choices of each choice option of `command`, as its help lists them ('a, b or c')."""
    import enum
    import importlib
    import typing

    module = importlib.import_module(f"bptt_cli.cli.commands.{command.replace('-', '_')}")
    lists = []
    for hint in typing.get_type_hints(module.command, include_extras=True).values():
        if typing.get_origin(hint) is not typing.Annotated:
            continue
        base = typing.get_args(hint)[0]  # the option's type: an Enum, or Enum | None
        for t in typing.get_args(base) or (base,):
            if isinstance(t, type) and issubclass(t, enum.Enum):
                values = [m.value for m in t]
                lists.append(", ".join(values[:-1]) + f" or {values[-1]}" if len(values) > 1 else values[0])
    return lists


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_is_readable_at_80_columns(command):
    out = narrow([command, "--help"] if command else ["--help"])
    lines = out.splitlines()
    assert all(len(line) <= WIDTH for line in lines)
    text = " ".join(" ".join(line.strip(" │╭╮╰╯─").split()) for line in lines)
    if command is None:
        assert "Exit codes" in text and "141 closed pipe" in text
        return
    lists = choice_lists(command)
    assert lists or command == "paths"
    for words in lists:
        assert words in text, words  # every choice shown whole, none broken across a line


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_shows_its_default_or_says_what_it_is(command):
    """Each option's help either carries Typer's [default: ...] or our own, or is a flag/unset-by-default."""
    out = narrow([command, "--help"])
    assert out.count("[default:") >= 3
