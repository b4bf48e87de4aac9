"""BPTT gradients: against central differences for every activation x loss x mask, naive
against efficient to 1e-12, path counts, float32 against float64, truncation weights,
validation and overflow.

The finite-difference oracle here is written in the test (every coordinate of every
parameter and of h_0), independent of bptt_cli.gradcheck.
"""

import warnings
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose, assert_array_equal

from bptt_cli import NonFiniteError, gradients, loss_value
from bptt_cli.analyses.paths import PathsConfig, compare_methods, fit_exponent, linear_example, run, time_methods
from bptt_cli.core.bptt import path_contributions
from bptt_cli.core.rnn import PARAM_NAMES, Params, init_params
from bptt_cli.core.truncation import parse_strategy, propagate_weights
from bptt_cli.core.validate import OptionError

ACTS = ("tanh", "relu", "identity")
LOSSES = ("xent", "mse", "half-square")


def problem(rng, *, T=4, B=2, D=2, H=3, V=3, loss="xent", masked=False, h0=True, rho=0.9, dtype="float64"):
    """A random network with non-zero biases, inputs, targets, a mask (0s and fractions) and h_0."""
    out = 0 if loss == "half-square" else V
    p = init_params(rng, input_size=D, hidden_size=H, output_size=out, spectral_radius=rho, dtype=dtype)
    p = replace(p, b=rng.normal(0, 0.3, H).astype(p.dtype), c=rng.normal(0, 0.3, out).astype(p.dtype))
    x = rng.normal(size=(T, B, D))
    targets = {"xent": rng.integers(0, max(V, 1), (T, B)), "mse": rng.normal(size=(T, B, V)), "half-square": None}[loss]
    mask = None
    if masked:
        mask = rng.random((T, B)) * (rng.random((T, B)) < 0.6)
        mask[-1] = 1.0
    return dict(params=p, x=x, targets=targets, mask=mask, h0=rng.normal(size=(B, H)) if h0 else None)


def call(fn, prob, **kw):
    return fn(prob["params"], prob["x"], prob["targets"], mask=prob["mask"], h0=prob["h0"], **kw)


def central_differences(prob, loss, act, eps=1e-6):
    """dL/dparam for every coordinate of every parameter, and dL/dh_0, by (L(+eps) - L(-eps)) / 2 eps."""
    p = prob["params"]

    def L(params=p, h0=prob["h0"]):
        return loss_value(params, prob["x"], prob["targets"], loss=loss, activation=act, mask=prob["mask"], h0=h0)

    out = {}
    for name in PARAM_NAMES:
        base = getattr(p, name)
        d = np.zeros(base.shape)
        for i in range(base.size):
            vals = []
            for sign in (1, -1):
                bumped = base.copy()
                bumped.flat[i] += sign * eps
                vals.append(L(params=replace(p, **{name: bumped})))
            d.flat[i] = (vals[0] - vals[1]) / (2 * eps)
        out[name] = d
    h0 = prob["h0"]
    d = np.zeros(h0.shape)
    for i in range(h0.size):
        hp, hm = h0.copy(), h0.copy()
        hp.flat[i] += eps
        hm.flat[i] -= eps
        d.flat[i] = (L(h0=hp) - L(h0=hm)) / (2 * eps)
    out["dh0"] = d
    return out


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("method", ["efficient", "naive"])
def test_gradients_match_central_differences(act, loss, masked, method):
    rng = np.random.default_rng([ACTS.index(act), LOSSES.index(loss), int(masked)])
    prob = problem(rng, loss=loss, masked=masked, rho=1.2)
    res = call(gradients, prob, loss=loss, activation=act, method=method)
    fd = central_differences(prob, loss, act)
    # truncation error ~ eps^2 |L'''| ~ 1e-12; rounding ~ ulp(L) / eps ~ 1e-10 |L|
    atol = 1e-8 * max(1.0, abs(res.loss))
    for name in PARAM_NAMES:
        assert_allclose(getattr(res.grads, name), fd[name], rtol=1e-6, atol=atol, err_msg=name)
    assert_allclose(res.dh0, fd["dh0"], rtol=1e-6, atol=atol, err_msg="dh0")
    assert_allclose(res.loss, call(loss_value, prob, loss=loss, activation=act), rtol=1e-14)


