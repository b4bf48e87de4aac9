"""The recurrent cell as one object: its weights, its step, its state and its Jacobian.

The analyses (trace, spectrum, train, truncation) talk to a network only through this
interface, so a new cell type slots in beside the vanilla RNN without touching them:

    run = cell.run(x, s0)                     the trajectory: states s_0..s_T (T+1, B, S)
    cell.hidden(run)                          the part of the state the output layer reads (T+1, B, H)
    cell.local_loss(run, loss, targets, mask) L and dl_t/ds_t (T, B, S) from each step's own loss
    cell.gradients(x, targets, ...)           L and every parameter gradient (BPTT)
    cell.vjp_stepper(run, rows)               v_{t-1} = J_t^T v_t, chunk by chunk (the trace)
    cell.jvp(run, t, Q)                       J_t Q for a frame Q (B, S, k) (Lyapunov exponents)
    cell.jacobian(run, t)                     J_t = ds_t / ds_{t-1} as (B, S, S)

with J_t the state-to-state Jacobian of step t. For the vanilla RNN the state is h and
J_t = diag(f'(a_t)) W_h.
"""

from __future__ import annotations

import functools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from bptt_cli.core import fast
from bptt_cli.core.activations import Activation, get_activation
from bptt_cli.core.bptt import GradResult, gradients, local_loss_gradient
from bptt_cli.core.losses import Loss, check_mask, check_targets, get_loss
from bptt_cli.core.rnn import Params, check_inputs, check_params, outputs

CELLS = ("rnn",)


@dataclass(frozen=True)
class Run:
    """A forward pass: the inputs x (T, B, D), the states s_0..s_T (T + 1, B, S) and whatever the
    cell keeps to differentiate its steps (`cache`, None for the vanilla RNN)."""

    x: np.ndarray
    states: np.ndarray
    cache: Any = None

    @property
    def seq_len(self) -> int:
        return self.x.shape[0]

    @property
    def batch(self) -> int:
        return self.x.shape[1]


class VJPStepper(ABC):
    """Applies J_t^T to stacked rows of state vectors going back through time.

    `prepare(lo, hi)` is called once per chunk before the steps t = hi..lo+1 of that chunk (a cell
    may lay out what those steps need); `step(t, v, out)` writes J_t^T v into out, with v and
    out of shape (rows B, S): `rows` blocks of B rows, one vector per sequence of the batch each.
    """

    @abstractmethod
    def prepare(self, lo: int, hi: int) -> None: ...

    @abstractmethod
    def step(self, t: int, v: np.ndarray, out: np.ndarray) -> None: ...


class Cell(ABC):
    """A recurrent network of one cell type with its weights (see the module docstring)."""

    name: str

    @property
    @abstractmethod
    def params(self) -> Any: ...

    @abstractmethod
    def with_params(self, params: Any) -> Cell: ...

    input_size: int
    hidden_size: int
    output_size: int
    state_size: int
    dtype: np.dtype

    @abstractmethod
    def describe(self) -> str: ...

    @abstractmethod
    def run(self, x: np.ndarray, s0: np.ndarray | None = None) -> Run: ...

    @abstractmethod
    def hidden(self, run: Run) -> np.ndarray: ...

    @abstractmethod
    def outputs(self, run: Run) -> np.ndarray:
        """y_t for t = 1..T, (T, B, V): the output layer on the hidden part of the state."""

    @abstractmethod
    def local_loss(
        self, run: Run, loss: Loss, targets: np.ndarray | None, mask: np.ndarray | None
    ) -> tuple[float, np.ndarray]: ...

    @abstractmethod
    def gradients(self, x: np.ndarray, targets: np.ndarray | None, **kw: Any) -> GradResult: ...

    @abstractmethod
    def vjp_stepper(self, run: Run, rows: int) -> VJPStepper: ...

    @abstractmethod
    def jvp(self, run: Run, t: int, Q: np.ndarray) -> np.ndarray: ...

    @abstractmethod
    def jacobian(self, run: Run, t: int) -> np.ndarray: ...

    def jacobian_bound(self, run: Run, lo: int, hi: int) -> np.ndarray | None:
        """(hi - lo, B) upper bounds of ||J_t||_2 for t = lo+1..hi, or None when there is no cheap one."""
        return None

    def growth_bound(self) -> float:
        """An upper bound of ||J_t||_2 for every t and state (inf when there is no cheap one)."""
        return math.inf

    def gain_stats(self, run: Run, lo: int, hi: int) -> dict[str, np.ndarray]:
        """Per-step batch means (hi - lo,) of what sets each step's gain (the vanilla RNN: mean f')."""
        return {}

    def recurrent_matrix(self) -> np.ndarray | None:
        """The one matrix whose spectrum the matrix-only bounds are about (W_h), or None."""
        return None

    @property
    def gamma(self) -> float | None:
        """max |f'| of the activation (the Pascanu bounds), None for cells without one."""
        return None

    def check_batch(
        self, x: np.ndarray, targets: np.ndarray | None, loss: Loss, mask: np.ndarray | None
    ) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Targets and mask checked against the inputs' T and B and the output size."""
        T, B = np.shape(x)[:2]
        return check_targets(loss, targets, T, B, self.output_size), check_mask(mask, T, B, self.dtype)


