"""A PyTorch state dict in, a PyTorch state dict out: the user's stacked nn.RNN / nn.GRU / nn.LSTM
with its nn.Linear output layer, as core.net.NetParams (PyTorch's layout), and bptt's models
written back for PyTorch.

Reading (`load_network`, `parse_network`). The file is `torch.save(model.state_dict())` (loaded
with torch.load(weights_only=True): no pickled object is ever run) or an .npz holding the same
key names; its kind is told by its bytes (io/filekind.py).

- The recurrent module is found by suffix: `weight_hh_l0`, `rnn.weight_hh_l0` and
  `encoder.lstm.weight_hh_l0` alike; its prefix is what precedes `weight_hh_l0` ('' for a bare
  module, else without the dot: 'rnn', 'encoder.lstm'). Several modules: `key` picks one.
- The kind comes from the shape of weight_hh_l0 (H x H rnn, 3H x H gru, 4H x H lstm), the depth
  from the `_l{k}` suffixes (numbered from 0 without gaps), bias from bias_ih_l0 / bias_hh_l0.
- The output layer is an nn.Linear on the top layer: `<head>.weight` (V, H) and `<head>.bias`
  (V,). Unnamed, it is the one such pair among the other keys (a `.weight` without its `.bias`
  is not taken: an nn.Embedding of width H looks like that); `head` names it (then its bias may
  be absent: nn.Linear(bias=False), c = 0). None found: an error when `need_head`, else the
  network has no output layer (W_y (0, H), c (0,), V = 0: the form bptt's vanilla RNN uses for
  the half-square loss), so that a caller that brings its own output layer (a matrix file's
  random one) can still read the file.
- An nn.RNN's nonlinearity is not in the state dict: `activation` gives it, unless the file came
  from `bptt export`, whose record (below) holds it. `activation_from_file` says which was used.
- Refused, in one line naming the key: bidirectional modules (`*_reverse`), an LSTM with
  proj_size (`weight_hr_l*`), a head that is not Linear-shaped, layers whose shapes disagree,
  missing pieces.

Writing (`export_state_dict`, `write_state_dict`). The keys are those of

    model = nn.ModuleDict({"rnn": nn.RNN(D, H, num_layers=L, nonlinearity=f, bias=b), "head": nn.Linear(H, V)})

(nn.GRU / nn.LSTM for those kinds): `rnn.weight_ih_l0`, ..., `head.weight`, `head.bias`, plus one
entry `bptt_meta`: a uint8 tensor holding UTF-8 JSON (the format, the kind, the nonlinearity,
the sizes, the dtype), so that every value of the dict is a tensor and bptt reads the file back
without being told the nonlinearity. PyTorch's strict load refuses unknown keys, so the file is
loaded without that one (`torch_lines` writes the two lines):

    model.load_state_dict({k: v for k, v in torch.load(path, weights_only=True).items() if k != "bptt_meta"})
"""

from __future__ import annotations

import json
import os
import re
import warnings
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bptt_cli._version import __version__
from bptt_cli.core.activations import NAMES as ACTIVATIONS
from bptt_cli.core.net import GATES, LayerParams, NetParams, check_net_params, kind_of
from bptt_cli.core.rnn import Params, check_params
from bptt_cli.io.atomic import atomic_write
from bptt_cli.io.filekind import check_npy_header, kind_of_file, npy_claim
from bptt_cli.io.memory import check_fits

META_KEY = "bptt_meta"
META_FORMAT = "bptt-state-dict/1"
RNN_MODULE, HEAD_MODULE = "rnn", "head"  # the ModuleDict names of an exported model
TORCH_CLASS = {"rnn": "nn.RNN", "gru": "nn.GRU", "lstm": "nn.LSTM"}
NONLINEARITIES = ("tanh", "relu")  # what nn.RNN can be built with
FORMATS = ("pt", "npz")
TORCH_INSTALL = (
    "pip install torch --index-url https://download.pytorch.org/whl/cpu (the CPU build; "
    "or pip install torch==2.13.0 as the README does)"
)

EXISTS = "exists; bptt does not overwrite a file (remove it or choose another name)"

_SUFFIX = "weight_hh_l0"
_LAYER_KEY = re.compile(r"(weight|bias)_(ih|hh|hr)_l(\d+)(_reverse)?")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


