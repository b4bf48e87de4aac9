"""Backpropagation through time, computed two ways.

efficient (O(T), the notes' method 2): one backward recursion for delta_t = dL/dh_t,
    g_t         = f'(a_t) * delta_t
    delta_{t-1} = dl_{t-1}/dh_{t-1} + xi_t * g_t W_h        (xi_t = 1 for full BPTT)
then every parameter gradient from the stored g_t in single matrix products over all (t, b).

naive (O(T^2), the notes' method 1): a separate walk back from every loss l_s to every
state h_t <= h_s, T(T+1)/2 paths, each adding its own contribution to every parameter.
It exists to demonstrate and to verify the recursion, never to train.

`propagate` (T, B) holds the xi_t of truncated BPTT (truncation.py builds it): entry s
scales what step s + 1 sends back to step s (0 cuts the gradient there, 1/P reweights).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bptt_cli.losses import check_loss, check_mask, check_targets, loss_and_grad, uses_output_layer, xent_columns
from bptt_cli.model import (
    ACTIVATIONS,
    Params,
    activation_derivative,
    check_choice,
    check_inputs,
    check_params,
    chunk_steps,
    forward_states,
    iter_forward,
    outputs,
)

METHODS = ("efficient", "naive")


class NonFiniteError(ValueError):
    """The loss or a gradient came out NaN or infinite (the network overflowed)."""


@dataclass(frozen=True)
class GradResult:
    """What `gradients` returns.

    loss : the scalar loss L
    grads : Params of dL/dparam, same shapes and dtype as the parameters
    dh0 : (B, H) dL/dh_0
    adjoints : (T, B, H) dL/dh_t for t = 1..T
    method : 'efficient' or 'naive'
    paths : backward walks: T recursion steps (efficient) or T(T+1)/2 loss-to-state paths (naive)
    jvps : products with W_h done going backwards (vector-Jacobian products, per batch)
    """

    loss: float
    grads: Params
    dh0: np.ndarray
    adjoints: np.ndarray
    method: str
    paths: int
    jvps: int


def _check_propagate(propagate: np.ndarray | None, T: int, B: int, dtype: np.dtype) -> np.ndarray | None:
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


def _local_loss_gradient(
    params: Params, hs: np.ndarray, loss: str, targets: np.ndarray | None, mask: np.ndarray | None
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """L, dl_t/dh_t (T, B, H) from each step's own loss, and dW_y, dc."""
    T1, B, H = hs.shape
    T = T1 - 1
    V = params.output_size
    if not uses_output_layer(loss):
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


def _forward_local_loss(
    params: Params,
    x: np.ndarray,
    h0: np.ndarray,
    activation: str,
    loss: str,
    targets: np.ndarray | None,
    mask: np.ndarray | None,
    chunk: int,
) -> tuple[np.ndarray, float, np.ndarray, np.ndarray, np.ndarray]:
    """The forward pass fused with `_local_loss_gradient`, one cache-sized chunk of steps at a time.

    Returns hs (T + 1, B, H), L, dl (T, B, H) = dl_t/dh_t, dW_y, dc: the same numbers as
    `forward_states` then `_local_loss_gradient` (to rounding: L and dW_y are summed chunk by chunk),
    but the outputs y, the loss and dl of a chunk are computed while its states are still in cache,
    and the (T, B, V) output array is never allocated (one (K B, V) buffer is reused).
    """
    T, B, _ = x.shape
    H = params.hidden_size
    V = params.output_size
    hs = np.empty((T + 1, B, H), dtype=params.dtype)  # (T+1, B, H)
    dl = np.empty((T, B, H), dtype=params.dtype)  # (T, B, H)
    dW_y = np.zeros_like(params.W_y)  # (V, H)
    dc = np.zeros_like(params.c)  # (V,)
    head = uses_output_layer(loss)
    if head:
        ybuf = np.empty(min(chunk, T) * B * V, dtype=params.dtype)  # outputs, then dL/dy, of one chunk
        wbuf = np.empty_like(dW_y)  # (V, H) one chunk's share of dW_y
        scale = params.dtype.type(1.0 / B)  # the loss is a mean over the batch
    L = 0.0
    for lo, hi in iter_forward(params, x, h0, activation, hs, chunk):
        kB = (hi - lo) * B
        h_c = hs[lo + 1 : hi + 1]  # (k, B, H) h_t for this chunk's steps
        m_c = None if mask is None else mask[lo:hi]
        if not head:
            # half-square: dl_t/dh_t = w h_t, scaled in place in dl
            np.copyto(dl[lo:hi], h_c)
            L += loss_and_grad(loss, dl[lo:hi], None, m_c, overwrite=True)[0]
            continue
        h2 = h_c.reshape(kB, H)
        if loss == "xent":
            # one column per (t, b): the softmax reductions then vectorise across samples
            dy = ybuf[: V * kB].reshape(V, kB)  # (V, k B)
            np.matmul(params.W_y, h2.T, out=dy)  # y_t = W_y h_t + c
            dy += params.c[:, None]
            w = scale if m_c is None else m_c.reshape(kB) * scale  # (k B,) or scalar
            L += xent_columns(dy, targets[lo:hi].reshape(kB), w)
            dyT = dy.T  # (k B, V) dL/dy_t
        else:
            y = ybuf[: kB * V].reshape(kB, V)
            np.matmul(h2, params.W_y.T, out=y)
            y += params.c
            L_c, dy3 = loss_and_grad(loss, y.reshape(hi - lo, B, V), targets[lo:hi], m_c, overwrite=True)
            L += L_c
            dyT = dy3.reshape(kB, V)
        # back through y_t = W_y h_t + c
        np.matmul(dyT.T, h2, out=wbuf)
        dW_y += wbuf
        dc += dyT.sum(axis=0)
        np.matmul(dyT, params.W_y, out=dl[lo:hi].reshape(kB, H))
    return hs, L, dl, dW_y, dc


