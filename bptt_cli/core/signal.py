"""The gradient signal back through time, in log space; its fitted per-step gain; the horizon.

For t = T..1 two signals travel back (docs/design.md section 1), per sequence:

    total  delta_t = dL/ds_t     = dl_t/ds_t + J_{t+1}^T delta_{t+1}     (what every future loss sends)
    last   u_t     = dl_T/ds_t   =             J_{t+1}^T u_{t+1}         (the last loss alone)

with J_t the cell's state-to-state Jacobian (core/cells.py). An exploding network overflows
float64 within a few hundred steps, so both are kept in log space: each is stored as
exp(s) * v with a per-sequence log scale s; every few steps (close enough that v cannot
overflow in between) a row of v whose norm has left [1e-60, 1e60] is rescaled to norm 1 and s
absorbs the log of the factor. The total signal adds dl_{t-1} * exp(-s) to v (see `_rescale`
for the one edge case). Both recursions share one product per step (the cell's stepper works
on the two row blocks at once).

The measured per-step gain is exp(slope) of the least-squares line through
log ||dl_T/ds_{T-k}|| against k; the memory horizon is the k at which that signal falls below
eps times its value at T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bptt_cli.core.activations import Activation
from bptt_cli.core.cells import Cell, Run, VJPStepper, as_cell
from bptt_cli.core.losses import get_loss
from bptt_cli.core.rnn import Params
from bptt_cli.core.validate import check_choice, check_fraction

JACOBIAN_MODES = ("auto", "bound", "exact")
# 'auto' computes exact spectral norms of J_t while T * B * S^3 stays below this
EXACT_BUDGET = 2e7
_CHUNK = 256  # steps laid out at once for both signals
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
class GainFit:
    """The least-squares line log ||signal_{T-k}|| = intercept + slope * k over k in first..last.

    gain = exp(slope) is the measured per-step factor; points counts the finite, non-zero
    values used. With fewer than two such points slope, gain and r2 are NaN.
    """

    slope: float
    gain: float
    r2: float
    first: int
    last: int
    points: int
    intercept: float

    def as_dict(self) -> dict:
        return dict(
            slope=self.slope,
            gain=self.gain,
            r2=self.r2,
            first=self.first,
            last=self.last,
            points=self.points,
            intercept=self.intercept,
        )


@dataclass(frozen=True)
class Horizon:
    """How many steps back the last loss's signal stays above eps times its value at T.

    method : 'measured' (it falls below within T), 'extrapolated' (from the fitted gain < 1),
             'never' (the fitted gain is >= 1: it does not decay) or 'undetermined' (no fit)
    steps : that number of steps (float when extrapolated), None for 'never' / 'undetermined'
    """

    eps: float
    steps: float | None
    method: str

    def as_dict(self) -> dict:
        return dict(eps=self.eps, steps=self.steps, method=self.method)


def fit_gain(log_norms: np.ndarray, *, first: int = 0, last: int | None = None) -> GainFit:
    """Least-squares slope of log_norms[k] against k over first..last, skipping non-finite values.

    Parameters
    ----------
    log_norms : (K,) log ||signal_{T-k}|| for k = 0..K-1 (-inf for an exact zero)
    first, last : the range of k to consider (last defaults to K - 1)

    Returns
    -------
    GainFit; first/last are the smallest and largest k actually used.
    """
    y_all = np.asarray(log_norms, dtype=np.float64)
    if y_all.ndim != 1:
        raise ValueError(f"`log_norms` must be one-dimensional; got shape {y_all.shape}")
    K = y_all.shape[0]
    last = K - 1 if last is None else last
    if not 0 <= first <= last < K:
        raise ValueError(f"`first` and `last` must satisfy 0 <= first <= last < {K}; got {first}, {last}")
    k_all = np.arange(K, dtype=np.float64)
    use = np.isfinite(y_all) & (k_all >= first) & (k_all <= last)
    k, y = k_all[use], y_all[use]
    n = int(k.size)
    if n < 2:
        nan = float("nan")
        at = int(k[0]) if n else first
        return GainFit(nan, nan, nan, at, at, n, float(y[0]) if n else nan)
    # centred sums: no cancellation between large k and large |log norm|
    km, ym = k.mean(), y.mean()
    dk, dy = k - km, y - ym
    slope = float(np.dot(dk, dy) / np.dot(dk, dk))
    res = dy - slope * dk
    ss_res, ss_tot = float(np.dot(res, res)), float(np.dot(dy, dy))
    # a flat line (gain exactly 1) has ss_tot at rounding level: call the fit perfect then
    rounding = n * (64 * np.finfo(np.float64).eps * max(1.0, float(np.max(np.abs(y))))) ** 2
    r2 = 1.0 - ss_res / ss_tot if ss_tot > rounding else 1.0
    return GainFit(
        slope, math.exp(slope) if slope < 709 else math.inf, r2, int(k[0]), int(k[-1]), n, float(ym - slope * km)
    )


def memory_horizon(log_norms: np.ndarray, fit: GainFit, eps: float = 1e-3) -> Horizon:
    """The first k with ||signal_{T-k}|| < eps ||signal_T||, or its extrapolation from the fit.

    log_norms[k] = log ||signal_{T-k}||. Extrapolation continues from the last usable point
    along the fitted slope (only for a gain below 1).
    """
    eps = check_eps(eps)
    y = np.asarray(log_norms, dtype=np.float64)
    if y.size == 0 or not np.isfinite(y[0]):
        return Horizon(eps, None, "undetermined")
    ratio = y - y[0]  # log of ||signal_{T-k}|| / ||signal_T||; -inf for an exact zero
    below = np.flatnonzero(~(ratio >= math.log(eps)) & ~np.isnan(ratio))
    if below.size:
        return Horizon(eps, float(below[0]), "measured")
    if not math.isfinite(fit.slope):
        return Horizon(eps, None, "undetermined")
    if fit.slope >= 0:
        return Horizon(eps, None, "never")
    k_last = fit.last
    return Horizon(eps, k_last + (math.log(eps) - ratio[k_last]) / fit.slope, "extrapolated")


def check_eps(eps: float) -> float:
    return check_fraction("eps", eps)


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


def propagate(
    stepper: VJPStepper, dl: np.ndarray, growth: float, parts: list[slice] | None = None
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Both recursions at once; returns the log norms (T, 2, B): [:, 0] total, [:, 1] last, and
    with `parts` (slices of the state: an LSTM's h and c, a stack's layers) also the last loss's
    log norm on each part, (T, P, B).

    dl (T, B, S) dl_t/ds_t (index t - 1 holds step t); growth: an upper bound of ||J_t|| per step
    (inf when unknown: the norms are then checked every step). Going back one chunk at a time,
    the stepper lays out what the chunk's steps need, the loop fills the chunk's v, and their
    norms are taken in one pass while the chunk is in cache: memory beyond dl is O(K B S).
    Every few steps (at most 1e60 of growth apart) the rows' norms are checked; rows outside
    [1e-60, 1e60] are rescaled. In the common case the total signal is never rescaled, so its
    scale stays 1 and dl_{t-1} is added as it is.
    """
    T, B, S = dl.shape
    K = min(_CHUNK, T)
    V = np.empty((K + 1, 2, B, S))  # (K+1, 2, B, S) v of both signals for one chunk's steps
    V2 = V.reshape(K + 1, 2 * B, S)  # the same memory as the stepper's row blocks
    tmp = np.empty((B, S))
    n2 = np.empty(2 * B)  # squared row norms at a check
    s = np.zeros((2, B))  # log scale of the current segment
    c = np.ones((B, 1))  # exp(-s_total): dl enters v at the segment's scale
    scale_at = np.empty((T, 2, B))  # the log scale each v_j was written at
    logn = np.empty((T, 2, B))
    has_dl = dl.reshape(T, -1).any(axis=1).tolist()  # (T,) steps that have a loss at all
    # loss_ahead[j, b]: some step before j of sequence b has a loss (the total will still receive one)
    loss_ahead = np.zeros((T, B), dtype=bool)
    loss_ahead[1:] = np.logical_or.accumulate(dl.any(axis=2), axis=0)[:-1]
    decades = math.log10(growth) if growth > 1 else 0.0
    every = (
        _CHECK_EVERY
        if decades * _CHECK_EVERY <= _GROWTH_DECADES
        else max(1, int(_GROWTH_DECADES / decades))
        if math.isfinite(decades)
        else 1
    )
    carry = np.empty((2, B, S))  # v of the newest step done: both signals start as dl_T/ds_T
    carry[0] = dl[T - 1]
    carry[1] = dl[T - 1]
    _rescale(carry, s, c, loss_ahead[T - 1])
    unit_c = bool(np.all(c == 1.0))
    scale_at[T - 1] = s
    logn[T - 1] = _log_row_norms(carry) + s
    part_logn = None if parts is None else np.empty((T, len(parts), B))  # (T, P, B)
    if part_logn is not None:
        for p, sl in enumerate(parts):
            part_logn[T - 1, p] = _log_row_norms(carry[1, :, sl]) + s[1]
    countdown = every
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        for hi in range(T - 1, 0, -K):  # this chunk fills v_j for j = hi - 1 .. lo from v_hi
            lo = max(0, hi - K)
            n = hi - lo
            V[n] = carry
            stepper.prepare(lo + 1, hi + 1)  # v_j (state j + 1) = J_{j+2}^T v_{j+1}: steps lo+2..hi+1
            scale_at[lo:hi] = s
            for j in range(hi - 1, lo - 1, -1):
                r = j - lo
                stepper.step(j + 2, V2[r + 1], V2[r])  # back through step j + 2, both signals
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
                        scale_at[lo : j + 1] = s  # v_j and everything below it in this chunk: the new scale
            logn[lo:hi] = _log_row_norms(V[:n]) + scale_at[lo:hi]
            if part_logn is not None:
                for p, sl in enumerate(parts):
                    part_logn[lo:hi, p] = _log_row_norms(V[:n, 1, :, sl]) + scale_at[lo:hi, 1]
            carry[...] = V[0]
    return logn if part_logn is None else (logn, part_logn)


