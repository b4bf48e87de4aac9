"""The measured per-step gain of a gradient signal and its memory horizon.

Given log ||signal_{T-k}|| for k = 0, 1, ... (k steps back from the last step), the gain is
exp(slope) of the least-squares line through the finite points, and the horizon is the k at
which the signal first falls below eps times its value at k = 0: measured where that happens,
extrapolated along the fitted slope where it does not. Used by `trace.trace`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


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
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise ValueError(f"`eps` must be a number in (0, 1); got {eps!r}")
    return float(eps)
