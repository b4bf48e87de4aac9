"""NetCell (core/netcell.py) and its layers (core/layers.py) against independent oracles.

- torch autograd, float64: torch.nn.RNN (tanh, relu) / GRU / LSTM with 1-3 layers and an
  nn.Linear head, the same weights copied in, unrolled one step at a time. The state the next
  step reads is a clone of the module's (h_n, c_n), with retain_grad: its gradient is dL/ds_t
  with s_t free (core/netcell.py's docstring), since the layer above reads the module's own h
  inside the step, and the loss reads the clone's top layer;
- torch.autograd.functional.jacobian of one module step (the state map s_{t-1} -> s_t), and
  central finite differences of our own one-step map;
- the eigenvalues of W_hh for a linear one-layer RNN, and log |det J_t| (from torch) for the
  sum of the full Lyapunov spectrum (an exact identity of the QR method);
- the vanilla RNNCell for a one-layer NetCell of kind 'rnn' (b_ih + b_hh = b);
- the readable reference kernels for the fast ones.
"""

from dataclasses import replace

import numpy as np
import pytest

from bptt_cli.core import layers as ly
from bptt_cli.core.bptt import NonFiniteError
from bptt_cli.core.cells import RNNCell
from bptt_cli.core.lyapunov import lyapunov_exponents
from bptt_cli.core.net import LayerParams, init_net_params
from bptt_cli.core.netcell import NetCell
from bptt_cli.core.rnn import Params
from bptt_cli.core.signal import trace
from bptt_cli.core.truncation import parse_strategy, propagate_weights

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")

CELLS = (("rnn", "tanh"), ("rnn", "relu"), ("gru", "tanh"), ("lstm", "tanh"))
LOSSES = ("xent", "mse", "half-square")


# ---------------------------------------------------------------------------- set-up and the oracle


def make_net(kind, layers, *, D=3, H=4, V=3, seed=0, bias=True, gain=1.5, dtype="float64"):
    """A network with PyTorch's initialisation scaled by `gain` (so that gates and f' leave their linear range)."""
    rng = np.random.default_rng(seed)
    p = init_net_params(
        rng, kind=kind, input_size=D, hidden_size=H, output_size=V, num_layers=layers, bias=bias, dtype=dtype
    )
    scaled = tuple(LayerParams(**{k: v * gain for k, v in vars(la).items()}) for la in p.layers)
    return replace(p, layers=scaled, c=rng.normal(size=V).astype(dtype))


def batch(p, T, B, loss, seed, *, masked=False, with_h0=False):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(T, B, p.input_size))  # (T, B, D)
    V = p.output_size
    targets = {"xent": rng.integers(0, V, size=(T, B)), "mse": rng.normal(size=(T, B, V)), "half-square": None}[loss]
    mask = (rng.random((T, B)) < 0.7) * rng.uniform(0.5, 2.0, size=(T, B)) if masked else None
    s0 = rng.uniform(-0.8, 0.8, size=(B, p.state_size)) if with_h0 else None  # |c_0| < 1 too, a valid LSTM state
    return x, targets, mask, s0


def torch_module(p, act):
    L, D, H = p.num_layers, p.input_size, p.hidden_size
    kw = dict(num_layers=L, bias=p.bias, dtype=torch.float64)  # time-major: batch_first=False
    mod = {
        "rnn": lambda: torch.nn.RNN(D, H, nonlinearity=act, **kw),
        "gru": lambda: torch.nn.GRU(D, H, **kw),
        "lstm": lambda: torch.nn.LSTM(D, H, **kw),
    }[p.kind]()
    head = torch.nn.Linear(H, p.output_size, dtype=torch.float64)
    with torch.no_grad():
        for k, la in enumerate(p.layers):
            names = ("W_ih", "W_hh", "b_ih", "b_hh") if p.bias else ("W_ih", "W_hh")
            for name in names:
                getattr(mod, TORCH_NAMES[name].format(k=k)).copy_(torch.from_numpy(getattr(la, name)))
        head.weight.copy_(torch.from_numpy(p.W_y))
        head.bias.copy_(torch.from_numpy(p.c))
    return mod, head


TORCH_NAMES = {"W_ih": "weight_ih_l{k}", "W_hh": "weight_hh_l{k}", "b_ih": "bias_ih_l{k}", "b_hh": "bias_hh_l{k}"}


def split_state(p, s):
    """(B, S) -> h, c as (L, B, H) torch tensors (c None but for an LSTM), differentiably."""
    H, LS = p.hidden_size, p.layer_state
    h = torch.stack([s[:, k * LS : k * LS + H] for k in range(p.num_layers)])
    c = torch.stack([s[:, k * LS + H : (k + 1) * LS] for k in range(p.num_layers)]) if p.kind == "lstm" else None
    return h, c


