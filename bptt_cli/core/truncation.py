"""Truncation strategies for BPTT: which backward steps carry the gradient, and with what weight.

A strategy becomes the (T, B) array `propagate` that `core.bptt.gradients` takes: entry s is the
xi_{s+1} that scales what step s + 1 sends back to step s (docs/design.md section 1).

full       xi = 1 everywhere: exact BPTT.
chunk:K    regular truncation (the notes' detach): chunks of K steps from the start; the state
           flows on across a boundary, the gradient does not (xi = 0 at the first step of a chunk).
random:P   randomized truncation (Tallec & Ollivier 2017): xi_t = 1/P with probability P, else 0,
           drawn per step and per sequence; E[xi] = 1, so the estimate is unbiased.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

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
