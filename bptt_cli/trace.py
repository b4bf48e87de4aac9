"""The gradient signal back through time: per-step norms, the measured decay rate, the memory horizon.

For t = T..1 two signals travel back (DESIGN.md section 1), per sequence:

    total  delta_t = dL/dh_t     = dl_t/dh_t + J_{t+1}^T delta_{t+1}     (what every future loss sends)
    last   u_t     = dl_T/dh_t   =             J_{t+1}^T u_{t+1}         (the last loss alone)

with J_t = diag(f'(a_t)) W_h. An exploding network overflows float64 within a few hundred
steps, so both are kept in log space: each is stored as exp(s) * v with a per-sequence log
scale s; every few steps (close enough that v cannot overflow in between) a row of v whose
norm has left [1e-60, 1e60] is rescaled to norm 1 and s absorbs the log of the factor. The
total signal adds dl_{t-1} * exp(-s) to v (see `_rescale` for the one edge case).

The measured per-step gain is exp(slope) of the least-squares line through
log ||dl_T/dh_{T-k}|| against k; the memory horizon is the k at which that signal falls below
eps times its value at T. The whole trace costs one forward and one backward pass: both
recursions share one (2B, H) x (H, H) product per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bptt_cli.bptt import _local_loss_gradient
from bptt_cli.losses import check_loss, check_mask, check_targets
from bptt_cli.model import (
    ACTIVATION_GAMMA,
    ACTIVATIONS,
    Params,
    activation_derivative,
    check_choice,
    check_inputs,
    check_params,
    forward_states,
)
from bptt_cli.trace_fit import GainFit, Horizon, check_eps, fit_gain, memory_horizon

__all__ = ["GainFit", "Horizon", "Signal", "TraceResult", "fit_gain", "memory_horizon", "trace", "JACOBIAN_MODES"]

JACOBIAN_MODES = ("auto", "bound", "exact")
# 'auto' computes exact spectral norms of J_t while T * B * H^3 stays below this (about 0.1 s)
EXACT_BUDGET = 2e7
_CHUNK = 256  # steps whose f'(a_t) are laid out for both signals at once
_CHECK_EVERY = 16  # check the norms at most this many steps apart
_GROWTH_DECADES = 60  # largest growth (in powers of 10) allowed between two checks
_LO, _HI = 1e-60, 1e60  # rows are rescaled when their norm leaves this range
_LO2, _HI2 = _LO**2, _HI**2
_C_MAX_LOG = 150 * math.log(10)  # exp(-s) is capped at 1e150 (see _rescale)
_TINY_SQ = 1e-290  # squared norms below this are recomputed with scaling (underflow)


@dataclass(frozen=True)
class Signal:
    """One signal's per-step norms, t = 1..T at index t - 1, as logs of batch statistics of the
    per-sequence norms: log_mean = log(mean_b ||.||), log_min, log_max. -inf is an exact zero."""

    log_mean: np.ndarray  # (T,)
    log_min: np.ndarray  # (T,)
    log_max: np.ndarray  # (T,)


@dataclass(frozen=True)
class TraceResult:
    """What `trace` returns.

    total : Signal of ||dL/dh_t||;  last : Signal of ||dl_T/dh_t||
    jacobian_norm : (T,) batch mean of ||diag(f'(a_t)) W_h||_2 (exact) or of its upper bound
        max_i f'(a_t)_i * sigma_max(W_h), as `jacobian_kind` says ('exact' | 'bound')
    saturation : (T,) batch mean of mean_i f'(a_t)_i (1: linear regime, 0: fully saturated)
    sigma_max : sigma_max(W_h)
    fit : GainFit of the last loss's signal (the pure decay); fit_total : of the total signal
    horizon : Horizon for eps; suggested_window : a truncation window keeping the last loss's
        signal above eps (ceil of the horizon), None when it does not decay or is undetermined
    start_fraction : ||dl_T/dh_1|| / ||dl_T/dh_T|| (batch means; inf/0 when out of range),
        log_start_fraction its log (always finite unless a signal is exactly zero)
    loss : the scalar loss L
    """

    total: Signal
    last: Signal
    jacobian_norm: np.ndarray
    jacobian_kind: str
    saturation: np.ndarray
    sigma_max: float
    fit: GainFit
    fit_total: GainFit
    horizon: Horizon
    suggested_window: int | None
    start_fraction: float
    log_start_fraction: float
    loss: float

    @property
    def seq_len(self) -> int:
        return int(self.saturation.shape[0])


# ---------------------------------------------------------------------------- the recursion


def _row_norms(v: np.ndarray) -> np.ndarray:
    """Euclidean norms over the last axis, scaled by max |v| so that nothing under- or overflows."""
    m = np.max(np.abs(v), axis=-1)  # (...)
    safe = np.where(m > 0, m, 1.0)
    return m * np.sqrt(np.einsum("...h,...h->...", v / safe[..., None], v / safe[..., None]))


def _rescale(v: np.ndarray, s: np.ndarray, c: np.ndarray, loss_ahead: np.ndarray) -> None:
    """Bring the rows of v (2, B, H) whose norm left [1e-60, 1e60] back to norm 1, moving log ||v||
    into their log scale s (2, B); then set c (B, 1) = exp(-s_total).

    Edge case: a total signal below 1e-150 with a loss still to come (earlier in time) would
    need exp(-s) > 1e150. Its scale is then pinned at 1e-150 and the excess stays in v (v's
    norm drops below 1), which keeps the representation exact; only signals below ~1e-450 in
    such a stretch may underflow to 0. Where no loss is ahead, c only ever meets dl = 0.
    """
    n = _row_norms(v)  # (2, B)
    out = (n > 0) & ((n < _LO) | (n > _HI))
    v[out] /= n[out][:, None]
    s[out] += np.log(n[out])
    st = s[0]
    low = (st < -_C_MAX_LOG) & loss_ahead
    if low.any():
        v[0, low] *= np.exp(st[low] + _C_MAX_LOG)[:, None]
        st[low] = -_C_MAX_LOG
    c[:, 0] = np.exp(-np.maximum(st, -_C_MAX_LOG))


def _log_row_norms(v: np.ndarray) -> np.ndarray:
    """ln of the Euclidean norms over the last axis of v (..., H); -inf for a zero row.

    One einsum for all rows; the few whose squares under- or overflowed are redone with scaling.
    """
    with np.errstate(over="ignore", under="ignore"):
        n2 = np.einsum("...h,...h->...", v, v)
    bad = ~((n2 > _TINY_SQ) & np.isfinite(n2))
    norms = np.sqrt(n2)
    if bad.any():
        norms[bad] = _row_norms(v[bad])
    with np.errstate(divide="ignore"):
        return np.log(norms)


def _propagate(hs: np.ndarray, dl: np.ndarray, W_h: np.ndarray, activation: str, growth: float) -> np.ndarray:
    """Both recursions at once; returns the log norms (T, 2, B): [:, 0] total, [:, 1] last.

    hs (T+1, B, H) states; dl (T, B, H) dl_t/dh_t; growth: an upper bound of ||J_t|| per step.
    Index j = t - 1 holds step t. Going back one chunk of K steps at a time, f'(a_t) is computed
    for the chunk and laid out for both signals, the loop fills the chunk's v_j, and their norms
    are taken in one pass while the chunk is in cache: memory beyond hs and dl is O(K B H).
    Every few steps (at most 1e60 of growth apart) the rows' norms are checked; rows outside
    [1e-60, 1e60] are rescaled. In the common case the total signal is never rescaled, so its
    scale stays 1 and dl_{t-1} is added as it is.
    """
    T, B, H = dl.shape
    K = min(_CHUNK, T)
    V = np.empty((K + 1, 2, B, H))  # (K+1, 2, B, H) v_j of both signals for j = lo..hi of a chunk
    V2 = V.reshape(K + 1, 2 * B, H)  # the same memory as rows for the product
    G = np.empty((K, 2, B, H))  # (K, 2, B, H) f'(a_{j+1}), then f'(a_{j+1}) * v_{j+1}
    G2 = G.reshape(K, 2 * B, H)
    tmp = np.empty((B, H))
    n2 = np.empty(2 * B)  # squared row norms at a check
    s = np.zeros((2, B))  # log scale of the current segment
    c = np.ones((B, 1))  # exp(-s_total): dl enters v at the segment's scale
    S = np.empty((T, 2, B))  # the log scale each v_j was written at
    logn = np.empty((T, 2, B))
    has_dl = dl.reshape(T, -1).any(axis=1).tolist()  # (T,) steps that have a loss at all
    # loss_ahead[j, b]: some step before j of sequence b has a loss (the total will still receive one)
    loss_ahead = np.zeros((T, B), dtype=bool)
    loss_ahead[1:] = np.logical_or.accumulate(dl.any(axis=2), axis=0)[:-1]
    decades = math.log10(growth) if growth > 1 else 0.0
    every = _CHECK_EVERY if decades * _CHECK_EVERY <= _GROWTH_DECADES else max(1, int(_GROWTH_DECADES / decades))
    carry = np.empty((2, B, H))  # v of the newest step done: both signals start as dl_T/dh_T
    carry[0] = dl[T - 1]
    carry[1] = dl[T - 1]
    _rescale(carry, s, c, loss_ahead[T - 1])
    unit_c = bool(np.all(c == 1.0))
    S[T - 1] = s
    logn[T - 1] = _log_row_norms(carry) + s
    countdown = every
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for hi in range(T - 1, 0, -K):  # this chunk fills v_j for j = hi - 1 .. lo from v_hi
            lo = max(0, hi - K)
            n = hi - lo
            V[n] = carry
            activation_derivative(hs[lo + 2 : hi + 2], activation, out=G[:n, 0])  # f'(a_{j+1})
            G[:n, 1] = G[:n, 0]
            S[lo:hi] = s
            for j in range(hi - 1, lo - 1, -1):
                r = j - lo
                g = G2[r]  # (2B, H)
                np.multiply(g, V2[r + 1], out=g)  # back through f: f'(a_{j+1}) * v_{j+1}, both signals
                np.matmul(g, W_h, out=V2[r])  # back through W_h: one (2B, H) x (H, H) product
                if has_dl[j]:  # the total signal receives dl_j, at its scale exp(-s)
                    if unit_c:
                        np.add(V[r, 0], dl[j], out=V[r, 0])
                    else:
                        np.multiply(dl[j], c, out=tmp)
                        np.add(V[r, 0], tmp, out=V[r, 0])
                countdown -= 1
                if countdown == 0:
                    countdown = every
                    np.einsum("ij,ij->i", V2[r], V2[r], out=n2)
                    if n2.max() > _HI2 or (n2.min() < _LO2 and np.min(n2, where=n2 > 0, initial=np.inf) < _LO2):
                        _rescale(V[r], s, c, loss_ahead[j])
                        unit_c = bool(np.all(c == 1.0))
                        S[lo : j + 1] = s  # v_j and everything below it in this chunk: the new scale
            logn[lo:hi] = _log_row_norms(V[:n]) + S[lo:hi]
            carry[...] = V[0]
    return logn


def _batch_stats(log_norms: np.ndarray) -> Signal:
    """(T, B) per-sequence log norms -> log of the batch mean, min and max (logsumexp, no overflow)."""
    T, B = log_norms.shape
    top = np.max(log_norms, axis=1)  # (T,)
    shift = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        log_mean = shift + np.log(np.mean(np.exp(log_norms - shift[:, None]), axis=1))
    return Signal(log_mean=log_mean, log_min=np.min(log_norms, axis=1), log_max=top)


def _jacobian_stats(
    hs: np.ndarray, activation: str, W_h: np.ndarray, sigma_max: float, mode: str
) -> tuple[np.ndarray, str, np.ndarray]:
    """Per step t: batch mean of ||diag(f'(a_t)) W_h||_2 (exact when cheap or asked, else the bound
    max f'(a_t) * sigma_max(W_h)), its kind, and the batch mean of mean_i f'(a_t)_i. Chunked over t."""
    T1, B, H = hs.shape
    T = T1 - 1
    exact = mode == "exact" or (mode == "auto" and T * B * H**3 <= EXACT_BUDGET)
    jac = np.empty(T)
    sat = np.empty(T)
    K = max(1, min(T, 2**20 // (B * H * (H if exact else 1))))  # about 8 MB of f' (or of matrices)
    for lo in range(0, T, K):
        hi = min(T, lo + K)
        fp = activation_derivative(hs[lo + 1 : hi + 1], activation)  # (k, B, H) f'(a_t)
        sat[lo:hi] = fp.mean(axis=(1, 2))
        if exact:
            mats = fp[..., None] * W_h  # (k, B, H, H) rows of W_h scaled by f'
            jac[lo:hi] = np.linalg.norm(mats, ord=2, axis=(2, 3)).mean(axis=1)
        else:
            jac[lo:hi] = fp.max(axis=2).mean(axis=1) * sigma_max
    return jac, "exact" if exact else "bound", sat


def trace(
    params: Params,
    x: np.ndarray,
    targets: np.ndarray | None,
    *,
    loss: str = "xent",
    activation: str = "tanh",
    mask: np.ndarray | None = None,
    h0: np.ndarray | None = None,
    eps: float = 1e-3,
    jacobian: str = "auto",
) -> TraceResult:
    """Follow dL/dh_t and dl_T/dh_t back through time; fit the per-step gain; find the horizon.

    Parameters
    ----------
    params : Params (computed in float64 whatever their dtype)
    x : (T, B, D) inputs
    targets : (T, B) class indices for 'xent', (T, B, V) for 'mse', None for 'half-square'
    loss : 'xent' | 'mse' | 'half-square'
    activation : 'tanh' | 'relu' | 'identity'
    mask : (T, B) per-step loss weights (default all ones); the last loss is l_T with its weight
    h0 : (B, H) initial state, zeros by default
    eps : the horizon's fraction, in (0, 1)
    jacobian : 'exact' spectral norms, their 'bound', or 'auto' (exact while T B H^3 <= EXACT_BUDGET)

    Returns
    -------
    TraceResult

    Raises
    ------
    ValueError for malformed input, or when the forward pass overflows (the hidden state or the
    loss is not finite: then there is no trajectory to trace).
    """
    check_params(params)
    check_choice("activation", activation, ACTIVATIONS)
    check_choice("jacobian", jacobian, JACOBIAN_MODES)
    check_loss(loss)
    eps = check_eps(eps)
    params = params.astype(np.float64)
    x, h0 = check_inputs(params, x, h0)
    T, B, _ = x.shape
    targets = check_targets(loss, targets, T, B, params.output_size)
    mask = check_mask(mask, T, B, params.dtype)

    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        hs = forward_states(params, x, h0, activation)  # (T+1, B, H)
    finite = np.isfinite(hs).reshape(T + 1, -1).all(axis=1)
    if not finite.all():
        t_bad = int(np.argmin(finite))
        raise ValueError(
            f"the forward pass overflowed at step t = {t_bad} (the hidden state is not finite): "
            "lower the input scale, the spectral radius or the sequence length"
        )
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        L, dl, _, _ = _local_loss_gradient(params, hs, loss, targets, mask)  # dl (T, B, H)
    if not (math.isfinite(L) and np.all(np.isfinite(dl))):
        raise ValueError(f"the loss or its gradient is not finite (loss = {L}): the outputs overflowed")
    W_h = params.W_h
    sigma_max = float(np.linalg.norm(W_h, ord=2))
    gamma = ACTIVATION_GAMMA[activation]

    log_norms = _propagate(hs, dl, W_h, activation, gamma * sigma_max)  # (T, 2, B)
    total, last = _batch_stats(log_norms[:, 0]), _batch_stats(log_norms[:, 1])
    back_last = last.log_mean[::-1]  # index k = steps back from T
    fit = fit_gain(back_last)
    fit_total = fit_gain(total.log_mean[::-1])
    horizon = memory_horizon(back_last, fit, eps)
    window = None if horizon.steps is None else max(1, math.ceil(horizon.steps))
    with np.errstate(invalid="ignore"):  # -inf - -inf: no last loss at all, the fraction is undefined (NaN)
        log_start = float(last.log_mean[0] - last.log_mean[-1])
    jac, kind, saturation = _jacobian_stats(hs, activation, W_h, sigma_max, jacobian)
    return TraceResult(
        total=total,
        last=last,
        jacobian_norm=jac,
        jacobian_kind=kind,
        saturation=saturation,
        sigma_max=sigma_max,
        fit=fit,
        fit_total=fit_total,
        horizon=horizon,
        suggested_window=window,
        start_fraction=math.exp(min(log_start, 709.0)) if log_start < 709 or math.isnan(log_start) else math.inf,
        log_start_fraction=log_start,
        loss=L,
    )
