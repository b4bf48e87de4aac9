"""The example outputs in README.md and docs/: regenerated from the commands, never pasted.

An example in a Markdown file is a marker line and the fenced block after it:

    <!-- example: bptt trace --spectral-radius 3 --input-scale 10 -->
    ```text
    $ bptt trace --spectral-radius 3 --input-scale 10
    ...what the command printed...
    ```

`python tools/examples.py` (make docs) runs every example's command in a fresh temporary folder
(`bptt` from this checkout on PATH, 80 columns, one BLAS thread) and writes its output into the
block. A line after the block of the form

    <!-- figures: edge/sweep-lyapunov.png -> img/edge-of-chaos.png -->

copies what the command wrote (relative to its folder) next to the Markdown file (relative to
it), so that the figures a page shows are regenerated with its text. `--check` compares instead,
and tests/test_docs.py runs the README's examples that way: the text must match, and every
figure must agree within FIGURE_RTOL (numbers at rounding level, below 1e-6, within a factor of
100), except on lines that report wall time.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FILES = ["README.md", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "docs").rglob("*.md"))]
MARKER = re.compile(r"^<!-- example: (?P<command>.+?) -->\n```text\n(?P<body>.*?)^```$", re.M | re.S)
FIGURES = re.compile(r"\n<!-- figures: (?P<pairs>.+?) -->")
NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")
# lines whose figures are wall-clock measurements (they differ from run to run)
VOLATILE = re.compile(r"\b(time|seconds|ms|wall|s/step|steps/s)\b|\d s\b|\d\.\d+ s\b|\bplot: |\bfiles: ")
FIGURE_RTOL = 0.02
TIMEOUT = 300


@dataclass(frozen=True)
class Example:
    file: str
    command: str
    body: str
    start: int
    end: int
    figures: tuple[tuple[str, Path], ...] = ()  # (written by the command, copied to)


def find(path: Path) -> list[Example]:
    text = path.read_text(encoding="utf-8")
    found = []
    for m in MARKER.finditer(text):
        f = FIGURES.match(text, m.end())
        pairs = [p.split("->") for p in f["pairs"].split(",")] if f else []
        figures = tuple((src.strip(), path.parent / dest.strip()) for src, dest in pairs)
        found.append(
            Example(str(path.relative_to(ROOT)), m["command"], m["body"], m.start("body"), m.end("body"), figures)
        )
    return found


def run(command: str, figures: tuple[tuple[str, Path], ...] = ()) -> str:
    """The command's output as a reader sees it in a terminal 80 columns wide, after `$ command`."""
    bin_dir = Path(sys.executable).parent
    env = {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "COLUMNS": "80",
        "BPTT_THREADS": "1",
        "PYTHONPATH": str(ROOT),
        "MPLBACKEND": "Agg",
        "NO_COLOR": "1",
    }
    with tempfile.TemporaryDirectory() as tmp:
        p = subprocess.run(
            ["sh", "-c", f"{command} 2>&1"], cwd=tmp, env=env, capture_output=True, text=True, timeout=TIMEOUT
        )
        for src, dest in figures:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(tmp) / src, dest)
    out = "\n".join(line.rstrip() for line in p.stdout.splitlines())
    return f"$ {command}\n{out}\n"


def differences(expected: str, actual: str) -> list[str]:
    """What differs between two outputs beyond the tolerance (empty: they agree)."""
    problems = []
    a_lines, b_lines = expected.splitlines(), actual.splitlines()
    if len(a_lines) != len(b_lines):
        return [f"{len(a_lines)} lines shown, {len(b_lines)} printed now"]
    for i, (a, b) in enumerate(zip(a_lines, b_lines, strict=True), 1):
        if NUMBER.sub("#", a).split() != NUMBER.sub("#", b).split():
            problems.append(f"line {i}: {a!r} is now {b!r}")
            continue
        if VOLATILE.search(a):
            continue
        for x, y in zip(NUMBER.findall(a), NUMBER.findall(b), strict=True):
            fx, fy = float(x), float(y)
            big = max(abs(fx), abs(fy))
            if big < 1e-6:  # rounding-level numbers: the order of magnitude is the figure
                ok = min(abs(fx), abs(fy)) > 0 and big / min(abs(fx), abs(fy)) < 100 or fx == fy
            else:
                ok = abs(fx - fy) <= FIGURE_RTOL * big
            if not ok:
                problems.append(f"line {i}: {x} is now {y} ({a.strip()!r})")
    return problems


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing; exit 1 on a difference")
    ap.add_argument("files", nargs="*", help=f"Markdown files (default: {', '.join(FILES[:2])}, ...)")
    args = ap.parse_args()
    failed = 0
    for name in args.files or FILES:
        path = ROOT / name
        examples = find(path)
        text = path.read_text(encoding="utf-8")
        for ex in reversed(examples):  # from the end, so earlier offsets stay valid
            fresh = run(ex.command, () if args.check else ex.figures)
            if args.check:
                problems = differences(ex.body, fresh)
                failed += bool(problems)
                for p in problems:
                    print(f"{ex.file}: `{ex.command}`: {p}")
            else:
                text = text[: ex.start] + fresh + text[ex.end :]
        if not args.check:
            path.write_text(text, encoding="utf-8")
            print(f"{name}: {len(examples)} example(s) regenerated")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