def _batch_stats(log_norms: np.ndarray) -> Signal:
    """(T, B) per-sequence log norms -> log of the batch mean, min and max (logsumexp, no overflow)."""
    T, B = log_norms.shape
    top = np.max(log_norms, axis=1)  # (T,)
    shift = np.where(np.isfinite(top), top, 0.0)
    with np.errstate(divide="ignore"):
        log_mean = shift + np.log(np.mean(np.exp(log_norms - shift[:, None]), axis=1))
    return Signal(log_mean=log_mean, log_min=np.min(log_norms, axis=1), log_max=top)


def _jacobian_stats(cell: Cell, run: Run, mode: str) -> tuple[np.ndarray, str, dict[str, np.ndarray]]:
    """Per step t: the batch mean of ||J_t||_2 (exact when cheap or asked, else the cell's bound),
    its kind ('exact' | 'bound' | 'none'), and the cell's per-step gain statistics. Chunked over t."""
    T, B, S = run.seq_len, run.batch, cell.state_size
    has_bound = cell.jacobian_bound(run, 0, 1) is not None
    if mode == "bound" and not has_bound:
        raise ValueError(f"`jacobian` bound: there is no cheap bound of ||J_t|| for a {cell.describe()}")
    cheap = T * B * S**3 <= EXACT_BUDGET
    kind = "exact" if mode == "exact" or (mode == "auto" and (cheap or not has_bound)) else "bound"
    if kind == "exact" and mode == "auto" and not cheap:
        kind = "none"
    jac = np.full(T, np.nan)
    stats: dict[str, np.ndarray] = {}
    K = max(1, min(T, 2**20 // (B * S * (S if kind == "exact" else 1))))  # about 8 MB per chunk
    for lo in range(0, T, K):
        hi = min(T, lo + K)
        if kind == "exact":
            mats = np.stack([cell.jacobian(run, t) for t in range(lo + 1, hi + 1)])  # (k, B, S, S)
            jac[lo:hi] = np.linalg.norm(mats.astype(np.float64), ord=2, axis=(2, 3)).mean(axis=1)
        elif kind == "bound":
            jac[lo:hi] = cell.jacobian_bound(run, lo, hi).mean(axis=1)
        for name, v in cell.gain_stats(run, lo, hi).items():
            stats.setdefault(name, np.empty(T))[lo:hi] = v
    return jac, kind, stats


@dataclass(frozen=True)
class SignalTrace:
    """What `trace` returns.

    total : Signal of ||dL/ds_t||;  last : Signal of ||dl_T/ds_t||
    jacobian_norm : (T,) batch mean of ||J_t||_2 (exact) or of the cell's upper bound, as
        `jacobian_kind` says ('exact' | 'bound' | 'none': too costly, NaN)
    gain_stats : per-step batch means of what sets the gain (the vanilla RNN: 'mean_fprime',
        1 in the linear regime, near 0 saturated)
    fit : GainFit of the last loss's signal (the pure decay); fit_total : of the total signal
    horizon : Horizon for eps; suggested_window : a truncation window keeping the last loss's
        signal above eps (ceil of the horizon), None when it does not decay or is undetermined
    log_start_fraction : log(||dl_T/ds_1|| / ||dl_T/ds_T||) (batch means; finite unless a
        signal is exactly zero), start_fraction its exp (inf when it overflows)
    loss : the scalar loss L
    parts : the last loss's signal on each named part of the state (a cell's `state_parts`: an
        LSTM's h and c, each layer of a stack), empty for a cell whose state is one piece
    """

    total: Signal
    last: Signal
    jacobian_norm: np.ndarray
    jacobian_kind: str
    gain_stats: dict[str, np.ndarray]
    fit: GainFit
    fit_total: GainFit
    horizon: Horizon
    suggested_window: int | None
    start_fraction: float
    log_start_fraction: float
    loss: float
    parts: dict[str, Signal] = field(default_factory=dict)

    @property
    def seq_len(self) -> int:
        return int(self.last.log_mean.shape[0])


def trace(
    model: Params | Cell,
    x: np.ndarray,
    targets: np.ndarray | None,
    *,
    loss: str = "xent",
    activation: str | Activation | None = None,
    mask: np.ndarray | None = None,
    h0: np.ndarray | None = None,
    eps: float = 1e-3,
    jacobian: str = "auto",
) -> SignalTrace:
    """Follow dL/ds_t and dl_T/ds_t back through time; fit the per-step gain; find the horizon.

    Parameters
    ----------
    model : a Cell, or vanilla RNN Params (with `activation`, default tanh); computed in float64
    x : (T, B, D) inputs
    targets : (T, B) class indices for 'xent', (T, B, V) for 'mse', None for 'half-square'
    loss : 'xent' | 'mse' | 'half-square'
    mask : (T, B) per-step loss weights (default all ones); the last loss is l_T with its weight
    h0 : (B, S) initial state, zeros by default
    eps : the horizon's fraction, in (0, 1)
    jacobian : 'exact' spectral norms, the cell's 'bound', or 'auto' (exact while T B S^3 <= EXACT_BUDGET)

    Raises
    ------
    ValueError for malformed input, or when the forward pass overflows (the state or the loss is
    not finite: then there is no trajectory to trace).
    """
    cell = as_cell(model, activation)
    cell = cell.with_params(cell.params.astype(np.float64))
    check_choice("jacobian", jacobian, JACOBIAN_MODES)
    lo = get_loss(loss)
    eps = check_eps(eps)
    run = cell.run(x, h0)
    T = run.seq_len
    targets, mask = cell.check_batch(run.x, targets, lo, mask)
    finite = np.isfinite(run.states).reshape(T + 1, -1).all(axis=1)
    if not finite.all():
        raise ValueError(
            f"the forward pass overflowed at step t = {int(np.argmin(finite))} (the state is not finite): "
            "lower the input scale, the spectral radius or the sequence length"
        )
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        L, dl = cell.local_loss(run, lo, targets, mask)  # dl (T, B, S)
    if not (math.isfinite(L) and np.all(np.isfinite(dl))):
        raise ValueError(f"the loss or its gradient is not finite (loss = {L}): the outputs overflowed")
    named = cell.state_parts() if hasattr(cell, "state_parts") else []
    out = propagate(cell.vjp_stepper(run, rows=2), dl, cell.growth_bound(), [sl for _, sl in named] or None)
    log_norms, part_norms = out if named else (out, None)  # (T, 2, B), (T, P, B)
    parts = {} if part_norms is None else {n: _batch_stats(part_norms[:, p]) for p, (n, _) in enumerate(named)}
    total, last = _batch_stats(log_norms[:, 0]), _batch_stats(log_norms[:, 1])
    back_last = last.log_mean[::-1]  # index k = steps back from T
    fit = fit_gain(back_last)
    horizon = memory_horizon(back_last, fit, eps)
    with np.errstate(invalid="ignore"):  # -inf - -inf: no last loss at all, the fraction is undefined (NaN)
        log_start = float(last.log_mean[0] - last.log_mean[-1])
    jac, kind, stats = _jacobian_stats(cell, run, jacobian)
    return SignalTrace(
        total=total,
        last=last,
        jacobian_norm=jac,
        jacobian_kind=kind,
        gain_stats=stats,
        fit=fit,
        fit_total=fit_gain(total.log_mean[::-1]),
        horizon=horizon,
        suggested_window=None if horizon.steps is None else max(1, math.ceil(horizon.steps)),
        start_fraction=math.exp(log_start) if log_start < 709 or math.isnan(log_start) else math.inf,
        log_start_fraction=log_start,
        loss=L,
        parts=parts,
    )
