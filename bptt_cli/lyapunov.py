"""Lyapunov exponents of an RNN's Jacobian product along a trajectory (QR / Benettin method).

The measured answer to "does the gradient signal grow or shrink?": J_t = diag(f'(a_t)) W_h along
a real trajectory, where the matrix-only bounds of spectrum.py only say what is possible.
Re-exported by bptt_cli.spectrum (the agreed interface).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bptt_cli.model import (
    ACTIVATIONS,
    Params,
    activation_derivative,
    check_choice,
    check_params,
    check_positive_int,
    forward,
)


@dataclass(frozen=True)
class LyapunovResult:
    """Top-k Lyapunov exponents of the Jacobian product along a trajectory.

    exponents : (k,) natural log growth per step, descending
    gains : (k,) exp(exponents), the per-step gain factors
    steps : number of steps averaged (T - warmup)
    per_sequence : (B, k) exponents of each sequence in the batch
    """

    exponents: np.ndarray
    gains: np.ndarray
    steps: int
    per_sequence: np.ndarray


def lyapunov_exponents(
    params: Params,
    x: np.ndarray,
    *,
    activation: str = "tanh",
    k: int = 1,
    warmup: int = 0,
    h0: np.ndarray | None = None,
) -> LyapunovResult:
    """The top-k Lyapunov exponents of J_t = diag(f'(a_t)) W_h along the trajectory driven by x.

    QR (Benettin) method: Q_t R_t = J_t Q_{t-1}; lambda_i = mean over t > warmup of log |R_t[i, i]|,
    per sequence, then averaged over the batch. For a linear network J_t = W_h and the top
    exponent tends to log rho(W_h).

    Parameters
    ----------
    params : Params
    x : (T, B, D) inputs
    activation : 'tanh' | 'relu' | 'identity'
    k : number of exponents, 1 <= k <= H
    warmup : leading steps that only align Q (not averaged), 0 <= warmup < T
    h0 : (B, H) initial state, zeros by default
    """
    check_params(params)
    check_choice("activation", activation, ACTIVATIONS)
    H = params.hidden_size
    k = check_positive_int("k", k)
    if k > H:
        raise ValueError(f"`k` (Lyapunov exponents) must be at most the hidden size {H}; got {k}")
    warmup = check_positive_int("warmup", warmup, allow_zero=True)
    traj = forward(params, x, activation=activation, h0=h0)
    T, B, _ = traj.a.shape
    if warmup >= T:
        raise ValueError(f"`warmup` must be smaller than the number of steps {T}; got {warmup}")
    W = params.W_h.astype(np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        d = activation_derivative(traj.h[1:].astype(np.float64), activation)  # (T, B, H) f'(a_t)
    # a fixed generic start frame (seeded, so results are reproducible): np.eye could be
    # orthogonal to the dominant direction of a structured W_h
    Q0, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((H, k)))  # (H, k)
    Q = np.broadcast_to(Q0, (B, H, k)).copy()  # (B, H, k)
    logs = np.zeros((B, k))  # (B, k) running sum of log |R_ii|
    with np.errstate(divide="ignore"):
        for t in range(T):
            M = d[t][:, :, None] * np.matmul(W, Q)  # (B, H, k) J_t Q
            Q, R = np.linalg.qr(M)
            if t >= warmup:
                logs += np.log(np.abs(np.diagonal(R, axis1=1, axis2=2)))  # (B, k)
    steps = T - warmup
    per_seq = logs / steps  # (B, k)
    # QR does not order the diagonal; sort each sequence's exponents descending
    per_seq = -np.sort(-per_seq, axis=1)
    exps = per_seq.mean(axis=0)  # (k,)
    return LyapunovResult(exponents=exps, gains=np.exp(exps), steps=steps, per_sequence=per_seq)
