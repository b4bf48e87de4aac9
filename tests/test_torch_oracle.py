"""An independent oracle: the same network and loss written in PyTorch, differentiated by
autograd in float64. Every parameter gradient, dL/dh_0 and the adjoints dL/dh_t (retain_grad)
must agree with both of our methods to 1e-10 relative.

Truncation weights xi are reproduced with the straight-through trick
h' = h.detach() + xi * (h - h.detach()): forward value h, gradient scaled by xi.
"""

from dataclasses import replace

import numpy as np
import pytest

from bptt_cli import gradients
from bptt_cli.core.rnn import PARAM_NAMES, init_params
from bptt_cli.core.truncation import parse_strategy, propagate_weights

torch = pytest.importorskip("torch")
F = pytest.importorskip("torch.nn.functional")

ACTS = ("tanh", "relu", "identity")
LOSSES = ("xent", "mse", "half-square")
TORCH_ACT = {"tanh": torch.tanh, "relu": torch.relu, "identity": lambda a: a}


def torch_reference(params, x, targets, *, loss, activation, mask, h0, propagate):
    """L and its gradients by autograd: dict of parameter grads, dh0 and adjoints (T, B, H)."""
    T, B, D = x.shape
    P = {k: torch.tensor(v, dtype=torch.float64, requires_grad=True) for k, v in params.as_dict().items()}
    h = torch.tensor(h0, dtype=torch.float64, requires_grad=True)
    h_start = h
    m = torch.ones(T, B, dtype=torch.float64) if mask is None else torch.tensor(mask, dtype=torch.float64)
    xs = torch.tensor(x, dtype=torch.float64)
    states, total = [], torch.zeros((), dtype=torch.float64)
    for t in range(T):
        h_in = h
        if propagate is not None:
            xi = torch.tensor(propagate[t], dtype=torch.float64)[:, None]
            h_in = h.detach() + xi * (h - h.detach())
        h = TORCH_ACT[activation](xs[t] @ P["W_x"].T + h_in @ P["W_h"].T + P["b"])
        h.retain_grad()
        states.append(h)
        if loss == "half-square":
            per = 0.5 * (h * h).sum(dim=1)
        else:
            y = h @ P["W_y"].T + P["c"]
            if loss == "xent":
                per = F.cross_entropy(y, torch.tensor(targets[t], dtype=torch.long), reduction="none")
            else:
                per = ((y - torch.tensor(targets[t], dtype=torch.float64)) ** 2).mean(dim=1)
        total = total + (m[t] * per).sum() / B
    total.backward()
    grads = {k: (v.grad.numpy() if v.grad is not None else np.zeros(v.shape)) for k, v in P.items()}
    adjoints = np.stack([s.grad.numpy() for s in states])
    return total.item(), grads, h_start.grad.numpy(), adjoints


def assert_rel(actual, desired, rtol, what):
    """Agreement to `rtol` relative to the array's scale (single entries may cancel to ~0)."""
    assert np.shape(actual) == np.shape(desired), what
    if np.size(desired) == 0:  # W_y and c of the half-square loss, which has no output layer
        return
    scale = max(float(np.max(np.abs(desired))), np.finfo(float).tiny)
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=rtol * scale, err_msg=what)


CONFIGS = [
    # (activation, loss, masked, with h0, truncation, T, B, D, H, V, spectral radius)
    (act, loss, masked, h0, trunc, *shape)
    for i, (act, loss) in enumerate((a, lo) for a in ACTS for lo in LOSSES)
    for masked, h0, trunc, shape in [
        (False, False, "full", (6, 2, 3, 4, 3, 0.9)),
        (True, True, ("chunk:3", "random:0.5", "full")[(i + i // 3) % 3], (9 + i, 3, 2, 5, 4, 1.1 + 0.05 * i)),
    ]
]


@pytest.mark.parametrize(("act", "loss", "masked", "with_h0", "trunc", "T", "B", "D", "H", "V", "rho"), CONFIGS)
def test_matches_torch_autograd(act, loss, masked, with_h0, trunc, T, B, D, H, V, rho):
    rng = np.random.default_rng([T, B, D, H, V, ACTS.index(act), LOSSES.index(loss)])
    out = 0 if loss == "half-square" else V
    p = init_params(rng, input_size=D, hidden_size=H, output_size=out, spectral_radius=rho)
    p = replace(p, b=rng.normal(0, 0.3, H), c=rng.normal(0, 0.3, out))
    x = rng.normal(size=(T, B, D))
    targets = {"xent": rng.integers(0, V, (T, B)), "mse": rng.normal(size=(T, B, V)), "half-square": None}[loss]
    mask = rng.random((T, B)) * (rng.random((T, B)) < 0.7) if masked else None
    h0 = rng.normal(size=(B, H)) if with_h0 else np.zeros((B, H))
    xi = propagate_weights(parse_strategy(trunc), T, B, rng)
    L, grads, dh0, adjoints = torch_reference(p, x, targets, loss=loss, activation=act, mask=mask, h0=h0, propagate=xi)
    for method in ("efficient", "naive"):
        res = gradients(
            p, x, targets, loss=loss, activation=act, method=method, mask=mask, h0=h0 if with_h0 else None, propagate=xi
        )
        np.testing.assert_allclose(res.loss, L, rtol=1e-12)
        for name in PARAM_NAMES:
            assert_rel(getattr(res.grads, name), grads[name], 1e-10, f"{method} {name}")
        assert_rel(res.dh0, dh0, 1e-10, f"{method} dL/dh_0")
        assert_rel(res.adjoints, adjoints, 1e-10, f"{method} dL/dh_t")


def test_oracle_sees_a_wrong_gradient():
    """The comparison is sharp: a network differing in one W_h entry by 1e-6 is told apart."""
    rng = np.random.default_rng(5)
    p = init_params(rng, input_size=2, hidden_size=3, output_size=2)
    x = rng.normal(size=(5, 2, 2))
    targets = rng.integers(0, 2, (5, 2))
    _, grads, _, _ = torch_reference(
        p, x, targets, loss="xent", activation="tanh", mask=None, h0=np.zeros((2, 3)), propagate=None
    )
    W_h = p.W_h.copy()
    W_h[0, 1] += 1e-6
    res = gradients(replace(p, W_h=W_h), x, targets, loss="xent", activation="tanh")
    with pytest.raises(AssertionError):
        assert_rel(res.grads.W_h, grads["W_h"], 1e-10, "W_h")