# ---------------------------------------------------------------------------- reading the file


@dataclass(frozen=True)
class StateDict:
    """The arrays of a state dict by key, as numpy (no copy of a torch tensor's memory).

    arrays : every entry numpy can hold (float16 and bfloat16 widened to float32, exactly)
    others : the entries that are not arrays, by key, with what they are ('a str', 'a sparse tensor')
    """

    arrays: dict[str, np.ndarray]
    others: dict[str, str]

    @property
    def names(self) -> list[str]:
        return list(self.arrays) + list(self.others)


def torch_failure(e: Exception) -> str:
    """What torch.load(weights_only=True) refusing a file means, in one sentence of ours (torch's
    own message is pages long and advises unpickling, which bptt never does)."""
    text = _ANSI.sub("", str(e))
    if "Weights only load failed" in text or "Unsupported global" in text or "UnpicklingError" in type(e).__name__:
        return (
            "it holds pickled Python objects besides tensors (a whole nn.Module, or a dict of other values), "
            "which bptt refuses to unpickle; save model.state_dict() instead"
        )
    first = (text.strip().splitlines() or [type(e).__name__])[0]
    return f"not a readable PyTorch file ({first.split('. ')[0]})"


def import_torch(where: str, doing: str = "reading a PyTorch file", instead: str = "") -> Any:
    """The torch module, or a ValueError naming `where` and saying how to install the CPU build
    (and `instead`, what else would do without torch)."""
    try:
        import torch
    except ImportError:
        raise ValueError(f"{where}: {doing} needs torch, which is not installed: {TORCH_INSTALL}{instead}") from None
    return torch


def load_torch_object(path: Path, where: str) -> Any:
    """torch.load(path, weights_only=True) on the CPU; ValueError naming `where` when torch is
    missing, the file is larger than the memory, or torch refuses it."""
    torch = import_torch(where)
    check_fits(path.stat().st_size, where, usage=False)  # tensors are stored raw: the file size bounds them
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols on files it then reads fine
            warnings.simplefilter("ignore")
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types; all mean "cannot read safely"
        raise ValueError(f"{where}: {torch_failure(e)}") from None


def state_from_torch(obj: Any, where: str) -> StateDict:
    """A loaded torch object as a StateDict; ValueError when it is not a dict (a bare tensor, a list)."""
    torch = import_torch(where)
    if isinstance(obj, torch.Tensor):
        raise ValueError(f"{where}: holds a single tensor, not a state dict (save model.state_dict())")
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: holds a {type(obj).__name__}, not a state dict")
    arrays, others = {}, {}
    for name, value in obj.items():
        name = str(name)
        if not isinstance(value, torch.Tensor):
            others[name] = f"a {type(value).__name__}"
            continue
        t = value.detach()
        if t.dtype in (torch.float16, torch.bfloat16):
            t = t.float()  # numpy has no bfloat16; float32 holds both exactly
        try:
            arrays[name] = t.cpu().numpy()
        except (RuntimeError, TypeError, ValueError):
            layout = str(t.layout).removeprefix("torch.")
            others[name] = f"a {layout} tensor" if t.layout != torch.strided else "a tensor numpy cannot hold"
    return StateDict(arrays, others)


def state_from_npz(path: Path, where: str) -> StateDict:
    """Every array of an .npz archive, each header checked before numpy allocates it."""
    try:
        with zipfile.ZipFile(path) as zf:
            need = 0
            for info in zf.infolist():
                if info.filename.endswith(".npy"):
                    with zf.open(info) as f:
                        check_npy_header(f, info.file_size, f"{where} (key {info.filename[:-4]})")
                    with zf.open(info) as f:
                        shape, dtype = npy_claim(f)
                    need += int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
            check_fits(need, where, usage=False)  # each member fits; all of them at once must too
        with np.load(path, allow_pickle=False) as z:
            return StateDict({name: z[name] for name in z.files}, {})
    except ValueError as e:
        if str(e).startswith(where):
            raise
        if "pickle" in str(e).lower():
            raise ValueError(f"{where}: holds pickled (object) data, which bptt refuses to load") from None
        raise ValueError(f"{where}: corrupt .npz archive ({e})") from None
    except (OSError, EOFError, KeyError, zipfile.BadZipFile) as e:
        raise ValueError(f"{where}: corrupt .npz archive ({type(e).__name__}: {e})") from None