def assert_same(a, b, rtol):
    """Equal to `rtol` relative to the size of the reference array (entries can cancel to ~0)."""
    scale = max(float(np.max(np.abs(b))) if b.size else 0.0, np.finfo(float).tiny)
    assert_allclose(a, b, rtol=rtol, atol=rtol * scale)


def assert_methods_agree(prob, loss, act, propagate=None, rtol=1e-12):
    eff = call(gradients, prob, loss=loss, activation=act, method="efficient", propagate=propagate)
    nai = call(gradients, prob, loss=loss, activation=act, method="naive", propagate=propagate)
    assert eff.loss == nai.loss
    for name in PARAM_NAMES:
        assert_same(getattr(eff.grads, name), getattr(nai.grads, name), rtol)
    assert_same(eff.dh0, nai.dh0, rtol)
    assert_same(eff.adjoints, nai.adjoints, rtol)
    return eff, nai


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    T=st.integers(1, 9),
    B=st.integers(1, 3),
    D=st.integers(1, 3),
    H=st.integers(1, 6),
    V=st.integers(1, 4),
    act=st.sampled_from(ACTS),
    loss=st.sampled_from(LOSSES),
    masked=st.booleans(),
    h0=st.booleans(),
    truncated=st.booleans(),
    rho=st.floats(0.1, 1.5),
    seed=st.integers(0, 2**32 - 1),
)
def test_naive_equals_efficient(T, B, D, H, V, act, loss, masked, h0, truncated, rho, seed):
    rng = np.random.default_rng(seed)
    prob = problem(rng, T=T, B=B, D=D, H=H, V=V, loss=loss, masked=masked, h0=h0, rho=rho)
    xi = propagate_weights(parse_strategy("random:0.6"), T, B, rng) if truncated else None
    assert_methods_agree(prob, loss, act, propagate=xi)


@pytest.mark.parametrize("act", ACTS)
def test_naive_equals_efficient_long_sequence(act):
    rng = np.random.default_rng(12)
    prob = problem(rng, T=40, B=3, D=3, H=8, V=4, loss="xent", masked=True, rho=1.0)
    assert_methods_agree(prob, "xent", act)


@pytest.mark.parametrize("T", [1, 2, 3, 10, 17])
def test_path_counts(T):
    rng = np.random.default_rng(T)
    prob = problem(rng, T=T, loss="half-square")
    eff, nai = assert_methods_agree(prob, "half-square", "identity")
    assert nai.paths == T * (T + 1) // 2
    assert eff.paths == T
    assert eff.jvps == T  # T - 1 steps between states plus the one into h_0
    assert nai.jvps == nai.paths


def test_worked_example_has_55_paths():
    rng = np.random.default_rng(0)
    p = init_params(rng, input_size=3, hidden_size=4, output_size=0, spectral_radius=0.9)
    x = rng.normal(size=(10, 1, 3))
    nai = gradients(p, x, None, loss="half-square", activation="identity", method="naive")
    eff = gradients(p, x, None, loss="half-square", activation="identity", method="efficient")
    assert nai.paths == 55 and eff.paths == 10


def test_masked_steps_start_no_walk():
    rng = np.random.default_rng(13)
    T = 6
    prob = problem(rng, T=T, loss="xent")
    prob["mask"] = np.zeros((T, 2))
    prob["mask"][[1, 5]] = 1.0  # only l_2 and l_6 are scored
    _, nai = assert_methods_agree(prob, "xent", "tanh")
    assert nai.paths == 2 + 6


def test_half_square_ignores_output_layer():
    rng = np.random.default_rng(14)
    prob = problem(rng, loss="xent")
    prob["targets"] = None
    res = call(gradients, prob, loss="half-square", activation="tanh")
    assert_array_equal(res.grads.W_y, 0.0)
    assert_array_equal(res.grads.c, 0.0)


# ---------------------------------------------------------------- float32


