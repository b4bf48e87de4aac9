"""The vanilla RNN: its parameters, initialisers and the readable reference forward pass.

    a_t = W_x x_t + W_h h_{t-1} + b        (B, H)
    h_t = f(a_t)                            f: an Activation (core/activations.py)
    y_t = W_y h_t + c                       (B, V)

Arrays are time-major: x is (T, B, D), states are (T + 1, B, H) with h_0 at index 0.
`forward` here is the reference, written to be read; the chunked kernels that the gradient
and the analyses use live in core/fast.py, and the tests assert the two agree.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from bptt_cli.core.activations import Activation, get_activation
from bptt_cli.core.eigen import dense_spectral_radius
from bptt_cli.core.validate import check_choice, check_finite, check_positive_int, resolve_dtype

INITS = ("gaussian", "orthogonal", "identity")
PARAM_NAMES = ("W_x", "W_h", "b", "W_y", "c")


@dataclass(frozen=True)
class Params:
    """The five parameter arrays of the RNN (a thin container; arrays are not copied).

    Shapes: W_x (H, D), W_h (H, H), b (H,), W_y (V, H), c (V,).
    """

    W_x: np.ndarray
    W_h: np.ndarray
    b: np.ndarray
    W_y: np.ndarray
    c: np.ndarray

    @property
    def hidden_size(self) -> int:
        return self.W_h.shape[0]

    @property
    def input_size(self) -> int:
        return self.W_x.shape[1]

    @property
    def output_size(self) -> int:
        return self.W_y.shape[0]

    @property
    def dtype(self) -> np.dtype:
        return self.W_h.dtype

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, arrays: dict[str, np.ndarray]) -> Params:
        """Params from a name -> array map; ValueError naming the first missing array."""
        missing = [k for k in PARAM_NAMES if k not in arrays]
        if missing:
            raise ValueError(f"the parameters lack `{missing[0]}`")
        return cls(**{k: np.asarray(arrays[k]) for k in PARAM_NAMES})

    def astype(self, dtype: np.dtype | type) -> Params:
        return Params(**{k: v.astype(dtype) for k, v in self.as_dict().items()})

    def copy(self) -> Params:
        return Params(**{k: v.copy() for k, v in self.as_dict().items()})

    def flat(self) -> np.ndarray:
        """All parameters concatenated into one vector (a copy), in PARAM_NAMES order."""
        return np.concatenate([v.ravel() for v in self.as_dict().values()])


@dataclass(frozen=True)
class Trajectory:
    """What the reference forward pass keeps.

    a : (T, B, H) pre-activations a_1..a_T
    h : (T + 1, B, H) states h_0..h_T (h[0] is the initial state)
    """

    a: np.ndarray
    h: np.ndarray


# ---------------------------------------------------------------------------- validation


def check_params(params: Params) -> Params:
    """Shapes agree with each other, one float dtype throughout, every entry finite."""
    H = params.W_h.shape[0] if params.W_h.ndim == 2 else -1
    V = params.W_y.shape[0] if params.W_y.ndim == 2 else -1
    expected = {
        "W_h": (H, H),
        "W_x": (H, params.W_x.shape[-1] if params.W_x.ndim == 2 else -1),
        "b": (H,),
        "W_y": (V, H),
        "c": (V,),
    }
    if H < 1 or params.W_h.shape != (H, H):
        raise ValueError(f"`W_h` must be a non-empty square matrix; got shape {params.W_h.shape}")
    if params.W_x.ndim == 2 and params.W_x.shape[1] == 0:
        raise ValueError("`W_x` must have at least one column (input size D > 0); got shape (H, 0)")
    dtype = params.W_h.dtype
    if dtype not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"parameters must be float32 or float64; `W_h` is {dtype}")
    for name, arr in params.as_dict().items():
        if arr.shape != expected[name]:
            raise ValueError(f"`{name}` must have shape {expected[name]}; got {arr.shape}")
        if arr.dtype != dtype:
            raise ValueError(f"`{name}` has dtype {arr.dtype} but `W_h` has {dtype}; use one dtype")
        check_finite(name, arr)
    return params


def check_inputs(params: Params, x: np.ndarray, h0: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate x (T, B, D) and h0 (B, H) against the parameters; return them in the params' dtype."""
    return check_sequence_inputs(x, h0, input_size=params.input_size, state_size=params.hidden_size, dtype=params.dtype)


