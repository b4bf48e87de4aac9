"""The RNN model: initialisers, forward pass, activations, parameter validation.

Oracles: numpy.linalg.eigvals / svd for the spectrum, a plain per-sample Python loop for the
forward pass, central differences for f'.
"""

from dataclasses import replace

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from bptt_cli.core.activations import get_activation
from bptt_cli.core.fast import forward_states as _forward_states
from bptt_cli.core.rnn import (
    PARAM_NAMES,
    Params,
    forward,
    init_params,
    init_recurrent,
    outputs,
    scale_to_spectral_radius,
)


def activate(a, act, out=None):
    return get_activation(act).apply(a, out)


def activation_derivative(h, act):
    return get_activation(act).derivative(h)


def forward_states(p, x, h0, act):
    return _forward_states(p, x, h0, get_activation(act))


ACTS = ("tanh", "relu", "identity")
F = {"tanh": np.tanh, "relu": lambda a: max(a, 0.0), "identity": lambda a: a}


def rho(W: np.ndarray) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(W))))


def small_params(rng, D=3, H=5, V=2, dtype="float64", spectral_radius=0.9):
    p = init_params(rng, input_size=D, hidden_size=H, output_size=V, spectral_radius=spectral_radius, dtype=dtype)
    # non-zero biases so the forward pass exercises them
    return replace(p, b=rng.normal(0, 0.3, H).astype(p.dtype), c=rng.normal(0, 0.3, V).astype(p.dtype))


# ---------------------------------------------------------------- initialisers


@pytest.mark.parametrize("init", ["gaussian", "orthogonal", "identity"])
@pytest.mark.parametrize("H", [1, 2, 7, 32])
@pytest.mark.parametrize("target", [0.5, 1.0, 1.7])
def test_init_hits_target_spectral_radius(init, H, target):
    rng = np.random.default_rng(100 * H + int(10 * target))
    W = init_recurrent(rng, H, init, spectral_radius=target)
    assert W.shape == (H, H) and W.dtype == np.float64
    assert_allclose(rho(W), target, rtol=1e-10)


@pytest.mark.parametrize("init", ["gaussian", "orthogonal", "identity"])
def test_init_params_spectral_radius_and_layout(init):
    rng = np.random.default_rng(1)
    p = init_params(rng, input_size=3, hidden_size=16, output_size=4, init=init, spectral_radius=1.3)
    assert_allclose(rho(p.W_h), 1.3, rtol=1e-10)
    shapes = {k: v.shape for k, v in p.as_dict().items()}
    assert shapes == {"W_x": (16, 3), "W_h": (16, 16), "b": (16,), "W_y": (4, 16), "c": (4,)}
    assert_array_equal(p.b, 0.0)
    assert_array_equal(p.c, 0.0)
    assert (p.input_size, p.hidden_size, p.output_size) == (3, 16, 4)


def test_orthogonal_is_orthogonal_and_identity_is_identity():
    rng = np.random.default_rng(2)
    Q = init_recurrent(rng, 12, "orthogonal")
    assert_allclose(Q.T @ Q, np.eye(12), atol=1e-13)
    # every singular value and every |eigenvalue| of an orthogonal matrix is 1
    assert_allclose(np.linalg.svd(Q, compute_uv=False), 1.0, rtol=1e-13)
    assert_allclose(np.abs(np.linalg.eigvals(Q)), 1.0, rtol=1e-12)
    assert_array_equal(init_recurrent(rng, 5, "identity"), np.eye(5))
    assert_allclose(init_recurrent(rng, 5, "identity", spectral_radius=0.7), 0.7 * np.eye(5), rtol=1e-15)


def test_gaussian_std():
    # 200 x 200 = 40000 samples: the sample std has relative standard error 1/sqrt(2N) ~ 0.0035
    rng = np.random.default_rng(3)
    W = init_recurrent(rng, 200, "gaussian")
    assert_allclose(W.std(), 1 / np.sqrt(200), rtol=0.02)
    W = init_recurrent(rng, 200, "gaussian", std=0.3)
    assert_allclose(W.std(), 0.3, rtol=0.02)


def test_init_is_reproducible_and_dtype_kept():
    a = init_params(np.random.default_rng(7), input_size=2, hidden_size=4, output_size=3)
    b = init_params(np.random.default_rng(7), input_size=2, hidden_size=4, output_size=3)
    for name in PARAM_NAMES:
        assert_array_equal(getattr(a, name), getattr(b, name))
    c = init_params(np.random.default_rng(7), input_size=2, hidden_size=4, output_size=3, dtype="float32")
    assert all(v.dtype == np.float32 for v in c.as_dict().values())
    assert_allclose(c.W_h, a.W_h, rtol=1e-6)


