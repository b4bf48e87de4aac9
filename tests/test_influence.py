"""The influence-balancing problem: dL/dtheta from BPTT against an independent forward-mode
(RTRL-style) sensitivity recursion, the window sensitivities against their binomial closed form,
and the sign claims of Tallec & Ollivier measured, not assumed."""

from math import comb

import numpy as np
import pytest
from numpy.testing import assert_allclose

from bptt_cli.analyses.influence import (
    THETA0,
    influence_batch,
    influence_params,
    influence_system,
    theta_gradient,
    train_theta,
)
from bptt_cli.core.bptt import loss_value
from bptt_cli.core.truncation import Strategy, parse_strategy


def window_sensitivity(K: int) -> float:
    """S_K = sum_{j<K} e_0^T A^j u: how much s[0] moves with theta through the last K steps (steady state)."""
    system = influence_system()
    v, total = system.u.copy(), 0.0  # A^j u, j = 0
    for _ in range(K):
        total += v[0]
        v = system.A @ v
    return float(total)


def steady_state_optimum() -> float:
    """theta* with steady-state s[0] = theta e_0^T (I - A)^{-1} u equal to the target 1."""
    system = influence_system()
    return 1.0 / float(np.linalg.solve(np.eye(system.n) - system.A, system.u)[0])


def forward_mode(theta: float, T: int, K: int | None) -> tuple[float, float]:
    """(L, dL/dtheta) by simulating s_t and carrying ds_t/dtheta forwards (no backward pass at all).

    With chunk:K the state's dependence on earlier chunks is detached: at the first step of every
    chunk (t = K+1, 2K+1, ...) the sensitivity restarts from u alone.
    """
    n = 23
    A = 0.5 * np.eye(n) + 0.5 * np.eye(n, k=1)
    u = np.r_[np.ones(10), -np.ones(13)]
    s, sens = np.zeros(n), np.zeros(n)
    L = dL = 0.0
    for t in range(1, T + 1):
        cut = K is not None and t > 1 and (t - 1) % K == 0
        sens = u + (0.0 if cut else A @ sens)
        s = A @ s + theta * u
        L += 0.5 * (s[0] - 1.0) ** 2 / T
        dL += (s[0] - 1.0) * sens[0] / T
    return L, dL


@pytest.mark.parametrize("theta", [THETA0, -0.3, 0.05])
@pytest.mark.parametrize("T", [1, 15, 120])
@pytest.mark.parametrize("K", [None, 1, 5, 20, 300])
def test_theta_gradient_matches_forward_mode(theta, T, K):
    strategy = Strategy("full") if K is None else Strategy("chunk", k=K)
    L, g = theta_gradient(theta, strategy, seq_len=T)
    L_ref, g_ref = forward_mode(theta, T, K)
    assert L == pytest.approx(L_ref, rel=1e-12)
    assert_allclose(g, g_ref, rtol=1e-10, atol=1e-12)


def test_full_theta_gradient_matches_finite_differences():
    # L is quadratic in theta, so the central difference is exact up to rounding
    system = influence_system()
    x, targets, mask = influence_batch(80)

    def L(theta):
        return loss_value(influence_params(theta, system), x, targets, loss="mse", activation="identity", mask=mask)

    eps = 1e-4
    fd = (L(THETA0 + eps) - L(THETA0 - eps)) / (2 * eps)
    assert theta_gradient(THETA0, Strategy("full"), seq_len=80)[1] == pytest.approx(fd, rel=1e-8)


def test_window_sensitivity_closed_form():
    """S_K = sum_{j<K} 2^-j sum_i C(j, i) u_i: the binomial weights of A^j = 2^-j (I + N)^j."""
    u = [1.0] * 10 + [-1.0] * 13
    for K in (1, 5, 10, 11, 20, 40, 41, 60):
        closed = sum(2.0**-j * sum(comb(j, i) * u[i] for i in range(min(j, 22) + 1)) for j in range(K))
        assert window_sensitivity(K) == pytest.approx(closed, rel=1e-12)
    assert [window_sensitivity(K) for K in range(1, 11)] == pytest.approx(list(range(1, 11)), rel=1e-15)
    signs = [np.sign(window_sensitivity(K)) for K in range(1, 80)]
    assert signs.index(-1.0) + 1 == 41  # the first window that sees the long-range sign
    assert window_sensitivity(400) == pytest.approx(-6.0, rel=1e-9)  # = e_0 (I - A)^-1 u


