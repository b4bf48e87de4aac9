"""The training loop: one `fit`, which reports through a callback and never prints.

Each step draws a batch from the task, computes the loss and the exact (or truncated)
gradient with the cell's `gradients(propagate=xi)`, clips, and takes an optimiser step. Every
step records its loss, gradient norm and parameter norm and checks them for a blow-up
(core.verdict.blew_up, from step 2 on); every `log_every` steps it also watches the gradients
(watch.py): rho(W_h), the share of the last loss's signal that reaches the start of the
sequence, and log ||dL/dh_t|| per time step. A non-finite loss or gradient stops training at
once; the parameters of the last finite step are kept.

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

from bptt_cli.analyses.judge import network_verdict
from bptt_cli.analyses.tasks import (
    Batch,
    Task,
    check_batch_size,
    evaluate,
    first_sequences,
    heldout_set,
    sample_batch,
)
from bptt_cli.analyses.training import optim
from bptt_cli.analyses.training.events import detect_events
from bptt_cli.analyses.training.state import TrainState, initial_state
from bptt_cli.analyses.training.watch import Watcher, final_trace, step_row, watch_log_step
from bptt_cli.core.activations import Activation
from bptt_cli.core.bptt import NonFiniteError
from bptt_cli.core.cells import Cell, as_cell
from bptt_cli.core.eigen import dense_spectral_radius
from bptt_cli.core.rnn import Params
from bptt_cli.core.signal import SignalTrace
from bptt_cli.core.truncation import Strategy, propagate_weights
from bptt_cli.core.validate import check_float, check_positive_int
from bptt_cli.core.verdict import DEFAULT_TOL, Verdict, blew_up, judge_training


@dataclass(frozen=True)
class FitResult:
    """What `fit` returns.

    cell : the final model (the last finite parameters if training diverged)
    state : the TrainState to resume from
    history : one dict per step (watch.step_row; the log steps filled in by watch.watch)
    events : spikes, vanishing stretches, blow-ups and divergence, in order
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


