"""What `bptt compare-truncation` shows."""

from __future__ import annotations

from bptt_cli.analyses.truncation import CompareResult, EstimatorReport
from bptt_cli.cli.output import Output
from bptt_cli.cli.render.common import caption, table, title, verdict_line


def stats_table(o: Output, heading: str, stats: EstimatorReport, note: str) -> None:
    def bias(r) -> str:  # noqa: ANN001
        return f"{r.rel_bias:.3g} ± {r.rel_bias_se:.2g}" if r.samples > 1 else f"{r.rel_bias:.3g}"

    o.show(title(heading))
    o.show(
        table(
            ["strategy", "draws", "rel. bias", "unbiased", "cos", "rel. std", "backward", "ms"],
            [
                [
                    r.spec,
                    r.samples,
                    bias(r),
                    "yes" if r.bias_consistent else "NO",
                    r.cosine,
                    r.rel_std,
                    r.backward_share,
                    1e3 * r.seconds,
                ]
                for r in stats.rows
            ],
        )
    )
    o.show(caption(note))


def render(o: Output, r: CompareResult) -> None:
    c, stats = r.config, r.statistics
    if r.influence is not None:
        _render_influence(o, r)
    else:
        task = r.task
        stats_table(
            o,
            f"gradient estimators on {task.name} (T={r.seq_len}, B={c.batch}, H={r.hidden}) at {r.where}",
            stats,
            f"full BPTT: loss {stats.loss:.4g}, ||g*|| {stats.full_grad_norm:.4g}, {1e3 * stats.full_seconds:.2f} ms. "
            "rel. bias = ||mean g - g*|| / ||g*|| (unbiased: within 3 s.e.); backward = share of full BPTT's "
            "Jacobian-vector products that carry a signal." + (" " + r.note if r.note else ""),
        )
        if r.training:
            o.show(
                title(
                    f"training: {c.steps} steps of {c.optimizer} (lr {c.learning_rate:g}), same start and data for all"
                )
            )
            o.show(
                table(
                    [
                        "strategy",
                        "final loss",
                        f"final {task.metric}",
                        f"steps to {c.target_value:g}",
                        "diverged at",
                        "seconds",
                    ],
                    [
                        [t.spec, t.final_loss, t.final_metric, t.steps_to_target, t.diverged_at, t.seconds]
                        for t in r.training
                    ],
                )
            )
            chance = task.chance
            o.show(
                caption(
                    (f"chance {task.metric}: {chance:.3g}. " if chance is not None else "")
                    + f"held-out {task.metric} on 256 fresh sequences; "
                    f"steps to target at {c.log_every}-step resolution."
                )
            )
    for p in r.plots:
        o.line(f"plot: {p}")
    o.show(verdict_line(r.verdict))


def _render_influence(o: Output, r: CompareResult) -> None:
    c, cmp = r.config, r.influence
    stats_table(
        o,
        f"dL/dtheta estimators, influence balancing (n=23, T={r.seq_len}, B={c.batch}) at theta={cmp.theta0:g}",
        cmp.statistics,
        f"full BPTT: dL/dtheta = {cmp.full_gradient:.4g}; cosine of a scalar = agreement of signs."
        + (" " + r.note if r.note else ""),
    )
    rows = r.influence_rows()
    o.show(title("the gradient's sign at theta_0"))
    o.show(
        table(
            ["strategy", "dL/dtheta", "± s.e.", "sign", "right-sign draws"],
            [
                [
                    x["strategy"],
                    x["dtheta_mean"],
                    x["dtheta_se"] or None,
                    "right" if x["sign_agrees"] else "WRONG",
                    x["right_sign_share"],
                ]
                for x in rows
            ],
        )
    )
    o.show(title(f"{c.steps} steps of gradient descent on theta (lr {c.learning_rate:g})"))
    o.show(
        table(
            ["strategy", "final theta", "final loss", "diverged at", f"steps to ±{c.target_value:g}"],
            [[x["strategy"], x["final_theta"], x["final_loss"], x["diverged_at"], x["steps_to_target"]] for x in rows],
        )
    )
    o.show(
        caption(
            f"optimum theta for T={r.seq_len} from s_0 = 0: {cmp.theta_opt:.4g} (steady state: -1/6). "
            "A window shorter than 41 steps sees only theta's short-range (+) effect on s[0]."
        )
    )
