"""`spectrum`: the dominant eigenvalue of W_h done right, its singular values and the Pascanu
bounds, the Lyapunov exponents along a trajectory, and a verdict that names its basis."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bptt_cli.analyses.common import wants_plots
from bptt_cli.analyses.judge import fixed_point_note, mean_field_prediction, network_verdict, window_extrapolated
from bptt_cli.analyses.source import DataOptions, ModelOptions, Source, default_warmup, load_source
from bptt_cli.core.eigen import (
    METHODS,
    REFERENCES,
    ArpackFailed,
    EigenResult,
    binary_exponent,
    dominant_eigenvalue,
    reference_spectrum,
    singular_values,
)
from bptt_cli.core.lyapunov import LyapunovResult, lyapunov_exponents
from bptt_cli.core.signal import SignalTrace, trace
from bptt_cli.core.theory import MeanField
from bptt_cli.core.validate import check_choice, check_float, check_int, options
from bptt_cli.core.verdict import DEFAULT_TOL, Verdict, choose_rho, pascanu_bounds
from bptt_cli.io.runfolder import ensure_folder

# numpy.linalg.eigvals is O(H^3) and holds all H eigenvalues: the default reference up to here
NUMPY_REFERENCE_MAX = 2048


@dataclass(frozen=True)
class SpectrumConfig(ModelOptions, DataOptions):
    """The network (ModelOptions), the trajectory's data (DataOptions) and the methods."""

    method: str = "krylov-schur"
    max_iter: int = 1000
    tol: float = 1e-10
    reference: str = "numpy"
    lyapunov: int = 1
    warmup: int | None = None
    verdict_tol: float = DEFAULT_TOL
    seed: int = 0
    out: Path | None = None
    plots: bool | None = None

    def __post_init__(self) -> None:
        with options():
            self.check_model_options()
            self.check_data_options()
            check_choice("--method", self.method, METHODS)
            check_int("--max-iter", self.max_iter)
            check_float("--tol", self.tol, lo=0.0, lo_open=True)
            check_choice("--reference", self.reference, (*REFERENCES, "none"))
            check_int("--lyapunov", self.lyapunov, min=0)
            if self.warmup is not None:
                check_int("--warmup", self.warmup, min=0)
            check_float("--verdict-tol", self.verdict_tol, lo=0.0, hi=1.0, hi_open=True)
            check_int("--seed", self.seed, min=0)
            wants_plots(self.plots, self.out)


@dataclass(frozen=True)
class SpectrumResult:
    config: SpectrumConfig
    source: Source
    eig: EigenResult | None  # None for a cell without one recurrent matrix (a GRU, an LSTM, a stack)
    reference_method: str | None
    reference: np.ndarray | None  # eigenvalues by modulus, descending (all, or the top one)
    rho: float | None
    rho_source: str | None
    sigma: np.ndarray | None  # singular values, descending
    bounds: dict | None
    lyapunov: LyapunovResult | None
    signal: SignalTrace | None  # the last loss's signal on the trajectory's batch (with --lyapunov)
    verdict: Verdict
    notes: tuple[str, ...] = ()
    plots: tuple[Path, ...] = field(default=())
    rho_note: str | None = None  # why rho is uncertain (choose_rho); None: it is not
    reference_residual: float | None = None  # ARPACK's relative residual; None for numpy
    theory: MeanField | None = None  # mean-field theory, for a fresh gaussian tanh RNN on random inputs

    @property
    def reference_top(self) -> complex | None:
        return None if self.reference is None else complex(self.reference[0])

    @property
    def rho_uncertain(self) -> bool:
        return self.rho_note is not None

    def results(self) -> dict:
        if self.eig is None:
            return self._trajectory_results()
        e, ref1 = self.eig, self.reference_top
        out: dict = {
            **self.source.describe(),
            "state_jacobian": None,
            "dominant_eigenvalue": {
                "method": e.method,
                "eigenvalue": e.eigenvalue,
                "abs_eigenvalue": e.abs_eigenvalue,
                "is_complex_pair": e.is_complex_pair,
                "converged": e.converged,
                "iterations": e.iterations,
                "matvecs": e.matvecs,
                "residual": e.residual,
                "ratio_estimate": e.ratio_estimate,
                "history": e.history,
                "residual_history": e.residual_history,
                "history_iterations": e.history_iterations,
            },
            "reference": None,
            "rho": self.rho,
            "rho_source": self.rho_source,
            "rho_uncertain": self.rho_uncertain,
            "rho_uncertainty": self.rho_note,
            "singular_values": {"max": float(self.sigma[0]), "min": float(self.sigma[-1]), "all": self.sigma},
            "bounds": self.bounds,
            "lyapunov": None,
            "signal": None,
            "notes": list(self.notes),
            "plots": [str(p) for p in self.plots],
        }
        if ref1 is not None:
            out["reference"] = {
                "method": self.reference_method,
                "eigenvalue": ref1,
                "abs_eigenvalue": abs(ref1),
                "abs_difference": abs(e.abs_eigenvalue - abs(ref1)),
                "relative_difference": abs(e.abs_eigenvalue - abs(ref1)) / abs(ref1) if abs(ref1) > 0 else None,
                "residual": self.reference_residual,
                "top_eigenvalues": self.reference[:10],
            }
        out.update(self._trajectory_parts())
        return out

    def _trajectory_results(self) -> dict:
        """A cell without one recurrent matrix: its state-to-state Jacobian along the trajectory."""
        s = self.signal
        out: dict = {
            **self.source.describe(),
            "dominant_eigenvalue": None,
            "reference": None,
            "rho": None,
            "rho_source": None,
            "rho_uncertain": False,
            "rho_uncertainty": None,
            "singular_values": None,
            "bounds": None,
            "state_jacobian": None
            if s is None
            else {
                "norm_kind": s.jacobian_kind,
                "mean_norm": None if s.jacobian_kind == "none" else float(np.nanmean(s.jacobian_norm)),
                "gate_means": {name: float(np.mean(v)) for name, v in s.gain_stats.items()},
            },
            "notes": list(self.notes),
            "plots": [str(p) for p in self.plots],
        }
        out.update(self._trajectory_parts())
        return out

    def _trajectory_parts(self) -> dict:
        out: dict = {"lyapunov": None, "signal": None, "theory": None if self.theory is None else self.theory.as_dict()}
        if self.lyapunov is not None:
            ly, b = self.lyapunov, self.source.batch
            out["lyapunov"] = {
                "exponents": ly.exponents,
                "gains": ly.gains,
                "steps": ly.steps,
                "warmup": self.source.batch.x.shape[0] - ly.steps,
                "batch": int(b.x.shape[1]),
                "inputs": self.source.data,
            }
        if self.signal is not None:
            s = self.signal
            out["signal"] = {
                "fit": s.fit.as_dict(),
                "horizon": s.horizon.as_dict(),
                "suggested_window": s.suggested_window,
                "suggested_window_extrapolated": window_extrapolated(s),
                "ln_start_fraction": s.log_start_fraction,
                "loss_value": s.loss,
            }
        return out


