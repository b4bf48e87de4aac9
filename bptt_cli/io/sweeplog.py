"""A sweep's folder: sweep.json (what the sweep is) and sweep.jsonl (one line per finished point).

Each finished point is one strict-JSON line, flushed and fsynced as it is written, so a sweep
killed at any moment keeps every point it finished; a line cut short by the kill is dropped when
the sweep resumes. A rerun with the same `--out` skips the points already there; sweep.json
makes sure it is the same sweep (the same analysis, options, grid and seed) before anything is
appended.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from bptt_cli.io.atomic import atomic_write_text
from bptt_cli.io.jsondoc import dumps, jsonable, loads_strict
from bptt_cli.io.runfolder import RunFolder

HEADER = "sweep.json"
LOG = "sweep.jsonl"
FORMAT = "bptt-sweep/1"
SAME = ("analysis", "args", "grid", "seed")  # what must match for a rerun to continue a sweep


def _read_header(path: Path) -> dict:
    try:
        header = loads_strict(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a readable sweep header ({e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path}: not a bptt sweep header (format {FORMAT})")
    return header


def read_points(path: Path) -> tuple[list[dict], int]:
    """The finished points of sweep.jsonl, and the byte length of its complete lines (a last line
    cut short by a crash is not one of them)."""
    rows, good = [], 0
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0
    for line in data.splitlines(keepends=True):
        if not line.endswith(b"\n"):
            break
        try:
            row = loads_strict(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            break
        if not isinstance(row, dict) or "key" not in row:
            break
        rows.append(row)
        good += len(line)
    return rows, good


class SweepLog:
    """The claimed sweep folder, open for appending points."""

    def __init__(self, out: Path, header: dict[str, Any]) -> None:
        out = Path(out)
        own = (out / HEADER).is_file()
        self.folder = RunFolder.claim(out, own_run=own)
        try:
            self.done: dict[str, dict] = {}
            if own:
                stored = _read_header(out / HEADER)
                differ = [k for k in SAME if stored.get(k) != jsonable(header.get(k))[0]]
                if differ:
                    raise ValueError(
                        f"--out {out}: it holds another sweep (its {', '.join(differ)} differ from this one's); "
                        "rerun the same command to continue it, or choose another folder"
                    )
                rows, good = read_points(out / LOG)
                self.done = {r["key"]: r for r in rows}
                with open(out / LOG, "ab") as f:  # drop a line cut short by a crash
                    f.truncate(good)
            else:
                atomic_write_text(self.folder.wrote(HEADER), dumps({**jsonable(header)[0], "format": FORMAT}) + "\n")
            self.folder.wrote(LOG)
            self._file: IO[str] | None = open(out / LOG, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        except BaseException:
            self.folder.release() if own else self.folder.discard()
            raise
        self.resumed = own

    @property
    def path(self) -> Path:
        return self.folder.path / LOG

    def write(self, row: dict) -> None:
        """Append one finished point (plain JSON values already: analyses/sweep.py run_point), on disk
        before this returns."""
        if self._file is None:
            raise ValueError(f"{self.path}: the sweep log is closed")
        self._file.write(json.dumps(row, allow_nan=False, separators=(",", ":")) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done[row["key"]] = row

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        self.folder.release()

    def __enter__(self) -> SweepLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
