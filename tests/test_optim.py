"""Optimisers against torch.optim (the independent oracle), purity, and clipping closed forms."""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from bptt_cli.analyses.training import optim
from bptt_cli.core.rnn import PARAM_NAMES, Params, init_params

torch = pytest.importorskip("torch")


def _params(seed: int = 0, dtype: str = "float64") -> Params:
    return init_params(np.random.default_rng(seed), input_size=3, hidden_size=5, output_size=4, dtype=dtype)


def _grads(rng: np.random.Generator, like: Params) -> Params:
    return Params(**{k: rng.normal(size=v.shape).astype(v.dtype) for k, v in like.as_dict().items()})


def _torch_optimizer(opt: optim.Optimizer, tensors: list):
    if opt.name == "sgd":
        return torch.optim.SGD(tensors, lr=opt.lr)
    if opt.name == "momentum":
        return torch.optim.SGD(tensors, lr=opt.lr, momentum=opt.momentum)
    if opt.name == "adam":
        return torch.optim.Adam(tensors, lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps)
    return torch.optim.Adagrad(tensors, lr=opt.lr, eps=opt.eps)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
@pytest.mark.parametrize("dtype,rtol", [("float64", 1e-12), ("float32", 2e-5)])
def test_matches_torch_over_several_steps(name: str, dtype: str, rtol: float) -> None:
    opt = optim.Optimizer(name, lr=0.05, eps=1e-6)
    params = _params(dtype=dtype)
    tensors = [torch.tensor(v.copy(), requires_grad=True) for v in params.as_dict().values()]
    topt = _torch_optimizer(opt, tensors)
    state = optim.init_state(opt, params)
    rng = np.random.default_rng(1)
    for _ in range(6):
        grads = _grads(rng, params)
        params, state = optim.step(opt, params, grads, state)
        for t, g in zip(tensors, grads.as_dict().values(), strict=True):
            t.grad = torch.tensor(g)
        topt.step()
    assert state.count == 6
    for k, t in zip(PARAM_NAMES, tensors, strict=True):
        assert getattr(params, k).dtype == np.dtype(dtype)
        assert_allclose(getattr(params, k), t.detach().numpy(), rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", optim.OPTIMIZERS)
def test_step_is_pure(name: str) -> None:
    opt = optim.Optimizer(name, lr=0.1)
    params = _params()
    grads = _grads(np.random.default_rng(2), params)
    state = optim.init_state(opt, params)
    state = optim.step(opt, params, grads, state)[1]  # non-zero slots
    before = (params.copy(), grads.copy(), {k: v.copy() for k, v in state.arrays().items()})
    new_params, new_state = optim.step(opt, params, grads, state)
    for k in PARAM_NAMES:
        assert_array_equal(getattr(params, k), getattr(before[0], k))
        assert_array_equal(getattr(grads, k), getattr(before[1], k))
        assert not np.shares_memory(getattr(new_params, k), getattr(params, k))
    for k, v in state.arrays().items():
        assert_array_equal(v, before[2][k])
    assert new_state.count == state.count + 1


def test_sgd_closed_form() -> None:
    opt = optim.Optimizer("sgd", lr=0.25)
    params = _params()
    grads = _grads(np.random.default_rng(3), params)
    new, _ = optim.step(opt, params, grads, optim.init_state(opt, params))
    assert_allclose(new.flat(), params.flat() - 0.25 * grads.flat(), rtol=1e-15, atol=1e-15)


def test_state_round_trips_through_arrays() -> None:
    opt = optim.Optimizer("adam")
    params = _params()
    state = optim.step(opt, params, _grads(np.random.default_rng(4), params), optim.init_state(opt, params))[1]
    back = optim.OptState.from_arrays(opt, state.count, state.arrays(), params)
    assert back.count == 1
    for slot in ("m", "s"):
        assert_array_equal(back.slots[slot].flat(), state.slots[slot].flat())
    arrays = state.arrays()
    del arrays["s.W_h"]
    with pytest.raises(ValueError, match="s.W_h"):
        optim.OptState.from_arrays(opt, 1, arrays, params)


@pytest.mark.parametrize("theta", [0.1, 1.0, 1e6])
def test_clip_by_norm(theta: float) -> None:
    grads = _grads(np.random.default_rng(5), _params())
    norm_ref = np.linalg.norm(grads.flat())
    clipped, norm, did = optim.clip_by_norm(grads, theta)
    assert_allclose(norm, norm_ref, rtol=1e-14)
    assert did == (norm_ref > theta)
    # g <- g min(1, theta / ||g||): same direction, norm min(||g||, theta)
    assert_allclose(clipped.flat(), grads.flat() * min(1.0, theta / norm_ref), rtol=1e-14)
    assert_allclose(np.linalg.norm(clipped.flat()), min(norm_ref, theta), rtol=1e-13)


def test_clip_by_norm_off_returns_the_gradient() -> None:
    grads = _grads(np.random.default_rng(6), _params())
    clipped, norm, did = optim.clip_by_norm(grads, None)
    assert clipped is grads and not did
    assert_allclose(norm, np.linalg.norm(grads.flat()), rtol=1e-14)


def test_clip_by_value() -> None:
    grads = _grads(np.random.default_rng(7), _params())
    clipped, did = optim.clip_by_value(grads, 0.5)
    assert did
    assert_array_equal(clipped.flat(), np.clip(grads.flat(), -0.5, 0.5))
    same, did = optim.clip_by_value(grads, 100.0)
    assert not did
    assert_array_equal(same.flat(), grads.flat())


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"name": "rmsprop"}, "optimizer"),
        ({"lr": 0.0}, "lr"),
        ({"lr": -1.0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"beta1": 1.0}, "beta1"),
        ({"momentum": -0.1}, "momentum"),
        ({"eps": 0.0}, "eps"),
    ],
)
def test_bad_hyperparameters(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        optim.Optimizer(**kwargs)


@pytest.mark.parametrize("value", [0.0, -1.0, float("inf")])
def test_bad_clip(value: float) -> None:
    with pytest.raises(ValueError, match="clip"):
        optim.check_clip("clip", value)
