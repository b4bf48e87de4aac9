"""Lyapunov exponents by the QR (Benettin) method, against closed forms and log-determinants."""

import numpy as np
import pytest
from numpy.testing import assert_allclose

from bptt_cli.core.lyapunov import lyapunov_exponents
from bptt_cli.core.rnn import Params, init_params


def with_W_h(params: Params, W: np.ndarray) -> Params:
    return Params(W_x=params.W_x, W_h=W, b=params.b, W_y=params.W_y, c=params.c)


def linear_net(rng, eigenvalues_block: np.ndarray, H: int = 12) -> Params:
    """A network whose W_h = Q T Q^T, T block diagonal with the given leading block and a bulk inside 0.5."""
    T = np.diag(rng.uniform(-0.5, 0.5, H))
    k = eigenvalues_block.shape[0]
    T[:k, :k] = eigenvalues_block
    Q, _ = np.linalg.qr(rng.standard_normal((H, H)))
    params = init_params(rng, input_size=3, hidden_size=H, output_size=2)
    return with_W_h(params, Q @ T @ Q.T)


@pytest.mark.parametrize("rho", [0.8, 1.0, 1.2, -1.3])
def test_linear_top_exponent_is_log_rho(rho):
    """J_t = W_h for a linear network: after the frame aligns, log |R_11| = log |lambda_1| each step."""
    rng = np.random.default_rng(0)
    params = linear_net(rng, np.array([[rho]]))
    x = rng.normal(size=(300, 2, 3))
    res = lyapunov_exponents(params, x, activation="identity", k=1, warmup=100)
    assert res.steps == 200
    # the bulk sits inside 0.5, so after 100 warm-up steps the frame is aligned to (0.5/|rho|)^100
    assert_allclose(res.exponents[0], np.log(abs(rho)), atol=1e-10)
    assert_allclose(res.gains[0], abs(rho), rtol=1e-10)
    assert res.per_sequence.shape == (2, 1)


def test_linear_complex_pair_two_exponents_sum_to_twice_log_modulus():
    """A dominant conjugate pair r e^{+-i a}: the 2-D frame is invariant, det per step = r^2."""
    r, a = 1.1, 0.7
    rng = np.random.default_rng(1)
    block = r * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    params = linear_net(rng, block)
    x = rng.normal(size=(400, 1, 3))
    res = lyapunov_exponents(params, x, activation="identity", k=2, warmup=100)
    assert_allclose(res.exponents.sum(), 2 * np.log(r), atol=1e-10)
    # the normal block rotates rigidly, so each exponent is log r as well
    assert_allclose(res.exponents, [np.log(r)] * 2, atol=1e-2)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_full_spectrum_sums_to_mean_log_determinant(activation):
    """Sum of all H exponents = mean_t log |det J_t| = mean_t [sum_i log f'(a_t,i)] + log |det W_h|:
    an oracle that does not depend on the QR start frame."""
    rng = np.random.default_rng(2)
    H, T, B = 6, 60, 3
    params = init_params(rng, input_size=2, hidden_size=H, output_size=1, spectral_radius=1.5)
    x = rng.normal(size=(T, B, 2))
    if activation == "relu":
        # every unit must stay active (f' = 1), or log f' = -inf: W_h >= 0 keeps W_h h >= 0 for h >= 0,
        # rho < 1 keeps h bounded, and a bias above max |W_x x_t| keeps every a_t > 0
        W = np.abs(params.W_h)
        W *= 0.9 / np.max(np.abs(np.linalg.eigvals(W)))
        b = np.full(H, 1.0 + np.abs(np.einsum("hd,tbd->tbh", params.W_x, x)).max())
        params = Params(W_x=params.W_x, W_h=W, b=b, W_y=params.W_y, c=params.c)
    res = lyapunov_exponents(params, x, activation=activation, k=H, warmup=10)
    # independent oracle: a plain loop over the trajectory with explicit Jacobians
    expected = np.zeros(B)
    for b in range(B):
        h = np.zeros(H)
        for t in range(T):
            a = params.W_x @ x[t, b] + params.W_h @ h + params.b
            if activation == "relu":
                assert np.all(a > 0), "the premise: every relu unit active"
            h = np.tanh(a) if activation == "tanh" else np.maximum(a, 0)
            d = 1 - h**2 if activation == "tanh" else (a > 0).astype(float)
            if t >= 10:
                expected[b] += np.linalg.slogdet(np.diag(d) @ params.W_h)[1]
    assert np.all(np.isfinite(expected))
    assert_allclose(res.per_sequence.sum(axis=1), expected / (T - 10), rtol=1e-10)
    assert np.all(np.diff(res.exponents) <= 0)


def test_dead_relu_units_give_minus_infinity():
    """A unit that is never active annihilates a direction: its exponent is -inf, reported as such."""
    rng = np.random.default_rng(4)
    H = 4
    params = init_params(rng, input_size=2, hidden_size=H, output_size=1)
    W = np.abs(params.W_h)
    W *= 0.5 / np.max(np.abs(np.linalg.eigvals(W)))  # W >= 0, rho 0.5: the state stays small
    b = np.r_[np.full(H - 1, 5.0), -1e3]  # units 0..2 always active, unit 3 never
    params = Params(W_x=params.W_x, W_h=W, b=b, W_y=params.W_y, c=params.c)
    x = 0.5 * rng.normal(size=(50, 2, 2))
    assert np.abs(np.einsum("hd,tbd->tbh", params.W_x, x)).max() < 5.0  # the premise: inputs cannot flip a unit
    res = lyapunov_exponents(params, x, activation="relu", k=H, warmup=5)
    assert res.exponents[-1] == -np.inf and np.all(np.isfinite(res.exponents[:-1]))


def test_saturated_tanh_has_small_gain():
    """rho = 3 but inputs of size 20 pin tanh at +-1, f' ~ 0: the measured gain is far below 1."""
    rng = np.random.default_rng(3)
    params = init_params(rng, input_size=4, hidden_size=32, output_size=1, spectral_radius=3.0)
    x = rng.normal(0, 20.0, size=(200, 4, 4))
    res = lyapunov_exponents(params, x, activation="tanh", k=1, warmup=20)
    assert res.gains[0] < 0.5


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"k": 0}, "`k`"), ({"k": 5}, "at most"), ({"warmup": 10}, "warmup"), ({"warmup": -1}, "warmup")],
)
def test_bad_arguments(kwargs, match):
    rng = np.random.default_rng(0)
    params = init_params(rng, input_size=2, hidden_size=4, output_size=1)
    with pytest.raises(ValueError, match=match):
        lyapunov_exponents(params, rng.normal(size=(10, 1, 2)), **kwargs)
