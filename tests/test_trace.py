"""trace.py: per-step signal norms against bptt.gradients and closed forms, the gain fit, the horizon."""

import math

import numpy as np
import pytest
from numpy.testing import assert_allclose

from bptt_cli.core.bptt import NonFiniteError, gradients
from bptt_cli.core.rnn import Params, forward, init_params
from bptt_cli.core.signal import GainFit, fit_gain, memory_horizon, trace
from bptt_cli.core.verdict import judge_gain, judge_matrix, judge_signal


def orthogonal(rng: np.random.Generator, H: int) -> np.ndarray:
    q, r = np.linalg.qr(rng.normal(size=(H, H)))
    return q * np.sign(np.diag(r))


def with_recurrent(params: Params, W_h: np.ndarray) -> Params:
    return Params(W_x=params.W_x, W_h=W_h, b=params.b, W_y=params.W_y, c=params.c)


def linear_last_loss(rho: float, T: int, *, H: int = 6, B: int = 2, seed: int = 0):
    """Identity activation, W_h = rho Q, input only at the last step (so h stays finite), loss only at T."""
    rng = np.random.default_rng(seed)
    p = with_recurrent(init_params(rng, input_size=3, hidden_size=H, output_size=4), rho * orthogonal(rng, H))
    x = np.zeros((T, B, 3))
    x[-1] = rng.normal(size=(B, 3))
    targets = rng.integers(0, 4, size=(T, B))
    mask = np.zeros((T, B))
    mask[-1] = 1.0
    return p, x, targets, mask


def random_problem(activation: str, loss: str, *, T: int = 12, B: int = 3, H: int = 5, rho: float = 1.2, seed: int = 1):
    rng = np.random.default_rng(seed)
    V = 0 if loss == "half-square" else 4
    p = init_params(rng, input_size=3, hidden_size=H, output_size=V, spectral_radius=rho)
    p = Params(W_x=p.W_x, W_h=p.W_h, b=rng.normal(0, 0.1, H), W_y=p.W_y, c=p.c)
    x = rng.normal(size=(T, B, 3))
    targets = {"xent": rng.integers(0, V, size=(T, B)) if V else None, "mse": rng.normal(size=(T, B, V))}.get(loss)
    return p, x, targets, rng


@pytest.mark.parametrize("rho", [0.5, 0.9, 1.0, 1.1, 1.5])
def test_linear_gain_equals_rho(rho):
    T = 300
    p, x, tg, m = linear_last_loss(rho, T)
    r = trace(p, x, tg, loss="xent", activation="identity", mask=m)
    assert abs(r.fit.gain - rho) < 1e-8
    assert r.fit.points == T and (r.fit.first, r.fit.last) == (0, T - 1)
    assert r.fit.r2 == pytest.approx(1.0, abs=1e-12)
    # closed form at every step: ||dl_T/dh_{T-k}|| = rho^k ||dl_T/dh_T||, in log space
    k = np.arange(T)
    assert_allclose(r.last.log_mean[::-1] - r.last.log_mean[-1], k * math.log(rho), rtol=0, atol=1e-10)
    # the loss is only at T, so the total signal is the last loss's signal
    assert_allclose(r.total.log_mean, r.last.log_mean, rtol=0, atol=1e-12)
    # J_t = W_h: its spectral norm is rho (Q orthogonal) and f' = 1
    assert r.jacobian_kind == "exact"
    assert_allclose(r.jacobian_norm, rho, rtol=1e-12)
    assert_allclose(r.gain_stats["mean_fprime"], 1.0, rtol=0, atol=0)
    assert r.log_start_fraction == pytest.approx((T - 1) * math.log(rho), abs=1e-9)


def test_exploding_10000_steps_finite_and_exact():
    T, rho = 10_000, 1.5
    p, x, tg, m = linear_last_loss(rho, T, H=8, B=2)
    r = trace(p, x, tg, loss="xent", activation="identity", mask=m, jacobian="bound")
    arrays = [r.last.log_mean, r.last.log_min, r.last.log_max, r.total.log_mean, r.total.log_min]
    arrays += [r.total.log_max, r.jacobian_norm, r.gain_stats["mean_fprime"]]
    for a in arrays:
        assert a.shape == (T,) and np.all(np.isfinite(a))
    for v in (r.fit.slope, r.fit.gain, r.fit.r2, r.fit.intercept, r.log_start_fraction, r.loss):
        assert math.isfinite(v)
    assert r.last.log_mean[0] - r.last.log_mean[-1] > 4000  # far beyond float64's 1e308
    assert abs(r.fit.slope - math.log(rho)) < 1e-10
    assert abs(r.fit.gain - rho) < 1e-8
    assert r.horizon.method == "never" and r.suggested_window is None