def join_state(p, h, c):
    """(L, B, H) h, c -> (B, S) in the network's layout."""
    parts = []
    for k in range(p.num_layers):
        parts.append(h[k])
        if c is not None:
            parts.append(c[k])
    return torch.cat(parts, dim=1) if torch.is_tensor(h) else np.concatenate(parts, axis=1)


def torch_step(p, mod, x_t, h, c):
    if p.kind == "lstm":
        _, (hn, cn) = mod(x_t[None], (h, c))
        return hn, cn
    _, hn = mod(x_t[None], h)
    return hn, None


def step_loss(loss, head, h_top, target):
    if loss == "half-square":
        return 0.5 * (h_top * h_top).sum(dim=1)
    y = head(h_top)
    if loss == "xent":
        return F.cross_entropy(y, torch.tensor(target, dtype=torch.long), reduction="none")
    return ((y - torch.tensor(target)) ** 2).mean(dim=1)


def torch_oracle(p, act, x, targets, *, loss, mask, s0, propagate=None, detach_every=None, last_only=False):
    """L, every gradient by as_dict name, dL/ds_0 (B, S) and the adjoints dL/ds_t (T, B, S), by autograd.

    propagate: the straight-through trick s' = s.detach() + xi (s - s.detach()) on the state each step
    reads (forward value s, gradient scaled by xi); detach_every K: the state detached before steps
    K + 1, 2K + 1, ... (chunk:K). last_only: the loss is the last step's alone.
    """
    T, B, _ = x.shape
    mod, head = torch_module(p, act)
    s_start = torch.tensor(np.zeros((B, p.state_size)) if s0 is None else s0, requires_grad=True)
    h, c = split_state(p, s_start)
    m = torch.ones(T, B, dtype=torch.float64) if mask is None else torch.tensor(mask)
    xs = torch.tensor(x)
    states, total = [], torch.zeros((), dtype=torch.float64)
    for t in range(T):
        if detach_every is not None and t > 0 and t % detach_every == 0:
            h, c = h.detach(), None if c is None else c.detach()
        if propagate is not None:
            xi = torch.tensor(propagate[t])[None, :, None]  # (1, B, 1)
            h = h.detach() + xi * (h - h.detach())
            c = None if c is None else c.detach() + xi * (c - c.detach())
        hn, cn = torch_step(p, mod, xs[t], h, c)
        h, c = hn.clone(), None if cn is None else cn.clone()  # the state s_t the loss and step t + 1 read
        h.retain_grad()
        if c is not None:
            c.retain_grad()
        states.append((h, c))
        if not last_only or t == T - 1:
            total = total + (m[t] * step_loss(loss, head, h[-1], None if targets is None else targets[t])).sum() / B
    total.backward()

    def grad(v):
        return np.zeros(tuple(v.shape)) if v.grad is None else v.grad.numpy().copy()

    grads = {}
    for k in range(p.num_layers):
        for name, tname in TORCH_NAMES.items():
            if p.bias or not name.startswith("b_"):
                grads[f"l{k}.{name}"] = grad(getattr(mod, tname.format(k=k)))
    grads["W_y"], grads["c"] = grad(head.weight), grad(head.bias)
    adjoints = np.stack([join_state(p, grad(h), None if c is None else grad(c)) for h, c in states])  # (T, B, S)
    return total.item(), grads, grad(s_start), adjoints


def assert_rel(actual, desired, rtol, what):
    """Agreement to `rtol` relative to the array's scale (single entries may cancel to ~0)."""
    assert np.shape(actual) == np.shape(desired), f"{what}: {np.shape(actual)} != {np.shape(desired)}"
    scale = max(float(np.max(np.abs(desired))) if np.size(desired) else 0.0, np.finfo(float).tiny)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale, err_msg=what)


def assert_matches(res, oracle, rtol, what=""):
    L, grads, dh0, adjoints = oracle
    assert res.loss == pytest.approx(L, rel=rtol), f"{what} loss"
    ours = res.grads.as_dict()
    assert set(ours) == set(grads), what
    for name, g in grads.items():
        assert_rel(ours[name], g, rtol, f"{what} d{name}")
    assert_rel(res.dh0, dh0, rtol, f"{what} dL/ds_0")
    assert_rel(res.adjoints, adjoints, rtol, f"{what} adjoints dL/ds_t")


# ---------------------------------------------------------------------------- gradients against torch

GRID = [
    (kind, act, L, loss, variant)
    for kind, act in CELLS
    for L in (1, 2, 3)
    for loss in LOSSES
    for variant in ("plain", "mask+h0")
]