@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("method", ["efficient", "naive"])
def test_float32_close_to_float64_and_dtype_kept(loss, act, method):
    # well-conditioned: rho 0.9, short sequence, unit-scale inputs
    rng = np.random.default_rng([LOSSES.index(loss), ACTS.index(act)])
    prob = problem(rng, T=10, B=3, D=3, H=6, V=4, loss=loss, masked=True, rho=0.9)
    xi = propagate_weights(parse_strategy("chunk:3"), 10, 3)
    ref = call(gradients, prob, loss=loss, activation=act, method=method, propagate=xi)
    p32 = {**prob, "params": prob["params"].astype(np.float32)}
    # x, h0, mask and xi stay float64: the parameters' dtype decides, nothing is upcast
    res = call(gradients, p32, loss=loss, activation=act, method=method, propagate=xi)
    got = {**res.grads.as_dict(), "dh0": res.dh0, "adjoints": res.adjoints}
    want = {**ref.grads.as_dict(), "dh0": ref.dh0, "adjoints": ref.adjoints}
    for name, arr in got.items():
        assert arr.dtype == np.float32, f"{name} is {arr.dtype}: silently upcast"
        assert_same(arr, want[name], 1e-5)
    assert_allclose(res.loss, ref.loss, rtol=1e-5)


# ---------------------------------------------------------------- truncation


@pytest.mark.parametrize("method", ["efficient", "naive"])
def test_chunk_T_and_random_1_equal_full_exactly(method):
    rng = np.random.default_rng(15)
    T, B = 7, 2
    prob = problem(rng, T=T, B=B, loss="mse", masked=True)
    full = call(gradients, prob, loss="mse", method=method)
    for spec in (f"chunk:{T}", f"chunk:{T + 5}", "random:1.0"):
        xi = propagate_weights(parse_strategy(spec), T, B, rng)
        res = call(gradients, prob, loss="mse", method=method, propagate=xi)
        for name in PARAM_NAMES:
            assert_array_equal(getattr(res.grads, name), getattr(full.grads, name), err_msg=spec)
        assert_array_equal(res.dh0, full.dh0)
        assert_array_equal(res.adjoints, full.adjoints)


# Scalar linear RNN h_t = w h_{t-1} + u x_t, l_t = h_t^2 / 2, w = 0.5, u = 1, x = (1, 2, 3):
# h = (1, 2.5, 4.25).  Full BPTT: delta_3 = 4.25, delta_2 = 2.5 + 0.5 * 4.25 = 4.625,
# delta_1 = 1 + 0.5 * 4.625 = 3.3125; dw = sum delta_t h_{t-1} = 4.625 + 4.25 * 2.5 = 15.25,
# du = sum delta_t x_t = 3.3125 + 9.25 + 12.75 = 25.3125, dL/dh_0 = 0.5 * 3.3125 = 1.65625.
# chunk:2 cuts h_3 -> h_2: delta_2 = 2.5, delta_1 = 1 + 1.25 = 2.25; dw = 2.5 + 10.625 = 13.125,
# du = 2.25 + 5 + 12.75 = 20, dL/dh_0 = 1.125.  All exact in binary.
HAND = {
    "full": dict(adj=[3.3125, 4.625, 4.25], dw=15.25, du=25.3125, dh0=1.65625),
    "chunk:2": dict(adj=[2.25, 2.5, 4.25], dw=13.125, du=20.0, dh0=1.125),
}


@pytest.mark.parametrize("spec", ["full", "chunk:2"])
@pytest.mark.parametrize("method", ["efficient", "naive"])
def test_hand_checked_truncation(spec, method):
    p = Params(W_x=np.array([[1.0]]), W_h=np.array([[0.5]]), b=np.zeros(1), W_y=np.zeros((0, 1)), c=np.zeros(0))
    x = np.array([1.0, 2.0, 3.0]).reshape(3, 1, 1)
    xi = propagate_weights(parse_strategy(spec), 3, 1)
    res = gradients(p, x, None, loss="half-square", activation="identity", method=method, propagate=xi)
    want = HAND[spec]
    assert res.loss == (1 + 6.25 + 18.0625) / 2
    assert_array_equal(res.adjoints[:, 0, 0], want["adj"])
    assert res.grads.W_h[0, 0] == want["dw"]
    assert res.grads.W_x[0, 0] == want["du"]
    assert res.grads.b[0] == sum(want["adj"])
    assert res.dh0[0, 0] == want["dh0"]