def test_scale_to_spectral_radius_zero_matrix():
    assert_array_equal(scale_to_spectral_radius(np.zeros((3, 3)), 0.0), 0.0)
    with pytest.raises(ValueError, match="spectral radius is 0"):
        scale_to_spectral_radius(np.zeros((3, 3)), 1.0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(input_size=0), "`input_size` must be positive"),
        (dict(hidden_size=-2), "`hidden_size` must be positive"),
        (dict(hidden_size=0), "`hidden_size` must be positive"),
        (dict(output_size=-1), "`output_size` must be non-negative"),
        (dict(hidden_size=2.5), "`hidden_size` must be an integer"),
        (dict(init="xavier"), "`init` must be one of"),
        (dict(std=0.0), "`std` must be a positive"),
        (dict(std=float("nan")), "`std` must be a positive"),
        (dict(spectral_radius=-1.0), "`spectral_radius` must be"),
        (dict(spectral_radius=float("inf")), "`spectral_radius` must be"),
        (dict(dtype="float16"), "`dtype` must be one of"),
        (dict(dtype=np.int32), "`dtype` must be float32 or float64"),
    ],
)
def test_init_params_validation(kwargs, match):
    base = dict(input_size=2, hidden_size=3, output_size=2)
    with pytest.raises(ValueError, match=match):
        init_params(np.random.default_rng(0), **{**base, **kwargs})


# ---------------------------------------------------------------- activations


@pytest.mark.parametrize("act", ACTS)
def test_activation_derivative_matches_central_differences(act):
    rng = np.random.default_rng(4)
    a = rng.normal(size=200)
    a = a[np.abs(a) > 1e-3]  # stay away from relu's kink
    h = activate(a, act)
    eps = 1e-6
    fd = (activate(a + eps, act) - activate(a - eps, act)) / (2 * eps)
    # error: eps^2 f''' / 6 ~ 1e-13 plus rounding 1e-16 / 1e-6 = 1e-10
    assert_allclose(activation_derivative(h, act), fd, rtol=0, atol=1e-9)


def test_activation_in_place_and_relu_subgradient():
    a = np.array([-1.0, 0.0, 2.0])
    out = activate(a.copy(), "relu")
    assert_array_equal(out, [0.0, 0.0, 2.0])
    assert_array_equal(activation_derivative(out, "relu"), [0.0, 0.0, 1.0])
    buf = a.copy()
    assert activate(buf, "tanh", out=buf) is buf
    assert_allclose(buf, np.tanh(a), rtol=1e-15)
    with pytest.raises(ValueError, match="`activation` must be one of"):
        activate(a, "sigmoid")
    with pytest.raises(ValueError, match="`activation` must be one of"):
        activation_derivative(a, "gelu")


# ---------------------------------------------------------------- forward


def loop_forward(p: Params, x, h0, act):
    """The oracle: scalar Python loops over t, b and units, no numpy broadcasting tricks."""
    T, B, D = x.shape
    H = p.hidden_size
    a = np.zeros((T, B, H))
    h = np.zeros((T + 1, B, H))
    h[0] = h0
    for t in range(T):
        for b in range(B):
            for i in range(H):
                s = float(p.b[i])
                s += sum(float(p.W_x[i, d]) * float(x[t, b, d]) for d in range(D))
                s += sum(float(p.W_h[i, j]) * float(h[t, b, j]) for j in range(H))
                a[t, b, i] = s
                h[t + 1, b, i] = F[act](s)
    return a, h


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("with_h0", [False, True])
def test_forward_matches_loop_oracle(act, with_h0):
    rng = np.random.default_rng(5)
    p = small_params(rng, spectral_radius=1.1)
    T, B = 6, 3
    x = rng.normal(size=(T, B, 3))
    h0 = rng.normal(size=(B, 5)) if with_h0 else None
    traj = forward(p, x, activation=act, h0=h0)
    a, h = loop_forward(p, x, np.zeros((B, 5)) if h0 is None else h0, act)
    assert traj.a.shape == (T, B, 5) and traj.h.shape == (T + 1, B, 5)
    assert_allclose(traj.a, a, rtol=1e-12, atol=1e-13)
    assert_allclose(traj.h, h, rtol=1e-12, atol=1e-13)
    # the validation-free recurrence used by the gradients gives the same states
    hs = forward_states(p, x, traj.h[0], act)
    assert_allclose(hs, traj.h, rtol=1e-13, atol=1e-14)
    y = outputs(p, traj.h)
    assert_allclose(y, np.einsum("vh,tbh->tbv", p.W_y, h[1:]) + p.c, rtol=1e-12, atol=1e-13)


