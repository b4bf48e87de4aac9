"""The bptt checkpoint: one .npz archive, no pickle anywhere.

Entries of the archive:

- ``bptt_format``: the string "bptt-checkpoint/1" (tells a bptt checkpoint from any other .npz);
- ``param/<name>``: the parameter arrays: ``W_x``, ``W_h``, ``b``, ``W_y``, ``c`` for the vanilla
  RNN (core/rnn.py), or ``l0.W_ih``, ``l0.W_hh``, ..., ``W_y``, ``c`` for a stacked RNN, GRU or
  LSTM in PyTorch's layout (core/net.py: the kind, the depth and the biases follow from them);
- ``config``: a JSON text (a 0-d unicode array) holding the caller's config dict;
- ``extra/<name>``: optional numeric arrays (optimizer moments, step counters, RNG state words...).

Writes are atomic (io/atomic.py), so an interrupted save never leaves a half-written checkpoint
where a good one was. Reads use allow_pickle=False. A numpy Generator's state is a dict of (big)
integers: it round-trips through the JSON config (Python's json keeps arbitrary-precision ints).
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bptt_cli.core.net import NetParams, check_net_params
from bptt_cli.core.rnn import PARAM_NAMES, Params, check_params
from bptt_cli.io.atomic import atomic_write
from bptt_cli.io.filekind import FORMAT_KEY, check_npy_header, kind_of_file

FORMAT = "bptt-checkpoint/1"
_CONFIG_KEY = "config"
_PARAM = "param/"
_EXTRA = "extra/"


@dataclass(frozen=True)
class Checkpoint:
    """What `load_checkpoint` returns: the parameters, the saved config, and the extras."""

    params: Params | NetParams
    config: dict[str, Any]
    extras: dict[str, np.ndarray] = field(default_factory=dict)


def save_checkpoint(
    path: str | os.PathLike, params: Params | NetParams, config: dict, extras: dict[str, np.ndarray] | None = None
) -> Path:
    """Write params, a JSON-able config dict and optional numeric extras to `path` atomically.

    Raises ValueError for invalid parameters, a config that is not strict JSON, or an extra that
    is not a numeric (bool/int/float/complex) array; OSError when the folder is not writable.
    Returns the path written.
    """
    path = Path(path)
    check_net_params(params) if isinstance(params, NetParams) else check_params(params)
    if not isinstance(config, dict):
        raise ValueError(f"checkpoint `config` must be a dict; got {type(config).__name__}")
    try:
        config_text = json.dumps(config, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as e:
        raise ValueError(f"checkpoint `config` must be JSON-serialisable without NaN/inf: {e}") from None
    arrays: dict[str, np.ndarray] = {FORMAT_KEY: np.array(FORMAT), _CONFIG_KEY: np.array(config_text)}
    for name, arr in params.as_dict().items():
        arrays[_PARAM + name] = np.ascontiguousarray(arr)
    for name, value in (extras or {}).items():
        if not isinstance(name, str) or not name or "/" in name:
            raise ValueError(f"checkpoint extra names must be non-empty strings without '/'; got {name!r}")
        arr = np.asarray(value)
        if arr.dtype.kind not in "biufc":
            raise ValueError(f"checkpoint extra {name!r} must be a numeric array; got dtype {arr.dtype}")
        arrays[_EXTRA + name] = arr
    with atomic_write(path) as f:
        np.savez(f, **arrays)
    return path


def load_checkpoint(path: str | os.PathLike, option: str = "checkpoint") -> Checkpoint:
    """Read a checkpoint written by `save_checkpoint` (allow_pickle=False).

    Raises ValueError naming `option` and the file for a missing file, a file that is not a
    bptt checkpoint (an .npz or PyTorch file of something else, told from its bytes), a corrupt,
    truncated or pickled entry, an entry larger than memory, or invalid parameters.
    """
    path = Path(path)
    where = f"{option} {path}"
    kind = kind_of_file(path, where)
    if kind == "torch":
        raise ValueError(f"{where}: a PyTorch file, not a bptt checkpoint (a checkpoint is what `bptt train` saves)")
    if kind != "bptt":
        what = {"npy": "a .npy array", "npz": f"an .npz archive without the '{FORMAT_KEY}' entry"}.get(kind, "")
        raise ValueError(f"{where}: not a bptt checkpoint ({what or 'not an .npz archive'})")
    try:
        with zipfile.ZipFile(path) as zf:
            for info in zf.infolist():  # every entry's claimed size, before numpy allocates it
                if info.filename.endswith(".npy"):
                    with zf.open(info) as f:
                        check_npy_header(f, info.file_size, f"{where} (entry {info.filename[:-4]})")
        with np.load(path, allow_pickle=False) as z:
            files = set(z.files)
            if FORMAT_KEY not in files:
                raise ValueError(f"{where}: an .npz archive but not a bptt checkpoint (no '{FORMAT_KEY}' entry)")
            fmt = str(z[FORMAT_KEY])
            if fmt != FORMAT:
                raise ValueError(f"{where}: unsupported checkpoint format {fmt!r} (this bptt reads {FORMAT!r})")
            stacked = _PARAM + "l0.W_hh" in files  # a stacked RNN, GRU or LSTM (core/net.py)
            names = [k[len(_PARAM) :] for k in files if k.startswith(_PARAM)] if stacked else list(PARAM_NAMES)
            missing = [n for n in names if _PARAM + n not in files]
            if missing or _CONFIG_KEY not in files:
                what = ", ".join([_PARAM + n for n in missing] + ([] if _CONFIG_KEY in files else [_CONFIG_KEY]))
                raise ValueError(f"{where}: incomplete checkpoint, missing {what}")
            arrays = {n: z[_PARAM + n] for n in names}
            config_text = str(z[_CONFIG_KEY])
            extras = {k[len(_EXTRA) :]: z[k] for k in sorted(files) if k.startswith(_EXTRA)}
    except ValueError as e:
        msg = str(e)
        if msg.startswith(where):
            raise
        if "pickle" in msg.lower():
            raise ValueError(f"{where}: contains pickled (object) data, which bptt refuses to load") from None
        raise ValueError(f"{where}: corrupt archive ({msg})") from None
    except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
        raise ValueError(f"{where}: corrupt archive ({type(e).__name__}: {e})") from None
    try:
        config = json.loads(config_text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{where}: the config entry is not valid JSON ({e})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{where}: the config entry is not a JSON object")
    for name, arr in arrays.items():
        if arr.dtype.kind != "f":
            raise ValueError(f"{where}: parameter {name} has non-float dtype {arr.dtype}")
    try:
        params = check_net_params(NetParams.from_dict(arrays)) if stacked else check_params(Params(**arrays))
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    return Checkpoint(params=params, config=config, extras=extras)
