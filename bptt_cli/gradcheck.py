"""Gradient checks: analytic BPTT against central finite differences, and method against method."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bptt_cli.bptt import GradResult, gradients, loss_value
from bptt_cli.model import PARAM_NAMES, Params, check_positive_int

# Norm-wise relative-error tolerances, set by the numerics: central differences in float64
# with step 1e-6 carry ~1e-10 rounding and O(eps^2) truncation error, so 1e-6 leaves room
# for curvature; two exact methods differ only by float rounding accumulated over T steps.
FD_TOLERANCE = {"float64": 1e-6, "float32": 1e-4}
METHOD_TOLERANCE = {"float64": 1e-12, "float32": 1e-5}


@dataclass(frozen=True)
class Comparison:
    """One parameter's relative error between two gradient computations."""

    check: str  # e.g. "efficient vs finite differences"
    parameter: str
    rel_error: float
    n_coords: int
    tolerance: float

    @property
    def passed(self) -> bool:
        return bool(self.rel_error <= self.tolerance)


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / (||a|| + ||b||), and 0 when both are zero (the usual gradient-check measure)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    denom = np.linalg.norm(a) + np.linalg.norm(b)
    if denom == 0.0:
        return 0.0
    return float(np.linalg.norm(a - b) / denom)


def finite_difference_gradients(
    params: Params,
    x: np.ndarray,
    targets: np.ndarray | None,
    *,
    rng: np.random.Generator,
    n_coords: int = 10,
    eps: float = 1e-6,
    loss: str = "xent",
    activation: str = "tanh",
    mask: np.ndarray | None = None,
    h0: np.ndarray | None = None,
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Central differences (L(p + eps) - L(p - eps)) / (2 eps), always in float64.

    For every parameter, `n_coords` coordinates drawn at random without replacement (all
    of them when the parameter is smaller). Returns name -> (flat indices, derivatives).
    """
    n_coords = check_positive_int("n_coords", n_coords)
    if not np.isfinite(eps) or eps <= 0:
        raise ValueError(f"`eps` must be a positive finite number; got {eps}")
    p64 = params.astype(np.float64)
    x64 = np.asarray(x, dtype=np.float64)
    t64 = None if targets is None else np.asarray(targets)
    if t64 is not None and np.issubdtype(t64.dtype, np.floating):
        t64 = t64.astype(np.float64)
    h064 = None if h0 is None else np.asarray(h0, dtype=np.float64)
    out = {}
    for name in PARAM_NAMES:
        base = getattr(p64, name)
        idx = rng.choice(base.size, size=min(n_coords, base.size), replace=False) if base.size else np.array([], int)
        deriv = np.empty(idx.size)
        for k, i in enumerate(idx):
            values = []
            for sign in (1.0, -1.0):
                bumped = base.copy()
                bumped.flat[i] += sign * eps
                values.append(
                    loss_value(
                        replace(p64, **{name: bumped}), x64, t64, loss=loss, activation=activation, mask=mask, h0=h064
                    )
                )
            deriv[k] = (values[0] - values[1]) / (2 * eps)
        out[name] = (idx, deriv)
    return out


def check_against_finite_differences(
    result: GradResult, fd: dict[str, tuple[np.ndarray, np.ndarray]], tolerance: float
) -> list[Comparison]:
    rows = []
    for name in PARAM_NAMES:
        idx, deriv = fd[name]
        analytic = getattr(result.grads, name).ravel()[idx]
        rows.append(
            Comparison(
                f"{result.method} vs finite differences",
                name,
                relative_error(analytic, deriv),
                int(idx.size),
                tolerance,
            )
        )
    return rows


def check_methods(a: GradResult, b: GradResult, tolerance: float) -> list[Comparison]:
    """Every parameter, dL/dh_0 and the adjoints dL/dh_t, compared in full."""
    rows = []
    check = f"{a.method} vs {b.method}"
    for name in PARAM_NAMES:
        ga, gb = getattr(a.grads, name), getattr(b.grads, name)
        rows.append(Comparison(check, name, relative_error(ga, gb), int(ga.size), tolerance))
    rows.append(Comparison(check, "dL/dh_0", relative_error(a.dh0, b.dh0), int(a.dh0.size), tolerance))
    rows.append(Comparison(check, "dL/dh_t", relative_error(a.adjoints, b.adjoints), int(a.adjoints.size), tolerance))
    return rows


def gradcheck(
    params: Params,
    x: np.ndarray,
    targets: np.ndarray | None,
    *,
    rng: np.random.Generator,
    n_coords: int = 10,
    eps: float = 1e-6,
    loss: str = "xent",
    activation: str = "tanh",
    mask: np.ndarray | None = None,
    h0: np.ndarray | None = None,
) -> list[Comparison]:
    """The three checks: efficient vs finite differences, naive vs finite differences,
    efficient vs naive. Tolerances follow the parameters' dtype."""
    kw = dict(loss=loss, activation=activation, mask=mask, h0=h0)
    dtype = np.dtype(params.dtype).name
    eff = gradients(params, x, targets, method="efficient", **kw)
    naive = gradients(params, x, targets, method="naive", **kw)
    fd = finite_difference_gradients(params, x, targets, rng=rng, n_coords=n_coords, eps=eps, **kw)
    return (
        check_against_finite_differences(eff, fd, FD_TOLERANCE[dtype])
        + check_against_finite_differences(naive, fd, FD_TOLERANCE[dtype])
        + check_methods(eff, naive, METHOD_TOLERANCE[dtype])
    )
