"""The parameters of a stacked recurrent network in PyTorch's layout: nn.RNN, nn.GRU or nn.LSTM
of any depth, followed by a linear output layer (nn.Linear).

Layer k of L holds PyTorch's four arrays, gates stacked along the rows in PyTorch's order:

    W_ih (G H, D_k)   weight_ih_l{k}     D_0 = D (the input), D_k = H above it
    W_hh (G H, H)     weight_hh_l{k}
    b_ih (G H,)       bias_ih_l{k}        (zeros, and not trained, when bias=False)
    b_hh (G H,)       bias_hh_l{k}

with G = 1 for rnn, 3 for gru (rows r, z, n) and 4 for lstm (rows i, f, g, o). The equations are
PyTorch's (docs/design.md, and core/layers.py where they are computed):

    rnn   h_t = f(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)
    gru   r, z = sigmoid(W_i{r,z} x_t + b_i{r,z} + W_h{r,z} h_{t-1} + b_h{r,z})
          n = tanh(W_in x_t + b_in + r * (W_hn h_{t-1} + b_hn));  h_t = (1 - z) * n + z * h_{t-1}
    lstm  i, f, o = sigmoid(...), g = tanh(...) of W_ih x_t + b_ih + W_hh h_{t-1} + b_hh
          c_t = f * c_{t-1} + i * g;  h_t = o * tanh(c_t)

The input of layer k > 0 at step t is layer k - 1's h_t. The output layer reads the top layer:
y_t = W_y h_t + c. The network's state s_t is every layer's state side by side, layer 0 first:
[h^0, h^1, ...] (rnn, gru) or [h^0, c^0, h^1, c^1, ...] (lstm); `state_parts` names the pieces.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import numpy as np

from bptt_cli.core.validate import check_choice, check_finite, check_positive_int, resolve_dtype

KINDS = ("rnn", "gru", "lstm")
GATES = {"rnn": 1, "gru": 3, "lstm": 4}
GATE_NAMES = {"rnn": ("a",), "gru": ("r", "z", "n"), "lstm": ("i", "f", "g", "o")}
LAYER_ARRAYS = ("W_ih", "W_hh", "b_ih", "b_hh")


@dataclass(frozen=True)
class LayerParams:
    """One layer's arrays (module docstring); shapes checked by `check_net_params`."""

    W_ih: np.ndarray
    W_hh: np.ndarray
    b_ih: np.ndarray
    b_hh: np.ndarray


@dataclass(frozen=True)
class NetParams:
    """A stacked recurrent network and its output layer (module docstring).

    kind : 'rnn' | 'gru' | 'lstm'
    layers : one LayerParams per layer, bottom first
    W_y (V, H), c (V,) : the output layer on the top layer's h
    bias : False for a PyTorch module built with bias=False: the b arrays are zeros, stay zeros,
        and are left out of `as_dict` (so an optimiser never moves them)
    """

    kind: str
    layers: tuple[LayerParams, ...]
    W_y: np.ndarray
    c: np.ndarray
    bias: bool = True

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def hidden_size(self) -> int:
        return self.layers[0].W_hh.shape[1]

    @property
    def input_size(self) -> int:
        return self.layers[0].W_ih.shape[1]

    @property
    def output_size(self) -> int:
        return self.W_y.shape[0]

    @property
    def dtype(self) -> np.dtype:
        return self.layers[0].W_hh.dtype

    @property
    def layer_state(self) -> int:
        """Width of one layer's state: H, or 2 H for an LSTM (h and c)."""
        return self.hidden_size * (2 if self.kind == "lstm" else 1)

    @property
    def state_size(self) -> int:
        return self.num_layers * self.layer_state

    def state_parts(self) -> list[tuple[str, slice]]:
        """(name, slice of the state vector) for every piece: 'l0.h', 'l0.c', 'l1.h', ..."""
        H, out = self.hidden_size, []
        for k in range(self.num_layers):
            base = k * self.layer_state
            out.append((f"l{k}.h", slice(base, base + H)))
            if self.kind == "lstm":
                out.append((f"l{k}.c", slice(base + H, base + 2 * H)))
        return out

    def top_hidden(self) -> slice:
        """The slice of the state the output layer reads (the top layer's h)."""
        base = (self.num_layers - 1) * self.layer_state
        return slice(base, base + self.hidden_size)

    def as_dict(self) -> dict[str, np.ndarray]:
        """Every trained array by name: 'l0.W_ih', ..., 'W_y', 'c' (no biases when bias=False)."""
        out: dict[str, np.ndarray] = {}
        for k, layer in enumerate(self.layers):
            for name in LAYER_ARRAYS:
                if self.bias or not name.startswith("b_"):
                    out[f"l{k}.{name}"] = getattr(layer, name)
        out["W_y"], out["c"] = self.W_y, self.c
        return out

    @classmethod
    def from_dict(cls, arrays: dict[str, np.ndarray]) -> NetParams:
        """The inverse of `as_dict`: the kind from the shapes (W_hh is G H x H), the depth from the
        layer names, bias=False when there are no b arrays. ValueError naming what is missing."""
        L = 0
        while f"l{L}.W_hh" in arrays:
            L += 1
        if L == 0:
            raise ValueError("the parameters lack `l0.W_hh`")
        W_hh0 = np.asarray(arrays["l0.W_hh"])
        kind = kind_of(W_hh0.shape, "l0.W_hh")
        bias = "l0.b_ih" in arrays
        layers = []
        for k in range(L):
            for name in ("W_ih", "W_hh") + (("b_ih", "b_hh") if bias else ()):
                if f"l{k}.{name}" not in arrays:
                    raise ValueError(f"the parameters lack `l{k}.{name}`")
            W_hh = np.asarray(arrays[f"l{k}.W_hh"])
            zeros = np.zeros(W_hh.shape[0], dtype=W_hh.dtype)
            layers.append(
                LayerParams(
                    W_ih=np.asarray(arrays[f"l{k}.W_ih"]),
                    W_hh=W_hh,
                    b_ih=np.asarray(arrays[f"l{k}.b_ih"]) if bias else zeros,
                    b_hh=np.asarray(arrays[f"l{k}.b_hh"]) if bias else zeros.copy(),
                )
            )
        for name in ("W_y", "c"):
            if name not in arrays:
                raise ValueError(f"the parameters lack `{name}`")
        return cls(kind, tuple(layers), np.asarray(arrays["W_y"]), np.asarray(arrays["c"]), bias)

    def astype(self, dtype: np.dtype | type) -> NetParams:
        layers = tuple(
            LayerParams(**{f.name: getattr(la, f.name).astype(dtype) for f in fields(la)}) for la in self.layers
        )
        return replace(self, layers=layers, W_y=self.W_y.astype(dtype), c=self.c.astype(dtype))

    def copy(self) -> NetParams:
        return self.astype(self.dtype)

    def flat(self) -> np.ndarray:
        """Every trained array concatenated into one vector (a copy), in `as_dict` order."""
        return np.concatenate([v.ravel() for v in self.as_dict().values()])


