"""`trace`: the gradient signal back through time, its measured gain and the memory horizon,
beside what rho(W_h), sigma_max(W_h) and the Lyapunov exponent say."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bptt_cli.analyses.common import wants_plots
from bptt_cli.analyses.judge import fixed_point_note, mean_field_prediction, network_verdict, window_extrapolated
from bptt_cli.analyses.source import DataOptions, ModelOptions, Source, default_warmup, load_source
from bptt_cli.core.eigen import dense_spectral_radius, singular_values
from bptt_cli.core.losses import LOSSES
from bptt_cli.core.lyapunov import lyapunov_exponents
from bptt_cli.core.signal import JACOBIAN_MODES, SignalTrace, trace
from bptt_cli.core.theory import MeanField
from bptt_cli.core.validate import check_choice, check_float, check_int, options
from bptt_cli.core.verdict import DEFAULT_TOL, Verdict, judge_matrix
from bptt_cli.io.runfolder import ensure_folder

SIGNALS = ("last", "all")


@dataclass(frozen=True)
class TraceConfig(ModelOptions, DataOptions):
    """The network, the batch, and how the signal is judged. `loss` None: the task's, else xent."""

    loss: str | None = None
    signal: str = "last"
    eps: float = 1e-3
    verdict_tol: float = DEFAULT_TOL
    jacobian: str = "auto"
    lyapunov: int = 1
    warmup: int | None = None
    seed: int = 0
    out: Path | None = None
    plots: bool | None = None

    def __post_init__(self) -> None:
        with options():
            self.check_model_options()
            self.check_data_options()
            if self.loss is not None:
                check_choice("--loss", self.loss, LOSSES)
            check_choice("--signal", self.signal, SIGNALS)
            check_float("--eps", self.eps, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
            check_float("--verdict-tol", self.verdict_tol, lo=0.0, hi=1.0, hi_open=True)
            check_choice("--jacobian", self.jacobian, JACOBIAN_MODES)
            check_int("--lyapunov", self.lyapunov, min=0)
            if self.warmup is not None:
                check_int("--warmup", self.warmup, min=0)
            check_int("--seed", self.seed, min=0)
            wants_plots(self.plots, self.out)


@dataclass(frozen=True)
class TraceResult:
    config: TraceConfig
    source: Source
    signal: SignalTrace
    rho: float | None
    sigma_max: float | None
    lyapunov_gain: float | None
    matrix_verdict: Verdict | None
    verdict: Verdict
    notes: tuple[str, ...] = ()
    plots: tuple[Path, ...] = ()
    theory: MeanField | None = None  # mean-field theory, for a fresh gaussian tanh RNN on random inputs

    def results(self) -> dict:
        s, T = self.signal, self.signal.seq_len
        return {
            **self.source.describe(),
            "loss_value": s.loss,
            "fit": s.fit.as_dict(),
            "fit_total": s.fit_total.as_dict(),
            "horizon": s.horizon.as_dict(),
            "suggested_window": s.suggested_window,
            "suggested_window_extrapolated": window_extrapolated(s),
            "ln_start_fraction": s.log_start_fraction,
            "predictions": {
                "rho": self.rho,
                "sigma_max": self.sigma_max,
                "lyapunov_gain": self.lyapunov_gain,
                "matrix_verdict": None if self.matrix_verdict is None else self.matrix_verdict.as_dict(),
            },
            "theory": None if self.theory is None else self.theory.as_dict(),
            "jacobian_kind": s.jacobian_kind,
            "per_step": {
                "t": np.arange(1, T + 1),
                "last": _signal_dict(s.last),
                "total": _signal_dict(s.total),
                "jacobian_norm": s.jacobian_norm,
                **s.gain_stats,
                # the last loss's signal on each part of the state (an LSTM's h and c, each layer)
                "parts": {name: _signal_dict(sig) for name, sig in s.parts.items()},
            },
            "notes": list(self.notes),
            "plots": [str(p) for p in self.plots],
        }


def _signal_dict(sig) -> dict:  # noqa: ANN001 - a core.signal.Signal
    return {"ln_mean": sig.log_mean, "ln_min": sig.log_min, "ln_max": sig.log_max}


def run(config: TraceConfig) -> TraceResult:
    c = config
    rng = np.random.default_rng(c.seed)
    src = load_source(c, c, rng, loss=c.loss)  # sizes refused here leave no folder behind
    folder = ensure_folder(c.out) if wants_plots(c.plots, c.out) else None  # a bad --out fails before the work
    cell, b = src.cell, src.batch
    warmup = default_warmup(c.warmup, b.x.shape[0])
    if c.lyapunov:
        with options():
            check_int("--lyapunov", c.lyapunov, min=0, max=cell.state_size)
            check_int("--warmup", warmup, min=0, max=b.x.shape[0] - 1)
    sig = trace(cell, b.x, b.targets, loss=src.loss, mask=b.mask, h0=src.h0, eps=c.eps, jacobian=c.jacobian)
    W = cell.recurrent_matrix()
    rho = sigma_max = matrix_verdict = None
    lyap_gain = None
    if c.lyapunov:
        lyap_gain = float(lyapunov_exponents(cell, b.x, k=c.lyapunov, warmup=warmup, h0=src.h0).gains[0])
    if W is not None:
        rho, sigma_max = dense_spectral_radius(W), float(singular_values(W)[0])
        matrix_verdict = judge_matrix(rho, sigma_max, cell.gamma, linear=cell.activation.linear, tol=c.verdict_tol)
    verdict = network_verdict(
        cell,
        sig,
        task=src.task,
        batch=b,
        span=src.user_span,
        which=c.signal,
        lyapunov_gain=lyap_gain,
        rho=rho,
        sigma_max=sigma_max,
        tol=c.verdict_tol,
        eps=c.eps,
    )
    note = fixed_point_note(cell, b.x, src.h0)
    notes = () if note is None else (note,)
    plots: tuple[Path, ...] = ()
    if folder is not None:
        from bptt_cli.plots.trace import trace_plot

        plots = (trace_plot(folder / "trace.png", sig, signal=c.signal),)
    theory = mean_field_prediction(src, c.input_scale)
    return TraceResult(c, src, sig, rho, sigma_max, lyap_gain, matrix_verdict, verdict, notes, plots, theory)