def npz_names(path: Path) -> list[str]:
    """The array names of an .npz archive, from its directory alone (nothing is read)."""
    with zipfile.ZipFile(path) as zf:
        return [n[:-4] for n in zf.namelist() if n.endswith(".npy")]


def read_state(path: str | os.PathLike, option: str = "--model") -> StateDict:
    """The state dict in a PyTorch file or an .npz archive (told by its bytes); ValueError naming
    `option` and the file for anything else (a bptt checkpoint, a .npy, a bare tensor)."""
    path = Path(path)
    where = f"{option} {path}"
    kind = kind_of_file(path, where)
    if kind == "torch":
        return state_from_torch(load_torch_object(path, where), where)
    if kind == "npz":
        return state_from_npz(path, where)
    if kind == "bptt":
        raise ValueError(f"{where}: a bptt checkpoint, not a state dict")
    if kind == "npy":
        raise ValueError(f"{where}: a single .npy array, not a state dict (.npz or PyTorch)")
    raise ValueError(f"{where}: not an .npz or PyTorch file (its first bytes are neither format)")


# ---------------------------------------------------------------------------- the network in it


@dataclass(frozen=True)
class TorchNetwork:
    """A recurrent network read from a state dict.

    params : the arrays in PyTorch's layout (core/net.py), one float dtype; no output layer when
        `head` is None (W_y (0, H), c (0,))
    module : the recurrent module's prefix ('' for a bare module, 'rnn', 'encoder.lstm')
    head : the output layer's prefix, or None
    activation : an nn.RNN's nonlinearity (None for gru and lstm, or when neither the caller nor
        the file gave it and it was not needed)
    activation_from_file : True when `activation` came from the file's bptt_meta record
    keys : the state-dict keys the network was read from
    exported : the bptt_meta record when the file came from `bptt export`, else None
    """

    params: NetParams
    module: str
    head: str | None
    activation: str | None
    activation_from_file: bool
    keys: tuple[str, ...]
    exported: dict[str, Any] | None = None

    @property
    def kind(self) -> str:
        return self.params.kind

    @property
    def num_layers(self) -> int:
        return self.params.num_layers

    @property
    def bias(self) -> bool:
        return self.params.bias

    def describe(self) -> str:
        """'a 2-layer nn.LSTM (D = 3, H = 16) with output layer fc (V = 5)' and the like."""
        p = self.params
        act = f"{self.activation}, " if self.activation is not None else ""
        what = f"a {p.num_layers}-layer {TORCH_CLASS[p.kind]} ({act}D = {p.input_size}, H = {p.hidden_size}"
        what += f"{'' if p.bias else ', no bias'})"
        return what + (
            f" with output layer {self.head} (V = {p.output_size})" if self.head else " without an output layer"
        )

    def vanilla(self) -> Params | None:
        """A 1-layer nn.RNN as bptt's vanilla RNN (core/rnn.py, b = b_ih + b_hh); None otherwise."""
        return net_as_vanilla(self.params) if self.kind == "rnn" and self.num_layers == 1 else None


def recurrent_modules(names: list[str] | dict[str, Any]) -> list[str]:
    """The prefixes of every `weight_hh_l0` key, sorted: '' for a bare one, 'rnn', 'encoder.lstm'."""
    out = set()
    for name in names:
        if name == _SUFFIX:
            out.add("")
        elif name.endswith("." + _SUFFIX):
            out.add(name[: -len(_SUFFIX) - 1])
    return sorted(out)


def has_network(names: list[str] | dict[str, Any]) -> bool:
    """True when some module has both weight_ih_l0 and weight_hh_l0: a network, where a lone
    `weight_hh_l0` is just a matrix (what bptt read from such files before it read networks)."""
    names = set(names)
    return any(_dot(p) + "weight_ih_l0" in names for p in recurrent_modules(names))


def _dot(prefix: str) -> str:
    return f"{prefix}." if prefix else ""


def shown(prefix: str) -> str:
    """A prefix as a message shows it ('' would vanish)."""
    return prefix if prefix else "'' (a bare module)"


