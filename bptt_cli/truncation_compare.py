"""The two comparisons behind `bptt compare-truncation`, as library calls (no printing).

compare_training   every strategy trained from the same initial parameters on the same data
                   order with train.fit (the one training loop for RNN tasks): final loss and
                   metric, wall time, the first logged step that reaches a target, the curves.
compare_influence  the influence-balancing problem: each strategy's dL/dtheta at theta_0 (mean,
                   standard error, share of draws with the full gradient's sign) and its theta
                   trajectory under gradient descent.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bptt_cli.influence import (
    THETA0,
    InfluenceRun,
    influence_batch,
    influence_params,
    influence_system,
    theta_gradient,
    train_theta,
)
from bptt_cli.model import Params
from bptt_cli.optim import Optimizer
from bptt_cli.tasks import Task
from bptt_cli.train import fit
from bptt_cli.truncation import EstimatorReport, Strategy, bias_slope, estimator_statistics


@dataclass(frozen=True)
class TrainingRow:
    """One strategy's training run.

    steps, losses, metrics : the learning curve at the logged steps (training-batch loss,
        held-out metric)
    final_loss : the training loss at the last logged step; final_metric : held-out metric at the end
    steps_to_target : the first logged step whose metric reached `target`, None if never
    diverged_at : the step whose loss or gradient was not finite, None if none
    """

    spec: str
    steps: np.ndarray
    losses: np.ndarray
    metrics: np.ndarray
    final_loss: float | None
    final_metric: float | None
    steps_to_target: int | None
    diverged_at: int | None
    seconds: float


def reached(value: float | None, target: float, higher_is_better: bool) -> bool:
    if value is None or not np.isfinite(value):
        return False
    return value >= target if higher_is_better else value <= target


def with_own_generators(strategies: list[Strategy], seed: int) -> list[Strategy]:
    """Each random strategy gets a generator of its own (seeded from `seed` and its position),
    so the training generator yields the same batches for every strategy."""
    return [
        replace(s, xi_rng=np.random.default_rng([seed, 7, i])) if s.kind == "random" else s
        for i, s in enumerate(strategies)
    ]


def compare_training(
    params: Params,
    task: Task,
    strategies: list[Strategy],
    *,
    steps: int,
    seed: int,
    optimizer: Optimizer,
    batch_size: int,
    activation: str = "tanh",
    clip: float | None = None,
    log_every: int = 10,
    target: float,
) -> list[TrainingRow]:
    """Train a copy of `params` with each strategy; the same seed gives the same data to all."""
    rows = []
    for strategy in with_own_generators(strategies, seed):
        res = fit(
            params,
            task,
            steps=steps,
            rng=np.random.default_rng([seed, 2]),  # the data order: identical for every strategy
            optimizer=optimizer,
            truncation=strategy,
            batch_size=batch_size,
            activation=activation,
            clip=clip,
            log_every=log_every,
            watch=False,
        )
        hist = res.history
        metrics = np.array([np.nan if r["metric"] is None else r["metric"] for r in hist], dtype=np.float64)
        steps_arr = np.array([r["step"] for r in hist], dtype=np.int64)
        hit = [int(s) for s, m in zip(steps_arr, metrics, strict=True) if reached(m, target, task.higher_is_better)]
        rows.append(
            TrainingRow(
                spec=strategy.spec,
                steps=steps_arr,
                losses=np.array([r["loss"] for r in hist], dtype=np.float64),
                metrics=metrics,
                final_loss=hist[-1]["loss"] if hist else None,
                final_metric=res.final_metric,
                steps_to_target=hit[0] if hit else None,
                diverged_at=res.diverged_at,
                seconds=res.seconds,
            )
        )
    return rows


@dataclass(frozen=True)
class InfluenceSign:
    """A strategy's dL/dtheta at theta_0: mean over draws, its standard error, and the share of
    single draws whose sign agrees with the full gradient's."""

    spec: str
    mean: float
    se: float
    right_sign_share: float
    samples: int


@dataclass(frozen=True)
class InfluenceComparison:
    theta0: float
    full_gradient: float
    theta_opt: float
    statistics: EstimatorReport
    signs: tuple[InfluenceSign, ...]
    runs: tuple[InfluenceRun, ...]


