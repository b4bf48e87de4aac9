"""Optimisers and gradient clipping, as pure functions on parameter objects.

Any parameter object with `as_dict()` and the class method `from_dict()` works (the vanilla
RNN's Params, a gated cell's weights).

    state = init_state(opt, params)
    params, state = step(opt, params, grads, state)     # new arrays; inputs untouched

sgd       theta <- theta - lr g
momentum  v <- mu v + g;  theta <- theta - lr v                       (heavy ball)
adam      m <- b1 m + (1-b1) g;  s <- b2 s + (1-b2) g^2;
          theta <- theta - lr m_hat / (sqrt(s_hat) + eps)             (Kingma & Ba, bias-corrected)
adagrad   s <- s + g^2;  theta <- theta - lr g / (sqrt(s) + eps)      (min-char-rnn's choice)

clip_by_norm: g <- g min(1, theta / ||g||) with ||g|| the global norm over all parameters
(Pascanu et al. 2013); clip_by_value: every entry into [-v, v] (min-char-rnn uses 5).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bptt_cli.core.validate import check_choice, check_float, check_optional_positive

OPTIMIZERS = ("sgd", "momentum", "adam", "adagrad")
SLOTS = {"sgd": (), "momentum": ("v",), "adam": ("m", "s"), "adagrad": ("s",)}


@dataclass(frozen=True)
class Optimizer:
    """Which optimiser and its hyperparameters (validated on construction)."""

    name: str = "adam"
    lr: float = 1e-2
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        check_choice("--optimizer", self.name, OPTIMIZERS)
        check_float("--lr", self.lr, lo=0.0, lo_open=True)
        for name in ("momentum", "beta1", "beta2"):
            check_float(name, getattr(self, name), lo=0.0, hi=1.0, hi_open=True)
        check_float("eps", self.eps, lo=0.0, lo_open=True)


@dataclass(frozen=True)
class OptState:
    """The optimiser's memory: the number of updates done and its slot arrays (Params each)."""

    count: int = 0
    slots: dict[str, Any] = field(default_factory=dict)

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat name -> array map ('adam.m.W_h', ...) for saving in a checkpoint."""
        return {f"{slot}.{k}": v for slot, p in self.slots.items() for k, v in p.as_dict().items()}

    @staticmethod
    def from_arrays(opt: Optimizer, count: int, arrays: dict[str, np.ndarray], like: Any) -> OptState:
        """Inverse of `arrays`, with the parameter names and class of `like`; ValueError naming
        the missing entry."""
        slots = {}
        names = list(like.as_dict())
        for slot in SLOTS[opt.name]:
            missing = [k for k in names if f"{slot}.{k}" not in arrays]
            if missing:
                raise ValueError(f"optimizer state for {opt.name} lacks `{slot}.{missing[0]}`")
            slots[slot] = type(like).from_dict({k: np.asarray(arrays[f"{slot}.{k}"]) for k in names})
        return OptState(count=int(count), slots=slots)


def _zeros(params: Any) -> Any:
    return type(params).from_dict({k: np.zeros_like(v) for k, v in params.as_dict().items()})


def _map(fn, *trees: Any) -> Any:  # noqa: ANN001 - a small helper over the parameter arrays
    arrays = [t.as_dict() for t in trees]
    return type(trees[0]).from_dict({k: fn(*(a[k] for a in arrays)) for k in arrays[0]})


def init_state(opt: Optimizer, params: Any) -> OptState:
    """Zero slots of the parameters' shapes and dtype."""
    return OptState(count=0, slots={slot: _zeros(params) for slot in SLOTS[opt.name]})


def step(opt: Optimizer, params: Any, grads: Any, state: OptState) -> tuple[Any, OptState]:
    """One update. Returns new parameters and a new state; the arguments are not modified."""
    dt = next(iter(params.as_dict().values())).dtype.type
    lr = dt(opt.lr)
    count = state.count + 1
    if opt.name == "sgd":
        return _map(lambda p, g: p - lr * g, params, grads), OptState(count, {})
    if opt.name == "momentum":
        mu = dt(opt.momentum)
        v = _map(lambda v, g: mu * v + g, state.slots["v"], grads)
        return _map(lambda p, v: p - lr * v, params, v), OptState(count, {"v": v})
    if opt.name == "adam":
        b1, b2 = dt(opt.beta1), dt(opt.beta2)
        m = _map(lambda m, g: b1 * m + (1 - b1) * g, state.slots["m"], grads)
        s = _map(lambda s, g: b2 * s + (1 - b2) * (g * g), state.slots["s"], grads)
        # bias correction folded into the step size: lr sqrt(1 - b2^n) / (1 - b1^n)
        c1 = 1.0 - opt.beta1**count
        c2 = 1.0 - opt.beta2**count
        lr_n = dt(opt.lr * np.sqrt(c2) / c1)
        eps_n = dt(opt.eps * np.sqrt(c2))  # so that the update is m_hat / (sqrt(s_hat) + eps) exactly
        new = _map(lambda p, m, s: p - lr_n * m / (np.sqrt(s) + eps_n), params, m, s)
        return new, OptState(count, {"m": m, "s": s})
    eps = dt(opt.eps)
    s = _map(lambda s, g: s + g * g, state.slots["s"], grads)
    return _map(lambda p, g, s: p - lr * g / (np.sqrt(s) + eps), params, grads, s), OptState(count, {"s": s})


def global_norm(grads: Any) -> float:
    """||g|| over all parameters together (scaled when the squares overflow, as a blown-up run's do)."""
    arrays = list(grads.as_dict().values())
    squares = sum(float(np.vdot(v, v)) for v in arrays)
    if np.isfinite(squares):
        return float(np.sqrt(squares))
    top = max((float(np.max(np.abs(v))) for v in arrays if v.size), default=0.0)
    if not np.isfinite(top):
        return top
    return top * float(np.sqrt(sum(float(np.vdot(v / top, v / top)) for v in arrays)))


def clip_by_norm(grads: Any, theta: float | None) -> tuple[Any, float, bool]:
    """(g min(1, theta / ||g||), ||g|| before clipping, whether it clipped). theta None: no clipping."""
    norm = global_norm(grads)
    if theta is None or norm <= theta or not np.isfinite(norm):
        return grads, norm, False
    scale = next(iter(grads.as_dict().values())).dtype.type(theta / norm)
    return _map(lambda g: g * scale, grads), norm, True


def clip_by_value(grads: Any, value: float | None) -> tuple[Any, bool]:
    """Every entry into [-value, value]; also says whether any entry was clipped."""
    if value is None:
        return grads, False
    clipped = any(bool(np.any(np.abs(g) > value)) for g in grads.as_dict().values())
    return _map(lambda g: np.clip(g, -value, value), grads), clipped


def check_clip(name: str, value: float | None) -> float | None:
    """A clip threshold is None (off) or a positive finite number."""
    return check_optional_positive(name, value)
