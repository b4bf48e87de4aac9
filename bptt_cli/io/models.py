"""Reading a model file: a bptt checkpoint (the file or its run folder), a state dict holding a
recurrent network (PyTorch's nn.RNN / nn.GRU / nn.LSTM and its nn.Linear head, io/torch_state.py),
or a matrix file.

`load_matrix` reads one square real matrix from .npy, .npz or a PyTorch .pt/.pth state dict,
never unpickling anything (numpy with allow_pickle=False, torch with weights_only=True).
`open_model` tells the three kinds of --model apart.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bptt_cli.io.checkpoint import Checkpoint, load_checkpoint
from bptt_cli.io.filekind import FORMAT_KEY, NPY_MAGIC, check_npy_header, file_kind, kind_of_file
from bptt_cli.io.torch_state import (
    TorchNetwork,
    has_network,
    load_torch_object,
    npz_names,
    parse_network,
    recurrent_modules,
    shown,
    state_from_npz,
    state_from_torch,
)

TORCH_DEFAULT_KEY = "weight_hh_l0"


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


def _load_npy(path: Path, where: str) -> np.ndarray:
    with open(path, "rb") as f:
        if f.read(6) != NPY_MAGIC:  # otherwise numpy would try to read it as a pickle
            raise ValueError(f"{where}: not a readable .npy file (no NumPy header)")
        f.seek(0)
        check_npy_header(f, path.stat().st_size, where)
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as e:
        if "pickle" in str(e).lower():
            raise ValueError(f"{where}: contains pickled (object) data, which bptt refuses to load") from None
        raise ValueError(f"{where}: not a readable .npy file ({e})") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"{where}: not a readable .npy file ({e})") from None


def npz_member(z: zipfile.ZipFile, name: str, where: str) -> None:
    """check_npy_header on an .npz member before numpy reads it."""
    info = z.getinfo(f"{name}.npy")
    with z.open(info) as f:
        check_npy_header(f, info.file_size, where)


def _load_npz(path: Path, key: str | None, where: str) -> tuple[np.ndarray, str]:
    try:
        with zipfile.ZipFile(path) as zf, np.load(path, allow_pickle=False) as z:
            files = list(z.files)
            if key is None:
                if FORMAT_KEY in files:  # a bptt checkpoint: its recurrent matrix
                    key = "param/W_h"
                elif len(files) == 1:
                    key = files[0]
                else:
                    raise ValueError(f"{where}: holds {len(files)} arrays ({', '.join(files)}); choose one with --key")
            if key not in files:
                raise ValueError(f"{where}: no array named {key!r} (it has: {', '.join(files) or 'nothing'})")
            npz_member(zf, key, f"{where} (key {key})")
            return z[key], key
    except ValueError as e:
        if str(e).startswith(where):
            raise
        if "pickle" in str(e).lower():
            raise ValueError(
                f"{where}: entry {key!r} holds pickled (object) data, which bptt refuses to load"
            ) from None
        raise ValueError(f"{where}: corrupt .npz archive ({e})") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"{where}: corrupt .npz archive ({type(e).__name__}: {e})") from None


def _load_torch(path: Path, key: str | None, where: str) -> tuple[np.ndarray, str]:
    return _torch_entry(load_torch_object(path, where), key, where)


def _torch_entry(obj: Any, key: str | None, where: str) -> tuple[np.ndarray, str]:
    """The matrix `key` (default 'weight_hh_l0') of a loaded torch object, or the bare tensor."""
    import torch  # load_torch_object imported it (or said how to install it)

    key = TORCH_DEFAULT_KEY if key is None else key
    if isinstance(obj, torch.Tensor):
        tensor, key = obj, "<tensor>"
    elif isinstance(obj, dict):
        if key not in obj:
            names = [str(k) for k, v in obj.items() if isinstance(v, torch.Tensor)]
            raise ValueError(
                f"{where}: no tensor named {key!r} (it has: {', '.join(names[:20]) or 'no tensors'}); "
                "choose one with --key"
            )
        tensor = obj[key]
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"{where}: entry {key!r} is a {type(tensor).__name__}, not a tensor")
    else:
        raise ValueError(f"{where}: holds a {type(obj).__name__}, not a state dict or tensor")
    if tensor.is_complex():
        raise ValueError(f"{where}: entry {key!r} has complex entries; W_h must be real")
    if tensor.dtype in (torch.bfloat16, torch.float16):
        tensor = tensor.float()
    if tensor.dtype == torch.bool:
        raise ValueError(f"{where}: entry {key!r} is not a numeric matrix (dtype bool)")
    return tensor.detach().cpu().numpy(), key


def load_matrix(path: str | os.PathLike, key: str | None = None, option: str = "--model") -> np.ndarray:
    """Read one square real matrix as float64 (see `load_matrix_with_key`)."""
    return load_matrix_with_key(path, key, option)[0]


def load_matrix_with_key(
    path: str | os.PathLike, key: str | None = None, option: str = "--model"
) -> tuple[np.ndarray, str | None]:
    """Read one square real matrix as float64.

    The file's kind comes from its bytes (io/filekind.py), whatever its name: .npy, the array;
    .npz, `key` (default: the only array, or W_h of a bptt checkpoint); PyTorch, a state dict
    entry `key` (default 'weight_hh_l0'), loaded with torch.load(weights_only=True). A header
    claiming more than the file holds, or than memory allows, is refused before anything is
    allocated. ValueError naming `option`, the file and the problem otherwise.
    """
    path = Path(path)
    where = f"{option} {path}"
    kind = kind_of_file(path, where)
    if kind == "npy":
        if key is not None:
            raise ValueError(f"{where}: --key applies to .npz and PyTorch files, not .npy")
        arr = _load_npy(path, where)
        key, shown = None, where
    elif kind in ("npz", "bptt"):
        arr, key = _load_npz(path, key, where)
        shown = f"{where} (key {key})"
    elif kind == "torch":
        arr, key = _load_torch(path, key, where)
        shown = f"{where} (key {key})"
    else:
        raise ValueError(f"{where}: not a .npy, .npz or PyTorch file (its first bytes are none of those formats)")
    return check_matrix(arr, shown), key


MODEL_FILE = "model.npz"  # the checkpoint inside a run folder


@dataclass(frozen=True)
class ModelFile:
    """What --model points at: a bptt checkpoint, a recurrent network from a state dict, or one
    matrix (W_h) from a matrix file.

    path : the file read (a run folder's model.npz when --model named the folder)
    checkpoint : the Checkpoint, for a bptt checkpoint; else None
    matrix : (H, H) float64: the matrix of a matrix file, or W_hh of a network that is a 1-layer
        nn.RNN (so that code reading a W_h reads that file as before); else None
    key : the array name inside the file, when `matrix` came from one
    network : the TorchNetwork (io/torch_state.py), for a state dict holding a recurrent module;
        else None
    """

    path: Path
    checkpoint: Checkpoint | None = None
    matrix: np.ndarray | None = None
    key: str | None = None
    network: TorchNetwork | None = None

    @property
    def kind(self) -> str:
        """'checkpoint' | 'network' | 'matrix'."""
        return "checkpoint" if self.checkpoint is not None else "network" if self.network is not None else "matrix"

    @property
    def where(self) -> str:
        if self.network is not None:
            return f"{self.path} (module {self.network.module})" if self.network.module else str(self.path)
        return f"{self.path} (key {self.key})" if self.key else str(self.path)


def is_bptt_checkpoint(path: Path) -> bool:
    """True when `path` is an .npz archive carrying the bptt format entry (whatever its name)."""
    try:
        return file_kind(Path(path)) == "bptt"
    except OSError:
        return False


def open_model(
    path: str | os.PathLike,
    key: str | None = None,
    option: str = "--model",
    *,
    head: str | None = None,
    activation: str | None = None,
    need_head: bool = False,
    need_activation: bool = False,
) -> ModelFile:
    """Read --model PATH: a run folder (its model.npz), a bptt checkpoint, a state dict holding a
    recurrent network, or a matrix file (.npy, .npz, PyTorch).

    `--key` is an array name or a module prefix, whichever the file has:

    - a name of an array in the file (`--key W_h`, `--key enc.W`, `--key rnn.weight_hh_l0`): that
      array, as a matrix (W_h), as always;
    - else the prefix of a recurrent module (`--key rnn`, `--key encoder.lstm`: what precedes
      `weight_hh_l0`): that module, as a network;
    - no --key: the file's one recurrent module, when it has one (a module has weight_ih_l0 and
      weight_hh_l0; a lone weight_hh_l0 is a matrix, as before), else the default matrix
      (weight_hh_l0 of a PyTorch file, the only array of an .npz).

    A network that is a 1-layer nn.RNN also fills `matrix` with its W_hh.

    Parameters
    ----------
    path : path-like
    key : str, optional
        An array name or a module prefix (above).
    option : str
        The option the user gave the path with, for the messages.
    head, activation, need_head, need_activation
        For a network: io/torch_state.parse_network's. By default a network may lack its output
        layer (the caller then brings its own, as for a matrix file) and an nn.RNN its
        nonlinearity (`network.activation` is then None); pass True to refuse those.

    Returns
    -------
    ModelFile

    Raises
    ------
    ValueError
        One line naming `option`, the file and the rule broken.
    """
    p = Path(path)
    if p.is_dir():
        if not (p / MODEL_FILE).is_file():
            raise ValueError(f"{option} {p}: a folder without {MODEL_FILE} (not a bptt run folder)")
        p = p / MODEL_FILE
    where = f"{option} {p}"
    if not p.exists():
        raise ValueError(f"{where}: no such file")
    if is_bptt_checkpoint(p):
        if key is not None:
            raise ValueError(f"--key applies to matrix files and state dicts; {where} is a bptt checkpoint")
        if head is not None:
            raise ValueError(f"--head applies to a state dict with a recurrent module; {where} is a bptt checkpoint")
        return ModelFile(path=p, checkpoint=load_checkpoint(p, option=option))
    try:
        kind = file_kind(p)
    except OSError as e:
        raise ValueError(f"{where}: cannot be read ({e.strerror or e})") from None
    network = None
    opts = {
        "key": key,
        "head": head,
        "activation": activation,
        "need_head": need_head,
        "need_activation": need_activation,
    }
    if kind == "torch":
        obj = load_torch_object(p, where)
        names = [str(k) for k in obj] if isinstance(obj, dict) else []
        if _wants_network(names, key, where):
            network = parse_network(state_from_torch(obj, where), where, **opts)
        else:
            arr, used = _torch_entry(obj, key, where)
            _no_head(head, where)
            return ModelFile(path=p, matrix=check_matrix(arr, f"{where} (key {used})"), key=used)
    elif kind == "npz":
        try:
            names = npz_names(p)
        except (OSError, zipfile.BadZipFile) as e:
            raise ValueError(f"{where}: corrupt .npz archive ({type(e).__name__}: {e})") from None
        if _wants_network(names, key, where):
            network = parse_network(state_from_npz(p, where), where, **opts)
    if network is None:
        _no_head(head, where)
        matrix, used = load_matrix_with_key(p, key, option)
        return ModelFile(path=p, matrix=matrix, key=used)
    matrix = used = None
    if network.kind == "rnn" and network.num_layers == 1:
        used = f"{network.module}.weight_hh_l0" if network.module else "weight_hh_l0"
        matrix = check_matrix(network.params.layers[0].W_hh, f"{where} (key {used})")
    return ModelFile(path=p, matrix=matrix, key=used, network=network)


def _wants_network(names: list[str], key: str | None, where: str) -> bool:
    """Whether --key and the file's keys make it a network (open_model's docstring)."""
    if key is not None and key in names:
        return False
    if key is None:
        return has_network(names)
    if key.removesuffix(".") in recurrent_modules(names):
        return True
    if has_network(names):
        modules = ", ".join(shown(m) for m in recurrent_modules(names))
        arrays = ", ".join(names[:20])
        raise ValueError(f"{where}: no array or recurrent module named {key!r} (modules: {modules}; arrays: {arrays})")
    return False  # the matrix path says which arrays there are


def _no_head(head: str | None, where: str) -> None:
    if head is not None:
        raise ValueError(f"--head applies to a state dict with a recurrent module; {where} has none")
