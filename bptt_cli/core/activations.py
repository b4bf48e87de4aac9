"""The hidden activations f, one object each: f, its derivative f' written in terms of h = f(a),
and gamma = max |f'| (the constant of the Pascanu bounds, docs/design.md section 1).

Every other module takes an Activation (or its name, resolved once with `get_activation`);
none of them branches on the name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Elementwise = Callable[..., np.ndarray]


@dataclass(frozen=True)
class Activation:
    """One activation.

    name : 'tanh' | 'relu' | 'identity'
    f : h = f(a, out=None), element-wise; `out` may alias `a`. None for the identity (nothing to do
        in place), see `apply`.
    fprime : f'(a) from h = f(a), (h, out) -> out: the backward pass never needs a again
    gamma : max |f'(a)|
    """

    name: str
    f: Elementwise | None
    fprime: Callable[[np.ndarray, np.ndarray], np.ndarray]
    gamma: float

    @property
    def linear(self) -> bool:
        return self.f is None

    def apply(self, a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """h = f(a); with `out` (which may be `a`) the result is written there."""
        if self.f is not None:
            return self.f(a, out=out)
        if out is None:
            return a.copy()
        if out is not a:
            out[...] = a
        return out

    def derivative(self, h: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """f'(a) from h = f(a), in a new array or `out`."""
        return self.fprime(h, np.empty_like(h) if out is None else out)

    def __str__(self) -> str:
        return self.name


def _tanh_prime(h: np.ndarray, out: np.ndarray) -> np.ndarray:
    np.multiply(h, h, out=out)  # f'(a) = 1 - tanh(a)^2 = 1 - h^2
    return np.subtract(1, out, out=out)


def _relu(a: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    return np.maximum(a, 0, out=out)


def _relu_prime(h: np.ndarray, out: np.ndarray) -> np.ndarray:
    return np.greater(h, 0, out=out)  # 1 where h > 0; the subgradient 0 at a = 0 (bool cast into out)


def _identity_prime(h: np.ndarray, out: np.ndarray) -> np.ndarray:
    out.fill(1)
    return out


TANH = Activation("tanh", np.tanh, _tanh_prime, 1.0)
RELU = Activation("relu", _relu, _relu_prime, 1.0)
IDENTITY = Activation("identity", None, _identity_prime, 1.0)

ACTIVATIONS: dict[str, Activation] = {a.name: a for a in (TANH, RELU, IDENTITY)}
NAMES = tuple(ACTIVATIONS)


def get_activation(activation: str | Activation) -> Activation:
    """The Activation object for a name (or the object itself); ValueError naming the choices."""
    if isinstance(activation, Activation):
        return activation
    try:
        return ACTIVATIONS[activation]
    except (KeyError, TypeError):
        raise ValueError(f"`activation` must be one of {', '.join(NAMES)}; got {activation!r}") from None