def _read_meta(state: StateDict, where: str) -> dict[str, Any] | None:
    if META_KEY not in state.arrays:
        return None
    arr = state.arrays[META_KEY]
    try:
        if arr.dtype != np.uint8 or arr.ndim != 1:
            raise ValueError("not a uint8 vector")
        meta = json.loads(arr.tobytes().decode("utf-8"))
        if not isinstance(meta, dict) or meta.get("format") != META_FORMAT:
            raise ValueError(f"not the format {META_FORMAT}")
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError(f"{where}: entry {META_KEY} is not bptt's export record ({e})") from None
    return meta


def _float(state: StateDict, key: str, where: str) -> np.ndarray:
    arr = state.arrays[key]
    if arr.dtype.kind == "c":
        raise ValueError(f"{where}: {key} has complex entries; the weights must be real")
    if arr.dtype.kind != "f":
        raise ValueError(f"{where}: {key} is not a floating-point tensor (dtype {arr.dtype})")
    bad = int(np.count_nonzero(~np.isfinite(arr)))
    if bad:
        raise ValueError(f"{where}: {key} contains NaN or infinite values ({bad} of {arr.size} entries)")
    return arr


def _choose_module(state: StateDict, key: str | None, where: str) -> str:
    modules = recurrent_modules(state.names)
    if not modules:
        raise ValueError(f"{where}: no recurrent module (no key ending in {_SUFFIX}): not an nn.RNN, nn.GRU or nn.LSTM")
    listed = ", ".join(shown(m) for m in modules)
    if key is not None:
        prefix = key.removesuffix(".")
        if prefix not in modules:
            raise ValueError(f"{where}: --key {key}: no recurrent module {prefix!r} (modules: {listed})")
        return prefix
    if len(modules) > 1:
        raise ValueError(f"{where}: holds {len(modules)} recurrent modules ({listed}); choose one with --key PREFIX")
    return modules[0]


def _layer_keys(state: StateDict, prefix: str, where: str) -> tuple[int, bool, list[str]]:
    """(num_layers, bias, the module's keys) after the refusals that need no shapes."""
    dot, found = _dot(prefix), {}
    for name in state.names:
        m = _LAYER_KEY.fullmatch(name[len(dot) :]) if name.startswith(dot) else None
        if m:
            found[name] = m
    order = {"weight_hh": 0, "weight_ih": 1, "bias_ih": 2, "bias_hh": 3, "weight_hr": 4}
    found = dict(sorted(found.items(), key=lambda item: (int(item[1][3]), order[f"{item[1][1]}_{item[1][2]}"])))
    for name, m in found.items():
        if m[4]:
            raise ValueError(f"{where}: {name}: a bidirectional module, which bptt does not analyse")
    for name, m in found.items():
        if m[2] == "hr":
            raise ValueError(f"{where}: {name}: an LSTM with proj_size > 0, which bptt does not analyse")
    for name in sorted(found):
        if name in state.others:
            raise ValueError(f"{where}: {name} is {state.others[name]}, not a dense tensor")
    layers = sorted({int(m[3]) for m in found.values()})
    L = len(layers)
    if layers != list(range(L)):
        gap = next(k for k in range(L + 1) if k not in layers)
        raise ValueError(
            f"{where}: {dot}weight_hh_l{layers[-1]} without {dot}weight_hh_l{gap}: layers are numbered from 0 "
            "without gaps"
        )
    bias = f"{dot}bias_ih_l0" in found or f"{dot}bias_hh_l0" in found
    pieces = ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if bias else ())
    for k in range(L):
        for piece in pieces:
            if f"{dot}{piece}_l{k}" not in found:
                raise ValueError(f"{where}: {dot}{piece}_l{k} is missing (layer {k} of {L})")
    if not bias:
        extra = sorted(n for n, m in found.items() if m[1] == "bias")
        if extra:
            raise ValueError(f"{where}: {extra[0]} without {dot}bias_ih_l0: the layers disagree about bias")
    pytorch = {"weight_ih": 0, "weight_hh": 1, "bias_ih": 2, "bias_hh": 3}  # the order of its state dict
    return L, bias, sorted(found, key=lambda n: (int(found[n][3]), pytorch[f"{found[n][1]}_{found[n][2]}"]))


