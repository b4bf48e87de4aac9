"""The fused kernels of core/fast.py against the readable references: every chunk size gives the
reference recursion's and the naive method's numbers, the chunked forward gives the reference
forward's states, the column-layout cross-entropy gives `loss_and_grad`'s and a closed form's,
and the peak memory stays at the arrays BPTT must keep.

Small test problems fit in one chunk, so the chunk boundaries are forced here by replacing
`chunk_steps` with a fixed K (1 = every step its own chunk, a K that does not divide T, T).
"""

import tracemalloc

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.special import log_softmax, softmax

from bptt_cli.core import fast as fastmod
from bptt_cli.core.activations import get_activation
from bptt_cli.core.bptt import gradients
from bptt_cli.core.fast import chunk_steps
from bptt_cli.core.losses import loss_and_grad, xent_columns
from bptt_cli.core.rnn import PARAM_NAMES, Params, forward, init_params


def forward_states(p, x, h0, act):
    return fastmod.forward_states(p, x, h0, get_activation(act))


ACTS = ("tanh", "relu", "identity")
LOSSES = ("xent", "mse", "half-square")


def problem(rng, *, T=11, B=3, D=2, H=4, V=3, loss="xent", dtype="float64"):
    out = 0 if loss == "half-square" else V
    p = init_params(rng, input_size=D, hidden_size=H, output_size=out, spectral_radius=1.1, dtype=dtype)
    p = Params(W_x=p.W_x, W_h=p.W_h, b=rng.normal(0, 0.3, H).astype(p.dtype), W_y=p.W_y, c=p.c + 0.2)
    x = rng.normal(size=(T, B, D))
    targets = {"xent": rng.integers(0, V, (T, B)), "mse": rng.normal(size=(T, B, V)), "half-square": None}[loss]
    return p, x, targets, rng.normal(size=(B, H))


@pytest.fixture(params=["upfront", "per-chunk"])
def fixed_chunk(monkeypatch, request):
    """Make `gradients` and `forward_states` use chunks of exactly K steps, with the outputs and
    loss computed for the whole sequence before the backward pass, or each chunk's own."""
    if request.param == "per-chunk":
        monkeypatch.setattr(fastmod, "UPFRONT_LOSS_BYTES", 0)

    def set_chunk(K):
        monkeypatch.setattr(fastmod, "chunk_steps", lambda *a, **k: K)

    return set_chunk


@pytest.mark.parametrize("K", [1, 4, 11, 50])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("loss", LOSSES)
@pytest.mark.parametrize("extra", ["plain", "mask", "chunk:3", "random:0.5"])
def test_every_chunk_size_gives_the_naive_gradients(fixed_chunk, K, act, loss, extra):
    rng = np.random.default_rng(K * 100 + ACTS.index(act) * 10 + LOSSES.index(loss))
    p, x, targets, h0 = problem(rng, loss=loss)
    T, B, _ = x.shape
    kw = dict(loss=loss, activation=act, h0=h0)
    if extra == "mask":
        kw["mask"] = rng.random((T, B)) * (rng.random((T, B)) < 0.6)
    elif extra == "chunk:3":
        kw["propagate"] = np.where(np.arange(T) % 3 == 0, 0.0, 1.0) * (np.arange(T) > 0) + (np.arange(T) == 0)
    elif extra == "random:0.5":
        kw["propagate"] = (rng.random((T, B)) < 0.5) / 0.5
    naive = gradients(p, x, targets, method="naive", **kw)  # O(T^2) paths, no chunked backward
    ref = gradients(p, x, targets, method="reference", **kw)  # the readable recursion
    fixed_chunk(K)
    fast = gradients(p, x, targets, **kw)
    for other in (naive, ref):
        for name in PARAM_NAMES:
            assert_allclose(getattr(fast.grads, name), getattr(other.grads, name), rtol=1e-11, atol=1e-12)
        assert_allclose(fast.adjoints, other.adjoints, rtol=1e-11, atol=1e-12)
        assert_allclose(fast.dh0, other.dh0, rtol=1e-11, atol=1e-12)
        assert fast.loss == pytest.approx(other.loss, rel=1e-13)
        assert_allclose(fast.final_state, other.final_state, rtol=1e-13, atol=1e-14)
    assert fast.paths == T == ref.paths


