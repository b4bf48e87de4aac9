"""The vanilla RNN: parameters, initialisers and the forward pass.

    a_t = W_x x_t + W_h h_{t-1} + b        (B, H)
    h_t = f(a_t)                            f in {tanh, relu, identity}
    y_t = W_y h_t + c                       (B, V)

Arrays are time-major: x is (T, B, D), states are (T + 1, B, H) with h_0 at index 0.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

import numpy as np

ACTIVATIONS = ("tanh", "relu", "identity")
INITS = ("gaussian", "orthogonal", "identity")
PARAM_NAMES = ("W_x", "W_h", "b", "W_y", "c")
DTYPES = {"float64": np.float64, "float32": np.float32}

# gamma = max |f'(a)|: the Pascanu bounds compare sigma_max(W_h) and rho(W_h) with 1/gamma.
ACTIVATION_GAMMA = {"tanh": 1.0, "relu": 1.0, "identity": 1.0}


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

    def astype(self, dtype: np.dtype | type) -> Params:
        return Params(**{k: v.astype(dtype) for k, v in self.as_dict().items()})

    def copy(self) -> Params:
        return Params(**{k: v.copy() for k, v in self.as_dict().items()})

    def flat(self) -> np.ndarray:
        """All parameters concatenated into one vector (a copy), in PARAM_NAMES order."""
        return np.concatenate([v.ravel() for v in self.as_dict().values()])

    def norm(self) -> float:
        """Euclidean norm over all parameters together."""
        return float(np.sqrt(sum(float(np.sum(v * v)) for v in self.as_dict().values())))


@dataclass(frozen=True)
class Trajectory:
    """What the forward pass leaves for the backward pass.

    a : (T, B, H) pre-activations a_1..a_T
    h : (T + 1, B, H) states h_0..h_T (h[0] is the initial state)
    """

    a: np.ndarray
    h: np.ndarray


# ---------------------------------------------------------------------------- validation


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {', '.join(choices)}; got {value!r}")
    return value


def check_positive_int(name: str, value: int, *, allow_zero: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an integer; got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        rule = "non-negative" if allow_zero else "positive"
        raise ValueError(f"`{name}` must be {rule}; got {value}")
    return int(value)


def check_finite(name: str, array: np.ndarray) -> None:
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` contains NaN or infinite values")


def resolve_dtype(dtype: str | np.dtype | type) -> np.dtype:
    """'float32' / 'float64' / a numpy float dtype -> np.dtype; anything else is an error."""
    if isinstance(dtype, str):
        if dtype not in DTYPES:
            raise ValueError(f"`dtype` must be one of {', '.join(DTYPES)}; got {dtype!r}")
        return np.dtype(DTYPES[dtype])
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"`dtype` must be float32 or float64; got {dt}")
    return dt


def check_params(params: Params) -> Params:
    """Shapes agree with each other, one float dtype throughout, every entry finite."""
    H = params.W_h.shape[0] if params.W_h.ndim == 2 else -1
    expected = {
        "W_h": (H, H),
        "W_x": (H, params.W_x.shape[-1] if params.W_x.ndim == 2 else -1),
        "b": (H,),
        "W_y": (params.W_y.shape[0] if params.W_y.ndim == 2 else -1, H),
        "c": (params.W_y.shape[0] if params.W_y.ndim == 2 else -1,),
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


# ---------------------------------------------------------------------------- activations


def activate(a: np.ndarray, activation: str, out: np.ndarray | None = None) -> np.ndarray:
    """h = f(a), element-wise; `out` may alias `a`."""
    if activation == "tanh":
        return np.tanh(a, out=out)
    if activation == "relu":
        return np.maximum(a, 0, out=out)
    if activation == "identity":
        if out is None:
            return a.copy()
        if out is not a:
            out[...] = a
        return out
    raise ValueError(f"`activation` must be one of {', '.join(ACTIVATIONS)}; got {activation!r}")


def activation_derivative(h: np.ndarray, activation: str, out: np.ndarray | None = None) -> np.ndarray:
    """f'(a) written in terms of h = f(a), so the pre-activations need not be read back.

    tanh: 1 - h^2;  relu: 1 where h > 0 (the subgradient 0 at a = 0);  identity: 1.
    """
    if out is None:
        out = np.empty_like(h)
    if activation == "tanh":
        np.multiply(h, h, out=out)
        np.subtract(1, out, out=out)
    elif activation == "relu":
        np.greater(h, 0, out=out)  # bool -> float cast into out
    elif activation == "identity":
        out.fill(1)
    else:
        raise ValueError(f"`activation` must be one of {', '.join(ACTIVATIONS)}; got {activation!r}")
    return out


# ---------------------------------------------------------------------------- initialisers


def spectral_radius(W: np.ndarray) -> float:
    """rho(W) = max |eigenvalue|, from LAPACK (the reference, not power iteration)."""
    if W.size == 0:
        return 0.0
    return float(np.max(np.abs(np.linalg.eigvals(W.astype(np.float64)))))


def scale_to_spectral_radius(W: np.ndarray, rho: float) -> np.ndarray:
    """Return W * (rho / rho(W)), so the result has spectral radius exactly `rho` (to rounding)."""
    if not np.isfinite(rho) or rho < 0:
        raise ValueError(f"`spectral_radius` must be a finite non-negative number; got {rho}")
    current = spectral_radius(W)
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


# ---------------------------------------------------------------------------- forward


def check_inputs(params: Params, x: np.ndarray, h0: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Validate x (T, B, D) and h0 (B, H) against the parameters; return them in the params' dtype."""
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"`x` must have shape (T, B, D); got {x.ndim} dimensions {x.shape}")
    T, B, D = x.shape
    if T == 0:
        raise ValueError("`x` must have at least one time step (T > 0)")
    if B == 0:
        raise ValueError("`x` must have at least one sequence (B > 0)")
    if D != params.input_size:
        raise ValueError(f"`x` has input size D={D} but `W_x` expects D={params.input_size}")
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ValueError(f"`x` must be real numbers; got dtype {x.dtype}")
    check_finite("x", x)
    H = params.hidden_size
    if h0 is None:
        h0 = np.zeros((B, H), dtype=params.dtype)
    else:
        h0 = np.asarray(h0)
        if h0.shape != (B, H):
            raise ValueError(f"`h0` must have shape (B, H) = {(B, H)}; got {h0.shape}")
        if not np.issubdtype(h0.dtype, np.number) or np.iscomplexobj(h0):
            raise ValueError(f"`h0` must be real numbers; got dtype {h0.dtype}")
        check_finite("h0", h0)
    return x.astype(params.dtype, copy=False), h0.astype(params.dtype, copy=False)


