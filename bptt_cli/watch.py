"""Watching the gradients while training: what `train.fit` records at its log steps, the
events it detects on every step, and the verdict on a finished run.

rho(W_h) comes from spectrum.power_iteration (warm-started, a few matrix-vector products),
the start fraction ||dl_T/dh_1|| / ||dl_T/dh_T|| from trace.trace on a few sequences of the
batch, and log ||dL/dh_t|| per time step from the adjoints the gradient already computed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from bptt_cli.bptt import GradResult
from bptt_cli.model import Params, forward_states
from bptt_cli.tasks import Batch
from bptt_cli.trace import TraceResult, trace
from bptt_cli.verdict import Verdict, judge_trace


@dataclass(frozen=True)
class Watcher:
    """Settings of the per-log-step measurements."""

    power_iters: int = 5
    sequences: int = 1
    activation: str = "tanh"
    loss: str = "xent"

    def final_state(self, params: Params, x: np.ndarray, h0: np.ndarray | None) -> np.ndarray:
        """h_T (B, H) of the batch, which the next batch of a stateful task starts from."""
        T, B, _ = x.shape
        if h0 is None:
            h0 = np.zeros((B, params.hidden_size), dtype=params.dtype)
        with np.errstate(over="ignore", invalid="ignore"):
            return forward_states(params, x.astype(params.dtype, copy=False), h0, self.activation)[-1]

    def rho(self, W_h: np.ndarray, v0: np.ndarray | None) -> tuple[float | None, np.ndarray | None]:
        """|lambda_1(W_h)| by power iteration warm-started from v0; and the vector for the next call."""
        from bptt_cli.spectrum import power_iteration

        W = W_h.astype(np.float64, copy=False)
        res = power_iteration(W, max_iter=self.power_iters, v0=v0, rng=np.random.default_rng(0))
        return float(res.abs_eigenvalue), np.asarray(res.vector)

    def start_fraction(self, params: Params, batch: Batch, h0: np.ndarray | None) -> float | None:
        """Share of the last loss's gradient signal that reaches the first step (trace.py's definition)."""
        k = min(self.sequences, batch.size)
        res = trace(
            params,
            batch.x[:, :k],
            batch.targets[:, :k],
            loss=self.loss,
            activation=self.activation,
            mask=batch.mask[:, :k],
            h0=None if h0 is None else h0[:k],
        )
        return None if res.start_fraction is None else float(res.start_fraction)


def adjoint_log_norms(adjoints: np.ndarray) -> np.ndarray:
    """log of the batch-mean ||dL/dh_t|| for t = 1..T: adjoints (T, B, H) -> (T,); -inf where zero."""
    norms = np.sqrt(np.einsum("tbh,tbh->tb", adjoints, adjoints))  # (T, B); einsum: 3x faster than linalg.norm
    with np.errstate(divide="ignore"):
        return np.log(norms.mean(axis=1))  # (T,)


def watch_row(
    watcher: Watcher | None,
    step: int,
    g: GradResult,
    params: Params,
    batch: Batch,
    h0: np.ndarray | None,
    power_vector: np.ndarray | None,
    *,
    metric: float | None,
    grad_norm: float,
    clipped: bool,
    clip_count: int,
    seconds: float,
) -> tuple[dict[str, Any], np.ndarray | None]:
    """One history row (plain values) describing the parameters the step's gradient was taken at,
    and the power-iteration vector to warm-start the next row from."""
    row: dict[str, Any] = {
        "step": step,
        "loss": g.loss,
        "metric": metric,
        "grad_norm": grad_norm,
        "clipped": bool(clipped),
        "clip_count": int(clip_count),
        "rho": None,
        "start_fraction": None,
        "log_dh": None,
        "seconds": seconds,
    }
    if watcher is not None:
        row["rho"], power_vector = watcher.rho(params.W_h, power_vector)
        row["start_fraction"] = watcher.start_fraction(params, batch, h0)
        row["log_dh"] = adjoint_log_norms(g.adjoints).tolist()
    return row, power_vector


def detect_events(
    step: int,
    norm: float,
    norms: np.ndarray,
    reference: float | None,
    vanish_run: int,
    *,
    spike_factor: float,
    spike_window: int,
    vanish_ratio: float,
    vanish_steps: int,
) -> tuple[list[dict], np.ndarray, float | None, int]:
    """Spikes and vanishing stretches from this step's gradient norm.

    Returns (events, the updated window of recent norms, the reference norm, the vanishing run).
    A spike needs at least 10 earlier norms, so the first steps are never called spikes.
    """
    events = []
    if len(norms) >= 10:
        median = float(np.median(norms))
        if norm > spike_factor * median:
            events.append(
                {
                    "step": step,
                    "kind": "spike",
                    "grad_norm": norm,
                    "median": median,
                    "message": f"gradient norm {norm:.3g} at step {step} is {norm / median:.0f}x the running median",
                }
            )
    norms = np.append(norms, norm)[-spike_window:]
    if reference is None and len(norms) == spike_window:
        reference = float(np.median(norms))
    if reference is not None and norm < vanish_ratio * reference:
        vanish_run += 1
        if vanish_run == vanish_steps:
            events.append(
                {
                    "step": step,
                    "kind": "vanishing",
                    "since": step - vanish_steps + 1,
                    "grad_norm": norm,
                    "reference": reference,
                    "message": f"gradient norm below {vanish_ratio:g} x its early median for {vanish_steps} steps "
                    f"(steps {step - vanish_steps + 1}..{step})",
                }
            )
    else:
        vanish_run = 0
    return events, norms, reference, vanish_run


def final_trace(params: Params, heldout: Batch, *, loss: str, activation: str, sequences: int = 32) -> TraceResult:
    """trace.trace of the model on the first `sequences` held-out sequences (zero initial state)."""
    k = min(sequences, heldout.size)
    return trace(
        params,
        heldout.x[:, :k],
        heldout.targets[:, :k],
        loss=loss,
        activation=activation,
        mask=heldout.mask[:, :k],
        jacobian="bound",
    )


def judge_training(
    *,
    diverged_at: int | None,
    trace_result: TraceResult | None,
    rho: float | None,
    events: list[dict],
    clip_count: int,
    steps_done: int,
    final_metric: float | None,
    metric: str,
) -> Verdict:
    """The verdict on a finished run.

    diverged (a non-finite loss or gradient stopped it) wins; otherwise the label is the trace's
    fitted per-step gain of the last loss's signal in the final model (verdict.judge_trace,
    basis "trace"), and rho(W_h), the spikes, vanishing stretches and clipping are its evidence
    and are named in the message. rho alone never decides (DESIGN.md section 1).
    """
    spikes = [e["step"] for e in events if e.get("kind") == "spike"]
    stretches = [(e["since"], e["step"]) for e in events if e.get("kind") == "vanishing"]
    evidence: dict[str, Any] = {
        "steps_done": steps_done,
        "rho": rho,
        "spikes": len(spikes),
        "first_spikes": spikes[:5],
        "vanishing_stretches": [list(s) for s in stretches],
        "clip_count": clip_count,
        "clip_share": clip_count / steps_done if steps_done else None,
        metric: final_metric,
    }
    if diverged_at is not None:
        return Verdict(
            "diverged",
            "training",
            {**evidence, "diverged_at": diverged_at},
            f"diverged at step {diverged_at}: the loss or gradient became non-finite; the parameters of "
            f"step {diverged_at - 1} were kept",
        )
    if trace_result is None:
        return Verdict(
            "undetermined", "training", evidence, "no trace of the final model (the forward pass overflowed)"
        )
    fit = trace_result.fit
    evidence.update(
        slope=fit.slope,
        r2=fit.r2,
        start_fraction=trace_result.start_fraction,
        suggested_window=trace_result.suggested_window,
    )
    log_net = float(trace_result.last.log_mean[0]) - float(trace_result.last.log_mean[-1])
    v = judge_trace(fit.gain, fit.r2, fit.points, log_net, trace_result.seq_len - 1, basis="trace", evidence=evidence)
    notes = []
    if rho is not None:
        notes.append(f"rho(W_h) = {rho:.3g}")
    if spikes:
        notes.append(f"{len(spikes)} gradient spike(s), first at step {spikes[0]}")
    if stretches:
        notes.append(f"{len(stretches)} stretch(es) of vanishing gradient norms")
    if clip_count:
        notes.append(f"clipped on {clip_count} of {steps_done} steps")
    msg = "final model on held-out data: " + v.message + ("; " + ", ".join(notes) if notes else "")
    return Verdict(v.label, v.basis, v.evidence, msg)
