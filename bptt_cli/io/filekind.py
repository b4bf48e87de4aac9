"""What a model file is, told from its bytes (not its name), and what its arrays claim to need.

`file_kind`: a .npy array, an .npz archive, a bptt checkpoint (an .npz with the format entry),
a PyTorch file (a zip holding data.pkl, or a legacy pickle), or unknown: a PyTorch state dict
renamed model.npz is still read as one, and a checkpoint is never mistaken for a matrix file.

`check_npy_header`: before numpy allocates an array, the shape and dtype its header claims are
checked against the bytes actually there (a 192-byte file claiming (100000, 100000) is refused
as truncated) and against the memory available (io/memory.py), so a file never makes bptt
allocate what it does not hold.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from bptt_cli.io.memory import check_fits, human

FORMAT_KEY = "bptt_format"  # the entry that makes an .npz archive a bptt checkpoint
NPY_MAGIC = b"\x93NUMPY"


def file_kind(path: Path) -> str:
    """'npy' | 'npz' | 'bptt' | 'torch' | 'unknown' (OSError when the file cannot be read)."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head.startswith(NPY_MAGIC):
        return "npy"
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                names = z.namelist()
        except (zipfile.BadZipFile, OSError):
            return "unknown"
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "torch"  # torch.save's zip format
        if f"{FORMAT_KEY}.npy" in names:
            return "bptt"
        return "npz"
    if head[:1] == b"\x80":
        return "torch"  # a pickle: torch.save's legacy format (or any pickle: torch.load refuses those safely)
    return "unknown"


def kind_of_file(path: Path, where: str) -> str:
    """`file_kind` of a path the user gave (`where`: the option and the path, for the messages):
    ValueError for a missing file, a folder, or a file that cannot be read."""
    if not path.exists():
        raise ValueError(f"{where}: no such file")
    if path.is_dir():
        raise ValueError(f"{where}: is a folder, not a file")
    try:
        return file_kind(path)
    except OSError as e:
        raise ValueError(f"{where}: cannot be read ({e.strerror or e})") from None


def npy_claim(f: IO[bytes]) -> tuple[tuple[int, ...], np.dtype]:
    """The (shape, dtype) an .npy header claims; the file is left at the start of the data."""
    version = np.lib.format.read_magic(f)
    read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    shape, _, dtype = read(f)
    return tuple(int(n) for n in shape), np.dtype(dtype)


def check_npy_header(f: IO[bytes], size: int, where: str) -> None:
    """Refuse an array whose header claims more than the `size` bytes of the file (or the .npz
    member) hold, or more memory than is available. ValueError naming `where`."""
    try:
        shape, dtype = npy_claim(f)
        start = f.tell()
    except (ValueError, OSError, EOFError) as e:
        raise ValueError(f"{where}: not a readable .npy array ({e})") from None
    if dtype.hasobject:
        raise ValueError(f"{where}: holds pickled (object) data, which bptt refuses to load")
    need = math.prod(shape) * dtype.itemsize
    have = size - start
    if need > have:
        raise ValueError(
            f"{where}: truncated or corrupt: its header claims shape {shape} {dtype} ({human(need)}) but the file "
            f"holds {human(max(have, 0))} of data"
        )
    check_fits(need, f"{where} (shape {shape} {dtype})", usage=False)