def _layers(state: StateDict, prefix: str, L: int, bias: bool, where: str) -> tuple[str, list[dict[str, np.ndarray]]]:
    dot = _dot(prefix)
    W_hh0 = _float(state, f"{dot}weight_hh_l0", where)
    kind = kind_of(W_hh0.shape, f"{where}: {dot}weight_hh_l0")
    G, H = GATES[kind], W_hh0.shape[1]
    out = []
    for k in range(L):
        arrays = {
            "W_ih": _float(state, f"{dot}weight_ih_l{k}", where),
            "W_hh": _float(state, f"{dot}weight_hh_l{k}", where),
        }
        if bias:
            arrays["b_ih"] = _float(state, f"{dot}bias_ih_l{k}", where)
            arrays["b_hh"] = _float(state, f"{dot}bias_hh_l{k}", where)
        W_ih = arrays["W_ih"]
        D = W_ih.shape[1] if k == 0 and W_ih.ndim == 2 and W_ih.shape[1] > 0 else H
        expected = {"W_ih": (G * H, D), "W_hh": (G * H, H), "b_ih": (G * H,), "b_hh": (G * H,)}
        names = {"W_ih": "weight_ih", "W_hh": "weight_hh", "b_ih": "bias_ih", "b_hh": "bias_hh"}
        for name, arr in arrays.items():
            if arr.shape != expected[name]:
                below = "the input size D" if k == 0 else f"layer {k - 1}'s H = {H}"
                raise ValueError(
                    f"{where}: {dot}{names[name]}_l{k} has shape {tuple(arr.shape)}; layer {k} of an "
                    f"{TORCH_CLASS[kind]} with H = {H} (from {dot}weight_hh_l0) on {below} needs {expected[name]}"
                )
        out.append(arrays)
    return kind, out


def _head_candidates(state: StateDict, H: int, exclude: set[str]) -> list[str]:
    out = []
    for name, arr in state.arrays.items():
        if name in exclude or not name.endswith(".weight") or arr.ndim != 2 or arr.shape[1] != H:
            continue
        p = name[: -len(".weight")]
        b = state.arrays.get(f"{p}.bias")
        if arr.dtype.kind == "f" and b is not None and b.shape == (arr.shape[0],):
            out.append(p)
    return sorted(out)


def _head(
    state: StateDict, head: str | None, meta: dict | None, H: int, exclude: set[str], need_head: bool, where: str
) -> tuple[str | None, np.ndarray | None, np.ndarray | None]:
    """(prefix, W_y, c or None for a Linear without bias), or (None, None, None) for no head."""
    if head is None and meta is not None:
        head = (meta.get("modules") or {}).get("head")
        if head is None:  # exported without an output layer (V = 0)
            if need_head:
                raise ValueError(f"{where}: the model was exported without an output layer; the analysis needs one")
            return None, None, None
    if head is None:
        found = _head_candidates(state, H, exclude)
        if len(found) > 1:
            raise ValueError(
                f"{where}: {len(found)} candidates for the output layer ({', '.join(found)}: a .weight (V, {H}) with "
                "its .bias); choose one with --head PREFIX"
            )
        if not found:
            if need_head:
                raise ValueError(
                    f"{where}: no output layer: the analysis needs one, an nn.Linear on the top layer's H = {H} "
                    f"(a <prefix>.weight (V, {H}) with its <prefix>.bias (V,)); name it with --head PREFIX"
                )
            return None, None, None
        head = found[0]
    head = head.removesuffix(".")
    w, b = f"{head}.weight", f"{head}.bias"
    if w in exclude or b in exclude:
        raise ValueError(f"{where}: --head {head}: that is the recurrent module, not an output layer")
    if w not in state.arrays:
        found = _head_candidates(state, H, exclude)
        listed = f"candidates: {', '.join(found)}" if found else "no .weight (V, H) with its .bias found"
        what = f"{w} is {state.others[w]}" if w in state.others else f"no {w}"
        raise ValueError(f"{where}: --head {head}: {what} ({listed})")
    W_y = _float(state, w, where)
    if W_y.ndim != 2 or W_y.shape[1] != H or W_y.shape[0] == 0:
        raise ValueError(
            f"{where}: {w} has shape {tuple(W_y.shape)}: not an nn.Linear on the top layer's H = {H}, "
            f"whose weight is (V, {H})"
        )
    c = None
    if b in state.arrays or b in state.others:
        if b in state.others:
            raise ValueError(f"{where}: {b} is {state.others[b]}, not a dense tensor")
        c = _float(state, b, where)
        if c.shape != (W_y.shape[0],):
            raise ValueError(f"{where}: {b} has shape {tuple(c.shape)}; beside {w} it must be ({W_y.shape[0]},)")
    return head, W_y, c


