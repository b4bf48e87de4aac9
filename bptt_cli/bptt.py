"""Backpropagation through time, computed two ways.

efficient (O(T), the notes' method 2): one backward recursion for delta_t = dL/dh_t,
    g_t         = f'(a_t) * delta_t
    delta_{t-1} = dl_{t-1}/dh_{t-1} + xi_t * g_t W_h        (xi_t = 1 for full BPTT)
then every parameter gradient from the g_t in large matrix products over all (t, b) pairs of a
cache-sized chunk of steps (see `_backward_efficient`: one (T+1, B, H) array in all).

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
    adjoints : (T, B, H) dL/dh_t for t = 1..T (efficient: a C-contiguous view of the buffer that
        held the states, which it overwrote)
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


def _chunk_local_loss(
    params: Params,
    h_c: np.ndarray,
    loss: str,
    targets_c: np.ndarray | None,
    mask_c: np.ndarray | None,
    out: np.ndarray,
    ybuf: np.ndarray,
    wbuf: np.ndarray,
    dW_y: np.ndarray,
    dc: np.ndarray,
) -> float:
    """One chunk's share of `_local_loss_gradient`: its loss, dl_t/dh_t into `out` (k, B, H), and
    its share of dW_y and dc added in place. ybuf holds the chunk's outputs, then dL/dy."""
    k, B, H = h_c.shape
    kB = k * B
    V = params.output_size
    if not uses_output_layer(loss):
        np.copyto(out, h_c)  # half-square: dl_t/dh_t = w h_t, scaled in place
        return loss_and_grad(loss, out, None, mask_c, overwrite=True)[0]
    h2 = h_c.reshape(kB, H)
    if loss == "xent":
        # one column per (t, b): the softmax reductions then vectorise across samples
        dy = ybuf[: V * kB].reshape(V, kB)  # (V, k B)
        np.matmul(params.W_y, h2.T, out=dy)  # y_t = W_y h_t + c
        dy += params.c[:, None]
        L = xent_columns(dy, targets_c.reshape(kB), B, None if mask_c is None else mask_c.reshape(kB))
        dy2 = dy.T  # (k B, V) dL/dy_t
    else:
        y = ybuf[: kB * V].reshape(kB, V)
        np.matmul(h2, params.W_y.T, out=y)
        y += params.c
        L, dy3 = loss_and_grad(loss, y.reshape(k, B, V), targets_c, mask_c, overwrite=True)
        dy2 = dy3.reshape(kB, V)
    # back through y_t = W_y h_t + c
    np.matmul(dy2.T, h2, out=wbuf)
    dW_y += wbuf
    dc += dy2.sum(axis=0)
    np.matmul(dy2, params.W_y, out=out.reshape(kB, H))
    return L


