"""Gradient checks: analytic BPTT against central finite differences, and method against method.

`run` builds a random small RNN (non-zero biases, so that their gradients are exercised away
from the symmetric point) and checks it three ways: efficient vs finite differences, naive vs
finite differences, efficient vs naive (every parameter, dL/dh_0 and every dL/dh_t).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from bptt_cli.core.activations import NAMES as ACTIVATIONS
from bptt_cli.core.bptt import GradResult, check_naive_length, gradients, loss_value
from bptt_cli.core.losses import LOSSES
from bptt_cli.core.rnn import PARAM_NAMES, Params, init_params
from bptt_cli.core.validate import DTYPES, check_choice, check_float, check_int, check_positive_int, options
from bptt_cli.io.memory import check_fits

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
    eps = check_float("eps", eps, lo=0.0, lo_open=True)
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


@dataclass(frozen=True)
class GradcheckConfig:
    """The random problem and the finite-difference settings (`fd_step` is the central step)."""

    seq_len: int = 8
    batch: int = 3
    input: int = 4
    hidden: int = 6
    output: int = 5
    activation: str = "tanh"
    loss: str = "xent"
    dtype: str = "float64"
    mask: bool = False
    coords: int = 10
    fd_step: float = 1e-6
    seed: int = 0

    def __post_init__(self) -> None:
        with options():
            for name in ("seq_len", "batch", "input", "hidden", "output", "coords"):
                check_int(f"--{name.replace('_', '-')}", getattr(self, name))
            check_choice("--activation", self.activation, ACTIVATIONS)
            check_choice("--loss", self.loss, LOSSES)
            check_choice("--dtype", self.dtype, tuple(DTYPES))
            check_float("--fd-step", self.fd_step, lo=0.0, lo_open=True)
            check_int("--seed", self.seed, min=0)
        T, B, H, D, V = self.seq_len, self.batch, self.hidden, self.input, self.output
        with options():
            check_naive_length("--seq-len", T)  # gradcheck runs the naive method too
        # the reference, naive and fused backward passes each hold states, adjoints and outputs
        need = 8.0 * (3 * T * B * (3 * H + D + 2 * V) + 8 * (H * H + H * D + H * V))
        check_fits(need, f"--seq-len {T} with --batch {B}, --hidden {H}, --input {D} and --output {V}")


@dataclass(frozen=True)
class GradcheckResult:
    config: GradcheckConfig
    checks: tuple[Comparison, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.checks)

    def results(self) -> dict:
        rows = self.checks
        return {
            "passed": self.passed,
            "checks": [
                dict(
                    check=r.check,
                    parameter=r.parameter,
                    rel_error=r.rel_error,
                    n_coords=r.n_coords,
                    tolerance=r.tolerance,
                    passed=r.passed,
                )
                for r in rows
            ],
            "max_rel_error": {
                c: max(r.rel_error for r in rows if r.check == c) for c in dict.fromkeys(r.check for r in rows)
            },
        }


def random_problem(
    rng: np.random.Generator, *, T: int, B: int, D: int, H: int, V: int, loss: str, dtype: str, masked: bool
) -> tuple[Params, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """A random network, inputs, targets and (optionally) a random 0/1 mask."""
    out_size = 0 if loss == "half-square" else V
    params = init_params(rng, input_size=D, hidden_size=H, output_size=out_size, dtype=dtype)
    params = replace(
        params, b=rng.normal(0, 0.1, H).astype(params.dtype), c=rng.normal(0, 0.1, out_size).astype(params.dtype)
    )
    x = rng.normal(size=(T, B, D)).astype(params.dtype)
    if loss == "xent":
        targets = rng.integers(0, V, size=(T, B))
    elif loss == "mse":
        targets = rng.normal(size=(T, B, V)).astype(params.dtype)
    else:
        targets = None
    mask = None
    if masked:
        mask = (rng.random((T, B)) < 0.5).astype(params.dtype)
        mask[-1] = 1.0  # at least one scored step
    return params, x, targets, mask


def run(config: GradcheckConfig) -> GradcheckResult:
    c = config
    rng = np.random.default_rng(c.seed)
    params, x, targets, m = random_problem(
        rng, T=c.seq_len, B=c.batch, D=c.input, H=c.hidden, V=c.output, loss=c.loss, dtype=c.dtype, masked=c.mask
    )
    rows = gradcheck(
        params, x, targets, rng=rng, n_coords=c.coords, eps=c.fd_step, loss=c.loss, activation=c.activation, mask=m
    )
    return GradcheckResult(c, tuple(rows))