def _activation(
    kind: str, activation: str | None, meta: dict | None, need: bool, where: str
) -> tuple[str | None, bool]:
    if activation is not None and activation not in ACTIVATIONS:
        raise ValueError(f"`--activation` must be one of {', '.join(ACTIVATIONS)}; got {activation!r}")
    if kind != "rnn":
        if activation is not None:
            raise ValueError(
                f"{where}: --activation applies to an nn.RNN; this is an {TORCH_CLASS[kind]}, whose "
                "nonlinearities are fixed (sigmoid and tanh)"
            )
        return None, False
    if activation is not None:
        return activation, False
    recorded = None if meta is None else meta.get("nonlinearity")
    if recorded is not None:
        if recorded not in NONLINEARITIES:
            raise ValueError(f"{where}: {META_KEY} records the nonlinearity {recorded!r}; nn.RNN has tanh or relu")
        return recorded, True
    if need:
        raise ValueError(f"{where}: an nn.RNN's nonlinearity is not in its state dict: give --activation tanh or relu")
    return None, False


def _check_meta(meta: dict, params: NetParams, module: str, where: str) -> None:
    """The record and the arrays agree (a file edited by hand, or keys renamed, would not)."""
    said = {k: meta.get(k) for k in ("kind", "num_layers", "bias", "input_size", "hidden_size", "output_size")}
    have = {
        "kind": params.kind,
        "num_layers": params.num_layers,
        "bias": params.bias,
        "input_size": params.input_size,
        "hidden_size": params.hidden_size,
        "output_size": params.output_size,
    }
    wrong = [k for k in said if said[k] != have[k]]
    if wrong:
        k = wrong[0]
        raise ValueError(
            f"{where}: {META_KEY} says {k} = {said[k]!r}, the arrays of module {shown(module)} say {have[k]!r}"
        )


def parse_network(
    state: StateDict,
    where: str,
    *,
    key: str | None = None,
    head: str | None = None,
    activation: str | None = None,
    need_head: bool = True,
    need_activation: bool = True,
) -> TorchNetwork:
    """The network in a state dict (the rules are the module docstring's).

    Parameters
    ----------
    state : StateDict
        The file's arrays (`read_state`).
    where : str
        What the messages start with: the option and the file, e.g. '--model m.pt'.
    key : str, optional
        The recurrent module's prefix (the CLI's --key PREFIX; a trailing dot is allowed); needed
        when the file holds several.
    head : str, optional
        The output layer's prefix (the CLI's --head PREFIX); found by shape when not given.
    activation : str, optional
        An nn.RNN's nonlinearity (the CLI's --activation); refused for nn.GRU and nn.LSTM. Takes
        precedence over what a bptt export recorded, as --activation does over a checkpoint's.
    need_head, need_activation : bool
        Refuse a network without an output layer, or an nn.RNN whose nonlinearity is unknown.

    Returns
    -------
    TorchNetwork

    Raises
    ------
    ValueError
        One line starting with `where` and naming the key at fault.
    """
    meta = _read_meta(state, where)
    if key is None and meta is not None and RNN_MODULE in recurrent_modules(state.names):
        key = (meta.get("modules") or {}).get("rnn")
    module = _choose_module(state, key, where)
    if meta is not None and module != (meta.get("modules") or {}).get("rnn"):
        meta = None  # the record is about another module of the file
    L, bias, keys = _layer_keys(state, module, where)
    kind, arrays = _layers(state, module, L, bias, where)
    H = arrays[0]["W_hh"].shape[1]
    prefix, W_y, c = _head(state, head, meta, H, set(keys), need_head, where)
    used = keys + ([f"{prefix}.weight"] + ([f"{prefix}.bias"] if c is not None else []) if prefix else [])
    dtype = np.result_type(*(state.arrays[k].dtype for k in used))
    layers = []
    for a in arrays:
        zeros = np.zeros(a["W_hh"].shape[0], dtype=dtype)
        layers.append(
            LayerParams(
                W_ih=a["W_ih"].astype(dtype),
                W_hh=a["W_hh"].astype(dtype),
                b_ih=a["b_ih"].astype(dtype) if bias else zeros,
                b_hh=a["b_hh"].astype(dtype) if bias else zeros.copy(),
            )
        )
    if W_y is None:
        W_y, c = np.zeros((0, H), dtype=dtype), np.zeros(0, dtype=dtype)
    elif c is None:
        c = np.zeros(W_y.shape[0], dtype=dtype)  # nn.Linear(bias=False)
    params = NetParams(kind, tuple(layers), W_y.astype(dtype), c.astype(dtype), bias)
    try:
        check_net_params(params)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from None
    if meta is not None:
        _check_meta(meta, params, module, where)
    act, from_file = _activation(kind, activation, meta, need_activation, where)
    return TorchNetwork(params, module, prefix, act, from_file, tuple(used), meta)