def _backward_efficient(
    params: Params,
    x: np.ndarray,
    hs: np.ndarray,
    delta: np.ndarray,
    activation: str,
    propagate: np.ndarray | None,
    chunk: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Phase 1 (the sequential loop) and phase 2 (large products), interleaved chunk by chunk.

    `delta` enters holding dl_t/dh_t and leaves holding dL/dh_t (updated in place). Going back over
    one cache-sized chunk of K steps at a time, phase 1 fills a (K, B, H) buffer with
    g_t = f'(a_t) * delta_t (f' from h_t, so no pre-activations are kept); phase 2 then adds that
    chunk's share of dW_h, dW_x and db in single products over its K B rows. The g of the whole
    sequence is never stored: memory stays at hs and delta, and the chunk is still in cache when
    the products read it.
    """
    T, B, H = delta.shape
    D = x.shape[2]
    if chunk is None:
        chunk = chunk_steps(B, H, delta.itemsize)
    W_h = np.ascontiguousarray(params.W_h)  # (H, H); g_t W_h reads it untransposed
    gbuf = np.empty((min(chunk, T), B, H), dtype=delta.dtype)  # (K, B, H) g_t of one chunk
    tmp = np.empty((B, H), dtype=delta.dtype)  # (B, H) reused every step
    dW_h = np.zeros((H, H), dtype=delta.dtype)
    dW_x = np.zeros((H, D), dtype=delta.dtype)
    db = np.zeros(H, dtype=delta.dtype)
    hh_buf = np.empty_like(dW_h)  # one chunk's share of dW_h
    hd_buf = np.empty_like(dW_x)  # one chunk's share of dW_x
    if propagate is None:
        jvps = T
    else:
        xi = propagate[:, :, None]  # (T, B, 1) truncation weights xi_t in {0, 1, 1/P}
        live = propagate.any(axis=1).tolist()  # steps that send anything back
        jvps = sum(live[1:]) + 1
    for hi in range(T, 0, -chunk):
        lo = max(0, hi - chunk)
        kB = (hi - lo) * B
        g = gbuf[: hi - lo]  # (k, B, H)
        activation_derivative(hs[lo + 1 : hi + 1], activation, out=g)  # f'(a_t)
        # phase 1: the only sequential part
        for s in range(hi - 1, lo - 1, -1):
            g_s = g[s - lo]
            np.multiply(g_s, delta[s], out=g_s)  # back through f: g_t = f'(a_t) * delta_t
            if s == 0:
                break
            if propagate is None:
                np.dot(g_s, W_h, out=tmp)  # back through W_h h_{t-1}: g_t W_h
                np.add(delta[s - 1], tmp, out=delta[s - 1])  # delta_{t-1} = dl_{t-1}/dh_{t-1} + g_t W_h
            elif live[s]:
                np.dot(g_s, W_h, out=tmp)
                np.multiply(tmp, xi[s], out=tmp)  # truncation: xi_t
                np.add(delta[s - 1], tmp, out=delta[s - 1])
        # phase 2: this chunk's share of every parameter gradient, one product over its (t, b) pairs
        G = g.reshape(kB, H)
        np.matmul(G.T, hs[lo:hi].reshape(kB, H), out=hh_buf)  # sum_t g_t h_{t-1}^T
        dW_h += hh_buf
        np.matmul(G.T, x[lo:hi].reshape(kB, D), out=hd_buf)  # sum_t g_t x_t^T
        dW_x += hd_buf
        db += G.sum(axis=0)  # sum_t g_t
    dh0 = gbuf[0] @ W_h  # (B, H): the last chunk done starts at t = 1
    if propagate is not None:
        dh0 *= xi[0]
    return dW_x, dW_h, db, dh0, jvps


def _backward_naive(
    params: Params,
    x: np.ndarray,
    hs: np.ndarray,
    dl: np.ndarray,
    activation: str,
    propagate: np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """One walk back from every loss l_s to h_0; each path l_s -> h_t adds its own terms."""
    T, B, H = dl.shape
    W_h = params.W_h
    fprime = activation_derivative(hs[1:], activation)  # (T, B, H)
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


def gradients(
    params: Params,
    x: np.ndarray,
    targets: np.ndarray | None,
    *,
    loss: str = "xent",
    activation: str = "tanh",
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
    method : 'efficient' (O(T) recursion) or 'naive' (O(T^2) path enumeration)
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
    check_choice("activation", activation, ACTIVATIONS)
    check_choice("method", method, METHODS)
    check_loss(loss)
    x, h0 = check_inputs(params, x, h0)
    T, B, _ = x.shape
    targets = check_targets(loss, targets, T, B, params.output_size)
    mask = check_mask(mask, T, B, params.dtype)
    propagate = _check_propagate(propagate, T, B, params.dtype)

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        if method == "efficient":
            chunk = chunk_steps(B, params.hidden_size, params.dtype.itemsize)
            hs, L, dl, dW_y, dc = _forward_local_loss(params, x, h0, activation, loss, targets, mask, chunk)
            dW_x, dW_h, db, dh0, jvps = _backward_efficient(params, x, hs, dl, activation, propagate, chunk)
            adjoints, paths = dl, T
        else:
            hs = forward_states(params, x, h0, activation)  # (T+1, B, H)
            L, dl, dW_y, dc = _local_loss_gradient(params, hs, loss, targets, mask)
            adjoints, dW_x, dW_h, db, dh0, paths = _backward_naive(params, x, hs, dl, activation, propagate)
            jvps = paths
    grads = Params(W_x=dW_x, W_h=dW_h, b=db, W_y=dW_y, c=dc)
    # dh0 = g_1 W_h can overflow on its own; a non-finite adjoint always reaches db (g = f' * delta)
    arrays = (dW_x, dW_h, db, dW_y, dc, dh0)
    if not np.isfinite(L) or not all(np.isfinite(v).all() for v in arrays):
        raise NonFiniteError(
            f"the loss or a gradient is not finite (loss = {L}): the network overflowed; "
            "lower the spectral radius, the input scale or the sequence length"
        )
    return GradResult(loss=L, grads=grads, dh0=dh0, adjoints=adjoints, method=method, paths=paths, jvps=jvps)


def loss_value(
    params: Params,
    x: np.ndarray,
    targets: np.ndarray | None,
    *,
    loss: str = "xent",
    activation: str = "tanh",
    mask: np.ndarray | None = None,
    h0: np.ndarray | None = None,
) -> float:
    """L alone (a forward pass), with the same validation as `gradients`.

    Raises NonFiniteError (a ValueError) when the loss overflows, as `gradients` does.
    """
    check_params(params)
    check_choice("activation", activation, ACTIVATIONS)
    check_loss(loss)
    x, h0 = check_inputs(params, x, h0)
    T, B, _ = x.shape
    targets = check_targets(loss, targets, T, B, params.output_size)
    mask = check_mask(mask, T, B, params.dtype)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        hs = forward_states(params, x, h0, activation)
        if uses_output_layer(loss):
            L = loss_and_grad(loss, outputs(params, hs), targets, mask, overwrite=True)[0]
        else:
            L = loss_and_grad(loss, hs[1:], None, mask)[0]
    if not np.isfinite(L):
        raise NonFiniteError(
            f"the loss is not finite (loss = {L}): the network overflowed; "
            "lower the spectral radius, the input scale or the sequence length"
        )
    return L