def run(config: SpectrumConfig) -> SpectrumResult:
    c = config
    rng = np.random.default_rng(c.seed)
    src = load_source(c, c, rng)  # sizes refused here leave no folder behind
    folder = ensure_folder(c.out) if wants_plots(c.plots, c.out) else None  # a bad --out fails before the work
    cell = src.cell
    warmup = default_warmup(c.warmup, src.batch.x.shape[0])
    with options():
        check_int("--lyapunov", c.lyapunov, min=0, max=cell.state_size)
        check_int("--warmup", warmup, min=0, max=src.batch.x.shape[0] - 1)
        if cell.recurrent_matrix() is None and c.lyapunov == 0:
            raise ValueError(
                f"`--lyapunov 0`: a {cell.describe()} has no one matrix W_h whose spectrum could decide; its "
                "state-to-state Jacobian changes along the trajectory: give --lyapunov K >= 1"
            )
    if cell.recurrent_matrix() is None:
        return _along_the_trajectory(c, src, warmup, folder)
    W = cell.recurrent_matrix().astype(np.float64)
    H = W.shape[0]
    notes: list[str] = []
    ref_method = None if c.reference == "none" else c.reference
    if ref_method == "numpy" and H > NUMPY_REFERENCE_MAX:
        ref_method = "arpack"
        notes.append(f"H = {H} > {NUMPY_REFERENCE_MAX}: reference switched from numpy to arpack")
    sigma = singular_values(W)
    if not np.isfinite(sigma[0]):  # sigma_max >= rho: the first to leave the float64 range
        raise ValueError(_overflow_message(W, c))
    eig = dominant_eigenvalue(W, max_iter=c.max_iter, tol=c.tol, rng=rng, method=c.method)
    ref = None
    if ref_method is not None:
        try:
            ref = reference_spectrum(W, ref_method)
        except ArpackFailed as err:  # the cross-check is lost, not the analysis
            notes.append(f"no {ref_method} reference: {err}; rho rests on {eig.method} alone")
            ref_method = None
    ref_all = None if ref is None else ref.eigenvalues
    choice = choose_rho(
        eig.abs_eigenvalue,
        eig.converged,
        eig.method,
        None if ref_all is None else float(abs(ref_all[0])),
        ref_method,
        residual=eig.residual,
        reference_residual=None if ref is None else ref.residual,
        sigma_max=float(sigma[0]),
    )
    rho, rho_source = choice.value, choice.source
    if choice.note:
        notes.append(choice.note)
    gamma = cell.gamma
    bounds = pascanu_bounds(rho, float(sigma[0]), gamma)
    b = src.batch
    lyap, sig = _trajectory(c, src, warmup, notes) if c.lyapunov > 0 else (None, None)
    verdict = network_verdict(
        cell,
        sig,
        task=src.task,
        batch=b,
        span=src.user_span,
        lyapunov_gain=None if lyap is None else float(lyap.gains[0]),
        rho=rho,
        sigma_max=float(sigma[0]),
        tol=c.verdict_tol,
    )
    result = SpectrumResult(
        c,
        src,
        eig,
        ref_method,
        ref_all,
        rho,
        rho_source,
        sigma,
        bounds,
        lyap,
        sig,
        verdict,
        tuple(notes),
        rho_note=choice.note,
        reference_residual=None if ref is None else ref.residual,
        theory=mean_field_prediction(src, c.input_scale),
    )
    if folder is None:
        return result
    from bptt_cli.plots.spectrum import spectrum_plots

    return SpectrumResult(**{**result.__dict__, "plots": tuple(spectrum_plots(folder, W, result, tol=c.tol))})