@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("loss", ["xent", "mse", "half-square"])
def test_total_signal_equals_gradients_adjoints(activation, loss):
    p, x, tg, rng = random_problem(activation, loss, rho=0.9 if activation == "identity" else 1.3)
    T, B, _ = x.shape
    mask = (rng.random((T, B)) < 0.7).astype(float)
    mask[-1] = 1.0
    h0 = rng.normal(size=(B, p.hidden_size))
    r = trace(p, x, tg, loss=loss, activation=activation, mask=mask, h0=h0)
    g = gradients(p, x, tg, loss=loss, activation=activation, mask=mask, h0=h0)
    n = np.linalg.norm(g.adjoints, axis=2)  # (T, B)
    assert_allclose(np.exp(r.total.log_mean), n.mean(axis=1), rtol=1e-12)
    assert_allclose(np.exp(r.total.log_min), n.min(axis=1), rtol=1e-12)
    assert_allclose(np.exp(r.total.log_max), n.max(axis=1), rtol=1e-12)
    assert r.loss == pytest.approx(g.loss, rel=1e-14)
    # the last loss alone: gradients() with only l_T scored gives dl_T/dh_t as its adjoints
    last_only = np.zeros_like(mask)
    last_only[-1] = mask[-1]
    g_last = gradients(p, x, tg, loss=loss, activation=activation, mask=last_only, h0=h0)
    n_last = np.linalg.norm(g_last.adjoints, axis=2)
    with np.errstate(divide="ignore"):
        assert_allclose(r.last.log_mean, np.log(n_last.mean(axis=1)), rtol=0, atol=1e-11)


def test_exploding_total_matches_gradients_across_renormalisations():
    """rho = 1.5 linear with a loss at every step: 1.5^600 ~ 1e105 still fits float64, so the
    recursion (which renormalises every few steps) can be checked against plain BPTT."""
    rng = np.random.default_rng(3)
    H, T, B = 6, 600, 2
    p = with_recurrent(init_params(rng, input_size=2, hidden_size=H, output_size=3), 1.5 * orthogonal(rng, H))
    x = np.zeros((T, B, 2))
    tg = rng.integers(0, 3, size=(T, B))
    r = trace(p, x, tg, loss="xent", activation="identity")
    g = gradients(p, x, tg, loss="xent", activation="identity")
    n = np.linalg.norm(g.adjoints, axis=2)
    assert_allclose(r.total.log_mean, np.log(n.mean(axis=1)), rtol=0, atol=1e-10)
    # twice as long overflows plain BPTT; the trace stays finite and keeps the exact gain
    x2, tg2 = np.zeros((2000, B, 2)), rng.integers(0, 3, size=(2000, B))
    with pytest.raises(NonFiniteError):
        gradients(p, x2, tg2, loss="xent", activation="identity")
    r2 = trace(p, x2, tg2, loss="xent", activation="identity")
    assert np.all(np.isfinite(r2.total.log_mean)) and abs(r2.fit.gain - 1.5) < 1e-8


def test_total_through_a_long_loss_free_stretch():
    """Losses at t <= 5 and at T only: between them the total signal is the last loss's signal,
    vanishing far below float64's range (1e-300); at t <= 5 it matches plain BPTT again."""
    rng = np.random.default_rng(4)
    H, T, B = 6, 1000, 2
    p = with_recurrent(init_params(rng, input_size=2, hidden_size=H, output_size=3), 0.5 * orthogonal(rng, H))
    x = np.zeros((T, B, 2))
    tg = rng.integers(0, 3, size=(T, B))
    mask = np.zeros((T, B))
    mask[:5] = 1.0
    mask[-1] = 1.0
    r = trace(p, x, tg, loss="xent", activation="identity", mask=mask)
    assert r.last.log_mean[5] < -650  # ~0.5^994
    assert_allclose(r.total.log_mean[5:], r.last.log_mean[5:], rtol=1e-13, atol=0)
    g = gradients(p, x, tg, loss="xent", activation="identity", mask=mask)
    n = np.linalg.norm(g.adjoints[:5], axis=2)
    assert_allclose(r.total.log_mean[:5], np.log(n.mean(axis=1)), rtol=0, atol=1e-12)