# Steps per chunk: the chunk's (K, B, H) slice of the state buffer is about this many bytes, so it is
# still in cache (1 MiB of L2 per core on the benchmark machine, L3 behind it) when the bulk products
# that follow the recurrence read it. 1 MiB measured faster than 256 KiB at B = 32 (fewer, larger
# products for two BLAS threads to share, fewer Python calls) and no slower than 4 MiB.
CHUNK_BYTES = 1 << 20


def chunk_steps(
    batch: int, hidden: int, itemsize: int, seq_len: int | None = None, chunk_bytes: int = CHUNK_BYTES
) -> int:
    """How many time steps make one cache-sized chunk of a (T, B, H) array (at least 1).

    With `seq_len`, and a (T, B, H) array above glibc's default mmap threshold (128 KiB), also at
    most T / 8 steps: the backward's three (K, B, H) scratch buffers then stay small next to the
    (T + 1, B, H) state array, and glibc's malloc keeps reusing the same memory from call to call
    instead of handing it back to the kernel and taking page faults to get it again (measured at
    B = 32, T = 100, H = 128: ~1000 minor faults and ~13% of the time per call with K = 64, none
    with K = 16). Smaller problems stay one chunk.
    """
    step_bytes = batch * hidden * itemsize
    k = max(1, chunk_bytes // step_bytes)
    if seq_len is None or seq_len * step_bytes <= 1 << 17:
        return k
    return max(1, min(k, seq_len // 8))


def _recur(hs: np.ndarray, lo: int, hi: int, W_hT: np.ndarray, tmp: np.ndarray, activation: str) -> None:
    """Steps lo+1..hi of the recurrence in place: hs[t] enters holding x_t W_x^T + b, leaves holding h_t.

    W_hT is W_h^T as a C-contiguous copy: OpenBLAS multiplies (B, H) x (H, H) about 30% faster from a
    contiguous operand than from the transposed view of W_h at B = 32, H = 256. The loop does three
    numpy calls per step and allocates nothing (tmp is the (B, H) product buffer); np.dot with `out`
    costs about 0.5 us less per call than np.matmul, which is most of a step at B = 1, H <= 64.
    """
    prev = hs[lo]
    if activation == "tanh":
        for cur in hs[lo + 1 : hi + 1]:
            np.dot(prev, W_hT, out=tmp)
            np.add(cur, tmp, out=cur)  # a_t
            np.tanh(cur, out=cur)  # h_t = f(a_t)
            prev = cur
    elif activation == "relu":
        for cur in hs[lo + 1 : hi + 1]:
            np.dot(prev, W_hT, out=tmp)
            np.add(cur, tmp, out=cur)
            np.maximum(cur, 0, out=cur)
            prev = cur
    else:
        check_choice("activation", activation, ACTIVATIONS)  # identity, or an error naming the choices
        for cur in hs[lo + 1 : hi + 1]:
            np.dot(prev, W_hT, out=tmp)
            np.add(cur, tmp, out=cur)
            prev = cur


def iter_forward(
    params: Params, x: np.ndarray, h0: np.ndarray, activation: str, hs: np.ndarray, chunk: int
) -> Iterator[tuple[int, int]]:
    """Fill hs (T + 1, B, H) with h_0..h_T chunk by chunk, yielding (lo, hi) once h_{lo+1}..h_hi are done.

    A caller that works on hs[lo + 1 : hi + 1] between the yields finds it in cache. Per chunk, the
    input projection x_t W_x^T + b of all its steps is one matrix product written straight into hs.
    No validation (see `forward`); x must already have the parameters' dtype.
    """
    T, B, D = x.shape
    H = params.hidden_size
    hs[0] = h0
    W_xT = params.W_x.T
    W_hT = np.ascontiguousarray(params.W_h.T)  # (H, H)
    tmp = np.empty((B, H), dtype=hs.dtype)  # (B, H) reused every step
    for lo in range(0, T, chunk):
        hi = min(lo + chunk, T)
        a = hs[lo + 1 : hi + 1].reshape((hi - lo) * B, H)  # (k B, H) view
        np.matmul(x[lo:hi].reshape((hi - lo) * B, D), W_xT, out=a)
        a += params.b
        _recur(hs, lo, hi, W_hT, tmp, activation)
        yield lo, hi


def forward_states(params: Params, x: np.ndarray, h0: np.ndarray, activation: str) -> np.ndarray:
    """The recurrence without validation or stored pre-activations: states (T + 1, B, H).

    The input projection x W_x^T + b is a few large products (one per cache-sized chunk), written
    straight into the state buffer; the loop then only adds h_{t-1} W_h^T and applies f in place.
    """
    T, B, _ = x.shape
    H = params.hidden_size
    hs = np.empty((T + 1, B, H), dtype=params.dtype)  # (T+1, B, H)
    for _ in iter_forward(params, x, h0, activation, hs, chunk_steps(B, H, hs.itemsize)):
        pass
    return hs


def forward(
    params: Params,
    x: np.ndarray,
    *,
    activation: str = "tanh",
    h0: np.ndarray | None = None,
) -> Trajectory:
    """Run the RNN over x.

    Parameters
    ----------
    params : Params
    x : (T, B, D) inputs
    activation : 'tanh' | 'relu' | 'identity'
    h0 : (B, H) initial state, zeros by default

    Returns
    -------
    Trajectory with a (T, B, H) pre-activations and h (T + 1, B, H) states, in params' dtype.
    """
    check_params(params)
    check_choice("activation", activation, ACTIVATIONS)
    x, h0 = check_inputs(params, x, h0)
    T, B, D = x.shape
    H = params.hidden_size
    a = np.empty((T, B, H), dtype=params.dtype)  # (T, B, H)
    hs = np.empty((T + 1, B, H), dtype=params.dtype)  # (T+1, B, H)
    hs[0] = h0
    np.matmul(x.reshape(T * B, D), params.W_x.T, out=a.reshape(T * B, H))
    a += params.b
    W_hT = np.ascontiguousarray(params.W_h.T)  # (H, H); faster in BLAS than the transposed view
    tmp = np.empty((B, H), dtype=params.dtype)  # (B, H) reused every step
    with np.errstate(over="ignore", invalid="ignore"):
        for t, a_t in enumerate(a):
            np.matmul(hs[t], W_hT, out=tmp)
            np.add(a_t, tmp, out=a_t)
            activate(a_t, activation, out=hs[t + 1])
    return Trajectory(a=a, h=hs)


def outputs(params: Params, hs: np.ndarray) -> np.ndarray:
    """y_t = W_y h_t + c for t = 1..T as one product: hs (T + 1, B, H) -> y (T, B, V)."""
    T1, B, H = hs.shape
    V = params.output_size
    y = np.matmul(hs[1:].reshape((T1 - 1) * B, H), params.W_y.T).reshape(T1 - 1, B, V)
    y += params.c
    return y