def load_network(
    path: str | os.PathLike,
    *,
    key: str | None = None,
    head: str | None = None,
    activation: str | None = None,
    option: str = "--model",
    need_head: bool = True,
    need_activation: bool = True,
) -> TorchNetwork:
    """Read the network in a PyTorch state-dict file or an .npz with the same keys.

    Parameters
    ----------
    path : path-like
        `torch.save(model.state_dict())`'s file (read with weights_only=True, never unpickling
        anything) or an .npz archive; the kind is told by the bytes, whatever the name.
    key, head, activation, need_head, need_activation
        As `parse_network`.
    option : str
        The option the user gave the file with; every message starts with it and the file.

    Returns
    -------
    TorchNetwork

    Raises
    ------
    ValueError
        One line naming `option`, the file and the key at fault; without torch installed, how to
        install its CPU build.
    """
    state = read_state(path, option)
    return parse_network(
        state,
        f"{option} {Path(path)}",
        key=key,
        head=head,
        activation=activation,
        need_head=need_head,
        need_activation=need_activation,
    )


# ---------------------------------------------------------------------------- bptt's vanilla RNN


def vanilla_as_net(params: Params) -> NetParams:
    """bptt's vanilla RNN (W_x, W_h, b, W_y, c) as a 1-layer nn.RNN: b_ih = b, b_hh = 0."""
    check_params(params)
    layer = LayerParams(W_ih=params.W_x, W_hh=params.W_h, b_ih=params.b, b_hh=np.zeros_like(params.b))
    return NetParams("rnn", (layer,), params.W_y, params.c, bias=True)


def net_as_vanilla(params: NetParams) -> Params:
    """A 1-layer rnn NetParams as bptt's vanilla Params, b = b_ih + b_hh (b_ih itself when b_hh is
    zero, so that an exported vanilla RNN comes back bit for bit)."""
    if params.kind != "rnn" or params.num_layers != 1:
        raise ValueError(f"only a 1-layer rnn is a vanilla RNN; got a {params.num_layers}-layer {params.kind}")
    la = params.layers[0]
    b = la.b_ih.copy() if not np.any(la.b_hh) else la.b_ih + la.b_hh
    return Params(W_x=la.W_ih, W_h=la.W_hh, b=b, W_y=params.W_y, c=params.c)


# ---------------------------------------------------------------------------- writing


def export_state_dict(params: NetParams, activation: str | None) -> dict[str, np.ndarray]:
    """The state dict of `nn.ModuleDict({"rnn": nn.<Cell>(...), "head": nn.Linear(H, V)})` for
    `params` (no head keys when V = 0; no bias keys when bias is False), and the bptt_meta record.

    activation : the nn.RNN's nonlinearity, tanh or relu (None for gru and lstm)
    """
    check_net_params(params)
    if params.kind == "rnn" and activation not in NONLINEARITIES:
        raise ValueError(f"an nn.RNN's nonlinearity is tanh or relu; got {activation!r} (PyTorch has no nn.RNN for it)")
    if params.kind != "rnn" and activation is not None:
        raise ValueError(f"an activation applies to an rnn; a {params.kind}'s nonlinearities are fixed")
    out: dict[str, np.ndarray] = {}
    for k, la in enumerate(params.layers):
        out[f"{RNN_MODULE}.weight_ih_l{k}"] = la.W_ih
        out[f"{RNN_MODULE}.weight_hh_l{k}"] = la.W_hh
        if params.bias:
            out[f"{RNN_MODULE}.bias_ih_l{k}"] = la.b_ih
            out[f"{RNN_MODULE}.bias_hh_l{k}"] = la.b_hh
    V = params.output_size
    if V:
        out[f"{HEAD_MODULE}.weight"], out[f"{HEAD_MODULE}.bias"] = params.W_y, params.c
    meta = {
        "format": META_FORMAT,
        "kind": params.kind,
        "nonlinearity": activation,
        "num_layers": params.num_layers,
        "bias": params.bias,
        "input_size": params.input_size,
        "hidden_size": params.hidden_size,
        "output_size": V,
        "dtype": str(params.dtype),
        "modules": {"rnn": RNN_MODULE, "head": HEAD_MODULE if V else None},
        "bptt_version": __version__,
    }
    out = {k: np.ascontiguousarray(v) for k, v in out.items()}
    out[META_KEY] = np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8).copy()
    return out