def _trajectory(
    c: SpectrumConfig, src: Source, warmup: int, notes: list[str]
) -> tuple[LyapunovResult, SignalTrace | None]:
    """A trajectory's Lyapunov exponents and the last loss's gradient signal along it (notes: a
    trace the forward pass overflows, a fixed point)."""
    cell, b = src.cell, src.batch
    lyap = lyapunov_exponents(cell, b.x, k=c.lyapunov, warmup=warmup, h0=src.h0)
    sig = None
    try:
        sig = trace(cell, b.x, b.targets, loss=src.loss, mask=b.mask, h0=src.h0)
    except ValueError as e:  # the forward pass or the loss overflows: nothing to trace
        notes.append(f"no gradient signal traced: {e}")
    note = fixed_point_note(cell, b.x, src.h0)
    if note:
        notes.append(note)
    return lyap, sig


def _along_the_trajectory(c: SpectrumConfig, src: Source, warmup: int, folder: Path | None) -> SpectrumResult:
    """spectrum of a cell without one recurrent matrix: the Lyapunov spectrum over the full state,
    the per-step norm of the state-to-state Jacobian and the gate means, along the trajectory."""
    cell, b = src.cell, src.batch
    notes: list[str] = []
    lyap, sig = _trajectory(c, src, warmup, notes)
    verdict = network_verdict(
        cell, sig, task=src.task, batch=b, span=src.user_span, lyapunov_gain=float(lyap.gains[0]), tol=c.verdict_tol
    )
    result = SpectrumResult(c, src, None, None, None, None, None, None, None, lyap, sig, verdict, tuple(notes))
    if folder is None:
        return result
    from bptt_cli.plots.spectrum import lyapunov_plot

    return SpectrumResult(**{**result.__dict__, "plots": (lyapunov_plot(folder / "spectrum-lyapunov.png", result),)})


def _magnitude(log10: float) -> str:
    """A number given by its log10, written like "8e+308" even where float64 cannot hold it."""
    exponent = math.floor(log10)
    return f"{10 ** (log10 - exponent):.3g}e{exponent:+d}"


def _overflow_message(W: np.ndarray, c: SpectrumConfig) -> str:
    """Which of sigma_max and rho overflow float64, with their sizes (computed on W / 2^e)."""
    e = binary_exponent(W)
    Ws = np.ldexp(W, -e)
    shift = e * math.log10(2)
    sigma_log = math.log10(float(singular_values(Ws)[0])) + shift
    if W.shape[0] <= NUMPY_REFERENCE_MAX:
        rho_s = float(np.max(np.abs(reference_spectrum(Ws, "numpy").eigenvalues)))
    else:
        rho_s = dominant_eigenvalue(Ws, max_iter=c.max_iter, tol=c.tol).abs_eigenvalue
    rho_log = math.log10(rho_s) + shift if rho_s > 0 else -math.inf
    sigma = _magnitude(sigma_log)
    what, lost = f"its largest singular value ({sigma}) overflows", "sigma_max and the products W_h v"
    if rho_log > math.log10(sys.float_info.max):
        what = f"its spectral radius ({_magnitude(rho_log)}) and largest singular value ({sigma}) overflow"
        lost = "rho, sigma_max and the products W_h v"
    if c.model is not None:
        name = f"--model {c.model}"
    else:
        name = "W_h" if c.spectral_radius is None else f"--spectral-radius {c.spectral_radius:g}"
    return (
        f"{name}: the entries of W_h are finite, but {what} float64 (largest {sys.float_info.max:.3g}): "
        f"{lost} cannot be computed; scale W_h down"
    )
