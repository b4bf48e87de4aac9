"""Per-step losses: values against closed forms (scipy's log-softmax), derivatives against
central differences, target and mask validation, dtype kept."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import log_softmax

from bptt_cli.core.losses import LOSSES, check_mask, check_targets, loss_and_grad

T, B, V = 4, 3, 5


def case(loss: str, rng: np.random.Generator, masked: bool):
    z = rng.normal(0, 2, size=(T, B, V))
    targets = {
        "xent": rng.integers(0, V, size=(T, B)),
        "mse": rng.normal(size=(T, B, V)),
        "half-square": None,
    }[loss]
    mask = rng.random((T, B)) * (rng.random((T, B)) < 0.7) if masked else None
    return z, targets, mask


def closed_form(loss, z, targets, mask):
    """L = (1/B) sum_{t,b} m_{t,b} l_{t,b}, written directly from the definitions."""
    m = np.ones((T, B)) if mask is None else mask
    if loss == "xent":
        per = -np.take_along_axis(log_softmax(z, axis=-1), targets[..., None], axis=-1)[..., 0]
    elif loss == "mse":
        per = np.mean((z - targets) ** 2, axis=-1)
    else:
        per = 0.5 * np.sum(z * z, axis=-1)
    return float(np.sum(m * per) / B)


@pytest.mark.parametrize("loss", ["xent", "mse", "half-square"])
@pytest.mark.parametrize("masked", [False, True])
def test_loss_value_and_gradient(loss, masked):
    rng = np.random.default_rng([LOSSES.index(loss), int(masked)])
    z, targets, mask = case(loss, rng, masked)
    L, dz = loss_and_grad(loss, z, targets, mask)
    assert_allclose(L, closed_form(loss, z, targets, mask), rtol=1e-13)
    # every coordinate of dL/dz by central differences: truncation ~ eps^2, rounding ~ ulp(L) / eps
    eps = 1e-6
    fd = np.empty_like(z)
    for i in range(z.size):
        zp, zm = z.copy(), z.copy()
        zp.flat[i] += eps
        zm.flat[i] -= eps
        fd.flat[i] = (closed_form(loss, zp, targets, mask) - closed_form(loss, zm, targets, mask)) / (2 * eps)
    assert_allclose(dz, fd, rtol=1e-6, atol=1e-9 * max(1.0, abs(L)))


def test_xent_gradient_closed_form_and_stability():
    # dl/dz = softmax(z) - onehot(target), here with logits large enough to overflow a naive exp
    z = np.array([[[1000.0, 0.0, -1000.0]]])
    targets = np.array([[1]])
    L, dz = loss_and_grad("xent", z, targets, None)
    assert_allclose(L, 1000.0, rtol=1e-15)
    assert_allclose(dz[0, 0], [1.0, -1.0, 0.0], atol=1e-300)


@pytest.mark.parametrize("loss", ["xent", "mse", "half-square"])
def test_overwrite_reuses_buffer_with_same_result(loss):
    rng = np.random.default_rng(1)
    z, targets, mask = case(loss, rng, True)
    L1, d1 = loss_and_grad(loss, z, targets, mask)
    z2 = z.copy()
    L2, d2 = loss_and_grad(loss, z2, targets, mask, overwrite=True)
    assert d2 is z2
    assert L1 == L2
    assert_array_equal(d1, d2)


@pytest.mark.parametrize("loss", ["xent", "mse", "half-square"])
def test_float32_kept(loss):
    rng = np.random.default_rng(2)
    z, targets, mask = case(loss, rng, True)
    if loss == "mse":
        targets = targets.astype(np.float32)
    L64, d64 = loss_and_grad(loss, z, targets, mask)
    L32, d32 = loss_and_grad(loss, z.astype(np.float32), targets, check_mask(mask, T, B, np.dtype(np.float32)))
    assert d32.dtype == np.float32
    assert_allclose(L32, L64, rtol=1e-5)
    assert_allclose(d32, d64, rtol=1e-4, atol=1e-6)


def test_mask_zero_means_no_loss_no_gradient():
    rng = np.random.default_rng(3)
    z, targets, _ = case("xent", rng, False)
    L, dz = loss_and_grad("xent", z, targets, np.zeros((T, B)))
    assert L == 0.0
    assert_array_equal(dz, 0.0)


def test_check_targets_accepts_integral_floats():
    t = check_targets("xent", np.array([[0.0, 2.0]]), 1, 2, 3)
    assert np.issubdtype(t.dtype, np.integer)
    assert_array_equal(t, [[0, 2]])


@pytest.mark.parametrize(
    ("loss", "targets", "match"),
    [
        ("xent", np.full((T, B), V), r"`targets` must be class indices in 0\.\.4"),
        ("xent", np.full((T, B), -1), r"`targets` must be class indices in 0\.\.4"),
        ("xent", np.zeros((T, B + 1), int), r"`targets` for xent must have shape"),
        ("xent", np.full((T, B), 0.5), "`targets` for xent must be integer class indices"),
        ("xent", np.full((T, B), np.nan), "`targets` for xent must be integer class indices"),
        ("xent", None, "`targets` are required"),
        ("mse", np.zeros((T, B)), r"`targets` for mse must have shape"),
        ("mse", np.full((T, B, V), np.inf), "`targets` contains NaN"),
        ("mse", np.zeros((T, B, V), complex), "`targets` must be real"),
        ("half-square", np.zeros((T, B)), "`targets` must be None"),
        ("hinge", None, "`loss` must be one of"),
    ],
)
def test_check_targets_rejects(loss, targets, match):
    with pytest.raises(ValueError, match=match):
        check_targets(loss, targets, T, B, V)


def test_check_targets_needs_output_layer():
    with pytest.raises(ValueError, match="needs an output layer"):
        check_targets("xent", np.zeros((T, B), int), T, B, 0)


@pytest.mark.parametrize(
    ("mask", "match"),
    [
        (np.ones((T, B + 1)), r"`mask` must have shape \(T, B\)"),
        (np.ones(T), r"`mask` must have shape \(T, B\)"),
        (-np.ones((T, B)), "`mask` must be finite and non-negative"),
        (np.full((T, B), np.nan), "`mask` must be finite and non-negative"),
        (np.ones((T, B), complex), "`mask` must be real or boolean"),
    ],
)
def test_check_mask_rejects(mask, match):
    with pytest.raises(ValueError, match=match):
        check_mask(mask, T, B, np.dtype(np.float64))


def test_check_mask_bool_becomes_dtype():
    m = check_mask(np.ones((T, B), bool), T, B, np.dtype(np.float32))
    assert m.dtype == np.float32
    assert_array_equal(m, 1.0)
    assert check_mask(None, T, B, np.dtype(np.float64)) is None
