"""Where W_h comes from: a bptt checkpoint, a matrix file, or a fresh initialisation.

`load_matrix` reads one square real matrix from .npy, .npz or a PyTorch .pt/.pth state dict,
never unpickling anything (numpy with allow_pickle=False, torch with weights_only=True).
`resolve_params` is the helper the spectrum and trace commands share to turn
--model / --weights / --hidden --init --spectral-radius --seed into Params.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bptt_cli.checkpoint import _FORMAT_KEY, load_checkpoint
from bptt_cli.model import Params, init_params, scale_to_spectral_radius

if TYPE_CHECKING:
    from bptt_cli.tasks import Task

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
                if _FORMAT_KEY in files:  # a bptt checkpoint: its recurrent matrix
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
    elif suffix == ".npz":
        arr, key = _load_npz(path, key)
        where = f"{path} [{key}]"
    elif suffix in (".pt", ".pth"):
        arr, key = _load_torch(path, key)
        where = f"{path} [{key}]"
    else:
        raise ValueError(f"{path}: unsupported file type {suffix or '(none)'!r}; use .npy, .npz, .pt or .pth")
    return check_matrix(arr, where)


@dataclass(frozen=True)
class ParamsSource:
    """Params and where they came from.

    origin : "model" | "weights" | "init"
    description : one line for humans ("checkpoint runs/x/model.npz", ...)
    config : the checkpoint's saved config for --model (its activation, task...), else {}
    """

    params: Params
    origin: str
    description: str
    config: dict[str, Any] = field(default_factory=dict)


def resolve_params(
    rng: np.random.Generator,
    *,
    model: str | os.PathLike | None = None,
    weights: str | os.PathLike | None = None,
    key: str | None = None,
    hidden: int = 32,
    init: str = "gaussian",
    spectral_radius: float | None = None,
    input_size: int = 1,
    output_size: int = 1,
    dtype: str = "float64",
) -> ParamsSource:
    """Params from exactly one source.

    --model PATH   : a bptt checkpoint (all five arrays, as trained);
    --weights FILE : W_h from `load_matrix(FILE, key)`; W_x (H, input_size) and W_y
                     (output_size, H) drawn fresh from `rng` as in `init_params`, biases zero;
    otherwise      : `init_params(rng, hidden_size=hidden, init=init, spectral_radius=...)`.
    With --model or --weights, `spectral_radius` (when given) rescales the loaded W_h.
    """
    if model is not None and weights is not None:
        raise ValueError("--model and --weights are mutually exclusive: give one source of W_h")
    if key is not None and weights is None:
        raise ValueError("--key only applies with --weights")
    if model is not None:
        ckpt = load_checkpoint(model)
        params = ckpt.params.astype(np.dtype(dtype))
        origin, description, config = "model", f"checkpoint {model}", ckpt.config
    elif weights is not None:
        W_h = load_matrix(weights, key)
        H = W_h.shape[0]
        fresh = init_params(rng, input_size=input_size, hidden_size=H, output_size=output_size, dtype="float64")
        params = Params(W_x=fresh.W_x, W_h=W_h, b=fresh.b, W_y=fresh.W_y, c=fresh.c).astype(np.dtype(dtype))
        origin, description, config = "weights", f"matrix file {weights}" + (f" [{key}]" if key else ""), {}
    else:
        params = init_params(
            rng,
            input_size=input_size,
            hidden_size=hidden,
            output_size=output_size,
            init=init,
            spectral_radius=spectral_radius,
            dtype=dtype,
        )
        rho_txt = f", spectral radius {spectral_radius:g}" if spectral_radius is not None else ""
        return ParamsSource(params, "init", f"fresh {init} initialisation, H = {hidden}{rho_txt}", {})
    if spectral_radius is not None:
        W_h = scale_to_spectral_radius(params.W_h.astype(np.float64), spectral_radius).astype(params.dtype)
        params = Params(W_x=params.W_x, W_h=W_h, b=params.b, W_y=params.W_y, c=params.c)
        description += f", rescaled to spectral radius {spectral_radius:g}"
    return ParamsSource(params, origin, description, config)


def saved_options(model: str | os.PathLike | None, weights: str | os.PathLike | None) -> dict[str, Any]:
    """The options a --model checkpoint was made with ({} for --weights or a fresh init).

    `bptt train` keeps them under "options" in the checkpoint's config; other checkpoints keep
    them at the top level. The spectrum and trace commands take a checkpoint's task,
    activation and loss from here unless their own options say otherwise.
    """
    if model is None or weights is not None:
        return {}
    config = load_checkpoint(model).config
    return config["options"] if isinstance(config.get("options"), dict) else config


def task_from_options(
    task: str | None,
    options: dict[str, Any],
    *,
    seq_len: int | None,
    text: str | os.PathLike | None,
    model: str | os.PathLike | None = None,
) -> tuple[str, Task | None]:
    """(task name, Task) from --task, else the checkpoint's options; ("random", None) for none.

    The task's alphabet, delay and text come from the checkpoint's options when it has them.
    """
    from bptt_cli.tasks import TASKS, make_task

    saved = options.get("task")
    name = task if task is not None else saved if isinstance(saved, str) else "random"
    if name not in ("random", *TASKS):
        raise ValueError(f"{model}: the checkpoint's task {name!r} is not one of {', '.join(TASKS)}")
    if name == "random":
        return name, None
    return name, make_task(
        name,
        seq_len=seq_len,
        symbols=int(options.get("alphabet") or options.get("symbols") or 8),
        delay=int(options.get("delay") or 10),
        text=text if text is not None else options.get("text"),
    )