def format_of(path: Path, fmt: str | None) -> str:
    """'npz' for an .npz name, else 'pt', unless `fmt` says."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"`--format` must be one of {', '.join(FORMATS)}; got {fmt!r}")
        return fmt
    return "npz" if path.suffix.lower() == ".npz" else "pt"


def write_state_dict(path: str | os.PathLike, arrays: dict[str, np.ndarray], fmt: str, option: str = "--to") -> Path:
    """Write `arrays` as a PyTorch file (torch.save of a dict of tensors) or an .npz, atomically and
    never over an existing file. ValueError naming `option` and the file otherwise."""
    path = Path(path)
    where = f"{option} {path}"
    if fmt not in FORMATS:
        raise ValueError(f"`--format` must be one of {', '.join(FORMATS)}; got {fmt!r}")
    check_target(path, option)
    torch = import_torch(where, "writing a PyTorch file", "; or write --to NAME.npz") if fmt == "pt" else None
    folder = path.parent if str(path.parent) else Path(".")
    staging = folder / f".{path.name}.{os.getpid()}.export"  # complete before it is linked under the real name
    try:
        with atomic_write(staging) as f:
            if torch is not None:
                torch.save({k: torch.from_numpy(v) for k, v in arrays.items()}, f)
            else:
                np.savez(f, **arrays)
        try:
            os.link(staging, path)  # atomic, and refuses a file that appeared since check_target
        except FileExistsError:
            raise ValueError(f"{where}: {EXISTS}") from None
        except OSError:  # a file system without hard links: the rename, after the check above
            check_target(path, option)
            os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
    return path


def check_target(path: Path, option: str = "--to") -> None:
    """The file `path` may be written: it does not exist, and its folder does."""
    where = f"{option} {path}"
    if path.is_dir():
        raise ValueError(f"{where}: is a folder; name the file to write")
    if path.exists() or path.is_symlink():
        raise ValueError(f"{where}: {EXISTS}")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise ValueError(f"{where}: the folder {folder} does not exist")


def torch_lines(params: NetParams, activation: str | None, path: Path, fmt: str) -> tuple[str, ...]:
    """The PyTorch that rebuilds the exported model and loads the file (strict, PyTorch's default)."""
    p = params
    args = [str(p.input_size), str(p.hidden_size)]
    if p.num_layers > 1:
        args.append(f"num_layers={p.num_layers}")
    if p.kind == "rnn":
        args.append(f'nonlinearity="{activation}"')
    if not p.bias:
        args.append("bias=False")
    cell = f"{TORCH_CLASS[p.kind]}({', '.join(args)})"
    parts = [f'"{RNN_MODULE}": {cell}']
    if p.output_size:
        parts.append(f'"{HEAD_MODULE}": nn.Linear({p.hidden_size}, {p.output_size})')
    double = ".double()" if p.dtype == np.float64 else ""
    build = f"model = nn.ModuleDict({{{', '.join(parts)}}}){double}"
    name = json.dumps(str(path))
    if fmt == "pt":
        load = f"{{k: v for k, v in torch.load({name}, weights_only=True).items()"
    else:
        load = f"{{k: torch.from_numpy(v) for k, v in np.load({name}).items()"
    return build, f'model.load_state_dict({load} if k != "{META_KEY}"}})'
