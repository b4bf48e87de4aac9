"""The files of a run folder: atomic JSON documents and a streamed JSON Lines log.

A training run folder holds model.npz (io/checkpoint.py), config.json, metrics.jsonl,
summary.json and plots. Whole documents are written atomically (io/atomic.py), so a reader
(or a crash) never sees half a file. metrics.jsonl grows one complete line per logged step and is flushed
after every line; a resumed run first cuts it back to the checkpoint's step so that the log of
an interrupted-and-resumed run reads like the log of one uninterrupted run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import IO, Any

from bptt_cli.io.atomic import atomic_write_text
from bptt_cli.io.jsondoc import dumps, jsonable

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
MODEL = "model.npz"


def write_json(path: Path, obj: Any) -> Path:
    """A strict JSON document (non-finite numbers as null), written atomically."""
    value, _ = jsonable(obj)
    return atomic_write_text(path, dumps(value) + "\n")


def read_json(path: Path) -> dict:
    """A JSON document written by `write_json`; ValueError naming the file if it is not one."""
    path = Path(path)
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not a readable JSON document ({e})") from None
    if not isinstance(value, dict):
        raise ValueError(f"{path}: expected a JSON object")
    return value


def read_metrics(path: Path) -> list[dict]:
    """The rows of a metrics.jsonl file (an unfinished last line, from a crash, is skipped)."""
    rows = []
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


class MetricsLog:
    """metrics.jsonl: one strict-JSON object per line, flushed as it is written.

    `keep_until` (resume): rows with step > keep_until are dropped first, rewriting the file
    atomically, so the log continues exactly where the checkpoint was taken. `source`: the
    log to take those rows from when the resumed run writes to another folder.
    """

    def __init__(self, path: Path, *, keep_until: int | None = None, source: Path | None = None) -> None:
        self.path = Path(path)
        if keep_until is None:
            atomic_write_text(self.path, "")
        else:
            rows = read_metrics(self.path if source is None else source)
            kept = [r for r in rows if int(r.get("step", 0)) <= keep_until]
            atomic_write_text(self.path, "".join(self._line(r) for r in kept))
        self._file: IO[str] | None = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    @staticmethod
    def _line(row: dict) -> str:
        value, _ = jsonable(row)
        return json.dumps(value, allow_nan=False, separators=(",", ":")) + "\n"

    def write(self, row: dict) -> None:
        if self._file is None:
            raise ValueError(f"{self.path}: the metrics log is closed")
        self._file.write(self._line(row))
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> MetricsLog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def prepare_folder(path: Path) -> tuple[Path, bool]:
    """Create the run folder if needed and check it is writable; return (path, created).

    `created` tells the caller whether it may remove the folder again when the run fails
    before writing anything (bad input must leave nothing behind).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OSError(f"--out {path}: exists and is not a folder")
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"--out {path}: cannot create the folder ({e.strerror or e})") from None
    probe = path / f".write-test-{os.getpid()}"
    try:
        probe.write_bytes(b"")
    except OSError as e:
        if created:
            _remove_empty(path)
        raise OSError(f"--out {path}: the folder is not writable ({e.strerror or e})") from None
    finally:
        probe.unlink(missing_ok=True)
    return path, created


def new_folder(parent: Path, stem: str) -> Path:
    """A folder under `parent` named `stem`, or `stem-2`, `stem-3`, ... : the first name no one
    has, claimed with an exclusive mkdir so that two runs started in the same second never share
    one. The folder is created (empty)."""
    parent = Path(parent)
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"cannot create {parent}/ for the run folder ({e.strerror or e})") from None
    for i in range(1, 10_000):
        path = parent / (stem if i == 1 else f"{stem}-{i}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        except OSError as e:
            raise OSError(f"cannot create the run folder {path} ({e.strerror or e})") from None
        return path
    raise OSError(f"{parent}/ holds 10,000 folders named {stem}-N: give --out")


def _remove_empty(path: Path) -> None:
    try:
        path.rmdir()
    except OSError:
        pass


def discard_folder(path: Path, created: bool, names: tuple[str, ...] = (CONFIG, METRICS)) -> None:
    """Undo `prepare_folder` after a failure before training began: remove the files this
    run wrote (`names`) and the folder itself if this run created it and it is now empty."""
    for name in names:
        (Path(path) / name).unlink(missing_ok=True)
    if created:
        _remove_empty(Path(path))


def ensure_folder(path: Path, option: str = "--out") -> Path:
    """The output folder of a command (created if needed), checked writable before any work."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OSError(f"{option} {path}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"{option} {path}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(path, os.W_OK):
        raise OSError(f"{option} {path}: the folder is not writable")
    return path
