"""Reading a model file: a bptt checkpoint (the file or its run folder), or a matrix file.

`load_matrix` reads one square real matrix from .npy, .npz or a PyTorch .pt/.pth state dict,
never unpickling anything (numpy with allow_pickle=False, torch with weights_only=True).
`open_model` tells the two kinds of --model apart.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bptt_cli.io.checkpoint import FORMAT_KEY, Checkpoint, load_checkpoint

TORCH_DEFAULT_KEY = "weight_hh_l0"
SUFFIXES = (".npy", ".npz", ".pt", ".pth")


def check_matrix(arr: Any, where: str) -> np.ndarray:
    """A finite, real, non-empty square 2-D numeric array -> float64 copy; ValueError otherwise."""
    arr = np.asarray(arr)
    if arr.dtype.hasobject:
        raise ValueError(f"{where}: an object array (pickled data), which bptt refuses to load")
    if np.iscomplexobj(arr):
        raise ValueError(f"{where}: complex entries (dtype {arr.dtype}); W_h must be real")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{where}: not a numeric matrix (dtype {arr.dtype})")
    if arr.size == 0:
        raise ValueError(f"{where}: empty matrix (shape {arr.shape})")
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1]:
        raise ValueError(f"{where}: not a square matrix (shape {arr.shape}); W_h must be H x H")
    out = arr.astype(np.float64)
    bad = int(np.count_nonzero(~np.isfinite(out)))
    if bad:
        raise ValueError(f"{where}: contains NaN or infinite values ({bad} of {out.size} entries)")
    return out


def _load_npy(path: Path) -> np.ndarray:
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":  # otherwise numpy would try to read it as a pickle
            raise ValueError(f"{path}: not a readable .npy file (no NumPy header)")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise ValueError(f"{path}: contains pickled (object) data, which bptt refuses to load") from None
        raise ValueError(f"{path}: not a readable .npy file ({e})") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: not a readable .npy file ({e})") from None


def _load_npz(path: Path, key: str | None) -> tuple[np.ndarray, str]:
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not an .npz archive")
    try:
        with np.load(path, allow_pickle=False) as z:
            files = list(z.files)
            if key is None:
                if FORMAT_KEY in files:  # a bptt checkpoint: its recurrent matrix
                    key = "param/W_h"
                elif len(files) == 1:
                    key = files[0]
                else:
                    raise ValueError(f"{path}: holds {len(files)} arrays ({', '.join(files)}); choose one with --key")
            if key not in files:
                raise ValueError(f"{path}: no array named {key!r} (it has: {', '.join(files) or 'nothing'})")
            return z[key], key
    except ValueError as e:
        if str(e).startswith(str(path)):
            raise
        if "pickle" in str(e).lower():
            raise ValueError(f"{path}: entry {key!r} holds pickled (object) data, which bptt refuses to load") from None
        raise ValueError(f"{path}: corrupt .npz archive ({e})") from None
    except (OSError, EOFError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: corrupt .npz archive ({type(e).__name__}: {e})") from None


def _load_torch(path: Path, key: str | None) -> tuple[np.ndarray, str]:
    try:
        import torch
    except ImportError:
        raise ValueError(
            f"{path}: reading a PyTorch file needs torch, which is not installed "
            "(pip install torch, or save the matrix with numpy.save)"
        ) from None
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types; all mean "cannot read safely"
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ValueError(f"{path}: not loadable as plain tensors with weights_only=True ({first[:160]})") from None
    key = TORCH_DEFAULT_KEY if key is None else key
    if isinstance(obj, torch.Tensor):
        tensor, key = obj, "<tensor>"
    elif isinstance(obj, dict):
        if key not in obj:
            names = [str(k) for k, v in obj.items() if isinstance(v, torch.Tensor)]
            raise ValueError(f"{path}: no tensor named {key!r} (it has: {', '.join(names[:20]) or 'no tensors'})")
        tensor = obj[key]
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{path}: entry {key!r} is a {type(tensor).__name__}, not a tensor")
    else:
        raise ValueError(f"{path}: holds a {type(obj).__name__}, not a state dict or tensor")
    if tensor.is_complex():
        raise ValueError(f"{path}: entry {key!r} has complex entries; W_h must be real")
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    if tensor.dtype == torch.bool:
        raise ValueError(f"{path}: entry {key!r} is not a numeric matrix (dtype bool)")
    return tensor.detach().cpu().numpy(), key


def load_matrix(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
    """Read one square real matrix as float64 (see `load_matrix_with_key`)."""
    return load_matrix_with_key(path, key)[0]


def load_matrix_with_key(path: str | os.PathLike, key: str | None = None) -> tuple[np.ndarray, str | None]:
    """Read one square real matrix as float64.

    .npy: the array; .npz: `key` (default: the only array, or W_h of a bptt checkpoint);
    .pt/.pth: a PyTorch state dict entry `key` (default 'weight_hh_l0'), loaded with
    torch.load(weights_only=True). ValueError naming the file and the problem otherwise.
    """
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file")
    if path.is_dir():
        raise ValueError(f"{path}: is a folder, not a file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        if key is not None:
            raise ValueError(f"{path}: --key applies to .npz and .pt/.pth files, not .npy")
        arr, where = _load_npy(path), str(path)
        key = None
    elif suffix == ".npz":
        arr, key = _load_npz(path, key)
        where = f"{path} (key {key})"
    elif suffix in (".pt", ".pth"):
        arr, key = _load_torch(path, key)
        where = f"{path} (key {key})"
    else:
        raise ValueError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .npy, .npz, .pt or .pth")
    return check_matrix(arr, where), key


MODEL_FILE = "model.npz"  # the checkpoint inside a run folder


@dataclass(frozen=True)
class ModelFile:
    """What --model points at: a bptt checkpoint, or one matrix (W_h) from a matrix file.

    path : the file read (a run folder's model.npz when --model named the folder)
    checkpoint : the Checkpoint, for a bptt checkpoint; else None
    matrix : (H, H) float64, for a matrix file; else None
    key : the array name inside the file, when there is one
    """

    path: Path
    checkpoint: Checkpoint | None = None
    matrix: np.ndarray | None = None
    key: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path} (key {self.key})" if self.key else str(self.path)


def is_bptt_checkpoint(path: Path) -> bool:
    """True when `path` is an .npz archive carrying the bptt format entry."""
    if path.suffix.lower() != ".npz" or not zipfile.is_zipfile(path):
        return False
    try:
        with np.load(path, allow_pickle=False) as z:
            return FORMAT_KEY in z.files
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return False


def open_model(path: str | os.PathLike, key: str | None = None) -> ModelFile:
    """Read --model PATH: a run folder (its model.npz), a bptt checkpoint, or a matrix file
    (.npy, .npz, .pt/.pth with --key). ValueError naming the file otherwise."""
    p = Path(path)
    if p.is_dir():
        if not (p / MODEL_FILE).is_file():
            raise ValueError(f"--model {p}: a folder without {MODEL_FILE} (not a bptt run folder)")
        p = p / MODEL_FILE
    if not p.exists():
        raise ValueError(f"--model {p}: no such file")
    if is_bptt_checkpoint(p):
        if key is not None:
            raise ValueError(f"--key applies to matrix files; {p} is a bptt checkpoint")
        return ModelFile(path=p, checkpoint=load_checkpoint(p))
    matrix, used = load_matrix_with_key(p, key)
    return ModelFile(path=p, matrix=matrix, key=used)