@pytest.mark.parametrize("K", [1, 2, 5, 7, 100])
@pytest.mark.parametrize("act", ACTS)
def test_chunked_forward_states_equal_forward(fixed_chunk, K, act):
    rng = np.random.default_rng(K)
    p, x, _, h0 = problem(rng)
    traj = forward(p, x, activation=act, h0=h0)  # one input product, no chunks
    fixed_chunk(K)
    assert_allclose(forward_states(p, x, h0, act), traj.h, rtol=1e-13, atol=1e-14)


def test_default_chunking_splits_long_sequences_and_agrees_with_naive():
    """The default chunking (at most 64 steps at B = 32, H = 64, float64, and at most T / 8) splits
    a sequence of 1.5 such chunks without any patching."""
    B, H = 32, 64
    K = chunk_steps(B, H, 8)
    assert 1 <= K <= 200  # keeps the O(T^2) naive reference fast
    T = K + K // 2 + 1
    rng = np.random.default_rng(3)
    p, x, targets, h0 = problem(rng, T=T, B=B, D=3, H=H, V=5)
    assert chunk_steps(B, H, 8, T) < T
    fast = gradients(p, x, targets, h0=h0)
    naive = gradients(p, x, targets, h0=h0, method="naive")
    for name in PARAM_NAMES:
        assert_allclose(getattr(fast.grads, name), getattr(naive.grads, name), rtol=1e-10, atol=1e-12)
    assert_allclose(fast.adjoints, naive.adjoints, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-13), (np.float32, 2e-6)])
@pytest.mark.parametrize("weighted", [False, True])
def test_xent_columns_matches_loss_and_grad_and_closed_form(dtype, tol, weighted):
    rng = np.random.default_rng(7)
    T, B, V = 5, 4, 6
    y = (rng.normal(size=(T, B, V)) * 4).astype(dtype)  # (T, B, V)
    targets = rng.integers(0, V, (T, B))
    mask = (rng.random((T, B)) * (rng.random((T, B)) < 0.7)).astype(dtype) if weighted else None
    L_ref, dy_ref = loss_and_grad("xent", y, targets, mask)
    w = np.full((T, B), 1.0 / B) if mask is None else mask / B  # (T, B)
    yT = np.ascontiguousarray(y.reshape(T * B, V).T)  # (V, N)
    L = xent_columns(yT, targets.reshape(-1), B, None if mask is None else mask.reshape(-1))
    assert L == pytest.approx(L_ref, rel=tol)
    assert_allclose(yT.T.reshape(T, B, V), dy_ref, rtol=tol, atol=tol)
    # the closed form, in float64 from scipy: nll = -log softmax(y)[target], dL/dy = w (softmax(y) - onehot)
    y64 = y.astype(np.float64)
    nll = -np.take_along_axis(log_softmax(y64, axis=-1), targets[..., None], axis=-1)[..., 0]
    grad = softmax(y64, axis=-1) - np.eye(V)[targets]
    assert L == pytest.approx(float(np.sum(w * nll)), rel=10 * tol)
    assert_allclose(yT.T.reshape(T, B, V), w[..., None] * grad, rtol=10 * tol, atol=10 * tol)


def test_xent_columns_is_stable_for_huge_logits():
    yT = np.array([[1000.0, -1000.0], [0.0, 0.0]])  # (V=2, N=2): logits (1000, 0) and (-1000, 0)
    L = xent_columns(yT, np.array([0, 0]), 1)  # nll: log(1 + e^-1000) ~ 0, and 1000 + log(1 + e^-1000)
    assert L == pytest.approx(1000.0, rel=1e-15)
    assert_allclose(yT, [[0.0, -1.0], [0.0, 1.0]], atol=1e-300)


@pytest.mark.parametrize("loss", LOSSES)
def test_peak_memory_is_the_kept_arrays(loss):
    """Everything gradients() allocates at its peak is at most 1.25x the states and adjoints it must
    hold (T B H each) plus parameters and gradients: no (T, B, H) f' or g buffer, no (T, B, V) outputs."""
    rng = np.random.default_rng(0)
    T, B, D, H, V = 400, 16, 8, 64, 32
    p, x, targets, _ = problem(rng, T=T, B=B, D=D, H=H, V=V, loss=loss)
    x = x.astype(p.dtype)
    kept = 2 * T * B * H * 8 + 2 * sum(a.nbytes for a in p.as_dict().values())
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        res = gradients(p, x, targets, loss=loss)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert res.adjoints.shape == (T, B, H)
    assert peak <= 1.25 * kept, f"peak {peak / 2**20:.2f} MiB vs kept {kept / 2**20:.2f} MiB"