def test_steady_state_optimum():
    assert steady_state_optimum() == pytest.approx(-1.0 / 6.0, rel=1e-14)  # 2 (10 - 13) theta = 1


@pytest.mark.parametrize(
    "spec, T, sign",
    [
        ("full", 200, +1),  # L falls as theta falls towards the optimum (< 0)
        ("chunk:5", 200, -1),  # the short window sees only +theta -> +s[0]: wrong sign
        ("chunk:20", 200, -1),
        ("chunk:50", 200, -1),  # even 50: each chunk's early steps see short windows
        ("chunk:200", 200, +1),
        # a short sequence from s_0 = 0 is all transient: s[0] has not turned negative yet, and
        # every estimate agrees with the full one; the wrong sign needs the steady regime
        ("chunk:5", 30, +1),
        ("full", 30, +1),
    ],
)
def test_sign_of_the_gradient_at_theta0(spec, T, sign):
    assert np.sign(theta_gradient(THETA0, parse_strategy(spec), seq_len=T)[1]) == sign


def test_random_truncation_is_unbiased_for_theta_but_needs_short_paths():
    """random:0.9's mean over draws matches the full dL/dtheta within three standard errors."""
    rng = np.random.default_rng(3)
    g_full = theta_gradient(THETA0, Strategy("full"), seq_len=100)[1]
    draws = np.array(
        [theta_gradient(THETA0, Strategy("random", p=0.9), seq_len=100, batch=16, rng=rng)[1] for _ in range(200)]
    )
    se = draws.std(ddof=1) / np.sqrt(draws.size)
    assert abs(draws.mean() - g_full) <= 3 * se
    assert np.mean(draws > 0) > 0.5  # most single draws already point the right way


def test_training_full_converges_and_short_chunks_drift_away():
    T = 200
    full = train_theta(Strategy("full"), steps=60, lr=0.01, seq_len=T)
    # L(theta) is quadratic, so dL/dtheta is linear: its root is the optimum for this T
    g0, g1 = (theta_gradient(th, Strategy("full"), seq_len=T)[1] for th in (0.0, 1.0))
    theta_opt = -g0 / (g1 - g0)
    assert full.diverged_at is None
    assert full.thetas[-1] == pytest.approx(theta_opt, abs=1e-6)
    assert theta_opt < 0 < THETA0
    for spec in ("chunk:5", "chunk:20"):
        run = train_theta(parse_strategy(spec), steps=200, lr=0.01, seq_len=T, limit=1e3)
        # theta runs away upwards until the loss passes the limit (|theta| ~ 7: 18 theta^2 > 1e3)
        assert run.diverged_at is not None and run.losses[-1] > 1e3 and run.thetas[-1] > 5
        assert np.all(np.diff(run.thetas) > 0)
    noisy = train_theta(Strategy("random", p=0.9), steps=150, lr=0.01, seq_len=T, batch=8, rng=np.random.default_rng(0))
    assert noisy.diverged_at is None
    assert abs(np.mean(noisy.thetas[-50:]) - theta_opt) < 0.15


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "`--steps`"),
        (dict(lr=0.0), "`--lr`"),
        (dict(lr=float("nan")), "`--lr`"),
        (dict(seq_len=0), "`seq_len`"),
        (dict(batch=0), "`batch`"),
    ],
)
def test_bad_training_arguments(kwargs, match):
    args = dict(steps=3, lr=0.01, seq_len=10) | kwargs
    with pytest.raises(ValueError, match=match):
        train_theta(Strategy("full"), **args)


def test_system_validation():
    with pytest.raises(ValueError, match="`n_positive`"):
        influence_system(5, 6)
    s = influence_system(4, 2)
    assert_allclose(s.u, [1, 1, -1, -1])
    assert_allclose(s.A, [[0.5, 0.5, 0, 0], [0, 0.5, 0.5, 0], [0, 0, 0.5, 0.5], [0, 0, 0, 0.5]])
