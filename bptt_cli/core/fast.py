"""The fused, chunked kernels of the vanilla RNN: forward states and efficient BPTT.

Readable references of both are in core/rnn.py (`forward`) and core/bptt.py
(`backward_reference`); tests/test_fast.py asserts the kernels equal them. What the kernels do
differently, and why (the measurements are in benchmarks/README.md):

- the work goes in cache-sized chunks of K steps; per chunk, the input projection
  x_t W_x^T + b of all its steps is one matrix product written straight into the state buffer,
  and the loop then adds h_{t-1} W_h^T and applies f in place (three numpy calls per step, no
  allocation, a C-contiguous W_h^T);
- going back, each chunk computes its own outputs, loss and dl_t/dh_t, then the recursion, then
  its share of dW_h, dW_x and db as single products over its K B rows, while it is in cache;
- BPTT holds one (T + 1, B, H) array: dL/dh_t is written over h_t once f'(a_t) has been taken
  from it, so the returned adjoints are a view of the buffer that held the states.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from bptt_cli.core.activations import Activation
from bptt_cli.core.losses import XENT, Loss, loss_and_grad, xent_columns
from bptt_cli.core.rnn import Params

# Steps per chunk: the chunk's (K, B, H) slice of the state buffer is about this many bytes, so it
# is still in cache when the bulk products that follow the recurrence read it.
CHUNK_BYTES = 1 << 20
# The outputs y_t of the whole sequence, (V, T B), are computed in one product before the backward
# pass while they take at most this much memory (few classes, short sequences): a few large
# products instead of several small ones per chunk. Beyond it, each chunk computes its own.
UPFRONT_LOSS_BYTES = 1 << 20


def chunk_steps(
    batch: int, hidden: int, itemsize: int, seq_len: int | None = None, chunk_bytes: int = CHUNK_BYTES
) -> int:
    """How many time steps make one cache-sized chunk of a (T, B, H) array (at least 1).

    With `seq_len`, and a (T, B, H) array above glibc's default mmap threshold (128 KiB), also at
    most T / 8 steps: the backward's three (K, B, H) scratch buffers then stay small next to the
    (T + 1, B, H) state array, and glibc's malloc keeps reusing the same memory from call to call
    instead of handing it back to the kernel and taking page faults to get it again. Smaller
    problems stay one chunk.
    """
    step_bytes = batch * hidden * itemsize
    k = max(1, chunk_bytes // step_bytes)
    if seq_len is None or seq_len * step_bytes <= 1 << 17:
        return k
    return max(1, min(k, seq_len // 8))


def _recur(hs: np.ndarray, lo: int, hi: int, W_hT: np.ndarray, tmp: np.ndarray, act: Activation) -> None:
    """Steps lo+1..hi of the recurrence in place: hs[t] enters holding x_t W_x^T + b, leaves holding h_t.

    W_hT is W_h^T as a C-contiguous copy (OpenBLAS is faster on it than on the transposed view);
    tmp is the (B, H) product buffer. np.dot with `out` is the cheapest product call per step.
    """
    prev = hs[lo]
    f = act.f  # tanh is the ufunc itself: no Python frame per step
    for cur in hs[lo + 1 : hi + 1]:
        np.dot(prev, W_hT, out=tmp)
        np.add(cur, tmp, out=cur)  # a_t
        if f is not None:
            f(cur, out=cur)  # h_t = f(a_t)
        prev = cur


def iter_forward(
    params: Params, x: np.ndarray, h0: np.ndarray, act: Activation, hs: np.ndarray, chunk: int
) -> Iterator[tuple[int, int]]:
    """Fill hs (T + 1, B, H) with h_0..h_T chunk by chunk, yielding (lo, hi) once h_{lo+1}..h_hi are done.

    A caller that works on hs[lo + 1 : hi + 1] between the yields finds it in cache.
    No validation (see rnn.forward); x must already have the parameters' dtype.
    """
    T, B, D = x.shape
    H = params.hidden_size
    hs[0] = h0
    W_xT = params.W_x.T
    W_hT = np.ascontiguousarray(params.W_h.T)  # (H, H)
    tmp = np.empty((B, H), dtype=hs.dtype)  # (B, H) reused every step
    for lo in range(0, T, chunk):
        hi = min(lo + chunk, T)
        a = hs[lo + 1 : hi + 1].reshape((hi - lo) * B, H)  # (k B, H) view
        np.matmul(x[lo:hi].reshape((hi - lo) * B, D), W_xT, out=a)
        a += params.b
        _recur(hs, lo, hi, W_hT, tmp, act)
        yield lo, hi


def forward_states(params: Params, x: np.ndarray, h0: np.ndarray, act: Activation) -> np.ndarray:
    """The recurrence without validation or stored pre-activations: states (T + 1, B, H)."""
    T, B, _ = x.shape
    H = params.hidden_size
    hs = np.empty((T + 1, B, H), dtype=params.dtype)  # (T+1, B, H)
    for _ in iter_forward(params, x, h0, act, hs, chunk_steps(B, H, hs.itemsize)):
        pass
    return hs


def _chunk_local_loss(
    params: Params,
    h_c: np.ndarray,
    loss: Loss,
    targets_c: np.ndarray | None,
    mask_c: np.ndarray | None,
    out: np.ndarray,
    ybuf: np.ndarray,
    wbuf: np.ndarray,
    dW_y: np.ndarray,
    dc: np.ndarray,
) -> float:
    """One chunk's loss, dl_t/dh_t into `out` (k, B, H), and its share of dW_y and dc (added in
    place). ybuf holds the chunk's outputs, then dL/dy."""
    k, B, H = h_c.shape
    kB = k * B
    V = params.output_size
    if not loss.uses_output:
        np.copyto(out, h_c)  # half-square: dl_t/dh_t = w h_t, scaled in place
        return loss_and_grad(loss, out, None, mask_c, overwrite=True)[0]
    h2 = h_c.reshape(kB, H)
    if loss is XENT:
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