def test_saturated_tanh_vanishes_although_rho_is_3():
    rng = np.random.default_rng(5)
    H, T, B = 16, 200, 4
    p = init_params(rng, input_size=4, hidden_size=H, output_size=4, spectral_radius=3.0)
    x = 10.0 * rng.normal(size=(T, B, 4))  # large inputs: tanh saturates
    tg = rng.integers(0, 4, size=(T, B))
    r = trace(p, x, tg, loss="xent", activation="tanh")
    assert r.fit.gain < 1
    assert judge_gain(r.fit.gain, basis="trace_last_loss").label == "vanishing"
    rho = float(np.max(np.abs(np.linalg.eigvals(p.W_h))))
    matrix = judge_matrix(rho, float(np.linalg.norm(p.W_h, 2)), 1.0, linear=False)
    assert matrix.label == "undetermined" and matrix.evidence["bounds"]["explosion_possible"]
    assert np.all(r.gain_stats["mean_fprime"] < 0.5)  # most units are saturated
    # per step, against plain BPTT with only the last loss scored (its adjoints are dl_T/dh_t)
    mask = np.zeros((T, B))
    mask[-1] = 1.0
    n = np.linalg.norm(gradients(p, x, tg, loss="xent", activation="tanh", mask=mask).adjoints, axis=2)
    assert_allclose(r.last.log_mean, np.log(n.mean(axis=1)), rtol=0, atol=1e-10)
    assert_allclose(r.last.log_min, np.log(n.min(axis=1)), rtol=0, atol=1e-10)


def test_jacobian_exact_and_bound():
    p, x, tg, _ = random_problem("tanh", "xent", T=9, B=2, H=5)
    exact = trace(p, x, tg, jacobian="exact")
    bound = trace(p, x, tg, jacobian="bound")
    assert exact.jacobian_kind == "exact" and bound.jacobian_kind == "bound"
    fp = 1.0 - forward(p, x, activation="tanh").h[1:] ** 2  # (T, B, H)
    oracle = np.array(
        [[np.linalg.svd(fp[t, b][:, None] * p.W_h, compute_uv=False)[0] for b in range(2)] for t in range(9)]
    )
    assert_allclose(exact.jacobian_norm, oracle.mean(axis=1), rtol=1e-12)
    sigma = np.linalg.svd(p.W_h, compute_uv=False)[0]
    assert_allclose(bound.jacobian_norm, fp.max(axis=2).mean(axis=1) * sigma, rtol=1e-12)
    assert np.all(bound.jacobian_norm >= exact.jacobian_norm * (1 - 1e-12))
    assert_allclose(exact.gain_stats["mean_fprime"], fp.mean(axis=(1, 2)), rtol=1e-12)


def test_float32_params_are_traced_in_float64():
    p, x, tg, _ = random_problem("tanh", "xent")
    r32 = trace(p.astype(np.float32), x, tg)
    r64 = trace(p.astype(np.float32).astype(np.float64), x, tg)
    assert_allclose(r32.total.log_mean, r64.total.log_mean, rtol=0, atol=1e-12)


# ---------------------------------------------------------------------------- fit and horizon


def test_fit_gain_against_linregress_skipping_nonfinite():
    from scipy.stats import linregress

    rng = np.random.default_rng(6)
    k = np.arange(40)
    y = 2.0 - 0.3 * k + rng.normal(0, 0.5, 40)
    y[[3, 17]] = -np.inf  # exact zeros
    y[25] = np.nan
    y[39] = -np.inf
    fit = fit_gain(y)
    keep = np.isfinite(y)
    ref = linregress(k[keep], y[keep])
    assert fit.slope == pytest.approx(ref.slope, rel=1e-12)
    assert fit.intercept == pytest.approx(ref.intercept, rel=1e-12)
    assert fit.r2 == pytest.approx(ref.rvalue**2, rel=1e-12)
    assert fit.gain == pytest.approx(math.exp(ref.slope), rel=1e-12)
    assert (fit.first, fit.last, fit.points) == (0, 38, 36)
    sub = fit_gain(y, first=5, last=20)
    assert (sub.first, sub.last, sub.points) == (5, 20, 15)


def test_fit_gain_needs_two_points():
    fit = fit_gain(np.array([0.0, -np.inf, -np.inf]))
    assert fit.points == 1 and math.isnan(fit.slope) and math.isnan(fit.gain)
    with pytest.raises(ValueError, match="first"):
        fit_gain(np.zeros(3), first=2, last=1)


@pytest.mark.parametrize(
    "gain, T, method, steps",
    [
        (0.5, 50, "measured", 10.0),  # 0.5^10 < 1e-3 < 0.5^9
        (0.9, 20, "extrapolated", math.log(1e-3) / math.log(0.9)),
        (1.0, 50, "never", None),
        (1.2, 50, "never", None),
    ],
)
def test_memory_horizon(gain, T, method, steps):
    y = 1.7 + np.arange(T) * math.log(gain)
    h = memory_horizon(y, fit_gain(y), 1e-3)
    assert h.method == method
    if steps is None:
        assert h.steps is None
    else:
        assert h.steps == pytest.approx(steps, rel=1e-10)