def test_propagate_of_shape_T_broadcasts_over_batch():
    rng = np.random.default_rng(16)
    prob = problem(rng, T=5, B=3)
    xi = rng.random(5)
    a = call(gradients, prob, propagate=xi)
    b = call(gradients, prob, propagate=np.repeat(xi[:, None], 3, axis=1))
    assert_array_equal(a.grads.W_h, b.grads.W_h)
    assert_array_equal(a.dh0, b.dh0)


# ---------------------------------------------------------------- purity, validation, overflow


def test_gradients_do_not_mutate_inputs_and_are_reproducible():
    rng = np.random.default_rng(17)
    prob = problem(rng, loss="mse", masked=True)
    snapshot = {k: (v.flat() if isinstance(v, Params) else np.copy(v)) for k, v in prob.items() if v is not None}
    first = call(gradients, prob, loss="mse", method="efficient")
    call(gradients, prob, loss="mse", method="naive")
    for k, v in snapshot.items():
        now = prob[k].flat() if isinstance(prob[k], Params) else prob[k]
        assert_array_equal(now, v, err_msg=k)
    again = call(gradients, prob, loss="mse", method="efficient")
    assert_array_equal(again.grads.flat(), first.grads.flat())


def _bad_cases():
    T, B, D, H, V = 4, 2, 2, 3, 3
    ok = dict(x=np.zeros((T, B, D)), targets=np.zeros((T, B), int))
    p = init_params(np.random.default_rng(0), input_size=D, hidden_size=H, output_size=V)
    nanW = replace(p, W_h=np.full((H, H), np.nan))
    return [
        (dict(x=np.zeros((T, B, D + 1))), "`x` has input size"),
        (dict(x=np.zeros((0, B, D)), targets=np.zeros((0, B), int)), "`x` must have at least one time step"),
        (dict(x=np.full((T, B, D), np.inf)), "`x` contains NaN"),
        (dict(targets=np.full((T, B), V)), r"`targets` must be class indices in 0\.\.2"),
        (dict(targets=np.full((T, B), -1)), r"`targets` must be class indices"),
        (dict(targets=np.zeros((T + 1, B), int)), r"`targets` for xent must have shape"),
        (dict(mask=np.ones((T, B + 1))), r"`mask` must have shape"),
        (dict(mask=np.full((T, B), np.nan)), r"`mask` must be finite"),
        (dict(h0=np.full((B, H), np.nan)), "`h0` contains NaN"),
        (dict(propagate=np.ones((T + 1, B))), r"`propagate` must have shape"),
        (dict(propagate=np.full((T, B), np.inf)), r"`propagate` contains NaN"),
        (dict(params=nanW), "`W_h` contains NaN"),
        (dict(activation="sigmoid"), "`activation` must be one of"),
        (dict(loss="hinge"), "`loss` must be one of"),
        (dict(method="reverse"), "`method` must be one of"),
    ], dict(params=p, **ok)


BAD, BASE = _bad_cases()


@pytest.mark.parametrize(("change", "match"), BAD, ids=[m for _, m in BAD])
def test_gradients_reject_bad_input(change, match):
    kw = {**BASE, **change}
    params, x, targets = kw.pop("params"), kw.pop("x"), kw.pop("targets")
    with pytest.raises(ValueError, match=match):
        gradients(params, x, targets, **kw)
    if "method" not in kw and "propagate" not in kw:
        with pytest.raises(ValueError, match=match):
            loss_value(params, x, targets, **kw)


@pytest.mark.parametrize("act", ["identity", "relu"])
@pytest.mark.parametrize("method", ["efficient", "naive"])
def test_overflow_raises_nonfinite_error(act, method):
    rng = np.random.default_rng(18)
    p = init_params(rng, input_size=2, hidden_size=3, output_size=2, init="identity", spectral_radius=50.0)
    x = np.abs(rng.normal(size=(300, 2, 2))) + 1.0  # positive: relu stays active and 50^300 overflows
    targets = rng.normal(size=(300, 2, 2))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the overflow is reported once, as the error, not as RuntimeWarnings
        with pytest.raises(NonFiniteError, match="not finite"):
            gradients(p, x, targets, loss="mse", activation=act, method=method)
        with pytest.raises(NonFiniteError, match="not finite"):
            loss_value(p, x, targets, loss="mse", activation=act)
    assert issubclass(NonFiniteError, ValueError)


