"""The gradient-check library: relative error, finite differences, the three checks, and that
a wrong gradient or a too-large step is caught."""

from dataclasses import replace

import numpy as np
import pytest
from numpy.testing import assert_allclose

from bptt_cli import gradients
from bptt_cli.analyses.gradcheck import (
    FD_TOLERANCE,
    METHOD_TOLERANCE,
    check_against_finite_differences,
    check_methods,
    finite_difference_gradients,
    gradcheck,
    random_problem,
    relative_error,
)
from bptt_cli.core.rnn import PARAM_NAMES


def test_relative_error_values():
    a = np.array([3.0, 4.0])
    assert relative_error(a, a) == 0.0
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0
    assert relative_error(a, -a) == 1.0
    assert relative_error(a, np.zeros(2)) == 1.0
    # ||(0, 1)|| / (||(3, 4)|| + ||(3, 5)||) = 1 / (5 + sqrt(34))
    assert_allclose(relative_error(a, np.array([3.0, 5.0])), 1 / (5 + np.sqrt(34)), rtol=1e-15)


def problem(seed, loss="xent", dtype="float64", masked=True, T=5):
    rng = np.random.default_rng(seed)
    params, x, targets, mask = random_problem(rng, T=T, B=2, D=3, H=4, V=3, loss=loss, dtype=dtype, masked=masked)
    return rng, params, x, targets, mask


@pytest.mark.parametrize("loss", ["xent", "mse", "half-square"])
def test_finite_differences_match_analytic(loss):
    rng, params, x, targets, mask = problem(1, loss)
    fd = finite_difference_gradients(params, x, targets, rng=rng, n_coords=5, loss=loss, mask=mask)
    exact = gradients(params, x, targets, loss=loss, mask=mask)
    for name in PARAM_NAMES:
        idx, deriv = fd[name]
        size = getattr(params, name).size
        assert idx.size == min(5, size)
        assert len(set(idx.tolist())) == idx.size and (idx.size == 0 or (idx.min() >= 0 and idx.max() < size))
        assert_allclose(deriv, getattr(exact.grads, name).ravel()[idx], rtol=1e-6, atol=1e-9)


def test_finite_differences_take_every_coordinate_of_small_parameters():
    rng, params, x, targets, mask = problem(2)
    fd = finite_difference_gradients(params, x, targets, rng=rng, n_coords=1000, mask=mask)
    for name in PARAM_NAMES:
        assert sorted(fd[name][0].tolist()) == list(range(getattr(params, name).size))


def test_finite_differences_of_float32_params_run_in_float64():
    rng, params, x, targets, mask = problem(3, dtype="float32")
    fd = finite_difference_gradients(params, x, targets, rng=rng, n_coords=6, mask=mask)
    exact = gradients(params.astype(np.float64), x, targets, mask=mask)
    # float32 differences with eps = 1e-6 would be pure rounding noise; float64 gives ~1e-9
    for name in PARAM_NAMES:
        idx, deriv = fd[name]
        assert deriv.dtype == np.float64
        assert_allclose(deriv, getattr(exact.grads, name).ravel()[idx], rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize("act", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("loss", ["xent", "mse", "half-square"])
def test_gradcheck_passes_on_correct_gradients(dtype, act, loss):
    rng, params, x, targets, mask = problem(4, loss, dtype)
    rows = gradcheck(params, x, targets, rng=rng, n_coords=6, loss=loss, activation=act, mask=mask)
    checks = [r.check for r in rows]
    assert checks.count("efficient vs finite differences") == 5
    assert checks.count("naive vs finite differences") == 5
    assert checks.count("efficient vs naive") == 7  # five parameters, dL/dh_0, dL/dh_t
    for r in rows:
        want = METHOD_TOLERANCE[dtype] if r.check == "efficient vs naive" else FD_TOLERANCE[dtype]
        assert r.tolerance == want
        assert r.passed, r
    if loss == "half-square":  # no output layer: W_y and c are empty and trivially equal
        assert all(r.n_coords == 0 for r in rows if r.parameter in ("W_y", "c"))


def test_gradcheck_catches_a_wrong_gradient():
    rng, params, x, targets, mask = problem(5)
    eff = gradients(params, x, targets, mask=mask)
    naive = gradients(params, x, targets, mask=mask, method="naive")
    fd = finite_difference_gradients(params, x, targets, rng=rng, n_coords=10, mask=mask)
    wrong_W_h = eff.grads.W_h * (1 + 1e-4)  # a 1e-4 relative error, far above 1e-6
    broken = replace(eff, grads=replace(eff.grads, W_h=wrong_W_h))
    rows = {r.parameter: r for r in check_against_finite_differences(broken, fd, FD_TOLERANCE["float64"])}
    assert not rows["W_h"].passed
    assert all(r.passed for name, r in rows.items() if name != "W_h")
    assert_allclose(rows["W_h"].rel_error, 1e-4 / (2 + 1e-4), rtol=1e-3)  # ||d|| / (||g|| + ||g(1+d)||)
    method_rows = {r.parameter: r for r in check_methods(broken, naive, METHOD_TOLERANCE["float64"])}
    assert not method_rows["W_h"].passed and method_rows["b"].passed


def test_too_large_step_fails_honestly():
    # eps = 0.5 puts the central difference's O(eps^2) truncation error far above 1e-6
    rng, params, x, targets, mask = problem(6)
    rows = gradcheck(params, x, targets, rng=rng, eps=0.5, mask=mask)
    fd_rows = [r for r in rows if "finite" in r.check]
    assert not all(r.passed for r in fd_rows)
    assert all(r.passed for r in rows if r.check == "efficient vs naive")


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(n_coords=0), "`n_coords` must be positive"),
        (dict(eps=0.0), "`eps` must be > 0"),
        (dict(eps=-1e-6), "`eps` must be > 0"),
        (dict(eps=float("nan")), "`eps` must be a finite number"),
    ],
)
def test_finite_difference_validation(kw, match):
    rng, params, x, targets, mask = problem(7)
    with pytest.raises(ValueError, match=match):
        finite_difference_gradients(params, x, targets, rng=rng, **kw)