def check_sequence_inputs(
    x: np.ndarray,
    s0: np.ndarray | None,
    *,
    input_size: int,
    state_size: int,
    dtype: np.dtype,
    weight: str = "W_x",
    state: str = "(B, H)",
    state_note: str = "",
) -> tuple[np.ndarray, np.ndarray]:
    """Validate x (T, B, D) and the initial state s0 (B, S) of any cell; return them in `dtype`
    (s0 zeros when None). `weight` names the matrix that sets D, `state` the shape's letters."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"`x` must have shape (T, B, D); got {x.ndim} dimensions {x.shape}")
    T, B, D = x.shape
    if T == 0:
        raise ValueError("`x` must have at least one time step (T > 0)")
    if B == 0:
        raise ValueError("`x` must have at least one sequence (B > 0)")
    if D != input_size:
        raise ValueError(f"`x` has input size D={D} but `{weight}` expects D={input_size}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValueError(f"`x` must be real numbers; got dtype {x.dtype}")
    check_finite("x", x)
    S = state_size
    if s0 is None:
        s0 = np.zeros((B, S), dtype=dtype)
    else:
        s0 = np.asarray(s0)
        if s0.shape != (B, S):
            raise ValueError(f"`h0` must have shape {state} = {(B, S)}{state_note}; got {s0.shape}")
        if not np.issubdtype(s0.dtype, np.number) or np.iscomplexobj(s0):
            raise ValueError(f"`h0` must be real numbers; got dtype {s0.dtype}")
        check_finite("h0", s0)
    return x.astype(dtype, copy=False), s0.astype(dtype, copy=False)


# ---------------------------------------------------------------------------- initialisers


def scale_to_spectral_radius(W: np.ndarray, rho: float) -> np.ndarray:
    """Return W * (rho / rho(W)), so the result has spectral radius exactly `rho` (to rounding)."""
    if not np.isfinite(rho) or rho < 0:
        raise ValueError(f"`spectral_radius` must be a finite non-negative number; got {rho}")
    current = dense_spectral_radius(W)
    if current == 0.0:
        if rho == 0.0:
            return W.copy()
        raise ValueError("cannot rescale W_h to a spectral radius: its spectral radius is 0")
    return W * (rho / current)


def init_recurrent(
    rng: np.random.Generator,
    hidden_size: int,
    init: str = "gaussian",
    *,
    std: float | None = None,
    spectral_radius: float | None = None,
) -> np.ndarray:
    """W_h (H, H) in float64.

    gaussian: N(0, std^2) entries, std defaulting to 1/sqrt(H) (spectral radius near 1);
    orthogonal: Q from the QR of a Gaussian matrix (sign-corrected, so Haar-distributed);
    identity: I (Le et al. 2015, "IRNN").
    With `spectral_radius`, the matrix is rescaled to have exactly that spectral radius.
    """
    H = check_positive_int("hidden_size", hidden_size)
    check_choice("init", init, INITS)
    if init == "gaussian":
        s = 1.0 / np.sqrt(H) if std is None else float(std)
        if not np.isfinite(s) or s <= 0:
            raise ValueError(f"`std` must be a positive finite number; got {std}")
        W = rng.normal(0.0, s, size=(H, H))
    elif init == "orthogonal":
        q, r = np.linalg.qr(rng.normal(size=(H, H)))
        W = q * np.sign(np.diag(r))
    else:
        W = np.eye(H)
    if spectral_radius is not None:
        W = scale_to_spectral_radius(W, spectral_radius)
    return W


def init_params(
    rng: np.random.Generator,
    *,
    input_size: int,
    hidden_size: int,
    output_size: int,
    init: str = "gaussian",
    std: float | None = None,
    spectral_radius: float | None = None,
    dtype: str | np.dtype | type = "float64",
) -> Params:
    """A fresh RNN. W_h from `init_recurrent`; W_x, W_y Gaussian with std 1/sqrt(fan_in); b, c zero.

    `output_size` may be 0 for the half-square loss, which has no output layer.
    """
    D = check_positive_int("input_size", input_size)
    H = check_positive_int("hidden_size", hidden_size)
    V = check_positive_int("output_size", output_size, allow_zero=True)
    dt = resolve_dtype(dtype)
    W_h = init_recurrent(rng, H, init, std=std, spectral_radius=spectral_radius)
    W_x = rng.normal(0.0, 1.0 / np.sqrt(D), size=(H, D))
    W_y = rng.normal(0.0, 1.0 / np.sqrt(H), size=(V, H))
    return Params(
        W_x=W_x.astype(dt),
        W_h=W_h.astype(dt),
        b=np.zeros(H, dtype=dt),
        W_y=W_y.astype(dt),
        c=np.zeros(V, dtype=dt),
    )


# ---------------------------------------------------------------------------- the reference forward


def step(params: Params, x_t: np.ndarray, h_prev: np.ndarray, activation: str | Activation = "tanh") -> np.ndarray:
    """One step h_t = f(W_x x_t + W_h h_{t-1} + b): x_t (B, D), h_prev (B, H) -> (B, H)."""
    act = get_activation(activation)
    return act.apply(x_t @ params.W_x.T + h_prev @ params.W_h.T + params.b)


def forward(
    params: Params,
    x: np.ndarray,
    *,
    activation: str | Activation = "tanh",
    h0: np.ndarray | None = None,
) -> Trajectory:
    """Run the RNN over x, one readable step at a time, keeping the pre-activations.

    Parameters
    ----------
    params : Params
    x : (T, B, D) inputs
    activation : 'tanh' | 'relu' | 'identity', or an Activation
    h0 : (B, H) initial state, zeros by default

    Returns
    -------
    Trajectory with a (T, B, H) pre-activations and h (T + 1, B, H) states, in params' dtype.
    """
    check_params(params)
    act = get_activation(activation)
    x, h0 = check_inputs(params, x, h0)
    T, B, D = x.shape
    H = params.hidden_size
    a = np.empty((T, B, H), dtype=params.dtype)  # (T, B, H)
    hs = np.empty((T + 1, B, H), dtype=params.dtype)  # (T+1, B, H)
    hs[0] = h0
    with np.errstate(over="ignore", invalid="ignore"):
        for t in range(T):
            a[t] = x[t] @ params.W_x.T + hs[t] @ params.W_h.T + params.b  # a_t = W_x x_t + W_h h_{t-1} + b
            hs[t + 1] = act.apply(a[t])  # h_t = f(a_t)
    return Trajectory(a=a, h=hs)


def outputs(params: Params, hs: np.ndarray) -> np.ndarray:
    """y_t = W_y h_t + c for t = 1..T as one product: hs (T + 1, B, H) -> y (T, B, V)."""
    T1, B, H = hs.shape
    V = params.output_size
    y = np.matmul(hs[1:].reshape((T1 - 1) * B, H), params.W_y.T).reshape(T1 - 1, B, V)
    y += params.c
    return y
