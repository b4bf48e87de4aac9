"""The README's example outputs are what the commands print now (tools/examples.py), the README
stays the front door (at most 250 lines), and every document it links to exists."""

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import examples  # noqa: E402

README = ROOT / "README.md"
README_EXAMPLES = examples.find(README)
# the worked examples of the verdicts: each is a case the verdict once got wrong
VERDICT_EXAMPLES = examples.find(ROOT / "docs" / "verdicts.md")


def test_the_readme_is_the_front_door():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= 250
    assert "make demo" in text and "make test" in text
    for code in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 4 |", "| 130 |", "| 141 |", "| 143 |"):
        assert code in text
    assert len(README_EXAMPLES) >= 6  # one per command at least


@pytest.mark.parametrize("path", [README, *sorted((ROOT / "docs").rglob("*.md"))], ids=lambda p: p.name)
def test_every_link_points_at_a_file(path):
    for target in re.findall(r"\]\(([^)#]+)\)", path.read_text(encoding="utf-8")):
        if "://" not in target:
            assert (path.parent / target).exists(), f"{path.name} links to {target}"


def test_every_command_has_its_manual():
    for name in ("paths", "gradcheck", "spectrum", "trace", "train", "compare-truncation", "export", "sweep"):
        assert (ROOT / "docs" / "commands" / f"{name}.md").is_file()


@pytest.mark.parametrize("example", README_EXAMPLES, ids=[e.command[:60] for e in README_EXAMPLES])
def test_readme_example_matches_the_command(example):
    problems = examples.differences(example.body, examples.run(example.command))
    assert not problems, "README example is stale (run `make docs`):\n" + "\n".join(problems)


@pytest.mark.parametrize("example", VERDICT_EXAMPLES, ids=[e.command[:60] for e in VERDICT_EXAMPLES])
def test_verdict_example_matches_the_command(example):
    problems = examples.differences(example.body, examples.run(example.command))
    assert not problems, "docs/verdicts.md example is stale (run `make docs`):\n" + "\n".join(problems)


def test_the_checker_notices_a_changed_figure():
    shown = "$ bptt x\nrho(W_h)  1.02\nverdict: stable\n"
    assert examples.differences(shown, shown) == []
    assert examples.differences(shown, shown.replace("1.02", "1.021")) == []  # within 2 %
    assert examples.differences(shown, shown.replace("1.02", "1.5"))  # a different figure
    assert examples.differences(shown, shown.replace("stable", "vanishing"))  # different words
    assert examples.differences("time 1.0 s\n", "time 7.3 s\n") == []  # wall time is not a figure
    assert examples.differences("err 1.2e-16\n", "err 4.1e-17\n") == []  # rounding level: magnitude only
