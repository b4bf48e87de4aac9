"""Truncation strategies for BPTT: which backward steps carry the gradient, and with what weight.

A strategy becomes the (T, B) array `propagate` that `bptt.gradients` takes: entry s is the
xi_{s+1} that scales what step s + 1 sends back to step s (DESIGN.md section 1).

full       xi = 1 everywhere: exact BPTT.
chunk:K    regular truncation (the notes' detach): chunks of K steps from the start; the state
           flows on across a boundary, the gradient does not (xi = 0 at the first step of a chunk).
random:P   randomized truncation (Tallec & Ollivier 2017): xi_t = 1/P with probability P, else 0,
           drawn per step and per sequence; E[xi] = 1, so the estimate is unbiased.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bptt_cli.bptt import GradResult, gradients
from bptt_cli.model import Params

SPEC_FORMS = "full, chunk:K (K a positive integer), random:P (0 < P <= 1)"


@dataclass(frozen=True)
class Strategy:
    """A parsed truncation spec: kind 'full' | 'chunk' | 'random', with K or P.

    xi_rng : optional generator of its own for random:P's draws. `propagate_weights` then uses
        it instead of the generator it is given, so a random strategy leaves that generator's
        stream (e.g. the training data order) exactly as full or chunk:K would. Not part of
        the spec: two strategies with the same spec compare equal whatever their generators.
    """

    kind: str
    k: int | None = None
    p: float | None = None
    xi_rng: np.random.Generator | None = field(default=None, compare=False, repr=False)

    @property
    def spec(self) -> str:
        if self.kind == "chunk":
            return f"chunk:{self.k}"
        if self.kind == "random":
            return f"random:{self.p:g}"
        return "full"

    @property
    def stochastic(self) -> bool:
        return self.kind == "random" and self.p < 1.0


def parse_strategy(spec: str) -> Strategy:
    """'full' | 'chunk:K' | 'random:P' -> Strategy; ValueError naming the valid forms otherwise."""
    text = spec.strip().lower()
    name, _, arg = text.partition(":")
    if name == "full" and not arg:
        return Strategy("full")
    if name == "chunk" and arg:
        try:
            k = int(arg)
        except ValueError:
            k = 0
        if k >= 1 and str(k) == arg.strip():
            return Strategy("chunk", k=k)
    if name == "random" and arg:
        try:
            p = float(arg)
        except ValueError:
            p = -1.0
        if 0.0 < p <= 1.0:
            return Strategy("random", p=p)
    raise ValueError(f"truncation spec {spec!r} is not valid; the valid forms are {SPEC_FORMS}")


def parse_strategies(text: str) -> list[Strategy]:
    """A comma-separated list of specs, at least one."""
    specs = [s for s in (part.strip() for part in text.split(",")) if s]
    if not specs:
        raise ValueError(f"the strategy list is empty; the valid forms are {SPEC_FORMS}")
    return [parse_strategy(s) for s in specs]


def propagate_weights(
    strategy: Strategy,
    seq_len: int,
    batch: int,
    rng: np.random.Generator | None = None,
    dtype: np.dtype | type = np.float64,
) -> np.ndarray | None:
    """The (T, B) xi array for `bptt.gradients(propagate=...)`; None for full BPTT.

    chunk:K puts 0 at s = K, 2K, ...: step s + 1 starts a chunk, so nothing it receives is
    sent back to step s. (The entry s = 0, into h_0, is kept: h_0 is the start of chunk one.)
    random:P needs `rng` (or the strategy's own `xi_rng`, which takes precedence); entry 0 is
    drawn too, so dL/dh_0 is an unbiased estimate as well.
    """
    if strategy.kind == "full":
        return None
    if strategy.kind == "chunk":
        xi = np.ones((seq_len, batch), dtype=dtype)
        xi[strategy.k :: strategy.k] = 0.0
        return xi
    if strategy.kind == "random":
        if strategy.p == 1.0:
            return np.ones((seq_len, batch), dtype=dtype)
        if strategy.xi_rng is not None:
            rng = strategy.xi_rng
        if rng is None:
            raise ValueError("random truncation needs a random generator (`rng`)")
        keep = rng.random((seq_len, batch)) < strategy.p
        return (keep / strategy.p).astype(dtype)
    raise ValueError(f"unknown truncation kind {strategy.kind!r}; the valid forms are {SPEC_FORMS}")


def backward_share(propagate: np.ndarray | None) -> float:
    """Share of full BPTT's backward Jacobian-vector products a strategy does (per sequence)."""
    if propagate is None:
        return 1.0
    return float(np.count_nonzero(propagate)) / propagate.size


# ---------------------------------------------------------------------------- estimator statistics
#
# A truncation strategy turns BPTT into an estimator g of the full gradient g*. At one parameter
# point and one batch, `estimator_statistics` measures how far each estimator is from g* and what
# it costs: deterministic strategies (full, chunk:K, random:1) are evaluated once; random:P is
# drawn `samples` times, with running moments kept per coordinate (memory O(#params), not O(N)).


TIMING_REPEATS = 3


@dataclass(frozen=True)
class BiasPoint:
    """The bias of the mean of the first n draws, with its standard error (both relative to ||g*||)."""

    n: int
    rel_bias: float
    rel_bias_se: float


@dataclass(frozen=True)
class EstimatorStats:
    """One strategy's gradient estimator against the full gradient g*.

    rel_bias : ||mean g - g*|| / ||g*||, the mean over the draws (one draw if deterministic)
    rel_bias_se : its standard error, sqrt(tr Cov(g) / n) / ||g*||: for an unbiased estimator
        E ||mean g - g*||^2 = tr Cov(g) / n exactly, so rel_bias is then about one standard error
    bias_consistent : rel_bias within three standard errors of zero (deterministic strategies:
        within rounding, `rounding_tol`)
    cosine : mean over draws of cos(g, g*), what a single training step sees
    cosine_of_mean : cos(mean g, g*)
    rel_std : sqrt(tr Cov(g)) / ||g*||, the spread of a single draw
    backward_share : Jacobian-vector products that carry a non-zero vector, relative to full BPTT
        (per sequence; with a loss only at the end, a cut stops the backward pass altogether)
    seconds : wall time of one estimate (one `bptt.gradients` call): the mean over the draws, or
        the median of TIMING_REPEATS calls for a deterministic strategy
    bias_curve : the bias of the running mean at nested sample sizes (random strategies)
    """

    spec: str
    kind: str
    samples: int
    rel_bias: float
    rel_bias_se: float
    bias_consistent: bool
    cosine: float
    cosine_of_mean: float
    rel_std: float
    backward_share: float
    seconds: float
    bias_curve: tuple[BiasPoint, ...] = ()


@dataclass(frozen=True)
class EstimatorReport:
    """The full gradient's norm, loss and cost, and one EstimatorStats per strategy."""

    loss: float
    full_grad_norm: float
    full_seconds: float
    rows: tuple[EstimatorStats, ...]


def carried_work(propagate: np.ndarray | None, adjoints: np.ndarray) -> np.ndarray:
    """(T, B) booleans: the backward step out of h_{s+1} is taken and carries a non-zero vector.

    `adjoints` (T, B, H) is dL/dh_t from `bptt.gradients`; entry s of `propagate` scales what
    h_{s+1} sends back to h_s (the same indexing as bptt.py), so the step is real work when the
    adjoint at s is non-zero and xi_s is not 0.
    """
    T, B, H = adjoints.shape
    nonzero = np.any(adjoints != 0, axis=2)  # (T, B)
    if propagate is None:
        return nonzero
    return nonzero & (propagate != 0)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 0.0
    return float(a @ b) / (na * nb)


def _curve_sizes(samples: int) -> list[int]:
    """Nested sample sizes N, N/2, N/4, ... down to 2 (at most six), ascending."""
    sizes = []
    n = samples
    while n >= 2 and len(sizes) < 6:
        sizes.append(n)
        n //= 2
    return sorted(sizes)


def estimator_statistics(
    params: Params,
    x: np.ndarray,
    targets: np.ndarray | None,
    strategies: list[Strategy],
    *,
    rng: np.random.Generator,
    samples: int = 200,
    loss: str = "xent",
    activation: str = "tanh",
    mask: np.ndarray | None = None,
    h0: np.ndarray | None = None,
    project: Callable[[Params], np.ndarray] | None = None,
) -> EstimatorReport:
    """Bias, spread, alignment and cost of each strategy's gradient at one point.

    Parameters
    ----------
    params : model.Params, the point
    x : (T, B, D) inputs; targets, mask, h0, loss, activation as in `bptt.gradients`
    strategies : parsed specs; a stochastic one (random:P with P < 1) is drawn `samples` times
    rng : the only source of randomness (the xi draws)
    samples : draws per stochastic strategy, at least 2 (a standard error needs two)
    project : maps the gradient Params to the vector compared (default: all parameters
        flattened); e.g. the one coordinate theta of the influence problem

    Returns
    -------
    EstimatorReport; rows in the order of `strategies`.
    """
    if not strategies:
        raise ValueError(f"`strategies` is empty; the valid forms are {SPEC_FORMS}")
    if any(s.stochastic for s in strategies):
        if isinstance(samples, bool) or not isinstance(samples, (int, np.integer)) or samples < 2:
            raise ValueError(
                f"`samples` must be an integer >= 2 for a random strategy (a standard error needs two draws); "
                f"got {samples!r}"
            )
    x = np.asarray(x)
    if x.ndim != 3:
        raise ValueError(f"`x` must have shape (T, B, D); got {x.shape}")
    T, B, D = x.shape
    dtype = params.dtype
    # deterministic strategies reproduce g* up to the rounding of the same operations
    rounding_tol = 1e3 * float(np.finfo(dtype).eps)

    def run(prop: np.ndarray | None) -> tuple[GradResult, float]:
        t0 = time.perf_counter()
        res = gradients(params, x, targets, loss=loss, activation=activation, mask=mask, h0=h0, propagate=prop)
        return res, time.perf_counter() - t0

    def timed_repeats(prop: np.ndarray | None) -> tuple[GradResult, float]:
        # a deterministic estimate is computed once for its value; its time is the median of
        # TIMING_REPEATS calls, as a random strategy's is the mean over its many draws
        runs = [run(prop) for _ in range(TIMING_REPEATS)]
        return runs[-1][0], float(np.median([dt for _, dt in runs]))

    if project is None:
        project = Params.flat
    run(None)  # warm-up: the first call pays for page faults and lazy set-up, not for BPTT
    full, full_seconds = timed_repeats(None)
    g_star = np.asarray(project(full.grads), dtype=np.float64).ravel()  # (P,)
    g_norm = float(np.linalg.norm(g_star))
    if g_norm == 0.0:
        raise ValueError("the full gradient is exactly zero at this point: relative bias is undefined")
    full_work = int(np.count_nonzero(carried_work(None, full.adjoints)))

    rows = []
    for strategy in strategies:
        n = samples if strategy.stochastic else 1
        sizes = set(_curve_sizes(n)) if strategy.stochastic else set()
        mean = np.zeros_like(g_star)  # (P,) running mean (Welford)
        m2 = np.zeros_like(g_star)  # (P,) running sum of squared deviations
        cos_sum = share_sum = secs = 0.0
        curve = []
        for i in range(1, n + 1):
            prop = propagate_weights(strategy, T, B, rng, dtype)
            res, dt = run(prop) if strategy.stochastic else timed_repeats(prop)
            g = np.asarray(project(res.grads), dtype=np.float64).ravel()  # (P,)
            secs += dt
            cos_sum += _cosine(g, g_star)
            share_sum += np.count_nonzero(carried_work(prop, res.adjoints)) / max(full_work, 1)
            step = g - mean
            mean += step / i
            m2 += step * (g - mean)
            if i in sizes:
                curve.append(BiasPoint(i, float(np.linalg.norm(mean - g_star)) / g_norm, _se(m2, i) / g_norm))
        rel_bias = float(np.linalg.norm(mean - g_star)) / g_norm
        se = _se(m2, n) / g_norm if n > 1 else 0.0
        rows.append(
            EstimatorStats(
                spec=strategy.spec,
                kind=strategy.kind,
                samples=n,
                rel_bias=rel_bias,
                rel_bias_se=se,
                bias_consistent=bool(rel_bias <= 3.0 * se + rounding_tol),
                cosine=cos_sum / n,
                cosine_of_mean=_cosine(mean, g_star),
                rel_std=float(np.sqrt(m2.sum() / (n - 1))) / g_norm if n > 1 else 0.0,
                backward_share=share_sum / n,
                seconds=secs / n,
                bias_curve=tuple(curve),
            )
        )
    return EstimatorReport(loss=full.loss, full_grad_norm=g_norm, full_seconds=full_seconds, rows=tuple(rows))


def _se(m2: np.ndarray, n: int) -> float:
    """sqrt(tr Cov / n) from Welford's sum of squared deviations (sample covariance, ddof 1)."""
    return float(np.sqrt(m2.sum() / (n - 1) / n))


def bias_slope(curve: tuple[BiasPoint, ...] | list[BiasPoint]) -> float | None:
    """Least-squares slope of log rel_bias against log n (about -1/2 for an unbiased estimator)."""
    pts = [(p.n, p.rel_bias) for p in curve if p.rel_bias > 0]
    if len(pts) < 2:
        return None
    n, b = np.log(np.array(pts, dtype=np.float64)).T
    return float(np.polyfit(n, b, 1)[0])
