"""Influence balancing (Tallec & Ollivier 2017, introduced with UORO): where truncation gets the sign wrong.

A linear system with one parameter theta whose short-range effect on the output is opposite to
its long-range effect:

    s_t = A s_{t-1} + theta * u,      loss l_t = 1/2 (s_t[0] - 1)^2,      s_0 = 0

with s in R^23, A = 0.5 on the diagonal and on the superdiagonal, u = +1 on the first 10 units and
-1 on the other 13. Unit 0 hears unit j after j steps, so for the first 10 steps back theta pushes
s[0] up, and from further back it pushes it down; in the steady state s[0] = -6 theta.

It is a linear RNN of this package (identity activation, W_h = A, constant input x_t = 1 with
W_x = theta * u, W_y = e_0, c = 0, mse target 1), so dL/dtheta = u . dL/dW_x comes from
`core.bptt.gradients` with the strategy's `propagate` weights: one backward pass, no second one.

The window-K sensitivity S_K = sum_{j<K} e_0^T A^j u of the steady-state output to theta is +K for
K <= 10, peaks near K = 20 and turns negative only for K >= 41 (it tends to -6): any truncation
window shorter than 41 steps sees the wrong sign.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from bptt_cli.core.bptt import gradients
from bptt_cli.core.rnn import Params
from bptt_cli.core.truncation import Strategy, propagate_weights
from bptt_cli.core.validate import check_float, check_positive_int

N_UNITS = 23
N_POSITIVE = 10
THETA0 = 0.5


@dataclass(frozen=True)
class InfluenceSystem:
    """A (n, n) recurrent matrix and u (n,) input direction."""

    A: np.ndarray
    u: np.ndarray

    @property
    def n(self) -> int:
        return self.u.shape[0]


@dataclass(frozen=True)
class InfluenceRun:
    """One strategy's training of theta.

    thetas : (S + 1,) theta before each step and after the last (shorter if it diverged)
    losses : (S,) the per-step mean loss of each step's sequence
    grads : (S,) the estimate of dL/dtheta each step used
    diverged_at : the step (1-based) at which |theta| or the loss passed the limit, else None
    seconds : wall time of the whole run
    """

    spec: str
    thetas: np.ndarray
    losses: np.ndarray
    grads: np.ndarray
    diverged_at: int | None
    seconds: float


def influence_system(n: int = N_UNITS, n_positive: int = N_POSITIVE) -> InfluenceSystem:
    """The commonly used values: n = 23 units, u = +1 on the first 10 and -1 on the rest."""
    n = check_positive_int("n", n)
    n_positive = check_positive_int("n_positive", n_positive, allow_zero=True)
    if n_positive > n:
        raise ValueError(f"`n_positive` must be at most `n` ({n}); got {n_positive}")
    A = 0.5 * np.eye(n) + 0.5 * np.eye(n, k=1)  # (n, n) upper bidiagonal
    u = np.where(np.arange(n) < n_positive, 1.0, -1.0)  # (n,)
    return InfluenceSystem(A=A, u=u)


def influence_params(theta: float, system: InfluenceSystem) -> Params:
    """The system as RNN parameters: W_x = theta u (n, 1), W_h = A, W_y = e_0 (1, n)."""
    n = system.n
    W_y = np.zeros((1, n))
    W_y[0, 0] = 1.0
    return Params(W_x=theta * system.u[:, None], W_h=system.A.copy(), b=np.zeros(n), W_y=W_y, c=np.zeros(1))


def influence_batch(seq_len: int, batch: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """x = 1 (T, B, 1), targets = 1 (T, B, 1), mask = 1/(2T) (T, B).

    The mse loss of a one-unit output is (y - 1)^2; the mask's 1/2 makes it 1/2 (s[0] - 1)^2 and
    its 1/T a mean over steps, so a learning rate means the same at every T. The B sequences are
    identical: with random truncation each draws its own xi, and the batch mean averages them.
    """
    T = check_positive_int("seq_len", seq_len)
    B = check_positive_int("batch", batch)
    return np.ones((T, B, 1)), np.ones((T, B, 1)), np.full((T, B), 0.5 / T)


def theta_gradient(
    theta: float,
    strategy: Strategy,
    *,
    seq_len: int,
    batch: int = 1,
    rng: np.random.Generator | None = None,
    system: InfluenceSystem | None = None,
) -> tuple[float, float]:
    """(L, dL/dtheta) for one sequence batch, with the strategy's truncation.

    dL/dtheta = sum_i u_i dL/dW_x[i, 0], since W_x = theta u and every input is 1.
    """
    system = influence_system() if system is None else system
    x, targets, mask = influence_batch(seq_len, batch)
    prop = propagate_weights(strategy, seq_len, batch, rng)
    res = gradients(
        influence_params(theta, system), x, targets, loss="mse", activation="identity", mask=mask, propagate=prop
    )
    return res.loss, float(system.u @ res.grads.W_x[:, 0])


def train_theta(
    strategy: Strategy,
    *,
    steps: int,
    lr: float,
    seq_len: int,
    batch: int = 1,
    rng: np.random.Generator | None = None,
    theta0: float = THETA0,
    system: InfluenceSystem | None = None,
    limit: float = 1e6,
) -> InfluenceRun:
    """Plain gradient descent on the one scalar theta, each step on a fresh sequence from s_0 = 0.

    This is not an RNN training loop (analyses/train trains every parameter array on a task);
    it moves one number along the strategy's estimate of dL/dtheta. It stops when |theta| or
    the loss passes `limit` (diverged).
    """
    steps = check_positive_int("--steps", steps)
    lr = check_float("--lr", lr, lo=0.0, lo_open=True)
    system = influence_system() if system is None else system
    t0 = time.perf_counter()
    theta = float(theta0)
    thetas, losses, grads = [theta], [], []
    diverged_at = None
    for step in range(steps):
        L, g = theta_gradient(theta, strategy, seq_len=seq_len, batch=batch, rng=rng, system=system)
        losses.append(L)
        grads.append(g)
        theta -= lr * g
        thetas.append(theta)
        if not (abs(theta) < limit and L < limit):
            diverged_at = step + 1
            break
    return InfluenceRun(
        spec=strategy.spec,
        thetas=np.array(thetas),
        losses=np.array(losses),
        grads=np.array(grads),
        diverged_at=diverged_at,
        seconds=time.perf_counter() - t0,
    )