@pytest.mark.parametrize(("kind", "act", "L", "loss", "variant"), GRID)
def test_gradients_match_torch_autograd(kind, act, L, loss, variant):
    i = GRID.index((kind, act, L, loss, variant))
    T, B, D, H, V = 5 + i % 3, 2 + i % 2, 3, 3 + i % 3, 4
    p = make_net(kind, L, D=D, H=H, V=V, seed=i)
    masked = with_h0 = variant == "mask+h0"
    x, targets, mask, s0 = batch(p, T, B, loss, seed=100 + i, masked=masked, with_h0=with_h0)
    oracle = torch_oracle(p, act, x, targets, loss=loss, mask=mask, s0=s0)
    assert np.abs(oracle[3]).max() > 0 and np.abs(oracle[2]).max() > 0  # premise: gradients reach every state
    cell = NetCell(p, act)
    for method in ("efficient", "reference"):
        res = cell.gradients(x, targets, loss=loss, mask=mask, h0=s0, method=method)
        assert_matches(res, oracle, 1e-10, method)
        assert res.paths == T and res.jvps == T
        np.testing.assert_allclose(res.final_state, cell.run(x, s0).states[-1], rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
def test_no_bias_has_no_bias_gradients_and_matches_torch(kind):
    p = make_net(kind, 2, seed=7, bias=False)
    assert not np.any([la.b_ih.any() or la.b_hh.any() for la in p.layers])
    x, targets, mask, s0 = batch(p, 6, 3, "xent", seed=8, masked=True, with_h0=True)
    res = NetCell(p).gradients(x, targets, loss="xent", mask=mask, h0=s0)
    assert not any(name.split(".")[-1].startswith("b_") for name in res.grads.as_dict())
    assert_matches(res, torch_oracle(p, "tanh", x, targets, loss="xent", mask=mask, s0=s0), 1e-10)


# ---------------------------------------------------------------------------- truncation


@pytest.mark.parametrize(("kind", "act"), CELLS)
def test_propagate_of_ones_is_full_bptt_exactly(kind, act):
    p = make_net(kind, 2, seed=11)
    x, targets, mask, s0 = batch(p, 7, 3, "mse", seed=12, masked=True, with_h0=True)
    cell = NetCell(p, act)
    for method in ("efficient", "reference"):
        full = cell.gradients(x, targets, loss="mse", mask=mask, h0=s0, method=method)
        ones = cell.gradients(x, targets, loss="mse", mask=mask, h0=s0, method=method, propagate=np.ones((7, 3)))
        for name, g in full.grads.as_dict().items():
            np.testing.assert_array_equal(ones.grads.as_dict()[name], g, err_msg=f"{method} {name}")
        np.testing.assert_array_equal(ones.dh0, full.dh0)
        np.testing.assert_array_equal(ones.adjoints, full.adjoints)


@pytest.mark.parametrize(("kind", "act"), CELLS)
@pytest.mark.parametrize("L", [1, 2])
def test_chunk_truncation_matches_torch_detaching_the_state(kind, act, L):
    T, B, K = 10, 3, 3
    p = make_net(kind, L, seed=20 + L)
    x, targets, mask, s0 = batch(p, T, B, "xent", seed=21, with_h0=True)
    xi = propagate_weights(parse_strategy(f"chunk:{K}"), T, B)
    assert xi is not None and not xi[K].any() and xi[:K].all()  # premise: the cut is at the step into state K
    oracle = torch_oracle(p, act, x, targets, loss="xent", mask=mask, s0=s0, detach_every=K)
    full = torch_oracle(p, act, x, targets, loss="xent", mask=mask, s0=s0)
    assert not np.allclose(oracle[1]["l0.W_hh"], full[1]["l0.W_hh"])  # premise: the cut changes the gradient
    for method in ("efficient", "reference"):
        res = NetCell(p, act).gradients(x, targets, loss="xent", mask=mask, h0=s0, propagate=xi, method=method)
        assert_matches(res, oracle, 1e-10, f"{method} chunk:{K}")
        assert res.jvps == T - (T - 1) // K  # the steps that send anything back


@pytest.mark.parametrize(("kind", "act"), CELLS)
def test_random_truncation_matches_torch_straight_through(kind, act):
    T, B = 9, 3
    p = make_net(kind, 2, seed=30)
    x, targets, mask, s0 = batch(p, T, B, "half-square", seed=31, masked=True, with_h0=True)
    xi = propagate_weights(parse_strategy("random:0.6"), T, B, np.random.default_rng(32))
    assert 0 < np.count_nonzero(xi) < xi.size  # premise: some steps are cut, some reweighted by 1/P
    oracle = torch_oracle(p, act, x, None, loss="half-square", mask=mask, s0=s0, propagate=xi)
    for method in ("efficient", "reference"):
        res = NetCell(p, act).gradients(x, None, loss="half-square", mask=mask, h0=s0, propagate=xi, method=method)
        assert_matches(res, oracle, 1e-10, f"{method} random:0.6")


# ---------------------------------------------------------------------------- fast == reference

FAST_GRID = [
    (kind, act, L, dtype)
    for kind, act in (*CELLS, ("rnn", "identity"))
    for L in (1, 3)
    for dtype in ("float64", "float32")
]


@pytest.mark.parametrize(("kind", "act", "L", "dtype"), FAST_GRID)
def test_fast_kernels_equal_the_reference(kind, act, L, dtype):
    # float64: rounding differences only (different operation order), ~1e-15 relative, asserted at 1e-12;
    # float32: the same at eps32 = 6e-8, over T = 12 steps and 3 layers, asserted at 1e-5
    rtol = 1e-12 if dtype == "float64" else 1e-5
    T, B = 12, 3
    p = make_net(kind, L, D=4, H=5, V=3, seed=40 + L, dtype=dtype)
    x, targets, mask, s0 = batch(p, T, B, "xent", seed=41, masked=True, with_h0=True)
    xi = propagate_weights(parse_strategy("random:0.7"), T, B, np.random.default_rng(42), dtype=dtype)
    xi[5] = 0  # a step no sequence sends anything back through (the fast kernels skip its product)
    cell = NetCell(p, act)
    fast = cell.gradients(x, targets, loss="xent", mask=mask, h0=s0, propagate=xi)
    ref = cell.gradients(x, targets, loss="xent", mask=mask, h0=s0, propagate=xi, method="reference")
    assert fast.grads.dtype == np.dtype(dtype) and fast.adjoints.dtype == np.dtype(dtype)
    assert fast.loss == pytest.approx(ref.loss, rel=rtol)
    for name, g in ref.grads.as_dict().items():
        assert_rel(fast.grads.as_dict()[name], g, rtol, name)
    assert_rel(fast.dh0, ref.dh0, rtol, "dh0")
    assert_rel(fast.adjoints, ref.adjoints, rtol, "adjoints")
    # the forward passes, layer by layer, and every gate they keep
    xx = x.astype(dtype)
    for k, la in enumerate(p.layers):
        s_k = s0[:, k * p.layer_state : (k + 1) * p.layer_state].astype(dtype)
        a, b = ly.forward(kind, la, xx, s_k, act), ly.forward_reference(kind, la, xx, s_k, act)
        assert_rel(a.h, b.h, rtol, f"l{k}.h")
        if kind == "lstm":
            assert_rel(a.c, b.c, rtol, f"l{k}.c")
        assert set(a.gates) == set(b.gates)
        for name in a.gates:
            assert_rel(a.gates[name], b.gates[name], rtol, f"l{k}.{name}")
        xx = a.h[1:]


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("chunk", [1, 3, 7, 100])
def test_fast_layer_kernels_equal_the_reference_for_any_chunk(kind, chunk):
    # the fast kernels work in chunks of steps (7 and 100: one chunk, and more steps than T);
    # a carry from beyond the last step and cut steps (xi = 0) cross the chunk boundaries
    T, B, D = 7, 2, 3
    p = make_net(kind, 1, D=D, H=4, seed=45)
    la = p.layers[0]
    rng = np.random.default_rng(46)
    x = rng.normal(size=(T, B, D))  # (T, B, D)
    s0 = rng.uniform(-0.5, 0.5, size=(B, p.layer_state))
    dh = rng.normal(size=(T, B, p.hidden_size))
    carry = rng.normal(size=(B, p.layer_state))
    xi = rng.uniform(0.5, 1.5, size=(T, B))
    xi[2], xi[4, 0] = 0, 0
    fast, ref = ly.forward(kind, la, x, s0, chunk=chunk), ly.forward_reference(kind, la, x, s0)
    assert_rel(fast.h, ref.h, 1e-13, "h")
    a = ly.backward(kind, la, fast, dh, carry, xi, chunk=chunk)
    b = ly.backward_reference(kind, la, ref, dh, carry, xi)
    for name in ("W_ih", "W_hh", "b_ih", "b_hh", "dx", "dh", "ds_h", *(("ds_c",) if kind == "lstm" else ())):
        assert_rel(getattr(a, name), getattr(b, name), 1e-12, name)


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("backward", [ly.backward, ly.backward_reference], ids=["fast", "reference"])
def test_layer_backward_carry_continues_a_split_sequence(kind, backward):
    """The carry into the last step means what arrives from beyond it: the backward of steps 1..T
    equals that of steps T1+1..T, whose dL/ds_{T1} is then the carry into steps 1..T1."""
    T, T1, B, D = 9, 4, 3, 4
    p = make_net(kind, 1, D=D, H=5, seed=50)
    la = p.layers[0]
    rng = np.random.default_rng(51)
    x = rng.normal(size=(T, B, D))  # (T, B, D)
    s0 = rng.uniform(-0.5, 0.5, size=(B, p.layer_state))
    dh = rng.normal(size=(T, B, p.hidden_size))  # what arrives from above at every step
    xi = rng.uniform(0.5, 1.5, size=(T, B))
    whole = ly.forward(kind, la, x, s0, "tanh")
    first = ly.forward(kind, la, x[:T1], s0, "tanh")
    second = ly.forward(kind, la, x[T1:], first.final_state, "tanh")
    g = backward(kind, la, whole, dh, None, xi)
    g2 = backward(kind, la, second, dh[T1:], None, xi[T1:])
    g1 = backward(kind, la, first, dh[:T1], g2.ds0, xi[:T1])
    for name in ("W_ih", "W_hh", "b_ih", "b_hh"):
        assert_rel(getattr(g1, name) + getattr(g2, name), getattr(g, name), 1e-12, name)
    assert_rel(np.concatenate([g1.dx, g2.dx]), g.dx, 1e-12, "dx")
    assert_rel(np.concatenate([g1.dh, g2.dh]), g.dh, 1e-12, "dh")
    assert_rel(g1.ds0, g.ds0, 1e-12, "ds0")
    assert np.abs(g2.ds0).max() > 1e-3  # premise: the carry is not negligible
    assert backward(kind, la, whole, dh, None, xi, need_dx=False).dx is None


# ---------------------------------------------------------------------------- the Jacobian of a step

JAC_CELLS = (("rnn", "tanh"), ("rnn", "identity"), ("gru", "tanh"), ("lstm", "tanh"))  # relu: FD across its kink


@pytest.mark.parametrize(("kind", "act"), JAC_CELLS)
@pytest.mark.parametrize("L", [1, 2, 3])
def test_jvp_vjp_and_jacobian_agree_with_finite_differences(kind, act, L):
    T, B, eps = 4, 2, 1e-5
    p = make_net(kind, L, D=3, H=3, seed=60 + L)
    x, _, _, s0 = batch(p, T, B, "xent", seed=61, with_h0=True)
    cell = NetCell(p, act)
    run = cell.run(x, s0)
    S = cell.state_size
    rng = np.random.default_rng(62)
    for t in (1, 3, T):
        J = cell.jacobian(run, t)  # (B, S, S)
        # central differences of the one-step map s_{t-1} -> s_t: error eps^2 |s'''| + 1e-16 / eps, ~1e-10 at most
        fd = np.empty_like(J)
        for j in range(S):
            e = np.zeros((B, S))
            e[:, j] = eps
            up = cell.run(x[t - 1 : t], run.states[t - 1] + e).states[1]
            down = cell.run(x[t - 1 : t], run.states[t - 1] - e).states[1]
            fd[:, :, j] = (up - down) / (2 * eps)
        assert np.abs(J - fd).max() < 1e-8 * max(1.0, np.abs(J).max()), f"t={t}"  # observed <= 3e-11
        assert np.abs(J).max() > 0.1  # premise: not a trivially small Jacobian
        Q = rng.normal(size=(B, S, 3))  # (B, S, k)
        np.testing.assert_allclose(cell.jvp(run, t, Q), J @ Q, rtol=1e-12, atol=1e-12)
        stepper = cell.vjp_stepper(run, rows=2)
        stepper.prepare(t - 1, t + 1 if t < T else t)  # a chunk of steps t..t+1 (or t alone)
        v = rng.normal(size=(2 * B, S))  # two row blocks of B
        out = np.empty_like(v)
        stepper.step(t, v, out)
        want = np.einsum("bij,rbi->rbj", J, v.reshape(2, B, S)).reshape(2 * B, S)  # J_t^T v, block by block
        np.testing.assert_allclose(out, want, rtol=1e-12, atol=1e-12)


def torch_step_jacobians(p, act, x, states):
    """J_t (T, B, S, S) of the torch module's one-step map, by torch.autograd.functional.jacobian."""
    mod, _ = torch_module(p, act)
    T, B = x.shape[:2]
    out = np.empty((T, B, p.state_size, p.state_size))
    for t in range(T):
        for b in range(B):
            x_t = torch.tensor(x[t, b : b + 1])

            def f(s, x_t=x_t):
                h, c = split_state(p, s[None])
                hn, cn = torch_step(p, mod, x_t, h, c)
                return join_state(p, hn, cn)[0]

            out[t, b] = torch.autograd.functional.jacobian(f, torch.tensor(states[t, b])).numpy()
    return out


@pytest.mark.parametrize(("kind", "act"), CELLS)
@pytest.mark.parametrize("L", [1, 2])
def test_trace_matches_torch(kind, act, L):
    T, B = 8, 3
    p = make_net(kind, L, seed=70 + L)
    x, targets, mask, s0 = batch(p, T, B, "xent", seed=71, masked=True, with_h0=True)
    mask[-1] = 1.0  # every sequence has a last loss
    cell = NetCell(p, act)
    res = trace(cell, x, targets, loss="xent", mask=mask, h0=s0)
    _, _, _, last = torch_oracle(p, act, x, targets, loss="xent", mask=mask, s0=s0, last_only=True)
    _, _, _, total = torch_oracle(p, act, x, targets, loss="xent", mask=mask, s0=s0)
    for ours, theirs in ((res.last, last), (res.total, total)):
        norms = np.linalg.norm(theirs, axis=2)  # (T, B) per-sequence norm of the full state's gradient
        assert norms.min() > 0  # premise: no signal is exactly zero (the logs are finite)
        np.testing.assert_allclose(ours.log_mean, np.log(norms.mean(axis=1)), rtol=0, atol=1e-8)
        np.testing.assert_allclose(ours.log_min, np.log(norms.min(axis=1)), rtol=0, atol=1e-8)
        np.testing.assert_allclose(ours.log_max, np.log(norms.max(axis=1)), rtol=0, atol=1e-8)
    # the exact ||J_t||_2 it reports, against torch's Jacobians of the same steps
    assert res.jacobian_kind == "exact"
    J = torch_step_jacobians(p, act, x, cell.run(x, s0).states)
    np.testing.assert_allclose(res.jacobian_norm, np.linalg.norm(J, ord=2, axis=(2, 3)).mean(axis=1), rtol=1e-10)
    suffix = {"lstm": ("mean_forget", "mean_output"), "gru": ("mean_update",), "rnn": ("mean_fprime",)}[kind]
    assert set(res.gain_stats) == {f"l{k}.{s}" for k in range(L) for s in suffix}


def test_gain_stats_are_the_gates_batch_means():
    T, B, H = 6, 3, 4
    p = make_net("lstm", 2, H=H, seed=80)
    x, _, _, s0 = batch(p, T, B, "xent", seed=81, with_h0=True)
    cell = NetCell(p)
    run = cell.run(x, s0)
    stats = cell.gain_stats(run, 1, 5)
    # layer 1's gates recomputed from the states alone: its input is layer 0's h
    sig = lambda a: 1 / (1 + np.exp(-a))  # noqa: E731
    la = p.layers[1]
    h0s, h1s, c1s = run.states[:, :, :H], run.states[:, :, 2 * H : 3 * H], run.states[:, :, 3 * H :]
    a = h0s[1:] @ la.W_ih.T + h1s[:-1] @ la.W_hh.T + la.b_ih + la.b_hh  # (T, B, 4H)
    f, o = sig(a[..., H : 2 * H]), sig(a[..., 3 * H :])
    np.testing.assert_allclose(f * c1s[:-1] + sig(a[..., :H]) * np.tanh(a[..., 2 * H : 3 * H]), c1s[1:], rtol=1e-12)
    np.testing.assert_allclose(stats["l1.mean_forget"], f[1:5].mean(axis=(1, 2)), rtol=1e-12)
    np.testing.assert_allclose(stats["l1.mean_output"], o[1:5].mean(axis=(1, 2)), rtol=1e-12)
    gru = NetCell(make_net("gru", 1, H=H, seed=82))
    grun = gru.run(x)
    assert np.allclose(gru.gain_stats(grun, 0, T)["l0.mean_update"], grun.cache[0].gates["z"].mean(axis=(1, 2)))


# ---------------------------------------------------------------------------- Lyapunov exponents


def test_lyapunov_of_a_linear_rnn_are_the_logs_of_its_eigenvalues():
    # h_t = W_hh h_{t-1} + ...: J_t = W_hh at every step, and the QR method's exponents converge to
    # log |lambda_i(W_hh)| at the rate (|lambda_3| / |lambda_2|)^t = 0.5^t: after 80 warm-up steps, 1e-24
    H, D = 5, 2
    rng = np.random.default_rng(90)
    Qm, _ = np.linalg.qr(rng.normal(size=(H, H)))
    lam = np.array([0.95, -0.6, 0.3, 0.15, 0.05])
    W_hh = Qm @ np.diag(lam) @ Qm.T  # (H, H) symmetric, eigenvalues lam
    p = make_net("rnn", 1, D=D, H=H, seed=91, gain=1.0)
    p = replace(p, layers=(replace(p.layers[0], W_hh=W_hh),))
    cell = NetCell(p, "identity")
    res = lyapunov_exponents(cell, rng.normal(size=(200, 3, D)), k=2, warmup=80)
    want = np.sort(np.log(np.abs(np.linalg.eigvals(W_hh))))[::-1][:2]
    np.testing.assert_allclose(res.exponents, want, rtol=0, atol=1e-10)
    np.testing.assert_allclose(res.per_sequence, np.broadcast_to(want, (3, 2)), rtol=0, atol=1e-10)


@pytest.mark.parametrize(("kind", "act"), [("gru", "tanh"), ("lstm", "tanh"), ("rnn", "tanh")])
def test_the_full_lyapunov_spectrum_sums_to_the_mean_log_det(kind, act):
    # with k = S the QR method's prod_i |R_ii| is |det J_t| at every step, so the exponents of each
    # sequence sum to mean_t log |det J_t| exactly (to rounding), for any cell; J_t from torch
    T, B = 7, 2
    p = make_net(kind, 2, D=3, H=2, seed=95)
    x, _, _, s0 = batch(p, T, B, "xent", seed=96, with_h0=True)
    cell = NetCell(p, act)
    res = lyapunov_exponents(cell, x, k=cell.state_size, h0=s0)
    J = torch_step_jacobians(p, act, x, cell.run(x, s0).states)
    _, logdet = np.linalg.slogdet(J)  # (T, B)
    assert np.all(np.isfinite(logdet))  # premise: no step's Jacobian is singular
    np.testing.assert_allclose(res.per_sequence.sum(axis=1), logdet.mean(axis=0), rtol=1e-10)


# ---------------------------------------------------------------------------- the vanilla RNN as an oracle


@pytest.mark.parametrize("act", ["tanh", "relu", "identity"])
@pytest.mark.parametrize("loss", LOSSES)
def test_one_layer_rnn_equals_the_vanilla_rnn_cell(act, loss):
    T, B = 9, 3
    p = make_net("rnn", 1, D=3, H=5, V=4, seed=100, gain=1.0 if act == "identity" else 1.5)
    la = p.layers[0]
    vanilla = RNNCell(Params(W_x=la.W_ih, W_h=la.W_hh, b=la.b_ih + la.b_hh, W_y=p.W_y, c=p.c), act)
    cell = NetCell(p, act)
    x, targets, mask, s0 = batch(p, T, B, loss, seed=101, masked=True, with_h0=True)
    xi = propagate_weights(parse_strategy("chunk:4"), T, B)
    a = cell.gradients(x, targets, loss=loss, mask=mask, h0=s0, propagate=xi)
    b = vanilla.gradients(x, targets, loss=loss, mask=mask, h0=s0, propagate=xi)
    assert a.loss == pytest.approx(b.loss, rel=1e-12)
    g, gb = a.grads.layers[0], b.grads
    pairs = {"W_ih": gb.W_x, "W_hh": gb.W_h, "b_ih": gb.b, "b_hh": gb.b}
    for name, want in pairs.items():
        assert_rel(getattr(g, name), want, 1e-12, name)
    assert_rel(a.grads.W_y, gb.W_y, 1e-12, "W_y")
    assert_rel(a.grads.c, gb.c, 1e-12, "c")
    assert_rel(a.dh0, b.dh0, 1e-12, "dh0")
    assert_rel(a.adjoints, b.adjoints, 1e-12, "adjoints")
    np.testing.assert_allclose(a.final_state, b.final_state, rtol=1e-13)
    assert (a.paths, a.jvps) == (b.paths, b.jvps)
    run, vrun = cell.run(x, s0), vanilla.run(x, s0)
    np.testing.assert_allclose(run.states, vrun.states, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(cell.jacobian(run, 4), vanilla.jacobian(vrun, 4), rtol=1e-13, atol=1e-15)
    assert cell.gain_stats(run, 0, T)["l0.mean_fprime"] == pytest.approx(vanilla.gain_stats(vrun, 0, T)["mean_fprime"])


# ---------------------------------------------------------------------------- the interface's edges


def test_description_sizes_and_state_layout():
    p = make_net("lstm", 2, D=3, H=4, V=5, seed=110)
    cell = NetCell(p)
    assert (cell.name, cell.describe(), cell.num_layers) == ("lstm", "2-layer LSTM", 2)
    assert (cell.input_size, cell.hidden_size, cell.output_size, cell.state_size) == (3, 4, 5, 16)
    assert [n for n, _ in cell.state_parts()] == ["l0.h", "l0.c", "l1.h", "l1.c"]
    assert NetCell(make_net("rnn", 1, seed=1), "relu").describe() == "relu RNN"
    assert NetCell(make_net("gru", 3, seed=1)).describe() == "3-layer GRU"
    x = np.random.default_rng(111).normal(size=(6, 2, 3))
    run = cell.run(x)
    assert run.states.shape == (7, 2, 16)
    np.testing.assert_array_equal(cell.hidden(run), run.states[:, :, 8:12])  # the top layer's h
    np.testing.assert_array_equal(run.states[:, :, 4:8], run.cache[0].c)
    np.testing.assert_allclose(cell.outputs(run), run.states[1:, :, 8:12] @ p.W_y.T + p.c, rtol=1e-14)
    L, dl = cell.local_loss(run, "half-square", None, None)
    assert dl.shape == (6, 2, 16) and not dl[:, :, :8].any() and not dl[:, :, 12:].any()
    np.testing.assert_allclose(dl[:, :, 8:12], run.states[1:, :, 8:12] / 2)  # dl/dh = h / B
    assert L == pytest.approx(0.25 * np.sum(run.states[1:, :, 8:12] ** 2))
    assert cell.with_params(p.astype(np.float32)).dtype == np.float32
    assert NetCell(make_net("rnn", 1, seed=2), "relu").with_params(make_net("rnn", 1, seed=3)).activation.name == "relu"


def test_inputs_are_validated():
    cell = NetCell(make_net("lstm", 2, D=3, H=4, seed=120))
    x = np.zeros((5, 2, 3))
    with pytest.raises(ValueError, match=r"`h0` must have shape \(B, S\) = \(2, 16\)"):
        cell.gradients(x, None, loss="half-square", h0=np.zeros((2, 4)))
    with pytest.raises(ValueError, match="input size D=2"):
        cell.run(np.zeros((5, 2, 2)))
    with pytest.raises(ValueError, match=r"\(T, B, D\)"):
        cell.run(np.zeros((5, 3)))
    with pytest.raises(ValueError, match="`method`"):
        cell.gradients(x, None, loss="half-square", method="naive")
    with pytest.raises(ValueError, match="`targets`"):
        cell.gradients(x, np.zeros((5, 3), dtype=int), loss="xent")
    with pytest.raises(ValueError, match="`propagate`"):
        cell.gradients(x, None, loss="half-square", propagate=np.ones(4))
    with pytest.raises(ValueError, match="fixed nonlinearities"):
        NetCell(make_net("gru", 1, seed=121), "relu")
    with pytest.raises(ValueError, match="`t` must be a step"):
        cell.jvp(cell.run(x), 0, np.zeros((2, 16, 1)))


@pytest.mark.parametrize(("kind", "act"), CELLS)
def test_an_overflowing_loss_raises_non_finite_error(kind, act):
    # gates and tanh saturate, so a GRU's or an LSTM's state cannot overflow; its loss can
    p = make_net(kind, 2, D=3, H=4, seed=130)
    p = replace(p, W_y=p.W_y * 1e200)
    x, targets, _, _ = batch(p, 5, 2, "mse", seed=131)
    cell = NetCell(p, act)
    run = cell.run(x)
    assert np.isfinite(cell.outputs(run)).all() and np.abs(cell.outputs(run)).max() > 1e160  # premise: y^2 overflows
    with pytest.raises(NonFiniteError, match="not finite"):
        cell.gradients(x, targets, loss="mse")


def test_an_exploding_relu_stack_raises_non_finite_error():
    p = make_net("rnn", 2, D=3, H=4, seed=132, gain=1.0)
    p = replace(p, layers=tuple(replace(la, W_hh=3.0 * np.eye(4)) for la in p.layers))
    x = np.abs(np.random.default_rng(133).normal(size=(400, 2, 3)))  # 3^400 = 1e190, then the head's product
    cell = NetCell(p, "relu")
    assert np.isfinite(cell.run(x).states).all()  # premise: the states themselves stay finite
    with pytest.raises(NonFiniteError, match="not finite"):
        cell.gradients(x * 1e150, np.zeros((400, 2), dtype=int), loss="xent")


def test_a_stack_trains():
    """Training drives the loss down through the Cell interface alone (core/netcell.py in fit)."""
    from bptt_cli.analyses.tasks import make_task
    from bptt_cli.analyses.training.loop import fit

    task = make_task("recall", seq_len=8, alphabet=4, delay=3)
    rng = np.random.default_rng(140)
    p = init_net_params(
        rng, kind="lstm", input_size=task.input_size, hidden_size=16, output_size=task.output_size, num_layers=2
    )
    result = fit(NetCell(p), task, steps=60, rng=rng, batch_size=16, log_every=30, watch=True)
    losses = [row["loss"] for row in result.history]
    assert len(losses) == 60 and np.all(np.isfinite(losses))
    assert np.mean(losses[-10:]) < 0.8 * np.mean(losses[:10])
