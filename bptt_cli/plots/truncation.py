"""The figures of `bptt compare-truncation`: bias against cost, cosine per strategy, learning
curves, and for the influence problem the theta trajectories and gradient signs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from bptt_cli.plots import pyplot, save


def _colors(n: int) -> list:
    plt = pyplot()
    cmap = plt.get_cmap("tab10")
    return [cmap(i % 10) for i in range(n)]


def bias_cost_plot(path: Path, rows: list, *, what: str = "gradient") -> Path:
    """Left: relative bias against backward share, error bars 3 standard errors. Right: the bias of
    the running mean of each random strategy against the number of draws, with n^-1/2 guides, and
    the fixed biases of the deterministic strategies as horizontal lines."""
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    colors = _colors(len(rows))
    for r, c in zip(rows, colors, strict=True):
        ax.errorbar(r.backward_share, r.rel_bias, yerr=3 * r.rel_bias_se, fmt="o", color=c, capsize=4, label=r.spec)
        ax.annotate(r.spec, (r.backward_share, r.rel_bias), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.set_xlabel("share of full BPTT's backward Jacobian-vector products")
    ax.set_ylabel(f"relative bias ||E[g] - g*|| / ||g*||  ({what})")
    ax.set_title("bias against cost (error bars: 3 standard errors)")
    ax.grid(True, alpha=0.3)
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    n_max = max([p.n for r in rows for p in r.bias_curve] or [2])
    for r, c in zip(rows, colors, strict=True):
        if r.bias_curve:
            n = np.array([p.n for p in r.bias_curve], dtype=np.float64)
            b = np.array([p.rel_bias for p in r.bias_curve])
            se = np.array([p.rel_bias_se for p in r.bias_curve])
            ax2.loglog(n, b, "o-", color=c, label=f"{r.spec} (bias of the mean)")
            ax2.loglog(n, se, ":", color=c, label=f"{r.spec} standard error ~ n^-1/2")
        elif r.rel_bias > 0:
            ax2.axhline(r.rel_bias, color=c, linestyle="--", label=f"{r.spec} (fixed)")
    ax2.set_xlim(1.5, n_max * 1.5)
    ax2.set_xlabel("draws n")
    ax2.set_ylabel("relative bias")
    ax2.set_title("random: falls like 1/sqrt(n); chunk: stays")
    ax2.grid(True, which="both", alpha=0.3)
    if ax2.get_legend_handles_labels()[0]:
        ax2.legend(fontsize=7)
    fig.tight_layout()
    return save(fig, path)


def cosine_plot(path: Path, rows: list, *, what: str = "gradient") -> Path:
    """Bars: mean cosine of a single draw with g*, and the cosine of the mean of the draws."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4))
    idx = np.arange(len(rows))
    ax.bar(idx - 0.2, [r.cosine for r in rows], width=0.4, label="single draw (mean)")
    ax.bar(idx + 0.2, [r.cosine_of_mean for r in rows], width=0.4, label="mean of the draws")
    ax.axhline(1.0, color="grey", linewidth=0.8)
    ax.set_xticks(idx, [r.spec for r in rows])
    lo = min([0.0] + [r.cosine for r in rows])
    ax.set_ylim(lo - 0.05, 1.05)
    ax.set_ylabel(f"cosine with the full {what}")
    ax.set_title("alignment with full BPTT")
    ax.grid(True, axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return save(fig, path)


def learning_curves_plot(
    path: Path, rows: list, *, metric: str, target: float | None = None, chance: float | None = None
) -> Path:
    """Training loss and held-out metric against step, one line per strategy."""
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for r, c in zip(rows, _colors(len(rows)), strict=True):
        ax.plot(r.steps, r.losses, color=c, label=r.spec)
        ok = np.isfinite(r.metrics)
        ax2.plot(r.steps[ok], r.metrics[ok], color=c, label=r.spec)
    ax.set_xlabel("step")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.set_title("learning curves: loss")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    if chance is not None:
        ax2.axhline(chance, color="grey", linestyle=":", label=f"chance {chance:.3g}")
    if target is not None:
        ax2.axhline(target, color="black", linestyle="--", linewidth=0.8, label=f"target {target:g}")
    ax2.set_xlabel("step")
    ax2.set_ylabel(f"held-out {metric}")
    ax2.set_title(f"learning curves: {metric}")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def theta_plot(path: Path, runs: list, *, theta_opt: float, limit: float = 5.0) -> Path:
    """theta against step per strategy (clipped to +-limit for display; diverged runs end with x)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for r, c in zip(runs, _colors(len(runs)), strict=True):
        th = np.clip(r.thetas, -limit, limit)
        ax.plot(
            np.arange(th.size),
            th,
            color=c,
            zorder=3 if r.spec == "full" else 2,  # the exact run on top of the noisy ones
            label=r.spec + (f" (diverged at {r.diverged_at})" if r.diverged_at is not None else ""),
        )
        if r.diverged_at is not None or abs(r.thetas[-1]) > limit:
            ax.plot(th.size - 1, th[-1], "x", color=c)
    ax.axhline(theta_opt, color="black", linestyle="--", linewidth=0.8, label=f"optimum {theta_opt:.3g}")
    ax.set_xlabel("step")
    ax.set_ylabel(f"theta (clipped to +-{limit:g})")
    ax.set_title("influence balancing: theta under each gradient estimate")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def sign_plot(path: Path, signs: list, *, full: float) -> Path:
    """Left: mean dL/dtheta at theta_0 per strategy with 3 standard-error bars (symlog). Right: the
    share of single draws whose sign agrees with the full gradient."""
    plt = pyplot()
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    idx = np.arange(len(signs))
    colors = ["tab:green" if np.sign(s.mean) == np.sign(full) else "tab:red" for s in signs]
    ax.bar(idx, [s.mean for s in signs], yerr=[3 * s.se for s in signs], color=colors, capsize=4)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_yscale("symlog", linthresh=1.0)
    ax.set_xticks(idx, [s.spec for s in signs])
    ax.set_ylabel("dL/dtheta at theta_0 (mean of draws)")
    ax.set_title("gradient sign (green: same as full BPTT)")
    ax.grid(True, axis="y", alpha=0.3)
    ax2.bar(idx, [s.right_sign_share for s in signs], color=colors)
    ax2.axhline(0.5, color="grey", linestyle=":")
    ax2.set_xticks(idx, [s.spec for s in signs])
    ax2.set_ylim(0, 1.05)
    ax2.set_ylabel("share of single draws with the right sign")
    ax2.set_title("what one step sees")
    ax2.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    return save(fig, path)


def compare_plots(folder: Path, result: Any) -> list[Path]:
    """The figures of an analyses.truncation result, written into `folder`."""
    rows = list(result.statistics.rows)
    cmp = result.influence
    if cmp is not None:
        paths = [
            bias_cost_plot(folder / "bias-cost.png", rows, what="dL/dtheta"),
            sign_plot(folder / "gradient-signs.png", list(cmp.signs), full=cmp.full_gradient),
        ]
        if cmp.runs:
            paths.append(theta_plot(folder / "theta.png", list(cmp.runs), theta_opt=cmp.theta_opt))
        return paths
    paths = [bias_cost_plot(folder / "bias-cost.png", rows), cosine_plot(folder / "cosine.png", rows)]
    if result.training:
        c = result.config
        paths.append(
            learning_curves_plot(
                folder / "learning-curves.png",
                list(result.training),
                metric=result.task.metric,
                target=c.target_value,
                chance=result.task.chance,
            )
        )
    return paths