def compare_influence(
    strategies: list[Strategy],
    *,
    seq_len: int,
    batch: int,
    samples: int,
    rng: np.random.Generator,
    steps: int,
    lr: float,
    theta0: float = THETA0,
) -> InfluenceComparison:
    """The influence-balancing comparison (influence.py): statistics of the dL/dtheta estimates at
    theta_0, their signs, and (steps > 0) a gradient-descent run of theta per strategy."""
    system = influence_system()
    x, targets, mask = influence_batch(seq_len, batch)
    u = system.u

    def dtheta(g: Params) -> np.ndarray:
        return np.array([u @ g.W_x[:, 0]])  # W_x = theta u: the chain rule onto theta

    stats = estimator_statistics(
        influence_params(theta0, system),
        x,
        targets,
        strategies,
        rng=rng,
        samples=samples,
        loss="mse",
        activation="identity",
        mask=mask,
        project=dtheta,
    )
    full = theta_gradient(theta0, Strategy("full"), seq_len=seq_len, batch=batch, system=system)[1]
    signs = []
    for s in strategies:
        n = samples if s.stochastic else 1
        draws = np.array(
            [theta_gradient(theta0, s, seq_len=seq_len, batch=batch, rng=rng, system=system)[1] for _ in range(n)]
        )
        se = float(draws.std(ddof=1) / np.sqrt(n)) if n > 1 else 0.0
        signs.append(InfluenceSign(s.spec, float(draws.mean()), se, float(np.mean(np.sign(draws) == np.sign(full))), n))
    # L is quadratic in theta, so the full dL/dtheta is linear: two evaluations give its root
    g0, g1 = (theta_gradient(t, Strategy("full"), seq_len=seq_len, system=system)[1] for t in (0.0, 1.0))
    theta_opt = -g0 / (g1 - g0)
    runs = ()
    if steps > 0:
        runs = tuple(
            train_theta(s, steps=steps, lr=lr, seq_len=seq_len, batch=batch, rng=rng, theta0=theta0, system=system)
            for s in strategies
        )
    return InfluenceComparison(theta0, full, theta_opt, stats, tuple(signs), runs)


def influence_steps_to_target(run: InfluenceRun, theta_opt: float, tol: float) -> int | None:
    """The first step after which theta is within `tol` of the optimum, None if never."""
    close = np.flatnonzero(np.abs(run.thetas[1:] - theta_opt) <= tol)
    return int(close[0]) + 1 if close.size else None


def stat_rows(stats: EstimatorReport) -> list[dict]:
    """The statistics as plain rows for the JSON document."""
    return [
        dict(
            strategy=r.spec,
            samples=r.samples,
            rel_bias=r.rel_bias,
            rel_bias_se=r.rel_bias_se,
            bias_consistent_with_zero=r.bias_consistent,
            bias_slope=bias_slope(r.bias_curve),
            bias_curve=[dict(n=p.n, rel_bias=p.rel_bias, rel_bias_se=p.rel_bias_se) for p in r.bias_curve],
            cosine=r.cosine,
            cosine_of_mean=r.cosine_of_mean,
            rel_std=r.rel_std,
            backward_share=r.backward_share,
            seconds=r.seconds,
        )
        for r in stats.rows
    ]


def verdict(stats: EstimatorReport, learned: list[str] | None) -> dict:
    """Which estimators are unbiased (within 3 standard errors, or exact) and which runs learned."""
    unbiased = [r.spec for r in stats.rows if r.bias_consistent]
    biased = [r.spec for r in stats.rows if not r.bias_consistent]
    msg = f"unbiased: {', '.join(unbiased) or 'none'}; biased: {', '.join(biased) or 'none'}"
    if learned is not None:
        msg += f"; reached the target: {', '.join(learned) or 'none'}"
    return dict(
        basis="estimator statistics at one point" + (" and training" if learned is not None else ""),
        unbiased=unbiased,
        biased=biased,
        reached_target=learned,
        message=msg,
    )


def heavy_tail_note(stats: EstimatorReport, k: int, why: str) -> str:
    """Why a random:P row can fail the 3-standard-error test although the estimator is unbiased."""
    bad = [r for r in stats.rows if r.samples > 1 and not r.bias_consistent]
    if not bad:
        return ""
    p = min(float(r.spec.split(":")[1]) for r in bad)
    return (
        f" {', '.join(b.spec for b in bad)}: unbiased in expectation, but a path of k steps survives with "
        f"probability P^k and then weighs P^-k (P^{k} = {p**k:.2g} for k = {k}, {why}); the rare long paths "
        "that make up the mean were not drawn, so the measured mean and its standard error miss them."
    )