def test_horizon_at_an_exact_zero_and_undetermined():
    y = np.array([0.0, -0.1, -np.inf, -np.inf])
    assert memory_horizon(y, fit_gain(y), 1e-3).steps == 2.0
    y0 = np.array([-np.inf, -np.inf])
    assert memory_horizon(y0, fit_gain(y0), 1e-3).method == "undetermined"
    nan = float("nan")
    assert memory_horizon(np.zeros(1), GainFit(nan, nan, nan, 0, 0, 1, 0.0), 0.5).method == "undetermined"


@pytest.mark.parametrize("eps", [0.0, 1.0, -0.1, 2.0])
def test_eps_outside_unit_interval(eps):
    p, x, tg, _ = random_problem("tanh", "xent")
    with pytest.raises(ValueError, match="`eps` must be in \\(0, 1\\)"):
        trace(p, x, tg, eps=eps)


def test_bad_input_is_a_value_error():
    p, x, tg, _ = random_problem("tanh", "xent")
    with pytest.raises(ValueError, match="jacobian"):
        trace(p, x, tg, jacobian="cheap")
    with pytest.raises(ValueError, match="at least one time step"):
        trace(p, x[:0], tg[:0])
    with pytest.raises(ValueError, match="input size"):
        trace(p, x[:, :, :2], tg)
    big = with_recurrent(p, 3.0 * orthogonal(np.random.default_rng(0), p.hidden_size))
    with pytest.raises(ValueError, match="forward pass overflowed"):
        trace(big, np.ones((800, 3, 3)), np.zeros((800, 3), int), activation="identity")


@pytest.mark.parametrize("T", [1, 2, 255, 256, 257, 700])
def test_chunk_edges_against_gradients(T):
    """The backward runs in 256-step chunks and rescales every 16 steps: check every step, both signals."""
    p, _, _, rng = random_problem("tanh", "xent", H=7, rho=1.4, seed=T)
    B = 3
    x = rng.normal(size=(T, B, 3))
    tg = rng.integers(0, 4, size=(T, B))
    mask = (rng.random((T, B)) < 0.5).astype(float)
    mask[-1] = 1.0
    r = trace(p, x, tg, mask=mask)
    n = np.linalg.norm(gradients(p, x, tg, mask=mask).adjoints, axis=2)
    assert_allclose(r.total.log_mean, np.log(n.mean(axis=1)), rtol=0, atol=1e-10)
    last_only = np.zeros_like(mask)
    last_only[-1] = 1.0
    n_last = np.linalg.norm(gradients(p, x, tg, mask=last_only).adjoints, axis=2)
    assert_allclose(r.last.log_max, np.log(n_last.max(axis=1)), rtol=0, atol=1e-10)


def test_no_last_loss_is_undetermined():
    p, x, tg, _ = random_problem("tanh", "xent")
    T, B, _ = x.shape
    mask = np.ones((T, B))
    mask[-1] = 0.0  # l_T is not scored: the last loss sends nothing back
    r = trace(p, x, tg, mask=mask)
    assert np.all(r.last.log_mean == -np.inf)
    assert r.fit.points == 0 and math.isnan(r.fit.gain)
    assert r.horizon.method == "undetermined" and r.suggested_window is None
    assert np.all(np.isfinite(r.total.log_mean[:-1])) and r.total.log_mean[-1] == -np.inf
    assert judge_signal(r, "last").label == "undetermined"
    assert judge_signal(r, "all").label in ("exploding", "vanishing", "stable")


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_against_torch_autograd(activation):
    """dL/dh_t and dl_T/dh_t from torch's autograd on the same network (h_t.grad of the two losses)."""
    torch = pytest.importorskip("torch")
    p, x, tg, _ = random_problem(activation, "xent", T=15, B=3, H=6, rho=1.2, seed=9)
    T, B, _ = x.shape
    r = trace(p, x, tg, activation=activation)
    f = {"tanh": torch.tanh, "relu": torch.relu}[activation]
    P = {k: torch.tensor(v, dtype=torch.float64) for k, v in p.as_dict().items()}
    for which in ("total", "last"):
        h = torch.zeros(B, p.hidden_size, dtype=torch.float64, requires_grad=True)  # a graph to hang h_t on
        states, losses = [], []
        for t in range(T):
            h = f(torch.tensor(x[t]) @ P["W_x"].T + h @ P["W_h"].T + P["b"])
            h.retain_grad()
            states.append(h)
            y = h @ P["W_y"].T + P["c"]
            losses.append(torch.nn.functional.cross_entropy(y, torch.tensor(tg[t]), reduction="sum") / B)
        (sum(losses) if which == "total" else losses[-1]).backward()
        norms = torch.stack([s.grad.norm(dim=1) for s in states]).numpy()  # (T, B)
        sig = r.total if which == "total" else r.last
        assert_allclose(np.exp(sig.log_mean), norms.mean(axis=1), rtol=1e-10)
        assert_allclose(np.exp(sig.log_max), norms.max(axis=1), rtol=1e-10)