def _loss_upfront(
    params: Params,
    hs: np.ndarray,
    loss: Loss,
    targets: np.ndarray | None,
    mask: np.ndarray | None,
    dW_y: np.ndarray,
    dc: np.ndarray,
) -> tuple[float, np.ndarray]:
    """Every step's outputs, loss and dL/dy at once, before the backward pass overwrites h_t:
    returns L and dL/dy as (T B, V) rows (dW_y and dc are added in place)."""
    T1, B, H = hs.shape
    N = (T1 - 1) * B
    h2 = hs[1:].reshape(N, H)  # (T B, H)
    if loss is XENT:
        dy = np.matmul(params.W_y, h2.T)  # (V, T B): one column per (t, b), as xent_columns wants
        dy += params.c[:, None]
        L = xent_columns(dy, targets.reshape(N), B, None if mask is None else mask.reshape(N))
        dy2 = dy.T  # (T B, V) view
    else:
        y = np.matmul(h2, params.W_y.T)  # (T B, V)
        y += params.c
        L, dy3 = loss_and_grad(loss, y.reshape(T1 - 1, B, -1), targets, mask, overwrite=True)
        dy2 = dy3.reshape(N, -1)
    # back through y_t = W_y h_t + c, for every step in one product
    dW_y += dy2.T @ h2
    dc += dy2.sum(axis=0)
    return L, dy2


def backward_efficient(
    params: Params,
    x: np.ndarray,
    hs: np.ndarray,
    act: Activation,
    loss: Loss,
    targets: np.ndarray | None,
    mask: np.ndarray | None,
    propagate: np.ndarray | None,
    chunk: int,
) -> tuple[float, Params, np.ndarray, int]:
    """The local loss gradients, phase 1 (the sequential loop) and phase 2 (large products),
    interleaved one cache-sized chunk of K steps at a time, going back from the end.

    hs (T + 1, B, H) enters holding h_0..h_T and leaves with hs[1:] holding the adjoints dL/dh_t.
    Returns L, the gradients, dL/dh_0 and the number of backward Jacobian products done.
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
    ybuf = np.empty(K * B * params.output_size, dtype=dt)  # one chunk's outputs, then dL/dy (or unused)
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
    L, dy = 0.0, None
    if loss.uses_output and T * B * params.output_size * hs.itemsize <= UPFRONT_LOSS_BYTES:
        L, dy = _loss_upfront(params, hs, loss, targets, mask, dW_y, dc)  # dy (T B, V)
    for hi in range(T, 0, -chunk):
        lo = max(0, hi - chunk)
        k = hi - lo
        h_c = hs[lo + 1 : hi + 1]  # (k, B, H) h_t of this chunk; becomes its delta_t
        if dy is None:
            m_c = None if mask is None else mask[lo:hi]
            t_c = None if targets is None else targets[lo:hi]
            L += _chunk_local_loss(params, h_c, loss, t_c, m_c, dl[:k], ybuf, wbuf, dW_y, dc)
        else:  # back through y_t = W_y h_t + c: dl_t/dh_t = dL/dy_t W_y
            np.matmul(dy[lo * B : hi * B], params.W_y, out=dl[:k].reshape(k * B, H))
        act.fprime(h_c, g[:k])  # f'(a_t) from h_t
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
    grads = Params(W_x=dW_x, W_h=dW_h, b=db, W_y=dW_y, c=dc)
    return L, grads, carry, jvps  # carry = xi_1 g_1 W_h = dL/dh_0
