"""The training loop: one `fit`, which reports through a callback and never prints.

Each step draws a batch from the task, computes the loss and the exact (or truncated)
gradient with the cell's `gradients(propagate=xi)`, clips, and takes an optimiser step. Every
`log_every` steps it also watches the gradients (watch.py): the global gradient norm before
clipping, rho(W_h) by warm-started power iteration, the share of the last loss's signal that
reaches the start of the sequence, and log ||dL/dh_t|| per time step. A non-finite loss or
gradient stops training at once; the parameters of the last finite step are kept.

Everything needed to continue bit-identically is in TrainState, which `fit` returns and
accepts (`resume=`); `TrainState.to_checkpoint` / `from_checkpoint` turn it into arrays and
JSON for io.checkpoint.save_checkpoint's extras and config.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from bptt_cli.analyses.tasks import Batch, Task, check_batch_size, evaluate, heldout_batch, sample_batch
from bptt_cli.analyses.training import optim
from bptt_cli.analyses.training.events import detect_events
from bptt_cli.analyses.training.state import TrainState, initial_state
from bptt_cli.analyses.training.watch import Watcher, final_trace, watch_row
from bptt_cli.core.activations import Activation
from bptt_cli.core.bptt import NonFiniteError
from bptt_cli.core.cells import Cell, as_cell
from bptt_cli.core.eigen import dense_spectral_radius
from bptt_cli.core.rnn import Params
from bptt_cli.core.signal import SignalTrace
from bptt_cli.core.truncation import Strategy, propagate_weights
from bptt_cli.core.validate import check_float, check_positive_int
from bptt_cli.core.verdict import DEFAULT_TOL, Verdict, judge_signal, judge_training

HELDOUT_SEED = 20130211  # the held-out data come from their own generator, never the training one


@dataclass(frozen=True)
class FitResult:
    """What `fit` returns.

    cell : the final model (the last finite parameters if training diverged)
    state : the TrainState to resume from
    history : one dict per logged step (see watch.watch_row for the keys)
    events : spikes, vanishing stretches and divergence, in order
    diverged_at : the step whose loss or gradient was not finite, or None
    stopped : True when `should_stop` ended the run early
    final_metric : the task metric of `params` on the held-out batch
    final_rho : rho(W_h) of the final model (LAPACK eigenvalues, the reference), None for a cell
        without one recurrent matrix
    final_trace : core.signal trace of the final model on held-out sequences, None if it overflowed
    verdict : core.verdict.judge_training's Verdict on the run
    seconds : wall time of this call
    """

    cell: Cell
    state: TrainState
    history: list[dict]
    events: list[dict]
    diverged_at: int | None
    stopped: bool
    final_metric: float | None
    final_rho: float | None
    final_trace: SignalTrace | None
    verdict: Verdict
    seconds: float

    @property
    def steps_done(self) -> int:
        return self.state.step

    @property
    def params(self) -> Any:
        return self.cell.params


def _finite(params: Any) -> bool:
    return all(bool(np.all(np.isfinite(v))) for v in params.as_dict().values())


def fit(
    model: Params | Cell,
    task: Task,
    *,
    steps: int,
    rng: np.random.Generator,
    optimizer: optim.Optimizer | None = None,
    truncation: Strategy | None = None,
    batch_size: int = 32,
    activation: str | Activation | None = None,
    clip: float | None = None,
    clip_value: float | None = None,
    log_every: int = 10,
    eval_every: int | None = None,
    heldout: Batch | None = None,
    watch: bool = True,
    power_iters: int = 5,
    watch_sequences: int = 1,
    spike_factor: float = 10.0,
    spike_window: int = 50,
    vanish_ratio: float = 1e-3,
    vanish_steps: int = 100,
    verdict_tol: float = DEFAULT_TOL,
    eps: float = 1e-3,
    resume: TrainState | None = None,
    callback: Callable[[dict], None] | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> FitResult:
    """Train `model` on `task` for `steps` updates in total (counting those already in `resume`).

    Parameters
    ----------
    model : a Cell, or vanilla RNN Params with `activation` (default tanh); the initial model
        (when `resume` is given, its parameters replace the model's)
    task : Task from tasks.make_task; its input/output sizes must match the params
    steps : total number of updates (a resumed run continues up to it)
    rng : the training generator (data and random truncation). It is consumed; with
        `resume`, its state is first set to the saved one (and so is the state of the
        strategy's own `xi_rng`, when it has one).
    optimizer : optim.Optimizer, default Adam with lr 1e-2
    truncation : truncation.Strategy, default full BPTT
    batch_size : B
    clip : gradient-norm threshold theta (g <- g min(1, theta/||g||)), None = off
    clip_value : element-wise clip to [-v, v] after the norm clip, None = off
    log_every : watch and report every this many steps (and at the last step)
    eval_every : held-out metric every this many steps (default log_every); rows in between
        carry metric None. The metric costs a forward pass over the held-out batch.
    heldout : the held-out Batch; default 256 sequences from a generator seeded HELDOUT_SEED
        (for text: windows of the file's held-out tail)
    watch : compute rho, start fraction and per-step adjoint norms at log steps
    power_iters : iteration budget per log step for rho (Krylov, warm-started: ~0.4 ms at H = 128;
        after a few log steps it tracks rho to ~1e-5 while W_h drifts slowly)
    watch_sequences : sequences of the batch traced for the start fraction (a monitor: the final
        verdict traces 32 held-out sequences)
    spike_factor, spike_window : a spike is a norm above spike_factor x the median of the
        last spike_window norms
    vanish_ratio, vanish_steps : a vanishing stretch is vanish_steps consecutive norms below
        vanish_ratio x the median norm of the first spike_window steps
    verdict_tol, eps : the final verdict's band around a gain of 1 and its net-change threshold
    resume : a TrainState from an earlier fit (or TrainState.from_checkpoint)
    callback : called with each history row as it is made, and with {"step", "event"} for each
        event (the train command writes metrics.jsonl from it)
    should_stop : polled before every step; True stops cleanly (e.g. after Ctrl-C)

    Returns
    -------
    FitResult. Training that diverges does not raise: diverged_at says where, and the
    parameters are the last finite ones.
    """
    cell = as_cell(model, activation)
    opt = optimizer if optimizer is not None else optim.Optimizer()
    strategy = truncation if truncation is not None else Strategy("full")
    total = check_positive_int("--steps", steps)
    B = check_batch_size(task, batch_size)
    log_every = check_positive_int("--log-every", log_every)
    eval_every = log_every if eval_every is None else check_positive_int("eval_every", eval_every)
    check_positive_int("power_iters", power_iters)
    check_positive_int("watch_sequences", watch_sequences)
    check_positive_int("spike_window", spike_window)
    check_positive_int("vanish_steps", vanish_steps)
    if not (spike_factor > 1 and 0 < vanish_ratio < 1):
        raise ValueError(f"`spike_factor` must be > 1 and `vanish_ratio` in (0, 1); got {spike_factor}, {vanish_ratio}")
    optim.check_clip("--clip", clip)
    optim.check_clip("--clip-value", clip_value)
    check_float("--verdict-tol", verdict_tol, lo=0.0, hi=1.0, hi_open=True)
    check_float("--eps", eps, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    if resume is None:
        state = initial_state(cell.params, opt, rng)
    else:
        state = resume
        if set(optim.SLOTS[opt.name]) != set(state.opt.slots):
            raise ValueError(f"the saved optimiser state does not belong to `optimizer` {opt.name!r}")
        rng.bit_generator.state = state.rng_state
        if state.xi_rng_state is not None and strategy.xi_rng is not None:
            strategy.xi_rng.bit_generator.state = state.xi_rng_state
    cell = cell.with_params(state.params)
    if (cell.input_size, cell.output_size) != (task.input_size, task.output_size):
        raise ValueError(
            f"the model has input/output sizes {cell.input_size}/{cell.output_size} but the task "
            f"{task.name!r} needs {task.input_size}/{task.output_size}"
        )
    if heldout is None:
        heldout = heldout_batch(task, np.random.default_rng(HELDOUT_SEED))
    watcher = Watcher(power_iters=power_iters, sequences=watch_sequences, loss=task.loss)
    T, dtype = task.seq_len, cell.dtype

    history: list[dict] = []
    diverged_at = None
    stopped = False
    start = time.perf_counter()
    while state.step < total:
        if should_stop is not None and should_stop():
            stopped = True
            break
        n = state.step + 1
        batch, position = sample_batch(task, rng, B, state.position)
        xi = propagate_weights(strategy, T, B, rng, dtype)  # (T, B) or None
        h0 = state.h if task.stateful and not batch.reset else None
        try:
            g = cell.gradients(batch.x, batch.targets, loss=task.loss, mask=batch.mask, h0=h0, propagate=xi)
        except NonFiniteError:
            g = None
        if g is not None:
            grads, norm, clipped = optim.clip_by_norm(g.grads, clip)
            grads, vclipped = optim.clip_by_value(grads, clip_value)
            new_params, new_opt = optim.step(opt, cell.params, grads, state.opt)
        if g is None or not _finite(new_params):
            diverged_at = n
            event = {
                "step": n,
                "kind": "diverged",
                "message": f"diverged at step {n}: the loss or gradient is not finite",
            }
            if g is not None:
                event["message"] = f"diverged at step {n}: the update made a parameter non-finite"
            state = replace(state, events=state.events + (event,), rng_state=rng.bit_generator.state)
            if callback is not None:
                callback({"step": n, "event": event})
            break
        events, norms, reference, vanish_run = detect_events(
            n,
            norm,
            state.norms,
            state.reference_norm,
            state.vanish_run,
            spike_factor=spike_factor,
            spike_window=spike_window,
            vanish_ratio=vanish_ratio,
            vanish_steps=vanish_steps,
        )
        h_next = g.final_state if task.stateful else None  # the state the next batch starts from
        power_vector = state.power_vector
        if n % log_every == 0 or n == total:
            metric = evaluate(task, cell, heldout) if (n % eval_every == 0 or n == total) else None
            row, vector = watch_row(
                watcher if watch else None,
                n,
                g,
                cell,
                batch,
                h0,
                power_vector,
                metric=metric,
                grad_norm=norm,
                clipped=clipped or vclipped,
                clip_count=state.clip_count + (clipped or vclipped),
                seconds=time.perf_counter() - start,
            )
            if n % log_every == 0:
                # only regular log steps feed the warm start: a run stopped at an odd step and
                # resumed must see the same rho values as one that never stopped
                power_vector = vector
            history.append(row)
            if callback is not None:
                callback(row)
        for event in events:
            if callback is not None:
                callback({"step": n, "event": event})
        cell = cell.with_params(new_params)
        state = TrainState(
            params=new_params,
            opt=new_opt,
            rng_state=rng.bit_generator.state,
            step=n,
            position=position,
            h=h_next,
            power_vector=power_vector,
            norms=norms,
            reference_norm=reference,
            vanish_run=vanish_run,
            clip_count=state.clip_count + (clipped or vclipped),
            events=state.events + tuple(events),
            xi_rng_state=None if strategy.xi_rng is None else strategy.xi_rng.bit_generator.state,
        )
    final_metric = evaluate(task, cell, heldout)
    try:
        tr = final_trace(cell, heldout, loss=task.loss)
    except ValueError:  # the forward pass overflows: no trajectory to trace
        tr = None
    W = cell.recurrent_matrix()
    rho = None if W is None else dense_spectral_radius(W)
    signal_verdict = None
    if tr is not None:
        signal_verdict = judge_signal(
            tr,
            tol=verdict_tol,
            eps=eps,
            evidence={"start_fraction": tr.start_fraction, "suggested_window": tr.suggested_window},
        )
    verdict = judge_training(
        diverged_at=diverged_at,
        trace_verdict=signal_verdict,
        rho=rho,
        events=list(state.events),
        clip_count=state.clip_count,
        steps_done=state.step,
        final_metric=final_metric,
        metric=task.metric,
    )
    return FitResult(
        cell=cell,
        state=state,
        history=history,
        events=list(state.events),
        diverged_at=diverged_at,
        stopped=stopped,
        final_metric=final_metric,
        final_rho=rho,
        final_trace=tr,
        verdict=verdict,
        seconds=time.perf_counter() - start,
    )
