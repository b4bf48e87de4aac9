"""`bptt compare-truncation`: bias, spread and cost of full, regular and randomized truncation,
and what each does to training (or, with --task influence, to the sign of the gradient)."""

from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from bptt_cli.cli import (
    Activation,
    ActivationOpt,
    Dtype,
    DtypeOpt,
    Init,
    InitOpt,
    JsonOpt,
    OutOpt,
    Output,
    QuietOpt,
    SeedOpt,
    SpectralRadiusOpt,
    command,
    out_dir,
    usage_error,
)
from bptt_cli.plots.truncation import bias_cost_plot, cosine_plot, learning_curves_plot, sign_plot, theta_plot
from bptt_cli.report import document, table
from bptt_cli.truncation import SPEC_FORMS, estimator_statistics, parse_strategies
from bptt_cli.truncation_compare import heavy_tail_note, stat_rows, verdict

DEFAULT_STRATEGIES = "full,chunk:5,chunk:20,random:0.9,random:0.5"
DEFAULT_SEQ_LEN = {"recall": 30, "influence": 200}  # others: the task's own default
DEFAULT_TARGET = {"recall": 0.9, "adding": 0.05, "sine": 0.05, "influence": 0.01}
DEFAULT_LR = {"influence": 0.01}  # others: 0.01 for Adam


class TruncTask(str, Enum):
    recall = "recall"
    adding = "adding"
    sine = "sine"
    influence = "influence"


class OptimizerName(str, Enum):
    adam = "adam"
    sgd = "sgd"
    momentum = "momentum"
    adagrad = "adagrad"


def stats_table(title: str, stats, caption: str):
    def bias(r) -> str:
        return f"{r.rel_bias:.3g} ± {r.rel_bias_se:.2g}" if r.samples > 1 else f"{r.rel_bias:.3g}"

    return table(
        title,
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
        caption=caption,
    )


