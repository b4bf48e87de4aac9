"""The one place that decides: exploding, vanishing, stable, diverged or undetermined.

Every verdict names the basis it rests on (DESIGN.md section 1):

- ``lyapunov``: the measured top Lyapunov gain exp(lambda_1) along a real trajectory;
- ``spectral_radius``: rho(W_h), which decides only for a linear network;
- ``sigma_max``: sigma_max(W_h) < 1/gamma, the Pascanu sufficient condition for vanishing;
- ``matrix_bounds``: the matrix alone does not decide (a nonlinear network with
  sigma_max >= 1/gamma and no trajectory) -- "undetermined", with the bounds as evidence;
- any other basis a caller measured (``trace`` passes its fitted per-step gain).

A nonlinear network is never called exploding from rho alone: rho > 1/gamma only makes
explosion possible, because the factors f'(a_t) <= gamma shrink every Jacobian.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from bptt_cli.model import ACTIVATION_GAMMA, ACTIVATIONS, check_choice

LABELS = ("exploding", "vanishing", "stable", "diverged", "undetermined")

# Default tolerance around a per-step gain of 1: within 2 % per step a signal neither
# explodes nor vanishes over the tens of steps a truncation window usually spans.
DEFAULT_TOL = 0.02


@dataclass(frozen=True)
class Verdict:
    """A judgement and what it rests on.

    label : one of LABELS
    basis : the quantity that decided ("lyapunov", "spectral_radius", "sigma_max", ...)
    evidence : the numbers behind it (JSON-able scalars / dicts)
    message : one sentence for a human
    """

    label: str
    basis: str
    evidence: dict[str, Any] = field(default_factory=dict)
    message: str = ""

    def __post_init__(self) -> None:
        check_choice("label", self.label, LABELS)

    def as_dict(self) -> dict[str, Any]:
        return {"label": self.label, "basis": self.basis, "evidence": dict(self.evidence), "message": self.message}


def _check_tol(tol: float) -> float:
    if not (isinstance(tol, (int, float)) and math.isfinite(tol) and 0 <= tol < 1):
        raise ValueError(f"`tol` must be a number in [0, 1); got {tol!r}")
    return float(tol)


def judge_gain(gain: float, *, basis: str, tol: float = DEFAULT_TOL, evidence: dict | None = None) -> Verdict:
    """Judge a measured per-step gain g (the factor by which the gradient signal changes per step).

    g > 1 + tol: exploding;  g < 1 - tol: vanishing;  otherwise stable.
    A non-finite gain (NaN or inf, the signal overflowed) is "diverged".
    """
    tol = _check_tol(tol)
    ev = dict(evidence or {})
    ev.setdefault("gain", gain)
    ev.setdefault("tol", tol)
    g = float(gain)
    if not math.isfinite(g):
        return Verdict("diverged", basis, ev, f"the per-step gain ({basis}) is not finite: the signal overflowed")
    if g < 0:
        raise ValueError(f"`gain` must be non-negative (a ratio of norms); got {g}")
    if g > 1 + tol:
        k = math.log(10) / math.log(g)
        label, msg = (
            "exploding",
            f"per-step gain {g:.4g} > 1 + {tol:g} ({basis}): the signal grows 10x every {k:.3g} steps",
        )
    elif g < 1 - tol:
        if g == 0:
            msg = f"per-step gain 0 ({basis}): the signal dies in one step"
        else:
            k = math.log(10) / -math.log(g)
            msg = f"per-step gain {g:.4g} < 1 - {tol:g} ({basis}): the signal shrinks 10x every {k:.3g} steps"
        label = "vanishing"
    else:
        label, msg = (
            "stable",
            f"per-step gain {g:.4g} within 1 +- {tol:g} ({basis}): the signal neither grows nor decays",
        )
    return Verdict(label, basis, ev, msg)


def pascanu_bounds(rho: float, sigma_max: float, activation: str) -> dict[str, Any]:
    """The matrix-only conditions of Pascanu, Mikolov & Bengio (2013), with gamma = max |f'|.

    sigma_max < 1/gamma guarantees vanishing; rho > 1/gamma is necessary (not sufficient) for
    explosion, and rho <= 1/gamma rules out asymptotic growth of the linearised signal.
    """
    check_choice("activation", activation, ACTIVATIONS)
    gamma = ACTIVATION_GAMMA[activation]
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
    activation: str,
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
    tol = _check_tol(tol)
    rho, sigma_max = float(rho), float(sigma_max)
    for name, v in (("rho", rho), ("sigma_max", sigma_max)):
        if v < 0:
            raise ValueError(f"`{name}` must be non-negative; got {v}")
    if not (math.isfinite(rho) and math.isfinite(sigma_max)):
        return Verdict("diverged", "spectral_radius", {"rho": rho, "sigma_max": sigma_max}, "W_h is not finite")
    bounds = pascanu_bounds(rho, sigma_max, activation)
    ev = {"linear": bool(linear), "activation": activation, "bounds": bounds}
    if lyapunov_gain is not None:
        ev["lyapunov_gain"] = float(lyapunov_gain)
        v = judge_gain(lyapunov_gain, basis="lyapunov", tol=tol, evidence=ev)
        return Verdict(v.label, v.basis, v.evidence, v.message + " along the trajectory")
    if linear:
        ev["rho"] = float(rho)
        v = judge_gain(rho, basis="spectral_radius", tol=tol, evidence=ev)
        return Verdict(v.label, v.basis, v.evidence, v.message + " (linear network: rho decides)")
    gamma = bounds["gamma"]
    if sigma_max * gamma < 1 - tol:
        return Verdict(
            "vanishing",
            "sigma_max",
            {**ev, "gain_bound": sigma_max * gamma, "tol": tol},
            f"{bounds['sigma_statement']} (every Jacobian shrinks the signal by at least {sigma_max * gamma:.4g})",
        )
    return Verdict(
        "undetermined",
        "matrix_bounds",
        {**ev, "tol": tol},
        f"not determined by the matrix alone: {bounds['sigma_statement']}; {bounds['rho_statement']}. "
        "Run a trajectory (--lyapunov) to measure the gain",
    )


# A measured signal whose log is this poorly explained by a straight line in k (r^2 below)
# is not an exponential: a single per-step gain would misdescribe it, so the verdict falls
# back to the net change over the traced steps.
MIN_FIT_R2 = 0.5


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
    eps : the net change below eps is vanishing, above 1/eps exploding (the trace horizon's eps)

    Fewer than two usable points: undetermined. r^2 >= MIN_FIT_R2: judge_gain on the gain.
    Otherwise the signal is not exponential in k and the net change decides, so that a signal
    that wanders but arrives at the start of the sequence intact is not called vanishing.
    """
    tol = _check_tol(tol)
    ev = {
        **(evidence or {}),
        "gain": gain,
        "r2": r2,
        "points": points,
        "ln_net_change": log_net_change,  # a log: the change itself can overflow a float
        "steps": steps,
    }
    if points < 2 or math.isnan(gain):
        return Verdict("undetermined", basis, ev, "fewer than two non-zero points: the signal cannot be fitted")
    if (math.isfinite(r2) and r2 >= MIN_FIT_R2) or not math.isfinite(log_net_change):
        return judge_gain(gain, basis=basis, tol=tol, evidence=ev)
    ev["eps"] = eps
    net = f"{math.exp(log_net_change):.3g}x over {steps} steps"  # |log| <= -log(eps) here or below
    why = f"the log-signal is not a line in k (r^2 = {r2:.2f} < {MIN_FIT_R2}), so no per-step gain is claimed"
    if log_net_change < math.log(eps):
        return Verdict("vanishing", f"{basis}_net", ev, f"{why}; it falls to {net}, below eps = {eps:g}")
    if log_net_change > -math.log(eps):
        return Verdict("exploding", f"{basis}_net", ev, f"{why}; it grows to {net}, above 1/eps = {1 / eps:g}")
    return Verdict(
        "stable", f"{basis}_net", ev, f"{why}; it arrives with {net}, between eps = {eps:g} and 1/eps = {1 / eps:g}"
    )
