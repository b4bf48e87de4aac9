"""The files of a run folder: atomic JSON documents and a streamed JSON Lines log.

A training run folder holds model.npz (io/checkpoint.py), config.json, metrics.jsonl,
summary.json and plots. Whole documents are written atomically (io/atomic.py), so a reader
(or a crash) never sees half a file. metrics.jsonl grows one complete line per logged step and is flushed
after every line; a resumed run first cuts it back to the checkpoint's step so that the log of
an interrupted-and-resumed run reads like the log of one uninterrupted run.

A run claims its folder (`RunFolder.claim`): an flock on a lock file, so that of two runs
started on one folder exactly one proceeds (and a killed run's lock goes with it), and a
folder that holds anything but the run's own files is refused, so that a user's files are
never overwritten.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from bptt_cli.io.atomic import atomic_write_text
from bptt_cli.io.jsondoc import dumps, jsonable

CONFIG = "config.json"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
MODEL = "model.npz"
LOCK = ".bptt-lock"  # present while a run writes the folder: "pid host"


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


@dataclass
class RunFolder:
    """A run folder this process holds the lock of.

    created : this run made the folder (so it may remove it again when the run is rejected)
    written : the names this run wrote, removed by `discard`
    """

    path: Path
    created: bool
    option: str = "--out"
    written: set[str] = field(default_factory=set)
    _fd: int | None = field(default=None, repr=False)

    @classmethod
    def claim(cls, path: Path, *, own_run: bool = False, option: str = "--out") -> RunFolder:
        """Create or take `path` for a run, exclusively.

        A new folder is created; an existing one must be empty, or (own_run: --resume in its own
        folder) hold the run being continued. Another live run's lock, a non-empty folder of
        someone else's, a file in the way or a folder that cannot be written is a ValueError or
        OSError naming `option`, and nothing is left behind.
        """
        path = Path(path)
        if _kind(path, option) == "other":
            raise OSError(f"{option} {shown(path)}: exists and is not a folder")
        created = False
        try:
            path.mkdir(parents=True)
            created = True
        except FileExistsError:
            pass
        except OSError as e:
            raise OSError(f"{option} {shown(path)}: cannot create the folder ({e.strerror or e})") from None
        folder = cls(path, created, option)
        folder._lock()
        try:
            others = sorted(n for n in os.listdir(path) if n != LOCK)
        except OSError as e:
            folder.discard()
            raise OSError(f"{option} {path}: cannot read the folder ({e.strerror or e})") from None
        if others and not own_run:
            folder.discard()
            listing = ", ".join(others[:4]) + (f" and {len(others) - 4} more" if len(others) > 4 else "")
            hint = f"; to continue the run there, use --resume {path}" if MODEL in others else ""
            raise ValueError(
                f"{option} {path}: the folder is not empty (it holds {listing}); a run is written only into a "
                f"new or empty folder, so that nothing of yours is overwritten{hint}"
            )
        return folder

    @classmethod
    def claim_new(cls, parent: Path, stem: str) -> RunFolder:
        """A new folder parent/stem (or stem-2, stem-3, ...: never one that exists), claimed."""
        return cls.claim(new_folder(parent, stem))

    def _lock(self) -> None:
        """flock the lock file: the kernel drops the lock when this process ends, however it
        ends, so a killed run never leaves a folder locked."""
        lock = self.path / LOCK
        for _ in range(3):
            try:
                fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                self.discard(lock=False)
                raise OSError(f"{self.option} {self.path}: the folder is not writable ({e.strerror or e})") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                holder = os.pread(fd, 64, 0).decode(errors="replace").split()
                os.close(fd)
                self.discard(lock=False)
                who = f" (pid {holder[0]})" if holder else ""
                raise ValueError(
                    f"{self.option} {self.path}: another bptt run{who} is writing this folder; "
                    "wait for it to finish, or choose another folder"
                ) from None
            try:
                same = os.fstat(fd).st_ino == os.stat(lock).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder removed the file between our open and our lock: try the new one
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {socket.gethostname()}\n".encode(), 0)
            self._fd = fd
            return
        self.discard(lock=False)
        raise ValueError(f"{self.option} {self.path}: other bptt runs keep taking this folder; choose another")

    def wrote(self, name: str) -> Path:
        """Note that this run writes `name` (removed again by `discard`); return its path."""
        self.written.add(name)
        return self.path / name

    def release(self) -> None:
        """Give the folder up, keeping everything written."""
        fd, self._fd = self._fd, None
        if fd is not None:
            (self.path / LOCK).unlink(missing_ok=True)
            os.close(fd)

    def discard(self, *, lock: bool = True) -> None:
        """Undo the claim after a rejection: remove what this run wrote, its lock, and the folder
        itself if this run created it and it is now empty."""
        for name in self.written:
            (self.path / name).unlink(missing_ok=True)
        if lock:
            self.release()
        if self.created:
            _remove_empty(self.path)


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
    if _kind(path, option) == "other":
        raise OSError(f"{option} {shown(path)}: exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise OSError(f"{option} {shown(path)}: cannot create the folder ({e.strerror or e})") from None
    if not os.access(path, os.W_OK):
        raise OSError(f"{option} {shown(path)}: the folder is not writable")
    return path


def shown(path: Path, width: int = 80) -> str:
    """A path for a one-line message: a very long one shortened in the middle."""
    text = str(path)
    return text if len(text) <= width else f"{text[: width // 2]}...{text[-(width // 2 - 3) :]}"


def _kind(path: Path, option: str) -> str:
    """'missing' | 'folder' | 'other'; a path the system cannot even look up (too long, a file in
    the way of a parent) is an OSError naming the option."""
    try:
        if not path.exists():
            return "missing"
        return "folder" if path.is_dir() else "other"
    except OSError as e:
        raise OSError(f"{option} {shown(path)}: not a usable path ({e.strerror or e})") from None