@command
def compare_truncation(
    strategies: Annotated[
        str, typer.Option("--strategies", "-s", help=f"Comma-separated truncation specs: {SPEC_FORMS}.")
    ] = DEFAULT_STRATEGIES,
    task: Annotated[
        TruncTask,
        typer.Option(
            "--task",
            help="recall/adding/sine (an RNN task) or influence (Tallec & Ollivier's linear system; "
            "the network options do not apply to it).",
        ),
    ] = TruncTask.recall,
    seq_len: Annotated[
        int | None, typer.Option("--seq-len", "-T", min=1, help="T [default: recall 30, influence 200, else task's].")
    ] = None,
    delay: Annotated[
        int, typer.Option("--delay", min=1, help="recall: the target is the input this many steps back.")
    ] = 10,
    symbols: Annotated[int, typer.Option("--symbols", min=2, help="recall: alphabet size (chance = 1/symbols).")] = 8,
    batch: Annotated[
        int, typer.Option("--batch", "-B", min=1, help="Batch size B (influence: copies of the sequence).")
    ] = 32,
    hidden: Annotated[int, typer.Option("--hidden", "-H", min=1, help="Hidden size H of a fresh network.")] = 32,
    activation: ActivationOpt = Activation.tanh,
    init: InitOpt = Init.orthogonal,
    spectral_radius: SpectralRadiusOpt = None,
    dtype: DtypeOpt = Dtype.float64,
    checkpoint: Annotated[
        Path | None,
        typer.Option("--checkpoint", dir_okay=False, help="Start from these parameters (bptt train's .npz)."),
    ] = None,
    samples: Annotated[int, typer.Option("--samples", "-n", help="Draws per random strategy (at least 2).")] = 200,
    train_steps: Annotated[
        int, typer.Option("--train-steps", min=0, help="Training steps per strategy; 0 skips the training comparison.")
    ] = 400,
    optimizer: Annotated[
        OptimizerName, typer.Option("--optimizer", help="Optimiser (RNN tasks).")
    ] = OptimizerName.adam,
    lr: Annotated[float | None, typer.Option("--lr", min=0.0, help="Learning rate [default: 0.01].")] = None,
    clip: Annotated[float | None, typer.Option("--clip", min=0.0, help="Gradient-norm clip (RNN tasks).")] = 1.0,
    target: Annotated[
        float | None,
        typer.Option(
            "--target",
            help="Steps to reach it: recall accuracy 0.9, adding/sine mse 0.05, influence |theta - opt| 0.01.",
        ),
    ] = None,
    log_every: Annotated[int, typer.Option("--log-every", min=1, help="Learning-curve resolution in steps.")] = 10,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Compare full BPTT, regular truncation (chunk:K) and randomized truncation (random:P): each
    estimator's bias against the full gradient (with its standard error), its cosine, spread and
    share of backward work at one parameter point, then training with each. --task influence shows
    the influence-balancing problem, where short truncation gets the sign of the gradient wrong."""
    try:
        specs = parse_strategies(strategies)
    except ValueError as e:
        usage_error("--strategies", str(e))
    if any(s.stochastic for s in specs) and samples < 2:
        usage_error(
            "--samples", f"must be at least 2 with a random strategy (a standard error needs two draws); got {samples}"
        )
    if samples < 1:
        usage_error("--samples", f"must be at least 1; got {samples}")
    if task == TruncTask.influence and checkpoint is not None:
        usage_error("--checkpoint", "does not apply to --task influence (its one parameter theta starts at 0.5)")
    T = seq_len if seq_len is not None else DEFAULT_SEQ_LEN.get(task.value)
    lr_value = lr if lr is not None else DEFAULT_LR.get(task.value, 0.01)
    if lr_value <= 0:
        usage_error("--lr", f"must be positive; got {lr_value}")
    target_value = target if target is not None else DEFAULT_TARGET[task.value]
    config = dict(
        strategies=[s.spec for s in specs],
        task=task.value,
        seq_len=T,
        delay=delay,
        symbols=symbols,
        batch=batch,
        hidden=hidden,
        activation=activation.value,
        init=init.value,
        spectral_radius=spectral_radius,
        dtype=dtype.value,
        checkpoint=str(checkpoint) if checkpoint is not None else None,
        samples=samples,
        train_steps=train_steps,
        optimizer=optimizer.value,
        lr=lr_value,
        clip=clip,
        target=target_value,
        log_every=log_every,
        seed=seed,
    )
    o = Output(json, quiet)
    runner = run_influence if task == TruncTask.influence else run_task
    results, verdict = runner(o, specs, config, out)
    o.emit(document("compare-truncation", config, results, verdict=verdict))


def run_task(o: Output, specs: list, config: dict, out: Path | None) -> tuple[dict, dict]:
    """recall / adding / sine: estimator statistics at one point, then training with train.fit."""
    from bptt_cli.model import init_params
    from bptt_cli.optim import Optimizer
    from bptt_cli.tasks import make_task, sample_batch
    from bptt_cli.truncation_compare import compare_training

    c = config
    task = make_task(c["task"], seq_len=c["seq_len"], symbols=c["symbols"], delay=c["delay"])
    c["seq_len"] = task.seq_len
    if c["checkpoint"] is not None:
        from bptt_cli.checkpoint import load_checkpoint

        params = load_checkpoint(c["checkpoint"]).params.astype(np.dtype(c["dtype"]))
        if (params.input_size, params.output_size) != (task.input_size, task.output_size):
            raise ValueError(
                f"--checkpoint {c['checkpoint']}: the model has input/output sizes {params.input_size}/"
                f"{params.output_size} but the {task.name} task needs {task.input_size}/{task.output_size}"
            )
    else:
        params = init_params(
            np.random.default_rng([c["seed"], 0]),
            input_size=task.input_size,
            hidden_size=c["hidden"],
            output_size=task.output_size,
            init=c["init"],
            spectral_radius=c["spectral_radius"],
            dtype=c["dtype"],
        )
    batch = sample_batch(task, np.random.default_rng([c["seed"], 1]), c["batch"])[0]
    stats = estimator_statistics(
        params,
        batch.x,
        batch.targets,
        specs,
        rng=np.random.default_rng([c["seed"], 3]),
        samples=c["samples"],
        loss=task.loss,
        activation=c["activation"],
        mask=batch.mask,
    )
    where = "a checkpoint" if c["checkpoint"] else f"a fresh {c['init']} initialisation"
    o.show(
        stats_table(
            f"gradient estimators on {task.name} (T={task.seq_len}, B={c['batch']}, H={params.hidden_size}) at {where}",
            stats,
            f"full BPTT: loss {stats.loss:.4g}, ||g*|| {stats.full_grad_norm:.4g}, {1e3 * stats.full_seconds:.2f} ms. "
            "rel. bias = ||mean g - g*|| / ||g*|| (unbiased: within 3 s.e.); backward = share of full BPTT's "
            "Jacobian-vector products that carry a signal."
            + heavy_tail_note(
                stats,
                task.delay if task.name == "recall" else task.seq_len,
                "the delay" if task.name == "recall" else "T",
            ),
        )
    )
    results: dict = {"loss": stats.loss, "full_grad_norm": stats.full_grad_norm, "statistics": stat_rows(stats)}
    folder = out_dir(out, "compare-truncation")
    plots = [
        bias_cost_plot(folder / "bias-cost.png", list(stats.rows)),
        cosine_plot(folder / "cosine.png", list(stats.rows)),
    ]
    learned: list[str] = []
    if c["train_steps"] > 0:
        rows = compare_training(
            params,
            task,
            specs,
            steps=c["train_steps"],
            seed=c["seed"],
            optimizer=Optimizer(c["optimizer"], lr=c["lr"]),
            batch_size=c["batch"],
            activation=c["activation"],
            clip=c["clip"],
            log_every=c["log_every"],
            target=c["target"],
        )
        learned = [r.spec for r in rows if r.steps_to_target is not None]
        chance = task.chance
        o.show(
            table(
                f"training: {c['train_steps']} steps of {c['optimizer']} (lr {c['lr']:g}), same start and data for all",
                [
                    "strategy",
                    "final loss",
                    f"final {task.metric}",
                    f"steps to {c['target']:g}",
                    "diverged at",
                    "seconds",
                ],
                [[r.spec, r.final_loss, r.final_metric, r.steps_to_target, r.diverged_at, r.seconds] for r in rows],
                caption=(f"chance {task.metric}: {chance:.3g}. " if chance is not None else "")
                + f"held-out {task.metric} on 256 fresh sequences; "
                f"steps to target at {c['log_every']}-step resolution.",
            )
        )
        results["training"] = [
            dict(
                strategy=r.spec,
                final_loss=r.final_loss,
                final_metric=r.final_metric,
                steps_to_target=r.steps_to_target,
                diverged_at=r.diverged_at,
                seconds=r.seconds,
                curve=dict(step=r.steps, loss=r.losses, metric=r.metrics),
            )
            for r in rows
        ]
        results["metric"] = task.metric
        results["chance"] = chance
        plots.append(
            learning_curves_plot(
                folder / "learning-curves.png", rows, metric=task.metric, target=c["target"], chance=chance
            )
        )
    results["plots"] = [str(p) for p in plots]
    o.show("plots: " + ", ".join(str(p) for p in plots))
    return results, verdict(stats, learned if c["train_steps"] > 0 else None)


def run_influence(o: Output, specs: list, config: dict, out: Path | None) -> tuple[dict, dict]:
    """Influence balancing: dL/dtheta estimates at theta_0 and gradient descent on theta."""
    from bptt_cli.truncation_compare import compare_influence, influence_steps_to_target

    c = config
    cmp = compare_influence(
        specs,
        seq_len=c["seq_len"],
        batch=c["batch"],
        samples=c["samples"],
        rng=np.random.default_rng([c["seed"], 3]),
        steps=c["train_steps"],
        lr=c["lr"],
    )
    stats = cmp.statistics
    o.show(
        stats_table(
            f"dL/dtheta estimators, influence balancing (n=23, T={c['seq_len']}, B={c['batch']}) "
            f"at theta={cmp.theta0:g}",
            stats,
            f"full BPTT: dL/dtheta = {cmp.full_gradient:.4g}; cosine of a scalar = agreement of signs."
            + heavy_tail_note(stats, 41, "the shortest window that sees the long-range effect"),
        )
    )
    runs = {r.spec: r for r in cmp.runs}
    rows = []
    for s in cmp.signs:
        r = runs.get(s.spec)
        rows.append(
            dict(
                strategy=s.spec,
                dtheta_mean=s.mean,
                dtheta_se=s.se,
                sign_agrees=bool(np.sign(s.mean) == np.sign(cmp.full_gradient)),
                right_sign_share=s.right_sign_share,
                final_theta=None if r is None else float(r.thetas[-1]),
                final_loss=None if r is None else float(r.losses[-1]),
                diverged_at=None if r is None else r.diverged_at,
                steps_to_target=None if r is None else influence_steps_to_target(r, cmp.theta_opt, c["target"]),
                seconds=None if r is None else r.seconds,
                theta_trajectory=None if r is None else r.thetas,
            )
        )
    o.show(
        table(
            f"gradient sign at theta_0 and {c['train_steps']} steps of gradient descent on theta (lr {c['lr']:g})",
            [
                "strategy",
                "dL/dtheta",
                "± s.e.",
                "sign",
                "right-sign draws",
                "final theta",
                "final loss",
                "diverged at",
                f"steps to ±{c['target']:g}",
            ],
            [
                [
                    r["strategy"],
                    r["dtheta_mean"],
                    r["dtheta_se"] or None,
                    "right" if r["sign_agrees"] else "WRONG",
                    r["right_sign_share"],
                    r["final_theta"],
                    r["final_loss"],
                    r["diverged_at"],
                    r["steps_to_target"],
                ]
                for r in rows
            ],
            caption=f"optimum theta for T={c['seq_len']} from s_0 = 0: {cmp.theta_opt:.4g} (steady state: -1/6). "
            "A window shorter than 41 steps sees only theta's short-range (+) effect on s[0].",
        )
    )
    folder = out_dir(out, "compare-truncation")
    plots = [
        bias_cost_plot(folder / "bias-cost.png", list(stats.rows), what="dL/dtheta"),
        sign_plot(folder / "gradient-signs.png", list(cmp.signs), full=cmp.full_gradient),
    ]
    if cmp.runs:
        plots.append(theta_plot(folder / "theta.png", list(cmp.runs), theta_opt=cmp.theta_opt))
    o.show("plots: " + ", ".join(str(p) for p in plots))
    results = dict(
        theta0=cmp.theta0,
        full_dtheta=cmp.full_gradient,
        theta_opt=cmp.theta_opt,
        statistics=stat_rows(stats),
        strategies=rows,
        plots=[str(p) for p in plots],
    )
    learned = [r["strategy"] for r in rows if r["steps_to_target"] is not None] if cmp.runs else None
    v = verdict(stats, learned)
    v["wrong_sign"] = [r["strategy"] for r in rows if not r["sign_agrees"]]
    return results, v