class RNNCell(Cell):
    """The vanilla RNN h_t = f(W_x x_t + W_h h_{t-1} + b), y_t = W_y h_t + c (core/rnn.py)."""

    name = "rnn"

    def __init__(self, params: Params, activation: str | Activation = "tanh") -> None:
        self._params = check_params(params)
        self.activation = get_activation(activation)
        self.input_size = params.input_size
        self.hidden_size = params.hidden_size
        self.output_size = params.output_size
        self.state_size = params.hidden_size
        self.dtype = params.dtype

    @property
    def params(self) -> Params:
        return self._params

    def with_params(self, params: Params) -> RNNCell:
        return RNNCell(params, self.activation)

    @property
    def gamma(self) -> float:
        return self.activation.gamma

    def describe(self) -> str:
        return f"{self.activation.name} RNN"

    def recurrent_matrix(self) -> np.ndarray:
        return self._params.W_h

    @functools.cached_property
    def sigma_max(self) -> float:
        """sigma_max(W_h), computed once per cell."""
        return float(np.linalg.norm(self._params.W_h.astype(np.float64), ord=2))

    def growth_bound(self) -> float:
        return self.gamma * self.sigma_max  # ||diag(f') W_h||_2 <= max |f'| sigma_max(W_h)

    def run(self, x: np.ndarray, s0: np.ndarray | None = None) -> Run:
        x, h0 = check_inputs(self._params, x, s0)
        with np.errstate(over="ignore", invalid="ignore"):
            return Run(x=x, states=fast.forward_states(self._params, x, h0, self.activation))

    def hidden(self, run: Run) -> np.ndarray:
        return run.states

    def outputs(self, run: Run) -> np.ndarray:
        return outputs(self._params, run.states)

    def local_loss(
        self, run: Run, loss: Loss, targets: np.ndarray | None, mask: np.ndarray | None
    ) -> tuple[float, np.ndarray]:
        L, dl, _, _ = local_loss_gradient(self._params, run.states, get_loss(loss), targets, mask)
        return L, dl

    def gradients(self, x: np.ndarray, targets: np.ndarray | None, **kw: Any) -> GradResult:
        return gradients(self._params, x, targets, activation=self.activation, **kw)

    def vjp_stepper(self, run: Run, rows: int) -> VJPStepper:
        return _RNNStepper(self._params.W_h.astype(run.states.dtype), run.states, self.activation, rows)

    def fprime(self, run: Run, t: int) -> np.ndarray:
        """f'(a_t) (B, H) from h_t."""
        return self.activation.derivative(run.states[t])

    def jvp(self, run: Run, t: int, Q: np.ndarray) -> np.ndarray:
        # J_t Q = diag(f'(a_t)) W_h Q, for every sequence's frame at once
        return self.fprime(run, t)[:, :, None] * np.matmul(self._params.W_h, Q)  # (B, H, k)

    def jacobian(self, run: Run, t: int) -> np.ndarray:
        return self.fprime(run, t)[:, :, None] * self._params.W_h  # (B, H, H): rows of W_h scaled by f'

    def jacobian_bound(self, run: Run, lo: int, hi: int) -> np.ndarray:
        fp = self.activation.derivative(run.states[lo + 1 : hi + 1])  # (k, B, H)
        return fp.max(axis=2) * self.sigma_max  # ||diag(f') W_h||_2 <= max_i f'_i * sigma_max(W_h)

    def gain_stats(self, run: Run, lo: int, hi: int) -> dict[str, np.ndarray]:
        fp = self.activation.derivative(run.states[lo + 1 : hi + 1])  # (k, B, H)
        return {"mean_fprime": fp.mean(axis=(1, 2))}


class _RNNStepper(VJPStepper):
    """J_t^T v = W_h^T (f'(a_t) * v): per chunk f'(a_t) is laid out once for all row blocks, and each
    step is one element-wise product and one (rows B, H) x (H, H) product."""

    def __init__(self, W_h: np.ndarray, hs: np.ndarray, act: Activation, rows: int) -> None:
        _, B, H = hs.shape
        self.W_h, self.hs, self.act, self.rows, self.lo = np.ascontiguousarray(W_h), hs, act, rows, 0
        self.G = np.empty((0, rows, B, H), dtype=hs.dtype)  # (K, rows, B, H), sized by prepare
        self.G2 = self.G.reshape(0, rows * B, H)  # the same memory as (K, rows B, H) row blocks

    def prepare(self, lo: int, hi: int) -> None:
        n = hi - lo
        if n > self.G.shape[0]:
            self.G = np.empty((n, *self.G.shape[1:]), dtype=self.G.dtype)
            self.G2 = self.G.reshape(n, -1, self.G.shape[-1])
        self.lo = lo
        self.act.fprime(self.hs[lo + 1 : hi + 1], self.G[:n, 0])  # f'(a_t) for t = lo+1..hi
        self.G[:n, 1:] = self.G[:n, :1]

    def step(self, t: int, v: np.ndarray, out: np.ndarray) -> None:
        g = self.G2[t - self.lo - 1]  # (rows B, H)
        np.multiply(g, v, out=g)  # back through f: f'(a_t) * v_t
        np.matmul(g, self.W_h, out=out)  # back through W_h: one product for all rows


def as_cell(model: Params | Cell, activation: str | Activation | None = None) -> Cell:
    """A Cell from a Cell, or from vanilla RNN Params and an activation (default tanh)."""
    if isinstance(model, Cell):
        if activation is not None and getattr(model, "activation", None) != get_activation(activation):
            raise ValueError("`activation` is the cell's own; do not give another one")
        return model
    if isinstance(model, Params):
        return RNNCell(model, "tanh" if activation is None else activation)
    raise ValueError(f"expected Params or a Cell; got {type(model).__name__}")
