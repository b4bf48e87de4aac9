"""Lyapunov exponents of a network's Jacobian product along a trajectory (QR / Benettin method).

The measured answer to "does the gradient signal grow or shrink?": the product of the cell's
state-to-state Jacobians J_t along a real trajectory (for the vanilla RNN
J_t = diag(f'(a_t)) W_h), where the matrix-only bounds of core/verdict.py only say what is
possible.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bptt_cli.core.activations import Activation
from bptt_cli.core.cells import Cell, as_cell
from bptt_cli.core.rnn import Params
from bptt_cli.core.validate import check_int


@dataclass(frozen=True)
class LyapunovResult:
    """Top-k Lyapunov exponents of the Jacobian product along a trajectory.

    exponents : (k,) natural log growth per step, descending (-inf: a direction the product
        annihilates, e.g. dead ReLU units)
    gains : (k,) exp(exponents), the per-step gain factors
    steps : number of steps averaged (T - warmup)
    per_sequence : (B, k) exponents of each sequence in the batch
    """

    exponents: np.ndarray
    gains: np.ndarray
    steps: int
    per_sequence: np.ndarray


def lyapunov_exponents(
    model: Params | Cell,
    x: np.ndarray,
    *,
    activation: str | Activation | None = None,
    k: int = 1,
    warmup: int = 0,
    h0: np.ndarray | None = None,
) -> LyapunovResult:
    """The top-k Lyapunov exponents of the Jacobian product J_T ... J_1 along the trajectory x drives.

    QR (Benettin) method: Q_t R_t = J_t Q_{t-1}; lambda_i = mean over t > warmup of log |R_t[i, i]|,
    per sequence, then averaged over the batch. For a linear network J_t = W_h and the top
    exponent tends to log rho(W_h).

    Parameters
    ----------
    model : a Cell, or vanilla RNN Params (with `activation`, default tanh)
    x : (T, B, D) inputs
    k : number of exponents, 1 <= k <= S (the state size)
    warmup : leading steps that only align Q (not averaged), 0 <= warmup < T
    h0 : (B, S) initial state, zeros by default
    """
    cell = as_cell(model, activation)
    S = cell.state_size
    k = check_int("k", k)
    if k > S:
        raise ValueError(f"`k` (Lyapunov exponents) must be at most the state size {S}; got {k}")
    warmup = check_int("warmup", warmup, min=0)
    cell = cell.with_params(cell.params.astype(np.float64))
    run = cell.run(x, h0)
    T, B = run.seq_len, run.batch
    if warmup >= T:
        raise ValueError(f"`warmup` must be smaller than the number of steps {T}; got {warmup}")
    # a fixed generic start frame (seeded, so results are reproducible): np.eye could be
    # orthogonal to the dominant direction of a structured W_h
    Q0, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((S, k)))  # (S, k)
    Q = np.broadcast_to(Q0, (B, S, k)).copy()  # (B, S, k)
    logs = np.zeros((B, k))  # (B, k) running sum of log |R_ii|
    with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
        for t in range(1, T + 1):
            Q, R = np.linalg.qr(cell.jvp(run, t, Q))  # J_t Q_{t-1} = Q_t R_t
            if t > warmup:
                logs += np.log(np.abs(np.diagonal(R, axis1=1, axis2=2)))  # (B, k)
    steps = T - warmup
    per_seq = logs / steps  # (B, k)
    # QR does not order the diagonal; sort each sequence's exponents descending
    per_seq = -np.sort(-per_seq, axis=1)
    exps = per_seq.mean(axis=0)  # (k,)
    return LyapunovResult(exponents=exps, gains=np.exp(exps), steps=steps, per_sequence=per_seq)


def settled_at(states: np.ndarray, *, rtol: float = 1e-12) -> int | None:
    """The first step t from which the trajectory stops moving: ||s_u - s_{u-1}||_inf <=
    rtol max(1, ||s_u||_inf) for every sequence and every u >= t. None when it still moves at T.

    A trajectory at a fixed point s* measures the fixed point's Jacobian diag(f'(a*)) W_h, not
    the attractor a generic start reaches: with zero input, zero bias and h0 = 0 a tanh network
    stays at 0, where the top exponent is ln rho(W_h) (ln g at gain g), however chaotic it is
    elsewhere.

    Parameters
    ----------
    states : (T + 1, B, S) s_0..s_T
    """
    s = np.asarray(states, dtype=np.float64)
    T1 = s.shape[0]
    if T1 < 2:
        return None
    step = np.abs(np.diff(s, axis=0)).reshape(T1 - 1, -1).max(axis=1)  # (T,) largest move into s_t
    size = np.maximum(1.0, np.abs(s[1:]).reshape(T1 - 1, -1).max(axis=1))  # (T,)
    still = step <= rtol * size  # still[t - 1]: s_t == s_{t-1}
    if not still[-1]:
        return None
    moving = np.flatnonzero(~still)
    return 1 if moving.size == 0 else int(moving[-1]) + 2