def kind_of(shape: tuple[int, ...], where: str) -> str:
    """The cell type from the shape of a W_hh: (H, H) rnn, (3 H, H) gru, (4 H, H) lstm."""
    if len(shape) != 2 or shape[1] == 0 or shape[0] % shape[1]:
        raise ValueError(f"{where}: shape {tuple(shape)} is not that of a recurrent weight (G H, H)")
    ratio = shape[0] // shape[1]
    kinds = {g: k for k, g in GATES.items()}
    if ratio not in kinds:
        raise ValueError(
            f"{where}: shape {tuple(shape)} is {ratio} H x H; a recurrent weight is H x H (RNN), 3H x H (GRU) "
            "or 4H x H (LSTM)"
        )
    return kinds[ratio]


def check_net_params(params: NetParams) -> NetParams:
    """Shapes agree with the kind, the depth and each other; one float dtype; every entry finite."""
    check_choice("kind", params.kind, KINDS)
    if not params.layers:
        raise ValueError("a network needs at least one layer")
    G, H = GATES[params.kind], params.hidden_size
    dtype = params.dtype
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"parameters must be float32 or float64; got {dtype}")
    V = params.W_y.shape[0] if params.W_y.ndim == 2 else -1
    for k, layer in enumerate(params.layers):
        D = params.input_size if k == 0 else H
        expected = {"W_ih": (G * H, D), "W_hh": (G * H, H), "b_ih": (G * H,), "b_hh": (G * H,)}
        for name, shape in expected.items():
            arr = getattr(layer, name)
            if arr.shape != shape:
                raise ValueError(f"`l{k}.{name}` must have shape {shape} for a {params.kind} layer; got {arr.shape}")
            if arr.dtype != dtype:
                raise ValueError(f"`l{k}.{name}` has dtype {arr.dtype}, the network {dtype}; use one dtype")
            check_finite(f"l{k}.{name}", arr)
    if params.W_y.shape != (V, H) or params.c.shape != (V,):
        raise ValueError(f"the output layer must be W_y (V, {H}) and c (V,); got {params.W_y.shape}, {params.c.shape}")
    for name in ("W_y", "c"):
        arr = getattr(params, name)
        if arr.dtype != dtype:
            raise ValueError(f"`{name}` has dtype {arr.dtype}, the network {dtype}; use one dtype")
        check_finite(name, arr)
    return params


def init_net_params(
    rng: np.random.Generator,
    *,
    kind: str,
    input_size: int,
    hidden_size: int,
    output_size: int,
    num_layers: int = 1,
    bias: bool = True,
    dtype: str | np.dtype | type = "float64",
) -> NetParams:
    """A fresh network as PyTorch initialises one: every recurrent array U(-1/sqrt(H), 1/sqrt(H));
    the output layer N(0, 1/H) with c = 0 (as bptt's vanilla RNN)."""
    check_choice("kind", kind, KINDS)
    D = check_positive_int("input_size", input_size)
    H = check_positive_int("hidden_size", hidden_size)
    V = check_positive_int("output_size", output_size, allow_zero=True)
    L = check_positive_int("num_layers", num_layers)
    dt = resolve_dtype(dtype)
    G, k = GATES[kind], 1.0 / np.sqrt(H)
    layers = []
    for layer in range(L):
        D_l = D if layer == 0 else H
        arrays = {
            "W_ih": rng.uniform(-k, k, size=(G * H, D_l)),
            "W_hh": rng.uniform(-k, k, size=(G * H, H)),
            "b_ih": rng.uniform(-k, k, size=G * H) if bias else np.zeros(G * H),
            "b_hh": rng.uniform(-k, k, size=G * H) if bias else np.zeros(G * H),
        }
        layers.append(LayerParams(**{n: a.astype(dt) for n, a in arrays.items()}))
    W_y = rng.normal(0.0, 1.0 / np.sqrt(H), size=(V, H)).astype(dt)
    return NetParams(kind, tuple(layers), W_y, np.zeros(V, dtype=dt), bias)
