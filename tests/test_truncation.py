"""Truncation strategies and the gradient-estimator statistics of truncation.py.

Oracles: the full-BPTT gradient (for the exact identities), explicit matrix powers (the closed
form of a linear network with its loss at T), and the sampling distribution of a mean (the
statistical tests: bounds from the measured standard error, fixed seeds).
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from bptt_cli.analyses.truncation import bias_slope, estimator_statistics
from bptt_cli.core.bptt import gradients
from bptt_cli.core.rnn import Params, init_params
from bptt_cli.core.truncation import (
    SPEC_FORMS,
    Strategy,
    carried_work,
    parse_strategies,
    parse_strategy,
    propagate_weights,
)


def backward_share(propagate):
    """Share of full BPTT's backward Jacobian-vector products a strategy does (per sequence)."""
    return 1.0 if propagate is None else float(np.count_nonzero(propagate)) / propagate.size


def problem(seed: int, *, T: int = 12, B: int = 3, D: int = 3, H: int = 6, V: int = 4, activation: str = "tanh"):
    """A random tanh (or other) RNN with per-step xent losses, in float64."""
    rng = np.random.default_rng(seed)
    params = init_params(rng, input_size=D, hidden_size=H, output_size=V, spectral_radius=1.1)
    x = rng.normal(size=(T, B, D))
    targets = rng.integers(0, V, size=(T, B))
    return params, x, targets


def flat(res) -> np.ndarray:
    return np.concatenate([res.grads.flat(), res.dh0.ravel()])


# ---------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("full", Strategy("full")),
        ("chunk:5", Strategy("chunk", k=5)),
        (" Chunk:12 ", Strategy("chunk", k=12)),
        ("random:0.5", Strategy("random", p=0.5)),
        ("random:1", Strategy("random", p=1.0)),
    ],
)
def test_parse_valid_specs(spec, expected):
    assert parse_strategy(spec) == expected


@pytest.mark.parametrize(
    "spec", ["chunk:0", "chunk:-3", "chunk:x", "chunk:", "chunk:2.5", "random:0", "random:1.5", "random:-0.1", "lstm"]
)
def test_parse_malformed_specs_name_the_valid_forms(spec):
    with pytest.raises(ValueError) as e:
        parse_strategy(spec)
    assert SPEC_FORMS in str(e.value)


@pytest.mark.parametrize("text", ["", " , ", ","])
def test_parse_empty_list(text):
    with pytest.raises(ValueError, match="empty"):
        parse_strategies(text)


# ---------------------------------------------------------------------------- exact identities


