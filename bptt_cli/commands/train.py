"""`bptt train`: train a small RNN on a built-in task or a text file, watch its gradients while
it learns, and say whether training explodes, vanishes or stays healthy.

The library does the work (tasks.py, optim.py, train.fit, verdict.py, checkpoint.py); this
module parses and validates the options, lays out the run folder (runfiles.py), shows the live
progress bar, turns Ctrl-C into a clean stop, and renders the result.
"""

import time
from pathlib import Path
from typing import Annotated

import numpy as np
import typer
from typer._click.core import ParameterSource

from bptt_cli import optim
from bptt_cli import train as trainlib
from bptt_cli.blas import blas_threads
from bptt_cli.checkpoint import save_checkpoint
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
    usage_error,
)
from bptt_cli.commands.train_report import TrainProgress, metrics_rows, render, results_document, run_summary
from bptt_cli.commands.train_setup import (
    CHECKPOINT_KIND,
    OptimizerName,
    Sampling,
    StopFlag,
    TaskName,
    command_line,
    load_resume,
    parse_fail_on,
    resume_source,
)
from bptt_cli.model import init_params
from bptt_cli.plots.train import training_plots
from bptt_cli.runfiles import CONFIG, METRICS, MODEL, SUMMARY, MetricsLog, discard_folder, prepare_folder, write_json
from bptt_cli.tasks import check_batch_size, make_task, sample_text
from bptt_cli.truncation import SPEC_FORMS, parse_strategy

DEFAULTS = trainlib.DEFAULTS  # the embedded default run (train.py picks it)