def _backward_efficient(
    params: Params,
    x: np.ndarray,
    hs: np.ndarray,
    activation: str,
    loss: str,
    targets: np.ndarray | None,
    mask: np.ndarray | None,
    propagate: np.ndarray | None,
    chunk: int,
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """The local loss gradients, phase 1 (the sequential loop) and phase 2 (large products),
    interleaved one cache-sized chunk of K steps at a time, going back from the end.

    hs (T + 1, B, H) enters holding h_0..h_T and leaves with hs[1:] holding the adjoints
    dL/dh_t: delta_t is written over h_t once f'(a_t) = f'(h_t) has been taken from it, so BPTT
    needs one (T, B, H) array, not separate states, local gradients, adjoints and g. Per chunk:
    its outputs, loss and dl_t/dh_t (into a (K, B, H) buffer), f'(a_t), a copy of h_{t-1} for
    phase 2, then the recursion, then the chunk's share of dW_h, dW_x and db in single products
    over its K B rows, all while the chunk is in cache.

    Returns L, dW_x, dW_h, db, dW_y, dc, dh0, jvps.
    """
    T1, B, H = hs.shape
    T = T1 - 1
    D = x.shape[2]
    K = min(chunk, T)
    dt = hs.dtype
    W_h = np.ascontiguousarray(params.W_h)  # (H, H); g_t W_h reads it untransposed
    dl = np.empty((K, B, H), dtype=dt)  # (K, B, H) dl_t/dh_t of one chunk
    g = np.empty((K, B, H), dtype=dt)  # (K, B, H) f'(a_t), then g_t = f'(a_t) * delta_t
    h_prev = np.empty((K, B, H), dtype=dt)  # (K, B, H) h_{t-1}, kept for phase 2
    ybuf = np.empty(K * B * params.output_size, dtype=dt)  # one chunk's outputs, then dL/dy
    carry = np.zeros((B, H), dtype=dt)  # (B, H) xi_{t+1} g_{t+1} W_h, sent back to step t
    dW_x = np.zeros((H, D), dtype=dt)
    dW_h = np.zeros((H, H), dtype=dt)
    db = np.zeros(H, dtype=dt)
    dW_y = np.zeros_like(params.W_y)
    dc = np.zeros_like(params.c)
    hh_buf, hd_buf, wbuf = np.empty_like(dW_h), np.empty_like(dW_x), np.empty_like(dW_y)  # one chunk's shares
    if propagate is None:
        jvps = T
    else:
        xi = propagate[:, :, None]  # (T, B, 1) truncation weights xi_t in {0, 1, 1/P}
        live = propagate.any(axis=1).tolist()  # steps that send anything back
        jvps = sum(live[1:]) + 1
    L = 0.0
    for hi in range(T, 0, -chunk):
        lo = max(0, hi - chunk)
        k = hi - lo
        h_c = hs[lo + 1 : hi + 1]  # (k, B, H) h_t of this chunk; becomes its delta_t
        m_c = None if mask is None else mask[lo:hi]
        t_c = None if targets is None else targets[lo:hi]
        L += _chunk_local_loss(params, h_c, loss, t_c, m_c, dl[:k], ybuf, wbuf, dW_y, dc)
        activation_derivative(h_c, activation, out=g[:k])  # f'(a_t) from h_t
        np.copyto(h_prev[:k], hs[lo:hi])  # h_{t-1}: slots lo+1..hi-1 are overwritten below
        # phase 1: the only sequential part
        for s in range(hi - 1, lo - 1, -1):
            j = s - lo
            d_s = hs[s + 1]  # h_t's slot (t = s + 1) receives delta_t = dL/dh_t
            np.add(dl[j], carry, out=d_s)  # delta_t = dl_t/dh_t + xi_{t+1} g_{t+1} W_h
            g_j = g[j]
            np.multiply(g_j, d_s, out=g_j)  # back through f: g_t = f'(a_t) * delta_t
            if propagate is None:
                np.dot(g_j, W_h, out=carry)  # back through W_h h_{t-1}: g_t W_h
            elif live[s]:
                np.dot(g_j, W_h, out=carry)
                np.multiply(carry, xi[s], out=carry)  # truncation: xi_t
            else:
                carry.fill(0)
        # phase 2: this chunk's share of every parameter gradient, one product over its (t, b) pairs
        G = g[:k].reshape(k * B, H)
        np.matmul(G.T, h_prev[:k].reshape(k * B, H), out=hh_buf)  # sum_t g_t h_{t-1}^T
        dW_h += hh_buf
        np.matmul(G.T, x[lo:hi].reshape(k * B, D), out=hd_buf)  # sum_t g_t x_t^T
        dW_x += hd_buf
        db += G.sum(axis=0)  # sum_t g_t
    return L, dW_x, dW_h, db, dW_y, dc, carry, jvps  # carry = xi_1 g_1 W_h = dL/dh_0


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
            chunk = chunk_steps(B, params.hidden_size, params.dtype.itemsize, T)
            hs = np.empty((T + 1, B, params.hidden_size), dtype=params.dtype)  # (T+1, B, H)
            for _ in iter_forward(params, x, h0, activation, hs, chunk):
                pass
            L, dW_x, dW_h, db, dW_y, dc, dh0, jvps = _backward_efficient(
                params, x, hs, activation, loss, targets, mask, propagate, chunk
            )
            adjoints, paths = hs[1:], T  # the adjoints were written over h_1..h_T
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
