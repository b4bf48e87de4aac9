"""The one place that decides: exploding, vanishing, stable, diverged or undetermined.

No other module constructs a Verdict. Each names the basis it rests on, from the fixed
vocabulary BASES (docs/design.md section 1 explains what each quantity can and cannot say).
The bases are ranked (`judge_network`): the traced gradient signal at the span the task
depends on, then the traced signal of the whole sequence, then the Lyapunov exponent along a
trajectory, then what the matrix alone can guarantee. The strongest basis available decides;
the weaker ones are evidence, and the message says which basis decided. rho alone never calls
a nonlinear network anything: diag(f'(a_t)) varies along the trajectory.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from bptt_cli.core.signal import SignalTrace
from bptt_cli.core.validate import check_choice, check_float

LABELS = ("exploding", "vanishing", "stable", "diverged", "undetermined")

BASES = {
    "task_horizon": "the last loss's signal at the span the task depends on (recall: the delay; adding: the markers)",
    "lyapunov": "the top Lyapunov exponent of the Jacobian product along a trajectory",
    "spectral_radius": "rho(W_h): the per-step gain of a linear network",
    "sigma_max": "sigma_max(W_h) < 1/gamma: every Jacobian shrinks the signal (Pascanu et al.)",
    "matrix_bounds": "the matrix alone does not decide (no trajectory was run)",
    "trace_last_loss": "the fitted per-step gain of ||dl_T/dh_t|| (the last loss alone)",
    "trace_all_losses": "the fitted per-step gain of ||dL/dh_t|| (all losses)",
    "trace_last_loss_net": "the net change of ||dl_T/dh_t|| over the sequence (not exponential in k)",
    "trace_all_losses_net": "the net change of ||dL/dh_t|| over the sequence (not exponential in k)",
    "training": "the training run itself: a non-finite loss or gradient, or a loss and weights that blew up",
    "estimator_statistics": "the full gradient's signal at the comparison point, and the training runs",
}

# Default tolerance around a per-step gain of 1: within 2 % per step a signal neither
# explodes nor vanishes over the tens of steps a truncation window usually spans.
DEFAULT_TOL = 0.02

# A measured signal whose log is this poorly explained by a straight line in k (r^2 below)
# is not an exponential: a single per-step gain would misdescribe it, so the verdict falls
# back to the net change over the traced steps.
MIN_FIT_R2 = 0.5

# A training run has blown up when its loss passes this multiple of its first loss, or its
# weights this multiple of their first norm while the loss is worse than at the start.
BLOW_UP = 10.0


@dataclass(frozen=True)
class Verdict:
    """A judgement and what it rests on.

    label : one of LABELS
    basis : the quantity that decided, one of BASES
    message : one sentence for a human
    evidence : the numbers behind it (JSON-able scalars, lists and dicts)
    """

    label: str
    basis: str
    message: str
    evidence: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        check_choice("label", self.label, LABELS)
        check_choice("basis", self.basis, tuple(BASES))

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "basis": self.basis, "message": self.message, "evidence": dict(self.evidence)}


def check_tol(tol: float) -> float:
    return check_float("verdict_tol", tol, lo=0.0, hi=1.0, hi_open=True)


def judge_gain(gain: float, *, basis: str, tol: float = DEFAULT_TOL, evidence: dict | None = None) -> Verdict:
    """Judge a measured per-step gain g (the factor by which the gradient signal changes per step).

    g > 1 + tol: exploding;  g < 1 - tol: vanishing;  otherwise stable.
    A non-finite gain (NaN or inf, the signal overflowed) is "diverged".
    """
    tol = check_tol(tol)
    ev = dict(evidence or {})
    ev.setdefault("gain", gain)
    ev.setdefault("tol", tol)
    g = float(gain)
    if not math.isfinite(g):
        return Verdict("diverged", basis, f"the per-step gain ({basis}) is not finite: the signal overflowed", ev)
    if g < 0:
        raise ValueError(f"`gain` must be non-negative (a ratio of norms); got {g}")
    if g > 1 + tol:
        k = math.log(10) / math.log(g)
        return Verdict(
            "exploding",
            basis,
            f"per-step gain {g:.4g} > 1 + {tol:g} ({basis}): the signal grows 10x every {k:.3g} steps",
            ev,
        )
    if g < 1 - tol:
        if g == 0:
            msg = f"per-step gain 0 ({basis}): the signal dies in one step"
        else:
            k = math.log(10) / -math.log(g)
            msg = f"per-step gain {g:.4g} < 1 - {tol:g} ({basis}): the signal shrinks 10x every {k:.3g} steps"
        return Verdict("vanishing", basis, msg, ev)
    return Verdict(
        "stable", basis, f"per-step gain {g:.4g} within 1 +- {tol:g} ({basis}): the signal neither grows nor decays", ev
    )


def pascanu_bounds(rho: float, sigma_max: float, gamma: float) -> dict[str, Any]:
    """What the matrix alone can say (Pascanu, Mikolov & Bengio 2013), with gamma = max |f'|.

    ||J_t|| = ||diag(f'(a_t)) W_h|| <= gamma sigma_max(W_h) for every t, so sigma_max < 1/gamma
    guarantees vanishing and sigma_max > 1/gamma is necessary for explosion. rho(W_h) is the gain
    of a linear network; for a nonlinear one it guarantees nothing either way (a nilpotent W_h,
    rho = 0, can explode along a trajectory whose f'(a_t) varies).
    """
    bound = 1.0 / gamma
    vanishing_guaranteed = bool(sigma_max < bound)
    explosion_possible = bool(sigma_max > bound)
    if vanishing_guaranteed:
        sigma = f"sigma_max = {sigma_max:.4g} < 1/gamma = {bound:g}: vanishing is guaranteed"
    elif explosion_possible:
        sigma = f"sigma_max = {sigma_max:.4g} > 1/gamma = {bound:g}: vanishing is not guaranteed, explosion is possible"
    else:
        sigma = f"sigma_max = 1/gamma = {bound:g}: the signal cannot grow, nor is it sure to shrink"
    return {
        "gamma": gamma,
        "one_over_gamma": bound,
        "rho": float(rho),
        "sigma_max": float(sigma_max),
        "vanishing_guaranteed": vanishing_guaranteed,
        "explosion_possible": explosion_possible,
        "sigma_statement": sigma,
        "rho_statement": f"rho = {rho:.4g}: the per-step gain of a linear network; "
        "for a nonlinear one it guarantees nothing",
    }


def judge_matrix(
    rho: float,
    sigma_max: float,
    gamma: float,
    *,
    linear: bool,
    lyapunov_gain: float | None = None,
    tol: float = DEFAULT_TOL,
) -> Verdict:
    """The spectrum verdict, from the strongest evidence available.

    1. a measured Lyapunov gain (a trajectory was run): judge_gain on it, basis "lyapunov";
    2. a linear network: the signal k steps back scales like rho^k, basis "spectral_radius";
    3. a nonlinear network with sigma_max < 1/gamma: vanishing, guaranteed, basis "sigma_max";
    4. otherwise "undetermined", basis "matrix_bounds": the matrix alone does not decide.

    The Pascanu bounds are in the evidence of every verdict.
    """
    tol = check_tol(tol)
    rho, sigma_max = float(rho), float(sigma_max)
    for name, v in (("rho", rho), ("sigma_max", sigma_max)):
        if v < 0:
            raise ValueError(f"`{name}` must be non-negative; got {v}")
    if not (math.isfinite(rho) and math.isfinite(sigma_max)):
        return Verdict("diverged", "spectral_radius", "W_h is not finite", {"rho": rho, "sigma_max": sigma_max})
    bounds = pascanu_bounds(rho, sigma_max, gamma)
    ev = {"linear": bool(linear), "bounds": bounds}
    if lyapunov_gain is not None:
        ev["lyapunov_gain"] = float(lyapunov_gain)
        v = judge_gain(lyapunov_gain, basis="lyapunov", tol=tol, evidence=ev)
        return Verdict(v.label, v.basis, v.message + " along the trajectory", v.evidence)
    if linear:
        v = judge_gain(rho, basis="spectral_radius", tol=tol, evidence={**ev, "rho": rho})
        return Verdict(v.label, v.basis, v.message + " (linear network: rho decides)", v.evidence)
    if bounds["vanishing_guaranteed"]:
        return Verdict(
            "vanishing",
            "sigma_max",
            f"{bounds['sigma_statement']}: every Jacobian shrinks the signal, by a factor of at most "
            f"{sigma_max * gamma:.4g} per step",
            {**ev, "gain_bound": sigma_max * gamma},
        )
    return Verdict(
        "undetermined",
        "matrix_bounds",
        f"not determined by the matrix alone: {bounds['sigma_statement']}. "
        "Run a trajectory (--lyapunov) to measure the gain",
        {**ev, "tol": tol},
    )


def judge_trace(
    gain: float,
    r2: float,
    points: int,
    log_net_change: float,
    steps: int,
    *,
    basis: str,
    tol: float = DEFAULT_TOL,
    eps: float = 1e-3,
    evidence: dict | None = None,
) -> Verdict:
    """Judge a traced gradient signal: its fitted per-step gain when the fit is exponential,
    otherwise its net change over the traced steps.

    gain, r2, points : the least-squares fit of log ||signal|| against steps back k
    log_net_change : log(||signal at the first step|| / ||signal at the last step||)
    steps : how many steps back that change spans
    basis : 'trace_last_loss' or 'trace_all_losses' (the net-change verdicts add '_net')
    eps : the net change below eps is vanishing, above 1/eps exploding (the trace horizon's eps)

    Fewer than two usable points: undetermined. r^2 >= MIN_FIT_R2: judge_gain on the gain.
    Otherwise the signal is not exponential in k and the net change decides, so that a signal
    that wanders but arrives at the start of the sequence intact is not called vanishing.
    """
    tol = check_tol(tol)
    ev = {
        **(evidence or {}),
        "gain": gain,
        "r2": r2,
        "points": points,
        "ln_net_change": log_net_change,  # a log: the change itself can overflow a float
        "steps": steps,
    }
    if points < 2 or math.isnan(gain):
        if log_net_change == -math.inf:  # finite at T, exactly zero before: it dies in one step
            ev.update(gain=0.0, eps=eps)
            return Verdict("vanishing", f"{basis}_net", "the signal is exactly zero one step back: it dies at once", ev)
        return Verdict("undetermined", basis, "fewer than two non-zero points: the signal cannot be fitted", ev)
    if (math.isfinite(r2) and r2 >= MIN_FIT_R2) or not math.isfinite(log_net_change):
        return judge_gain(gain, basis=basis, tol=tol, evidence=ev)
    why = f"the log-signal is not a line in k (r^2 = {r2:.2f} < {MIN_FIT_R2}), so no per-step gain is claimed"
    ev.update(gain=None, gain_not_claimed=why, fitted_slope_gain=gain, eps=eps)
    net = f"{math.exp(log_net_change):.3g}x over {steps} steps"  # |log| <= -log(eps) here or below
    if log_net_change < math.log(eps):
        return Verdict("vanishing", f"{basis}_net", f"{why}; it falls to {net}, below eps = {eps:g}", ev)
    if log_net_change > -math.log(eps):
        return Verdict("exploding", f"{basis}_net", f"{why}; it grows to {net}, above 1/eps = {1 / eps:g}", ev)
    return Verdict(
        "stable", f"{basis}_net", f"{why}; it arrives with {net}, between eps = {eps:g} and 1/eps = {1 / eps:g}", ev
    )


def judge_signal(
    tr: SignalTrace, signal: str = "last", *, tol: float = DEFAULT_TOL, eps: float = 1e-3, evidence: dict | None = None
) -> Verdict:
    """judge_trace on one signal of a core.signal trace: 'last' (the last loss alone) or 'all'."""
    check_choice("signal", signal, ("last", "all"))
    fit, sig = (tr.fit, tr.last) if signal == "last" else (tr.fit_total, tr.total)
    # ln(||signal at t = 1|| / ||signal at t = T||), in python floats: -inf - -inf is nan, quietly
    log_net = float(sig.log_mean[0]) - float(sig.log_mean[-1])
    return judge_trace(
        fit.gain,
        fit.r2,
        fit.points,
        log_net,
        tr.seq_len - 1,
        basis="trace_last_loss" if signal == "last" else "trace_all_losses",
        tol=tol,
        eps=eps,
        evidence=evidence,
    )


def judge_task_horizon(
    tr: SignalTrace, span: int, task: str, *, eps: float = 1e-3, evidence: dict | None = None
) -> Verdict:
    """Judge the last loss's signal at the span the task depends on (recall: the delay; adding:
    the steps back to the first marker; sine, text: the sequence), not over the whole sequence:
    a signal that dies before t = 1 but after the task's dependency is healthy."""
    T = tr.seq_len
    k = max(1, min(int(span), T - 1))
    log_mean = tr.last.log_mean  # index t - 1 holds step t
    ln_ratio = float(log_mean[T - 1 - k]) - float(log_mean[T - 1])
    h = tr.horizon
    if h.method == "measured":
        reach = f"the signal reaches {h.steps:.0f} steps back"
    elif h.method == "extrapolated":
        reach = f"the signal would reach about {h.steps:.0f} steps back (extrapolated beyond T = {T})"
    elif h.method == "never":
        reach = f"the signal reaches all {T - 1} steps back without decaying"
    else:
        reach = "the signal's reach is undetermined"
    need = f"the {task} task needs {k}" if task != "your data" else f"your data needs {k} (--span)"
    ev = {
        **(evidence or {}),
        "span_needed": k,
        "signal_at_span": math.exp(ln_ratio) if ln_ratio < 709 else math.inf,
        "ln_signal_at_span": ln_ratio,
        "horizon": h.steps,
        "horizon_method": h.method,
        "eps": eps,
    }
    if not math.isfinite(float(log_mean[T - 1])):
        return Verdict("undetermined", "task_horizon", f"there is no last loss to trace back: {need}", ev)
    at = f"{k} steps back it is {ev['signal_at_span']:.3g}x its value at T"
    if ln_ratio < math.log(eps):
        return Verdict("vanishing", "task_horizon", f"{reach}; {need}: {at}, below eps = {eps:g}", ev)
    if ln_ratio > -math.log(eps):
        return Verdict("exploding", "task_horizon", f"{reach}; {need}: {at}, above 1/eps = {1 / eps:g}", ev)
    return Verdict("stable", "task_horizon", f"{reach}; {need}: {at}", ev)


BASIS_WORDS = {
    "task_horizon": "the signal at the task's span",
    "trace_last_loss": "the traced signal of the last loss",
    "trace_all_losses": "the traced signal of all losses",
    "trace_last_loss_net": "the traced signal of the last loss",
    "trace_all_losses_net": "the traced signal of all losses",
    "lyapunov": "the Lyapunov exponent",
    "spectral_radius": "rho (a linear network)",
    "sigma_max": "the sigma_max bound",
    "matrix_bounds": "the matrix alone",
}


# the whole-sequence trace as evidence beside the task's span ("its": the same signal)
WHOLE_SEQUENCE_WORDS = {
    "trace_last_loss": "its fitted gain over the whole sequence",
    "trace_last_loss_net": "its net change over the whole sequence",
}


def judge_network(
    signal: SignalTrace | None = None,
    *,
    which: str = "last",
    span: int | None = None,
    task: str | None = None,
    lyapunov_gain: float | None = None,
    rho: float | None = None,
    sigma_max: float | None = None,
    gamma: float = 1.0,
    linear: bool = False,
    tol: float = DEFAULT_TOL,
    eps: float = 1e-3,
    evidence: dict | None = None,
) -> Verdict:
    """One network on its data, one answer: the strongest basis available decides, the weaker
    ones are evidence, and the message says which decided.

    Ranks: the last loss's signal at the task's span (a trace on the task's data); the traced
    signal over the sequence (`which`: 'last' or 'all'); the Lyapunov exponent; rho for a linear
    network; the sigma_max bound; undetermined. train, trace and spectrum all call this, so the
    same checkpoint on the same data gets the same label from each.
    """
    tol = check_tol(tol)
    weaker: list[Verdict] = []
    matrix = None if rho is None else judge_matrix(rho, sigma_max, gamma, linear=linear, tol=tol)
    lyap = None
    if lyapunov_gain is not None:
        g = judge_gain(lyapunov_gain, basis="lyapunov", tol=tol)
        lyap = Verdict(g.label, g.basis, g.message + " along the trajectory", g.evidence)
    if signal is not None:
        whole = judge_signal(signal, which, tol=tol, eps=eps, evidence=evidence)
        if span is not None and which == "last":
            # the whole sequence is evidence: a signal may die before t = 1 yet reach the task's span
            v = judge_task_horizon(signal, span, task or "the", eps=eps, evidence=evidence)
            weaker = [w for w in (whole, lyap, matrix) if w is not None]
        else:
            v, weaker = whole, [w for w in (lyap, matrix) if w is not None]
    elif lyap is not None:
        v, weaker = lyap, [w for w in (matrix,) if w is not None]
    elif matrix is not None:
        v = matrix
    else:
        return Verdict("undetermined", "matrix_bounds", "nothing was measured", dict(evidence or {}))
    sentence = f"decided by {BASIS_WORDS[v.basis]}"
    if weaker:
        said = ", ".join(f"{WHOLE_SEQUENCE_WORDS.get(w.basis, BASIS_WORDS[w.basis])} says {w.label}" for w in weaker)
        sentence += f"; {said} (evidence, not the label)"
    ev = {**v.evidence, "weaker_bases": {w.basis: w.label for w in weaker}}
    if matrix is not None:
        ev.setdefault("bounds", matrix.evidence.get("bounds"))
    return Verdict(v.label, v.basis, f"{v.message}. {sentence[0].upper()}{sentence[1:]}", ev)


def blew_up(loss: float, first_loss: float, norm: float, first_norm: float) -> bool:
    """A training step's loss and weights have left the range of the run: non-finite, a loss past
    BLOW_UP x the first one, or weights past BLOW_UP x their first norm with a loss worse than
    the first. Judged from the first step on (no window of earlier steps is needed)."""
    if not (math.isfinite(loss) and math.isfinite(norm)):
        return True
    if loss > BLOW_UP * max(first_loss, 1e-300):
        return True
    return norm > BLOW_UP * first_norm and loss > first_loss


def judge_training(
    *,
    diverged_at: int | None,
    blow_up: dict | None,
    recovered: bool,
    network: Verdict | None,
    rho: float | None,
    events: list[dict],
    clip_count: int,
    steps_done: int,
    final_metric: float | None,
    metric: str,
    lr: float,
    clip: float | None,
) -> Verdict:
    """The verdict on a finished run.

    A non-finite loss or gradient (it stopped the run), or a blow-up the run never came back
    from (`blow_up`: the event of the first step at which `blew_up` held), is "diverged", with
    the step, the loss and rho before and after, and the likely remedy. Otherwise the label is
    the final model's verdict on held-out data (`judge_network`), and rho(W_h), the spikes,
    vanishing stretches and clipping are its evidence and are named in the message.
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
    update = (blow_up or {}).get("update_ratio")
    # an update of at most 10 % of the weights' norm, or a tenth of the rate when the update was small
    smaller = lr * 0.1 / update if update is not None and update > 0.1 else lr / 10
    remedy = f"a smaller learning rate (--lr {float(f'{smaller:.1g}'):g} or below)" + (
        " or gradient clipping (--clip 1)" if clip is None else f" (gradients are clipped at {clip:g} already)"
    )
    b = blow_up
    blew = ""
    if b is not None:
        rho_txt = ""
        if b.get("rho_before") is not None and b.get("rho_after") is not None:
            rho_txt = f", rho(W_h) {b['rho_before']:.3g} -> {b['rho_after']:.3g}"
        ratio = b.get("norm_ratio")
        blew = f"blew up at step {b['step']}: the loss went {b['loss_before']:.3g} -> {b['loss']:.3g}{rho_txt}"
        if ratio is not None:
            blew += f" (the weights {ratio:.3g}x their first norm)"
    if diverged_at is not None:
        stopped = (
            f"the loss or gradient became non-finite at step {diverged_at}; "
            f"the parameters of step {diverged_at - 1} were kept"
        )
        message = f"{blew}, and {stopped}" if b is not None else f"diverged at step {diverged_at}: {stopped}"
        first = b["step"] if b is not None else diverged_at
        return Verdict(
            "diverged",
            "training",
            f"{message}. Likely remedy: {remedy}",
            {**evidence, "diverged_at": first, "nonfinite_at": diverged_at, "blow_up": b},
        )
    if b is not None and not recovered:
        return Verdict(
            "diverged",
            "training",
            f"{blew} and did not come back (final loss {b['final_loss']:.3g}). Likely remedy: {remedy}",
            {**evidence, "diverged_at": b["step"], "nonfinite_at": None, "blow_up": b},
        )
    if network is None:
        return Verdict(
            "undetermined", "training", "no trace of the final model (the forward pass overflowed)", evidence
        )
    notes = []
    if blow_up is not None:
        notes.append(f"the loss blew up at step {blow_up['step']} and came back")
    if rho is not None:
        notes.append(f"rho(W_h) = {rho:.3g}")
    if spikes:
        notes.append(f"{len(spikes)} gradient spike(s), first at step {spikes[0]}")
    if stretches:
        notes.append(f"{len(stretches)} stretch(es) of vanishing gradient norms")
    if clip_count:
        notes.append(f"clipped on {clip_count} of {steps_done} steps")
    msg = "final model on held-out data: " + network.message + (". Training: " + "; ".join(notes) if notes else "")
    return Verdict(network.label, network.basis, msg, {**network.evidence, **evidence, "blow_up": blow_up})


def judge_truncation(
    signal: Verdict,
    *,
    unbiased: list[str],
    biased: list[str],
    reached_target: list[str] | None,
    diverged: dict[str, int],
    wrong_sign: list[str] | None = None,
) -> Verdict:
    """compare-truncation's overall verdict: diverged when a training run diverged, else the
    label of the full gradient's signal at the comparison point; the per-strategy findings
    (unbiased or not, target reached, wrong sign) are its evidence and its message."""
    parts = [f"unbiased: {', '.join(unbiased) or 'none'}", f"biased: {', '.join(biased) or 'none'}"]
    if reached_target is not None:
        parts.append(f"reached the target: {', '.join(reached_target) or 'none'}")
    if wrong_sign:
        parts.append(f"wrong gradient sign: {', '.join(wrong_sign)}")
    evidence = {
        "unbiased": unbiased,
        "biased": biased,
        "reached_target": reached_target,
        "diverged": diverged,
        "wrong_sign": wrong_sign,
        "full_gradient_signal": signal.as_dict(),
    }
    if diverged:
        where = ", ".join(f"{s} at step {n}" for s, n in diverged.items())
        return Verdict(
            "diverged", "estimator_statistics", f"training diverged ({where}); " + "; ".join(parts), evidence
        )
    msg = f"full gradient at the comparison point: {signal.label} ({signal.message}); " + "; ".join(parts)
    return Verdict(signal.label, "estimator_statistics", msg, evidence)


# A pair with ||W v - lambda v|| <= r |lambda| ||v|| is an exact eigenpair of a matrix within
# r |lambda| of W: at r = 1e-6 lambda is an eigenvalue to far better than a per-step gain needs,
# whether or not the method reached its own --tol
EIGENPAIR_RESIDUAL = 1e-6
# below sqrt(eps) sigma_max an eigenvalue is zero to working precision: a backward-stable method
# computes the defective eigenvalue 0 of a nilpotent W_h as about sqrt(eps) ||W_h||
ZERO_RHO = math.sqrt(sys.float_info.epsilon)
# two moduli closer than this (relative) are the same eigenvalue
RHO_AGREE = 1e-6


class RhoChoice(NamedTuple):
    """rho for the bounds and the verdict, where it came from, and why it is uncertain (None: it is not)."""

    value: float
    source: str
    note: str | None

    @property
    def uncertain(self) -> bool:
        """rho rests on answers that disagree, or on a method that did not converge."""
        return self.note is not None


def _backward_residual(value: float, residual: float | None, floor: float) -> float:
    """||W v - lambda v|| / (max(|lambda|, floor) ||v||) from the relative residual; inf if unknown."""
    if residual is None or not math.isfinite(value):
        return math.inf
    if value == 0:
        return 0.0 if residual == 0 else math.inf
    return residual * value / max(value, floor)


def choose_rho(
    estimate: float,
    converged: bool,
    method: str,
    reference: float | None,
    reference_method: str | None,
    *,
    residual: float | None = None,
    reference_residual: float | None = None,
    sigma_max: float | None = None,
) -> RhoChoice:
    """rho for the bounds and the verdict, where it came from, and why it is uncertain.

    numpy's eigvals computes every eigenvalue, so its largest modulus is rho. A Krylov answer
    (ours or ARPACK's) is an eigenvalue that may not be the largest. An answer counts when its
    residual shows it is an eigenvalue: ours converged, or either's relative residual is <=
    EIGENPAIR_RESIDUAL (relative to ZERO_RHO sigma_max instead of |lambda| when |lambda| is
    smaller, where a relative residual means nothing). rho is the largest answer that counts;
    without one, the unconverged estimate is all there is. rho is uncertain when the two answers
    disagree, when one is not an eigenvalue, or when ours did not converge: the note says which.

    Parameters
    ----------
    estimate, converged, method, residual : |lambda_1| of `dominant_eigenvalue`, its flag, its
        method and its relative residual
    reference, reference_method : the reference's |lambda_1| and "numpy" | "arpack" (None: none)
    reference_residual : the relative residual of ARPACK's pair; None trusts ARPACK's convergence
    sigma_max : the largest singular value of W, the scale below which a modulus is zero

    Returns
    -------
    RhoChoice(value, source, note); `note` is None exactly when rho is certain.
    """
    if reference is not None and reference_method == "numpy":
        return RhoChoice(reference, "numpy", None)
    floor = 0.0 if sigma_max is None else ZERO_RHO * float(sigma_max)
    ours_counts = converged or _backward_residual(estimate, residual, floor) <= EIGENPAIR_RESIDUAL
    ref_counts = reference is not None and (
        reference_residual is None or _backward_residual(reference, reference_residual, floor) <= EIGENPAIR_RESIDUAL
    )
    ours = method if converged else f"{method} (not converged)"
    candidates = [(estimate, ours)] if ours_counts else []
    reasons = []
    if not converged:
        res = "residual unknown" if residual is None else f"residual {residual:.2g}"
        shown = "but its residual shows that" if ours_counts else "and its"
        tail = "is an eigenvalue" if ours_counts else "is not yet shown to be an eigenvalue"
        reasons.append(f"{method} did not converge ({res}; raise --max-iter), {shown} {estimate:.10g} {tail}")
    if reference is not None:
        if ref_counts:
            candidates.append((reference, reference_method))
            if ours_counts and abs(reference - estimate) > max(RHO_AGREE * max(reference, estimate), floor):
                reasons.append(
                    f"{method} and {reference_method} disagree on |lambda_1| ({estimate:.10g} vs {reference:.10g}): "
                    "a Krylov method can converge to a non-dominant eigenvalue"
                )
        else:
            reasons.append(
                f"{reference_method}'s |lambda_1| {reference:.10g} is not an eigenvalue "
                f"(residual {reference_residual:.2g})"
            )
    if not candidates:
        value, source = estimate, f"{method} (not converged)"
        reasons.append(f"rho is the unconverged estimate {estimate:.10g}")
    else:
        value, source = max(candidates)
        if reasons:
            reasons.append(f"rho = {value:.10g}, the largest answer shown to be an eigenvalue (a larger one may exist)")
    note = f"rho is uncertain: {'; '.join(reasons)}" if reasons else None
    return RhoChoice(value, source, note)