def _rho(params: Any, cell: Cell) -> float | None:
    W = cell.with_params(params).recurrent_matrix() if _finite(params) else None
    return None if W is None else dense_spectral_radius(W)


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
    on_state: Callable[[TrainState], None] | None = None,
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
    log_every : watch every this many steps (and at the last step)
    eval_every : held-out metric every this many steps (default log_every); rows in between
        carry metric None. The metric costs a forward pass over the held-out batch.
    heldout : the held-out Batch; default the task's held-out set (tasks.heldout_set)
    watch : compute rho, the start fraction and the per-step adjoint norms at log steps
    watch_sequences : sequences of the batch traced for the start fraction (a monitor: the final
        verdict traces 32 held-out sequences)
    spike_factor, spike_window : a spike is a norm above spike_factor x the median of the
        last spike_window norms
    vanish_ratio, vanish_steps : a vanishing stretch is vanish_steps consecutive norms below
        vanish_ratio x the median norm of the first spike_window steps
    verdict_tol, eps : the final verdict's band around a gain of 1 and its net-change threshold
    resume : a TrainState from an earlier fit (or TrainState.from_checkpoint)
    callback : called with each step's row as it is made, and with {"step", "event"} for each
        event (the train analysis writes metrics.jsonl from it)
    should_stop : polled before every step; True stops cleanly (e.g. after Ctrl-C)
    on_state : called with the state after every step (its rows already emitted): a periodic
        checkpoint taken there resumes exactly like one taken at the end

    Returns
    -------
    FitResult. Training that diverges does not raise: diverged_at (or the blow-up event) says
    where, and the parameters are the last finite ones.
    """
    cell = as_cell(model, activation)
    opt = optimizer if optimizer is not None else optim.Optimizer()
    strategy = truncation if truncation is not None else Strategy("full")
    total = check_positive_int("--steps", steps)
    B = check_batch_size(task, batch_size)
    log_every = check_positive_int("--log-every", log_every)
    eval_every = log_every if eval_every is None else check_positive_int("eval_every", eval_every)
    for name, value in (("watch_sequences", watch_sequences), ("spike_window", spike_window)):
        check_positive_int(name, value)
    check_positive_int("vanish_steps", vanish_steps)
    if not (spike_factor > 1 and 0 < vanish_ratio < 1):
        raise ValueError(f"`spike_factor` must be > 1 and `vanish_ratio` in (0, 1); got {spike_factor}, {vanish_ratio}")
    optim.check_clip("--clip", clip)
    optim.check_clip("--clip-value", clip_value)
    check_float("--verdict-tol", verdict_tol, lo=0.0, hi=1.0, hi_open=True)
    check_float("--eps", eps, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
    state = _start(cell, opt, rng, strategy, resume)
    cell = cell.with_params(state.params)
    if (cell.input_size, cell.output_size) != (task.input_size, task.output_size):
        raise ValueError(
            f"the model has input/output sizes {cell.input_size}/{cell.output_size} but the task "
            f"{task.name!r} needs {task.input_size}/{task.output_size}"
        )
    heldout = heldout_set(task) if heldout is None else heldout
    watcher = Watcher(sequences=watch_sequences, loss=task.loss) if watch else None
    T, dtype = task.seq_len, cell.dtype

    def emit(row: dict) -> None:
        if callback is not None:
            callback(row)

    history: list[dict] = []
    diverged_at = None
    stopped = False
    previous = state.params  # the parameters before the last update (for a blow-up's "before")
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
            why = "the loss or gradient is not finite" if g is None else "the update made a parameter non-finite"
            event = {"step": n, "kind": "diverged", "message": f"diverged at step {n}: {why}"}
            state = replace(state, events=state.events + (event,), rng_state=rng.bit_generator.state)
            emit({"step": n, "event": event})
            break
        clipped = clipped or vclipped
        param_norm = optim.global_norm(cell.params)  # the parameters this step's loss was taken at
        first_loss = g.loss if state.first_loss is None else state.first_loss
        first_norm = param_norm if state.first_norm is None else state.first_norm
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
        blow_up = state.blow_up
        if blow_up is None and n > 1 and blew_up(g.loss, first_loss, param_norm, first_norm):
            blow_up = _blow_up_event(n, history, g.loss, param_norm / first_norm, previous, cell)
            events.append(blow_up)
        row = step_row(n, g.loss, norm, param_norm, clipped, state.clip_count + clipped, time.perf_counter() - start)
        power_vector = state.power_vector
        if n == 1 or n % log_every == 0 or n == total:  # the first step too: a run may blow up at once
            metric = evaluate(task, cell, heldout) if (n == 1 or n % eval_every == 0 or n == total) else None
            vector = watch_log_step(row, watcher, g, cell, batch, h0, power_vector, metric)
            if n % log_every == 0:
                # only regular log steps feed the warm start: a run stopped at an odd step and
                # resumed must see the same rho values as one that never stopped
                power_vector = vector
        history.append(row)
        emit(row)
        for event in events:
            emit({"step": n, "event": event})
        previous = cell.params
        cell = cell.with_params(new_params)
        state = TrainState(
            params=new_params,
            opt=new_opt,
            rng_state=rng.bit_generator.state,
            step=n,
            position=position,
            h=g.final_state if task.stateful else None,  # the state the next batch starts from
            power_vector=power_vector,
            norms=norms,
            reference_norm=reference,
            vanish_run=vanish_run,
            clip_count=state.clip_count + clipped,
            events=state.events + tuple(events),
            xi_rng_state=None if strategy.xi_rng is None else strategy.xi_rng.bit_generator.state,
            first_loss=first_loss,
            first_norm=first_norm,
            blow_up=blow_up,
        )
        if on_state is not None:
            on_state(state)
    return _finish(
        cell, state, task, heldout, history, diverged_at, stopped, time.perf_counter() - start,
        tol=verdict_tol, eps=eps, lr=opt.lr, clip=clip,
    )  # fmt: skip


def _start(
    cell: Cell, opt: optim.Optimizer, rng: np.random.Generator, strategy: Strategy, resume: TrainState | None
) -> TrainState:
    """A fresh state, or the resumed one with the generators set back to where it stopped."""
    if resume is None:
        return initial_state(cell.params, opt, rng)
    if set(optim.SLOTS[opt.name]) != set(resume.opt.slots):
        raise ValueError(f"the saved optimiser state does not belong to `optimizer` {opt.name!r}")
    rng.bit_generator.state = resume.rng_state
    if resume.xi_rng_state is not None and strategy.xi_rng is not None:
        strategy.xi_rng.bit_generator.state = resume.xi_rng_state
    return resume


def _update_ratio(before: Any, after: Any) -> float:
    diff = type(before).from_dict({k: after.as_dict()[k] - v for k, v in before.as_dict().items()})
    return optim.global_norm(diff) / max(optim.global_norm(before), 1e-300)


def _blow_up_event(n: int, history: list[dict], loss: float, norm_ratio: float, previous: Any, cell: Cell) -> dict:
    """The blow-up at step n: the loss and rho(W_h) before (step n - 1) and after (step n)."""
    before = history[-1]["loss"] if history else float("nan")
    event = {
        "step": n,
        "kind": "blow-up",
        "loss_before": before,
        "loss": loss,
        "norm_ratio": norm_ratio,
        "rho_before": _rho(previous, cell),
        "rho_after": _rho(cell.params, cell),
        # the update into these parameters, relative to the weights it changed
        "update_ratio": _update_ratio(previous, cell.params),
    }
    rho = ""
    if event["rho_before"] is not None and event["rho_after"] is not None:
        rho = f", rho(W_h) {event['rho_before']:.3g} -> {event['rho_after']:.3g}"
    event["message"] = f"the loss blew up at step {n}: {before:.3g} -> {loss:.3g}{rho}"
    return event


def _finish(
    cell: Cell,
    state: TrainState,
    task: Task,
    heldout: Batch,
    history: list[dict],
    diverged_at: int | None,
    stopped: bool,
    seconds: float,
    *,
    tol: float,
    eps: float,
    lr: float,
    clip: float | None,
) -> FitResult:
    """The final model on held-out data: its metric, its trace, and the verdict on the run."""
    final_metric = evaluate(task, cell, heldout)
    k = min(32, heldout.size)
    try:
        tr = final_trace(cell, heldout, loss=task.loss, sequences=k)
    except ValueError:  # the forward pass overflows: no trajectory to trace
        tr = None
    W = cell.recurrent_matrix()
    rho = None if W is None else dense_spectral_radius(W)
    held = first_sequences(heldout, k)
    network = None if tr is None else network_verdict(cell, tr, task=task, batch=held, rho=rho, tol=tol, eps=eps)
    recovered = True
    if state.blow_up is not None:
        final_loss = tr.loss if tr is not None else float("inf")
        state = replace(state, blow_up={**state.blow_up, "final_loss": final_loss})
        recovered = not blew_up(final_loss, state.first_loss, optim.global_norm(cell.params), state.first_norm)
    verdict = judge_training(
        diverged_at=diverged_at,
        blow_up=state.blow_up,
        recovered=recovered,
        network=network,
        rho=rho,
        events=list(state.events),
        clip_count=state.clip_count,
        steps_done=state.step,
        final_metric=final_metric,
        metric=task.metric,
        lr=lr,
        clip=clip,
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
        seconds=seconds,
    )
