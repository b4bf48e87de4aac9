"""Backpropagation through time, computed three ways (docs/design.md section 1).

reference (O(T), the notes' method 2, to be read): one backward recursion for delta_t = dL/dh_t,
    g_t         = f'(a_t) * delta_t
    delta_{t-1} = dl_{t-1}/dh_{t-1} + xi_t * g_t W_h        (xi_t = 1 for full BPTT)
with every parameter gradient accumulated from the same g_t ("compute once, reuse").
efficient (O(T), what `gradients` uses by default): the same recursion fused and chunked in
    core/fast.py; tests assert it equals the reference.
naive (O(T^2), the notes' method 1): a separate walk back from every loss l_s to every state
    h_t <= h_s, T(T+1)/2 paths, each adding its own contribution. For teaching and verifying.

`propagate` (T, B) holds the xi_t of truncated BPTT (core/truncation.py builds it): entry s
scales what step s + 1 sends back to step s (0 cuts the gradient there, 1/P reweights).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bptt_cli.core import fast
from bptt_cli.core.activations import Activation, get_activation
from bptt_cli.core.losses import Loss, check_mask, check_targets, get_loss, loss_and_grad
from bptt_cli.core.rnn import Params, check_inputs, check_params, outputs
from bptt_cli.core.validate import check_choice

METHODS = ("efficient", "reference", "naive")


class NonFiniteError(ValueError):
    """The loss or a gradient came out NaN or infinite (the network overflowed)."""


@dataclass(frozen=True)
class GradResult:
    """What `gradients` returns.

    loss : the scalar loss L
    grads : Params of dL/dparam, same shapes and dtype as the parameters
    dh0 : (B, H) dL/dh_0
    adjoints : (T, B, H) dL/dh_t for t = 1..T (efficient: a view of the buffer that held the states)
    final_state : (B, H) h_T, the state a stateful task carries into its next batch
    method : 'efficient', 'reference' or 'naive'
    paths : backward walks: T recursion steps, or T(T+1)/2 loss-to-state paths (naive)
    jvps : products with W_h done going backwards (vector-Jacobian products, per batch)
    """

    loss: float
    grads: Params
    dh0: np.ndarray
    adjoints: np.ndarray
    final_state: np.ndarray
    method: str
    paths: int
    jvps: int


def check_propagate(propagate: np.ndarray | None, T: int, B: int, dtype: np.dtype) -> np.ndarray | None:
    if propagate is None:
        return None
    propagate = np.asarray(propagate, dtype=dtype)
    if propagate.shape == (T,):
        propagate = np.repeat(propagate[:, None], B, axis=1)
    if propagate.shape != (T, B):
        raise ValueError(f"`propagate` must have shape (T,) or (T, B) = {(T, B)}; got {propagate.shape}")
    if not np.all(np.isfinite(propagate)):
        raise ValueError("`propagate` contains NaN or infinite values")
    return propagate


def local_loss_gradient(
    params: Params, hs: np.ndarray, loss: Loss, targets: np.ndarray | None, mask: np.ndarray | None
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """L, dl_t/dh_t (T, B, H) from each step's own loss, and dW_y, dc."""
    T1, B, H = hs.shape
    T = T1 - 1
    V = params.output_size
    if not loss.uses_output:
        L, dl = loss_and_grad(loss, hs[1:], None, mask)
        return L, dl, np.zeros_like(params.W_y), np.zeros_like(params.c)
    y = outputs(params, hs)  # (T, B, V)
    L, dy = loss_and_grad(loss, y, targets, mask, overwrite=True)  # dL/dy_t, (T, B, V)
    dy2 = dy.reshape(T * B, V)
    # back through y_t = W_y h_t + c
    dW_y = dy2.T @ hs[1:].reshape(T * B, H)
    dc = dy2.sum(axis=0)
    dl = (dy2 @ params.W_y).reshape(T, B, H)  # (T, B, H)
    return L, dl, dW_y, dc