def test_forward_float32_keeps_dtype_and_agrees_with_float64():
    rng = np.random.default_rng(6)
    p = small_params(rng)
    x = rng.normal(size=(10, 2, 3))
    h0 = rng.normal(size=(2, 5))
    ref = forward(p, x, h0=h0)
    p32 = p.astype(np.float32)
    traj = forward(p32, x, h0=h0)  # x and h0 in float64: cast to the parameters' dtype
    assert traj.a.dtype == np.float32 and traj.h.dtype == np.float32
    assert outputs(p32, traj.h).dtype == np.float32
    assert_allclose(traj.h, ref.h, rtol=1e-5, atol=1e-6)


def test_forward_does_not_mutate_inputs():
    rng = np.random.default_rng(8)
    p = small_params(rng)
    x = rng.normal(size=(4, 2, 3))
    h0 = rng.normal(size=(2, 5))
    before = (p.flat(), x.copy(), h0.copy())
    forward(p, x, h0=h0, activation="relu")
    assert_array_equal(p.flat(), before[0])
    assert_array_equal(x, before[1])
    assert_array_equal(h0, before[2])


def test_params_helpers():
    rng = np.random.default_rng(9)
    p = small_params(rng)
    flat = p.flat()
    assert flat.size == sum(v.size for v in p.as_dict().values())
    assert_array_equal(Params.from_dict(p.as_dict()).flat(), flat)
    with pytest.raises(ValueError, match="lack `c`"):
        Params.from_dict({k: v for k, v in p.as_dict().items() if k != "c"})
    q = p.copy()
    q.W_h[0, 0] += 1.0
    assert p.W_h[0, 0] != q.W_h[0, 0]
    assert p.astype("float32").dtype == np.float32


# ---------------------------------------------------------------- validation


def bad(p: Params, **change) -> Params:
    return replace(p, **change)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda p: bad(p, W_h=np.ones((5, 4))), "`W_h` must be a non-empty square"),
        (lambda p: bad(p, W_h=np.ones((0, 0))), "`W_h` must be a non-empty square"),
        (lambda p: bad(p, W_x=np.ones((4, 3))), r"`W_x` must have shape"),
        (lambda p: bad(p, W_x=np.ones((5, 0))), "`W_x` must have at least one column"),
        (lambda p: bad(p, b=np.ones(4)), r"`b` must have shape"),
        (lambda p: bad(p, W_y=np.ones((2, 4))), r"`W_y` must have shape"),
        (lambda p: bad(p, c=np.ones(3)), r"`c` must have shape"),
        (lambda p: bad(p, b=np.ones(5, np.float32)), "`b` has dtype float32"),
        (lambda p: bad(p, W_h=np.ones((5, 5), int)), "must be float32 or float64"),
        (lambda p: bad(p, W_h=np.full((5, 5), np.nan)), "`W_h` contains NaN"),
        (lambda p: bad(p, c=np.array([0.0, np.inf])), "`c` contains NaN"),
    ],
)
def test_forward_rejects_bad_params(make, match):
    rng = np.random.default_rng(10)
    p = small_params(rng)
    with pytest.raises(ValueError, match=match):
        forward(make(p), rng.normal(size=(3, 2, 3)))


@pytest.mark.parametrize(
    ("x", "kw", "match"),
    [
        (np.zeros((3, 2)), {}, r"`x` must have shape \(T, B, D\)"),
        (np.zeros((0, 2, 3)), {}, r"`x` must have at least one time step"),
        (np.zeros((3, 0, 3)), {}, r"`x` must have at least one sequence"),
        (np.zeros((3, 2, 4)), {}, "`x` has input size D=4"),
        (np.full((3, 2, 3), np.nan), {}, "`x` contains NaN"),
        (np.full((3, 2, 3), np.inf), {}, "`x` contains NaN"),
        (np.zeros((3, 2, 3), complex), {}, "`x` must be real"),
        (np.zeros((3, 2, 3)), dict(h0=np.zeros((2, 4))), r"`h0` must have shape"),
        (np.zeros((3, 2, 3)), dict(h0=np.full((2, 5), np.nan)), "`h0` contains NaN"),
        (np.zeros((3, 2, 3)), dict(h0=np.zeros((2, 5), complex)), "`h0` must be real"),
        (np.zeros((3, 2, 3)), dict(activation="softplus"), "`activation` must be one of"),
    ],
)
def test_forward_rejects_bad_inputs(x, kw, match):
    p = small_params(np.random.default_rng(11))
    with pytest.raises(ValueError, match=match):
        forward(p, x, **kw)