@command
def train(
    ctx: typer.Context,
    task: Annotated[TaskName, typer.Option("--task", help="What to learn.")] = TaskName(DEFAULTS["task"]),
    text: Annotated[
        Path | None, typer.Option("--text", dir_okay=False, help="UTF-8 text file for --task text.")
    ] = None,
    sampling: Annotated[
        Sampling, typer.Option("--sampling", help="Text: sequential partitioning (state carried) or random windows.")
    ] = Sampling.sequential,
    sample_len: Annotated[
        int, typer.Option("--sample-len", min=0, help="Text: characters to generate at the end.")
    ] = 200,
    prime: Annotated[str, typer.Option("--prime", help="Text: the start of the generated sample.")] = "",
    delay: Annotated[
        int, typer.Option("--delay", min=1, help="Recall: the target at t is the input at t - d.")
    ] = DEFAULTS["delay"],
    alphabet: Annotated[int, typer.Option("--alphabet", min=2, help="Recall: number of symbols K.")] = DEFAULTS[
        "symbols"
    ],
    truncation: Annotated[
        str, typer.Option("--truncation", help=f"Backward pass while training: {SPEC_FORMS}.")
    ] = DEFAULTS["truncation"],
    optimizer: Annotated[OptimizerName, typer.Option("--optimizer", help="Update rule.")] = OptimizerName(
        DEFAULTS["optimizer"]
    ),
    clip: Annotated[
        float | None, typer.Option("--clip", help="Gradient-norm clipping: g <- g min(1, THETA/||g||) (default: off).")
    ] = DEFAULTS["clip"],
    clip_value: Annotated[
        float | None, typer.Option("--clip-value", help="Element-wise clipping into [-v, v] (min-char-rnn: 5).")
    ] = None,
    init: InitOpt = Init(DEFAULTS["init"]),
    spectral_radius: SpectralRadiusOpt = None,
    activation: ActivationOpt = Activation(DEFAULTS["activation"]),
    hidden: Annotated[int, typer.Option("--hidden", "-H", min=1, help="Hidden size H.")] = DEFAULTS["hidden"],
    seq_len: Annotated[
        int | None, typer.Option("--seq-len", "-T", min=1, help="Sequence length T (default: recall 20, others 50).")
    ] = None,
    batch: Annotated[int, typer.Option("--batch", "-B", min=1, help="Batch size B.")] = DEFAULTS["batch"],
    steps: Annotated[
        int | None, typer.Option("--steps", min=1, help=f"Training steps in total (default: {DEFAULTS['steps']}).")
    ] = None,
    epochs: Annotated[
        float | None, typer.Option("--epochs", help="Text: passes over the training text (instead of --steps).")
    ] = None,
    lr: Annotated[float, typer.Option("--lr", help="Learning rate (> 0).")] = DEFAULTS["lr"],
    dtype: DtypeOpt = Dtype.float64,
    seed: SeedOpt = DEFAULTS["seed"],
    log_every: Annotated[
        int, typer.Option("--log-every", min=1, help="Watch the gradients every this many steps.")
    ] = DEFAULTS["log_every"],
    out: OutOpt = None,
    resume: Annotated[
        Path | None, typer.Option("--resume", help="Continue the run in this folder (its model.npz).")
    ] = None,
    fail_on: Annotated[
        str | None,
        typer.Option("--fail-on", help="Exit with code 3 when the verdict is one of: exploding,vanishing,diverged."),
    ] = None,
    threads: Annotated[
        int,
        typer.Option("--threads", min=1, help="BLAS threads while training (one is fastest for these small matrices)."),
    ] = 1,
    plots: Annotated[bool, typer.Option("--plots/--no-plots", help="Write the figures.")] = True,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Train a vanilla RNN (from scratch, numpy) and watch its gradients: loss, task metric,
    gradient norm, rho(W_h) and how much of the last loss's signal reaches the first step.
    Ends with a verdict (exploding / vanishing / stable / diverged) and its evidence, a
    checkpoint, metrics.jsonl, summary.json and plots under --out."""
    fail_labels = parse_fail_on(fail_on)
    saved, ckpt = load_resume(ctx, resume) if resume is not None else (None, None)
    if saved is not None:
        # the run's settings are the checkpoint's; only the RESUMABLE options are taken anew
        task = TaskName(saved["task"])
        sampling, optimizer = Sampling(saved["sampling"]), OptimizerName(saved["optimizer"])
        init, activation, dtype = Init(saved["init"]), Activation(saved["activation"]), Dtype(saved["dtype"])
        text = None if saved["text"] is None else Path(saved["text"])
        delay, alphabet, truncation, clip = (saved[k] for k in ("delay", "alphabet", "truncation", "clip"))
        clip_value, spectral_radius = saved["clip_value"], saved["spectral_radius"]
        hidden, seq_len = saved["hidden"], saved["seq_len"]
        batch, lr, seed = saved["batch"], saved["lr"], saved["seed"]
        given = {n for n in ctx.params if ctx.get_parameter_source(n) == ParameterSource.COMMANDLINE}
        if "steps" not in given and epochs is None:
            steps = saved["steps"]
        log_every = log_every if "log_every" in given else saved["log_every"]
        sample_len = sample_len if "sample_len" in given else saved["sample_len"]
        prime = prime if "prime" in given else saved["prime"]
        threads = threads if "threads" in given else saved.get("threads", threads)
        if out is None:
            out = resume if resume.is_dir() else resume.parent
    # ---- validate everything before a single file is written
    try:
        strategy = parse_strategy(truncation)
    except ValueError as e:
        usage_error("--truncation", str(e))
    if not (np.isfinite(lr) and lr > 0):
        usage_error("--lr", f"must be a positive number; got {lr}")
    for name, value in (("--clip", clip), ("--clip-value", clip_value)):
        if value is not None and not (np.isfinite(value) and value > 0):
            usage_error(name, f"must be a positive number; got {value}")
    if text is not None and task != TaskName.text:
        usage_error("--text", "is only used by --task text")
    if steps is not None and epochs is not None and ctx.get_parameter_source("steps") == ParameterSource.COMMANDLINE:
        usage_error("--epochs", "give --steps or --epochs, not both")
    the_task = make_task(
        task.value,
        seq_len=seq_len,
        symbols=alphabet,
        delay=delay,
        text=text,
        sampling=sampling.value,
    )
    check_batch_size(the_task, batch)
    if epochs is not None:
        if task != TaskName.text:
            usage_error("--epochs", "needs --task text (the synthetic tasks draw new data every step: use --steps)")
        if not (np.isfinite(epochs) and epochs > 0):
            usage_error("--epochs", f"must be a positive number; got {epochs}")
        per_epoch = max(1, (len(the_task.corpus.train_ids) - 1) // batch // the_task.seq_len)
        steps = max(1, int(round(epochs * per_epoch)))
    total = DEFAULTS["steps"] if steps is None else steps
    opt = optim.Optimizer(optimizer.value, lr)

    config = dict(
        task=task.value,
        text=None if text is None else str(text),
        sampling=sampling.value,
        sample_len=sample_len,
        prime=prime,
        delay=delay,
        alphabet=alphabet,
        truncation=strategy.spec,
        optimizer=optimizer.value,
        clip=clip,
        clip_value=clip_value,
        init=init.value,
        spectral_radius=spectral_radius,
        activation=activation.value,
        hidden=hidden,
        seq_len=the_task.seq_len,
        batch=batch,
        steps=total,
        epochs=epochs,
        lr=lr,
        dtype=dtype.value,
        seed=seed,
        log_every=log_every,
        out=None,
        resume=None if resume is None else str(resume),
        fail_on=",".join(fail_labels) or None,
        plots=plots,
        threads=threads,
        command_line=command_line(ctx),
    )
    if prime and the_task.name == "text":
        the_task.corpus.encode(prime)  # ValueError naming the characters not in the vocabulary
    rng = np.random.default_rng(seed)
    if ckpt is None:
        params = init_params(
            rng,
            input_size=the_task.input_size,
            hidden_size=hidden,
            output_size=the_task.output_size,
            init=init.value,
            spectral_radius=spectral_radius,
            dtype=dtype.value,
        )
        state = None
    else:
        meta = ckpt.config["train_state"]
        state = trainlib.TrainState.from_checkpoint(ckpt.params, opt, ckpt.extras, meta)
        params = state.params
        if state.step >= total:
            usage_error("--steps", f"the checkpoint has done {state.step} steps already; ask for more than that")

    # ---- the run folder: refuse to overwrite another run's checkpoint
    folder, created = prepare_folder(out if out is not None else Path("runs") / f"train-{_stamp()}")
    config["out"] = str(folder)
    source = None if resume is None else resume_source(resume).parent  # the folder resumed from
    same_folder = source is not None and folder.resolve() == source.resolve()
    if not same_folder and (folder / MODEL).exists():
        discard_folder(folder, created, names=())
        raise ValueError(f"--out {folder}: already holds a training run (model.npz); use another folder or --resume")
    try:
        write_json(folder / CONFIG, config)
        log = MetricsLog(
            folder / METRICS,
            keep_until=None if state is None else state.step,
            source=None if same_folder or source is None else source / METRICS,
        )
    except BaseException:
        if not same_folder:
            discard_folder(folder, created)
        raise

    o = Output(json, quiet)
    rows_written = 0

    def on_row(row: dict) -> None:
        nonlocal rows_written
        log.write(row)
        rows_written += 1
        progress.update(row)

    start = 0 if state is None else state.step
    # Ctrl-C from here on only sets a flag: training stops after its step, and the checkpoint,
    # the plots and the summary are still written in full (a second Ctrl-C aborts).
    with StopFlag() as stop:
        with log, blas_threads(threads), TrainProgress(o, total, the_task.metric, start=start) as progress:
            try:
                result = trainlib.fit(
                    params,
                    the_task,
                    steps=total,
                    rng=rng,
                    optimizer=opt,
                    truncation=strategy,
                    batch_size=batch,
                    activation=activation.value,
                    clip=clip,
                    clip_value=clip_value,
                    log_every=log_every,
                    resume=state,
                    callback=on_row,
                    should_stop=stop,
                )
            except ValueError:
                if not same_folder and rows_written == 0:  # rejected before training: leave nothing behind
                    log.close()
                    discard_folder(folder, created)
                raise
            progress.finish(result.state.step)

        # ---- save: the parameters are the last finite ones, never NaN
        arrays, meta = result.state.to_checkpoint()
        ckpt_config = {"kind": CHECKPOINT_KIND, "options": config, "train_state": meta}
        save_checkpoint(folder / MODEL, result.state.params, ckpt_config, extras=arrays)
        verdict = result.verdict.as_dict()
        written = []
        if plots:
            written = training_plots(
                folder,
                metrics_rows(folder),
                metric=the_task.metric,
                clip=clip,
                chance=the_task.chance,
                diverged_at=result.diverged_at,
                events=result.events,
            )
        summary = run_summary(result, the_task, config, folder, plots=written)
        sample = None
        if the_task.name == "text" and sample_len > 0:
            # its own generator: sampling never touches the training generator saved for --resume
            sample_rng = np.random.default_rng([seed, result.state.step])
            sample = sample_text(
                result.params, the_task, sample_rng, prime=prime, length=sample_len, activation=activation.value
            )
            summary["sample"] = sample
        doc = results_document(config, summary, verdict)
        write_json(folder / SUMMARY, doc)
    render(o, doc, sample)
    o.emit(doc)
    if result.stopped:
        raise typer.Exit(130)  # Ctrl-C: everything is saved, but the run did not finish
    if verdict["label"] in fail_labels:
        raise typer.Exit(3)


def _stamp() -> str:
    return time.strftime("%Y%m%d-%H%M%S")
