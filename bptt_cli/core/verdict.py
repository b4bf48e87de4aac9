"""The one place that decides: exploding, vanishing, stable, diverged or undetermined.

No other module constructs a Verdict. Each names the basis it rests on, from the fixed
vocabulary BASES (docs/design.md section 1 explains what each quantity can and cannot say):
rho alone never calls a nonlinear network exploding, because the factors f'(a_t) <= gamma
shrink every Jacobian; a measured signal along a real trajectory outranks the matrix alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bptt_cli.core.signal import SignalTrace
from bptt_cli.core.validate import check_choice, check_float

LABELS = ("exploding", "vanishing", "stable", "diverged", "undetermined")

BASES = {
    "lyapunov": "the top Lyapunov exponent of the Jacobian product along a trajectory",
    "spectral_radius": "rho(W_h): the per-step gain of a linear network",
    "sigma_max": "sigma_max(W_h) < 1/gamma: every Jacobian shrinks the signal (Pascanu et al.)",
    "matrix_bounds": "the matrix alone does not decide (no trajectory was run)",
    "trace_last_loss": "the fitted per-step gain of ||dl_T/dh_t|| (the last loss alone)",
    "trace_all_losses": "the fitted per-step gain of ||dL/dh_t|| (all losses)",
    "trace_last_loss_net": "the net change of ||dl_T/dh_t|| over the sequence (not exponential in k)",
    "trace_all_losses_net": "the net change of ||dL/dh_t|| over the sequence (not exponential in k)",
    "training": "the training run itself (a non-finite loss or gradient)",
    "estimator_statistics": "the full gradient's signal at the comparison point, and the training runs",
}

# Default tolerance around a per-step gain of 1: within 2 % per step a signal neither
# explodes nor vanishes over the tens of steps a truncation window usually spans.
DEFAULT_TOL = 0.02

# A measured signal whose log is this poorly explained by a straight line in k (r^2 below)
# is not an exponential: a single per-step gain would misdescribe it, so the verdict falls
# back to the net change over the traced steps.
MIN_FIT_R2 = 0.5


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
    """The matrix-only conditions of Pascanu, Mikolov & Bengio (2013), with gamma = max |f'|.

    sigma_max < 1/gamma guarantees vanishing; rho > 1/gamma is necessary (not sufficient) for
    explosion, and rho <= 1/gamma rules out asymptotic growth of the linearised signal.
    """
    bound = 1.0 / gamma
    vanishing_guaranteed = bool(sigma_max < bound)
    explosion_possible = bool(rho > bound)
    return {
        "gamma": gamma,
        "one_over_gamma": bound,
        "rho": float(rho),
        "sigma_max": float(sigma_max),
        "vanishing_guaranteed": vanishing_guaranteed,
        "explosion_possible": explosion_possible,
        "sigma_statement": f"sigma_max = {sigma_max:.4g} {'<' if vanishing_guaranteed else '>='} 1/gamma = {bound:g}: "
        + ("vanishing is guaranteed" if vanishing_guaranteed else "vanishing is not guaranteed"),
        "rho_statement": f"rho = {rho:.4g} {'>' if explosion_possible else '<='} 1/gamma = {bound:g}: "
        + ("explosion is possible, not certain" if explosion_possible else "explosion is impossible"),
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
    3. a nonlinear network with sigma_max < (1 - tol)/gamma: vanishing, basis "sigma_max";
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
    if sigma_max * gamma < 1 - tol:
        return Verdict(
            "vanishing",
            "sigma_max",
            f"{bounds['sigma_statement']} (every Jacobian shrinks the signal by at least {sigma_max * gamma:.4g})",
            {**ev, "gain_bound": sigma_max * gamma, "tol": tol},
        )
    return Verdict(
        "undetermined",
        "matrix_bounds",
        f"not determined by the matrix alone: {bounds['sigma_statement']}; {bounds['rho_statement']}. "
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
        return Verdict("undetermined", basis, "fewer than two non-zero points: the signal cannot be fitted", ev)
    if (math.isfinite(r2) and r2 >= MIN_FIT_R2) or not math.isfinite(log_net_change):
        return judge_gain(gain, basis=basis, tol=tol, evidence=ev)
    ev["eps"] = eps
    net = f"{math.exp(log_net_change):.3g}x over {steps} steps"  # |log| <= -log(eps) here or below
    why = f"the log-signal is not a line in k (r^2 = {r2:.2f} < {MIN_FIT_R2}), so no per-step gain is claimed"
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
        evidence={"fit": fit.as_dict(), **(evidence or {})},
    )


def judge_training(
    *,
    diverged_at: int | None,
    trace_verdict: Verdict | None,
    rho: float | None,
    events: list[dict],
    clip_count: int,
    steps_done: int,
    final_metric: float | None,
    metric: str,
) -> Verdict:
    """The verdict on a finished run.

    diverged (a non-finite loss or gradient stopped it) wins; otherwise the label is the trace
    verdict of the final model on held-out data, and rho(W_h), the spikes, vanishing stretches
    and clipping are its evidence and are named in the message. rho alone never decides.
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
            f"diverged at step {diverged_at}: the loss or gradient became non-finite; the parameters of "
            f"step {diverged_at - 1} were kept",
            {**evidence, "diverged_at": diverged_at},
        )
    if trace_verdict is None:
        return Verdict(
            "undetermined", "training", "no trace of the final model (the forward pass overflowed)", evidence
        )
    notes = []
    if rho is not None:
        notes.append(f"rho(W_h) = {rho:.3g}")
    if spikes:
        notes.append(f"{len(spikes)} gradient spike(s), first at step {spikes[0]}")
    if stretches:
        notes.append(f"{len(stretches)} stretch(es) of vanishing gradient norms")
    if clip_count:
        notes.append(f"clipped on {clip_count} of {steps_done} steps")
    msg = "final model on held-out data: " + trace_verdict.message + ("; " + ", ".join(notes) if notes else "")
    return Verdict(trace_verdict.label, trace_verdict.basis, msg, {**trace_verdict.evidence, **evidence})


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


def choose_rho(
    estimate: float, converged: bool, method: str, reference: float | None, reference_method: str | None
) -> tuple[float, str, str | None]:
    """rho for the bounds and the verdict, where it came from, and a note when the methods disagree.

    numpy's eigvals computes every eigenvalue, so its largest modulus is rho. A Krylov answer
    (ours or ARPACK's) is an eigenvalue that may not be the largest, so the larger of the two
    converged ones is the better estimate. Without either, the unconverged estimate is all there is.
    """
    if reference is not None and reference_method == "numpy":
        return reference, "numpy", None
    candidates = [(estimate, method)] if converged else []
    note = None
    if reference is not None:
        candidates.append((reference, reference_method))
        if converged and abs(reference - estimate) > 1e-6 * max(reference, 1e-300):
            note = (
                f"{method} and {reference_method} disagree on |lambda_1| ({estimate:.10g} vs {reference:.10g}): "
                "a Krylov method can converge to a non-dominant eigenvalue; the larger is used as rho"
            )
    if not candidates:
        return estimate, f"{method} (not converged)", None
    value, source = max(candidates)
    return value, source, note