def test_library_never_prints(capsys):
    rng = np.random.default_rng(20)
    prob = problem(rng, loss="xent", masked=True)
    for method in ("efficient", "naive"):
        call(gradients, prob, loss="xent", method=method)
    call(loss_value, prob, loss="xent")
    compare_methods(*linear_example(rng))
    run(PathsConfig(lengths=(3, 5), repeats=1))
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_dh0_overflow_alone_is_caught():
    # h_1 = 1e20 * 1e-310 = 1e-290, y_1 = 1e290 h_1 = 1: the loss, g_1 = 2e290 and every parameter
    # gradient are finite, but dL/dh_0 = g_1 W_h = 2e310 overflows
    p = Params(W_x=np.array([[1.0]]), W_h=np.array([[1e20]]), b=np.zeros(1), W_y=np.array([[1e290]]), c=np.zeros(1))
    x, targets, h0 = np.zeros((1, 1, 1)), np.zeros((1, 1, 1)), np.array([[1e-310]])
    assert np.isfinite(loss_value(p, x, targets, loss="mse", activation="identity", h0=h0))
    with pytest.raises(NonFiniteError):
        gradients(p, x, targets, loss="mse", activation="identity", h0=h0)


# ---------------------------------------------------------------- the paths demonstration (pathdemo)


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("step", [1, 3, 6])
def test_path_contributions_sum_to_the_adjoint(act, step):
    rng = np.random.default_rng(19)
    prob = problem(rng, T=6, B=2, loss="xent", masked=True, h0=False)
    kw = dict(activation=act, loss="xent", targets=prob["targets"], mask=prob["mask"])
    C = path_contributions(prob["params"], prob["x"], step=step, **kw)  # (T, B, H)
    assert_array_equal(C[: step - 1], 0.0)  # losses before h_step send nothing to it
    res = call(gradients, prob, loss="xent", activation=act)
    assert_allclose(C.sum(axis=0), res.adjoints[step - 1], rtol=1e-12, atol=1e-14)
    with pytest.raises(ValueError, match="`step` must be in 1..T"):
        path_contributions(prob["params"], prob["x"], step=7, **kw)


def test_run_example_is_the_worked_example():
    params, x = linear_example(np.random.default_rng(0))
    assert x.shape == (10, 1, 3) and params.output_size == 0
    assert_array_equal(params.b, 0.0)
    eff, naive, contrib, _, rel = compare_methods(params, x)
    assert naive.paths == 55 and eff.paths == 10
    assert rel < 1e-12
    assert_allclose(contrib.sum(axis=0), eff.adjoints[0], rtol=1e-12, atol=1e-14)
    ex = run(PathsConfig())  # the analysis on its defaults is the same example
    assert ex.naive.paths == 55 and ex.max_rel_diff < 1e-12


@pytest.mark.parametrize("k", [1.0, 2.0, 0.5])
def test_fit_exponent_recovers_a_power_law(k):
    lengths = [25, 50, 100, 200, 400]
    slope, r2 = fit_exponent(lengths, [3e-5 * T**k for T in lengths])
    assert_allclose(slope, k, rtol=1e-12)
    assert_allclose(r2, 1.0, rtol=1e-12)
    with pytest.raises(ValueError, match="at least two"):
        fit_exponent([10], [1.0])


def test_time_methods_counts_work():
    params, _ = linear_example(np.random.default_rng(1))
    rows = time_methods(params, (3, 5), np.random.default_rng(1), repeats=1)
    assert [(r.seq_len, r.efficient_steps, r.naive_paths) for r in rows] == [(3, 3, 6), (5, 5, 15)]
    assert all(r.efficient_s > 0 and r.naive_s > 0 for r in rows)
    with pytest.raises(OptionError, match="`--lengths`"):
        PathsConfig(lengths=(3, 0))
    with pytest.raises(OptionError, match="two different lengths"):
        PathsConfig(lengths=(3, 3))