@pytest.mark.parametrize("activation", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("spec", ["chunk:12", "chunk:40", "random:1.0"])
def test_one_chunk_and_random_one_equal_full_exactly(activation, spec):
    params, x, targets = problem(1, activation=activation)
    T, B, _ = x.shape
    full = gradients(params, x, targets, activation=activation)
    xi = propagate_weights(parse_strategy(spec), T, B, np.random.default_rng(0))
    trunc = gradients(params, x, targets, activation=activation, propagate=xi)
    assert trunc.loss == full.loss
    assert_array_equal(flat(trunc), flat(full))  # bit for bit: every xi is exactly 1


def linear_last_step_problem(seed: int, T: int, B: int = 2, D: int = 2, H: int = 5):
    """Identity activation, half-square loss only at step T: l = 1/2 ||h_T||^2 (mean over the batch)."""
    rng = np.random.default_rng(seed)
    params = init_params(rng, input_size=D, hidden_size=H, output_size=0, spectral_radius=0.95)
    params = Params(params.W_x, params.W_h, rng.normal(0, 0.1, H), params.W_y, params.c)
    x = rng.normal(size=(T, B, D))
    mask = np.zeros((T, B))
    mask[-1] = 1.0
    return params, x, mask


@pytest.mark.parametrize("T, K", [(12, 4), (12, 5), (12, 1), (12, 12), (7, 3), (9, 20)])
def test_chunk_on_linear_net_with_loss_at_T_matches_closed_form(T, K):
    params, x, mask = linear_last_step_problem(T * 100 + K, T)
    B = x.shape[1]
    res = gradients(
        params,
        x,
        None,
        loss="half-square",
        activation="identity",
        mask=mask,
        propagate=propagate_weights(Strategy("chunk", k=K), T, B),
    )
    # closed form: h_t = W_h h_{t-1} + W_x x_t + b unrolled; delta_t = (W_h^T)^(T-t) h_T / B for the
    # steps t of the chunk that holds T (steps c..T, c = K floor((T-1)/K) + 1), zero before it
    hs = [np.zeros((B, params.hidden_size))]
    for t in range(T):
        hs.append(hs[-1] @ params.W_h.T + x[t] @ params.W_x.T + params.b)
    c = K * ((T - 1) // K) + 1
    delta = {t: hs[T] @ np.linalg.matrix_power(params.W_h, T - t) / B for t in range(c, T + 1)}  # (B, H) each
    dW_h = sum(delta[t].T @ hs[t - 1] for t in delta)
    dW_x = sum(delta[t].T @ x[t - 1] for t in delta)
    db = sum(delta[t].sum(axis=0) for t in delta)
    dh0 = delta[1] @ params.W_h if c == 1 else np.zeros((B, params.hidden_size))
    assert_allclose(res.grads.W_h, dW_h, rtol=1e-12, atol=1e-14)
    assert_allclose(res.grads.W_x, dW_x, rtol=1e-12, atol=1e-14)
    assert_allclose(res.grads.b, db, rtol=1e-12, atol=1e-14)
    assert_allclose(res.dh0, dh0, rtol=1e-12, atol=1e-14)
    # only the last chunk's K steps (or fewer) carry a signal: T - c + 1 of them
    assert np.count_nonzero(np.any(res.adjoints != 0, axis=(1, 2))) == T - c + 1


@pytest.mark.parametrize("T, K", [(12, 4), (12, 5), (10, 1)])
def test_backward_share_counts_carried_products(T, K):
    # loss at T only: a cut stops the backward pass, so chunk:K does K - 1 of full's T products
    # (h_T -> ... -> h_(T-K+1) when K divides T; the last chunk's length minus one otherwise)
    params, x, mask = linear_last_step_problem(3, T)
    B = x.shape[1]
    xi = propagate_weights(Strategy("chunk", k=K), T, B)
    kw = dict(loss="half-square", activation="identity", mask=mask)
    full = gradients(params, x, None, **kw)
    trunc = gradients(params, x, None, propagate=xi, **kw)
    last_chunk = T - K * ((T - 1) // K)
    assert np.count_nonzero(carried_work(None, full.adjoints)) == T * B
    assert np.count_nonzero(carried_work(xi, trunc.adjoints)) == (last_chunk - 1) * B
    # a loss at every step: every adjoint is non-zero and the share is the share of non-zero xi
    params, x, targets = problem(4, T=T)
    xi = propagate_weights(Strategy("chunk", k=K), T, x.shape[1])
    trunc = gradients(params, x, targets, propagate=xi)
    share = np.count_nonzero(carried_work(xi, trunc.adjoints)) / xi.size
    assert share == pytest.approx(backward_share(xi))
    assert share == pytest.approx(1 - ((T - 1) // K) / T)


# ---------------------------------------------------------------------------- statistics


def test_random_mean_converges_to_full_gradient():
    """The mean of N draws of random:P is within three measured standard errors of g*, in norm and
    coordinate by coordinate (Bonferroni over the coordinates at the 0.1% level)."""
    params, x, targets = problem(7, T=15, B=2)
    T, B, _ = x.shape
    g_star = gradients(params, x, targets).grads.flat()
    rng = np.random.default_rng(2024)
    draws = np.array(
        [
            gradients(
                params, x, targets, propagate=propagate_weights(Strategy("random", p=0.6), T, B, rng)
            ).grads.flat()
            for _ in range(1500)
        ]
    )  # (N, P)
    N, P = draws.shape
    mean = draws.mean(axis=0)
    se = draws.std(axis=0, ddof=1) / np.sqrt(N)  # (P,)
    norm_se = np.sqrt(np.sum(se**2))
    assert np.linalg.norm(mean - g_star) <= 3 * norm_se
    from scipy.stats import norm

    z_bound = norm.ppf(1 - 0.001 / (2 * P))
    # W_y and c never see the truncation: their draws agree to rounding (the mean of 1500 equal
    # numbers is off by a few ulps), so they are compared as exact, the rest statistically
    live = se > 1e-10 * np.abs(g_star).max()
    assert np.count_nonzero(~live) == params.W_y.size + params.c.size
    assert np.all(np.abs(mean - g_star)[live] <= z_bound * se[live])
    assert_allclose(mean[~live], g_star[~live], rtol=1e-12, atol=1e-13)
    # and the estimator really is noisy: a single draw is far from g*
    assert np.linalg.norm(draws[0] - g_star) > 10 * norm_se


def test_statistics_rows_for_deterministic_and_random_strategies():
    params, x, targets = problem(11, T=20, B=4)
    report = estimator_statistics(
        params,
        x,
        targets,
        parse_strategies("full,chunk:20,chunk:5,random:1,random:0.7"),
        rng=np.random.default_rng(0),
        samples=300,
    )
    rows = {r.spec: r for r in report.rows}
    g_star = gradients(params, x, targets).grads.flat()
    assert report.full_grad_norm == pytest.approx(np.linalg.norm(g_star), rel=1e-12)
    for spec in ("full", "chunk:20", "random:1"):
        r = rows[spec]
        assert (r.samples, r.rel_bias, r.rel_bias_se, r.rel_std) == (1, 0.0, 0.0, 0.0)
        assert r.bias_consistent and r.cosine == pytest.approx(1.0, abs=1e-12) and r.backward_share == 1.0
    # chunk:5 is deterministic and biased: its bias is the exact distance to g*, and it is not "consistent"
    chunk = gradients(params, x, targets, propagate=propagate_weights(Strategy("chunk", k=5), 20, 4)).grads.flat()
    r = rows["chunk:5"]
    assert r.rel_bias == pytest.approx(np.linalg.norm(chunk - g_star) / np.linalg.norm(g_star), rel=1e-12)
    assert r.cosine == pytest.approx(chunk @ g_star / np.linalg.norm(chunk) / np.linalg.norm(g_star), rel=1e-12)
    assert r.rel_bias > 0.01 and not r.bias_consistent and r.samples == 1
    assert r.backward_share == pytest.approx(1 - 3 / 20)
    # random:0.7: unbiased within three standard errors; spread and cost as expected
    r = rows["random:0.7"]
    assert r.samples == 300 and r.bias_consistent and 0 < r.rel_bias <= 3 * r.rel_bias_se
    assert r.rel_std == pytest.approx(r.rel_bias_se * np.sqrt(300), rel=1e-12)
    assert r.cosine < r.cosine_of_mean <= 1.0
    assert abs(r.backward_share - 0.7) < 0.05  # per-step losses: the share is the fraction of xi kept
    assert [p.n for p in r.bias_curve] == [9, 18, 37, 75, 150, 300]


def test_random_bias_shrinks_like_one_over_sqrt_n_and_chunk_bias_does_not():
    """Over 12 independent replications, the mean squared bias of random:P falls by the ratio of
    sample sizes (16x from 20 to 320 draws); chunk:K's bias is the same at every sample size."""
    params, x, targets = problem(5, T=10, B=2, H=4)
    specs = parse_strategies("random:0.5,chunk:3")
    sq = {20: [], 320: []}
    for rep in range(12):
        for n in sq:
            rows = estimator_statistics(params, x, targets, specs, rng=np.random.default_rng([rep, n]), samples=n).rows
            sq[n].append(rows[0].rel_bias ** 2)
            chunk_bias = rows[1].rel_bias
            if rep == 0 and n == 20:
                first_chunk_bias = chunk_bias
            assert chunk_bias == first_chunk_bias  # deterministic: no shrinking
    ratio = np.mean(sq[20]) / np.mean(sq[320])
    # E[bias^2] = tr Cov / n exactly; a 12-sample mean of chi-square-like terms keeps the ratio within 2x
    assert 8 < ratio < 32, ratio
    assert first_chunk_bias > 0.05


def test_bias_slope_of_an_exact_power_law():
    from bptt_cli.analyses.truncation import BiasPoint

    curve = [BiasPoint(n, 3.0 / np.sqrt(n), 0.0) for n in (4, 8, 16, 64)]
    assert bias_slope(curve) == pytest.approx(-0.5, abs=1e-12)
    assert bias_slope(curve[:1]) is None


def test_projection_compares_a_chosen_coordinate():
    params, x, targets = problem(2)
    report = estimator_statistics(
        params, x, targets, [Strategy("chunk", k=3)], rng=np.random.default_rng(0), project=lambda g: g.W_h[0, :1]
    )
    full = gradients(params, x, targets).grads.W_h[0, 0]
    chunk = gradients(params, x, targets, propagate=propagate_weights(Strategy("chunk", k=3), 12, 3)).grads.W_h[0, 0]
    assert report.full_grad_norm == pytest.approx(abs(full), rel=1e-15)
    assert report.rows[0].rel_bias == pytest.approx(abs(chunk - full) / abs(full), rel=1e-12)
    assert report.rows[0].cosine == np.sign(chunk * full)


@pytest.mark.parametrize("samples", [1, 0, -5, 2.5, True])
def test_samples_below_two_with_a_random_strategy_is_an_error(samples):
    params, x, targets = problem(3)
    with pytest.raises(ValueError, match="`samples`"):
        estimator_statistics(
            params, x, targets, [Strategy("random", p=0.5)], rng=np.random.default_rng(0), samples=samples
        )
    # deterministic strategies need no samples at all
    estimator_statistics(params, x, targets, [Strategy("chunk", k=2)], rng=np.random.default_rng(0), samples=samples)


def test_empty_strategy_list_and_zero_gradient_are_errors():
    params, x, targets = problem(3)
    with pytest.raises(ValueError, match="empty"):
        estimator_statistics(params, x, targets, [], rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match="zero"):
        estimator_statistics(
            params, x, targets, [Strategy("full")], rng=np.random.default_rng(0), project=lambda g: np.zeros(2)
        )


def test_own_generator_leaves_the_given_stream_untouched():
    own = Strategy("random", p=0.5, xi_rng=np.random.default_rng(9))
    assert own == Strategy("random", p=0.5) and own.spec == "random:0.5"
    given = np.random.default_rng(1)
    xi = propagate_weights(own, 6, 4, given)
    assert_array_equal(xi, propagate_weights(Strategy("random", p=0.5), 6, 4, np.random.default_rng(9)))
    assert given.bit_generator.state == np.random.default_rng(1).bit_generator.state