def backward_reference(
    params: Params, x: np.ndarray, hs: np.ndarray, dl: np.ndarray, act: Activation, propagate: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """BPTT's recursion as min-char-rnn writes it, over the batch: returns dW_x, dW_h, db, dL/dh_0
    and the adjoints (T, B, H). Forward: a_t = W_x x_t + W_h h_{t-1} + b, h_t = f(a_t)."""
    T, B, H = dl.shape
    dW_x, dW_h, db = np.zeros_like(params.W_x), np.zeros_like(params.W_h), np.zeros_like(params.b)
    adjoints = np.empty_like(dl)
    carry = np.zeros((B, H), dtype=dl.dtype)  # what h_{t+1} sends back to h_t
    for t in reversed(range(T)):  # index t holds step t + 1; hs[t] is h_{t}, the state before it
        delta = dl[t] + carry  # dL/dh_t = its own loss + everything later, through h_{t+1}
        adjoints[t] = delta
        g = act.derivative(hs[t + 1]) * delta  # back through f: f'(a_t) * delta (tanh: 1 - h_t^2)
        dW_x += g.T @ x[t]  # back through W_x x_t
        dW_h += g.T @ hs[t]  # back through W_h h_{t-1}
        db += g.sum(axis=0)  # back through + b
        carry = g @ params.W_h  # on to h_{t-1}
        if propagate is not None:
            carry *= propagate[t][:, None]  # truncation: xi_t scales what step t sends back
    return dW_x, dW_h, db, carry, adjoints


# The naive enumeration walks T(T + 1)/2 loss-to-state paths of up to T products each: beyond
# this many walks it runs for hours, so a longer sequence is refused rather than started.
NAIVE_MAX_WALKS = 5 * 10**7


def check_naive_length(name: str, T: int) -> int:
    """T for the naive method: at most NAIVE_MAX_WALKS paths; ValueError naming `name` otherwise."""
    walks = T * (T + 1) // 2
    if walks > NAIVE_MAX_WALKS:
        longest = int(((8 * NAIVE_MAX_WALKS + 1) ** 0.5 - 1) / 2)
        raise ValueError(
            f"`{name}` {T}: the naive enumeration would walk T(T + 1)/2 = {walks:.3g} paths (O(T^2)); "
            f"it walks at most {NAIVE_MAX_WALKS:.0e} (T <= {longest})"
        )
    return T


def backward_naive(
    params: Params, x: np.ndarray, hs: np.ndarray, dl: np.ndarray, act: Activation, propagate: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """One walk back from every loss l_s to h_0; each path l_s -> h_t adds its own terms."""
    T, B, H = dl.shape
    W_h = params.W_h
    fprime = act.derivative(hs[1:])  # (T, B, H)
    adjoints = np.zeros_like(dl)
    dW_x = np.zeros_like(params.W_x)
    dW_h = np.zeros_like(params.W_h)
    db = np.zeros_like(params.b)
    dh0 = np.zeros((B, H), dtype=dl.dtype)
    paths = 0
    for s in range(T):
        if not dl[s].any():
            continue  # this step has no loss (masked): no walk starts here
        v = dl[s].copy()  # dl_s/dh_s
        for t in range(s, -1, -1):  # the path l_s -> h_t
            paths += 1
            adjoints[t] += v  # this path's share of dL/dh_t
            g = fprime[t] * v  # back through f
            dW_h += g.T @ hs[t]  # this path's own contribution, recomputed per path
            dW_x += g.T @ x[t]
            db += g.sum(axis=0)
            v = g @ W_h  # back through W_h: on to h_{t-1}
            if propagate is not None:
                v *= propagate[t][:, None]
        dh0 += v
    return adjoints, dW_x, dW_h, db, dh0, paths


def path_contributions(
    params: Params,
    x: np.ndarray,
    *,
    step: int = 1,
    activation: str | Activation = "identity",
    loss: str | Loss = "half-square",
    targets: np.ndarray | None = None,
    mask: np.ndarray | None = None,
) -> np.ndarray:
    """C_s for s = step..T: what loss l_s alone sends back to h_step, walked one path at a time.

    Returns (T, B, H) with zeros for s < step; summed over s it is dL/dh_step.
    """
    check_params(params)
    act, lo = get_activation(activation), get_loss(loss)
    x, h0 = check_inputs(params, x, None)
    T, B, _ = x.shape
    if not 1 <= step <= T:
        raise ValueError(f"`step` must be in 1..T = 1..{T}; got {step}")
    targets = check_targets(lo, targets, T, B, params.output_size)
    mask = check_mask(mask, T, B, params.dtype)
    hs = fast.forward_states(params, x, h0, act)
    _, dl, _, _ = local_loss_gradient(params, hs, lo, targets, mask)  # dl_s/dh_s, (T, B, H)
    fprime = act.derivative(hs[1:])  # (T, B, H)
    out = np.zeros_like(dl)
    for s in range(step - 1, T):  # 0-based index of loss l_{s+1}
        v = dl[s].copy()
        for t in range(s, step - 1, -1):  # back from h_{s+1} to h_step
            v = (fprime[t] * v) @ params.W_h
        out[s] = v
    return out


def _overflow(L: float) -> NonFiniteError:
    return NonFiniteError(
        f"the loss or a gradient is not finite (loss = {L}): the network overflowed; "
        "lower the spectral radius, the input scale or the sequence length"
    )


def gradients(
    params: Params,
    x: np.ndarray,
    targets: np.ndarray | None,
    *,
    loss: str | Loss = "xent",
    activation: str | Activation = "tanh",
    method: str = "efficient",
    mask: np.ndarray | None = None,
    h0: np.ndarray | None = None,
    propagate: np.ndarray | None = None,
) -> GradResult:
    """Loss and exact gradients of the RNN by backpropagation through time.

    Parameters
    ----------
    params : Params (float32 or float64; the result keeps that dtype)
    x : (T, B, D) inputs
    targets : (T, B) int class indices for 'xent'; (T, B, V) floats for 'mse'; None for 'half-square'
    loss : 'xent' | 'mse' | 'half-square'
    activation : 'tanh' | 'relu' | 'identity'
    method : 'efficient' (fused O(T)), 'reference' (readable O(T)) or 'naive' (O(T^2) paths)
    mask : (T, B) per-step loss weights, default all ones
    h0 : (B, H) initial state, default zeros
    propagate : (T,) or (T, B) truncation weights xi (see module docstring); None = full BPTT

    Returns
    -------
    GradResult

    Raises
    ------
    ValueError for malformed input; NonFiniteError (a ValueError) when the loss or a
    gradient is NaN or infinite.
    """
    check_params(params)
    act, lo = get_activation(activation), get_loss(loss)
    check_choice("method", method, METHODS)
    x, h0 = check_inputs(params, x, h0)
    T, B, _ = x.shape
    H = params.hidden_size
    targets = check_targets(lo, targets, T, B, params.output_size)
    mask = check_mask(mask, T, B, params.dtype)
    propagate = check_propagate(propagate, T, B, params.dtype)

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if method == "efficient":
            chunk = fast.chunk_steps(B, H, params.dtype.itemsize, T)
            hs = np.empty((T + 1, B, H), dtype=params.dtype)  # (T+1, B, H)
            for _ in fast.iter_forward(params, x, h0, act, hs, chunk):
                pass
            final = hs[T].copy()  # the backward writes dL/dh_T over h_T
            L, grads, dh0, jvps = fast.backward_efficient(params, x, hs, act, lo, targets, mask, propagate, chunk)
            adjoints, paths = hs[1:], T
        else:
            hs = fast.forward_states(params, x, h0, act)  # (T+1, B, H)
            final = hs[T].copy()
            L, dl, dW_y, dc = local_loss_gradient(params, hs, lo, targets, mask)
            if method == "reference":
                dW_x, dW_h, db, dh0, adjoints = backward_reference(params, x, hs, dl, act, propagate)
                paths = jvps = T
            else:
                adjoints, dW_x, dW_h, db, dh0, paths = backward_naive(params, x, hs, dl, act, propagate)
                jvps = paths
            grads = Params(W_x=dW_x, W_h=dW_h, b=db, W_y=dW_y, c=dc)
    # dh0 = g_1 W_h can overflow on its own; a non-finite adjoint always reaches db (g = f' * delta)
    if not np.isfinite(L) or not all(np.isfinite(v).all() for v in (*grads.as_dict().values(), dh0)):
        raise _overflow(L)
    return GradResult(
        loss=L, grads=grads, dh0=dh0, adjoints=adjoints, final_state=final, method=method, paths=paths, jvps=jvps
    )


def loss_value(
    params: Params,
    x: np.ndarray,
    targets: np.ndarray | None,
    *,
    loss: str | Loss = "xent",
    activation: str | Activation = "tanh",
    mask: np.ndarray | None = None,
    h0: np.ndarray | None = None,
) -> float:
    """L alone (a forward pass), with the same validation as `gradients`.

    Raises NonFiniteError (a ValueError) when the loss overflows, as `gradients` does.
    """
    check_params(params)
    act, lo = get_activation(activation), get_loss(loss)
    x, h0 = check_inputs(params, x, h0)
    T, B, _ = x.shape
    targets = check_targets(lo, targets, T, B, params.output_size)
    mask = check_mask(mask, T, B, params.dtype)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        hs = fast.forward_states(params, x, h0, act)
        z = outputs(params, hs) if lo.uses_output else hs[1:]
        L = loss_and_grad(lo, z, targets, mask, overwrite=lo.uses_output)[0]
    if not np.isfinite(L):
        raise NonFiniteError(
            f"the loss is not finite (loss = {L}): the network overflowed; "
            "lower the spectral radius, the input scale or the sequence length"
        )
    return L
