"""The notes' worked example: BPTT's O(T) recursion against the O(T^2) path enumeration.

A linear RNN h_t = W_h h_{t-1} + W_x x_t with l_t = 1/2 ||h_t||^2 and T = 10 (notes section
6.2.2). dL/dh_1 is the sum of 10 path contributions C_s = dl_s/dh_s W_h^(s-1) (the notes'
row-vector convention); the naive method walks all 55 loss-to-state paths, the recursion takes
10 steps and gets the same numbers. With `lengths`, both are timed and their scaling fitted.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bptt_cli.analyses.common import wants_plots
from bptt_cli.core.bptt import GradResult, check_naive_length, gradients, path_contributions
from bptt_cli.core.rnn import Params, init_params
from bptt_cli.core.validate import check_float, check_int, options
from bptt_cli.io.memory import check_fits
from bptt_cli.io.runfolder import ensure_folder


@dataclass(frozen=True)
class PathsConfig:
    """The worked example's sizes; `lengths` (at least two different T) adds the timing."""

    seq_len: int = 10
    hidden: int = 4
    input: int = 3
    batch: int = 1
    spectral_radius: float = 0.9
    lengths: tuple[int, ...] = ()
    repeats: int = 5
    seed: int = 0
    out: Path | None = None
    plots: bool | None = None

    def __post_init__(self) -> None:
        with options():
            for name in ("seq_len", "hidden", "input", "batch", "repeats"):
                check_int(f"--{name.replace('_', '-')}", getattr(self, name))
            check_float("--spectral-radius", self.spectral_radius, lo=0.0)
            check_int("--seed", self.seed, min=0)
            for T in self.lengths:
                check_int("--lengths", T)
            if self.lengths and len(set(self.lengths)) < 2:
                raise ValueError(
                    f"`--lengths` needs at least two different lengths to fit an exponent; got {self.lengths}"
                )
        wants_plots(self.plots, self.out)
        T, B, H, D = max((self.seq_len, *self.lengths)), self.batch, self.hidden, self.input
        with options():
            check_naive_length("--seq-len" if T == self.seq_len else "--lengths", T)
        # states, adjoints, inputs and the loss gradient of the longest run, and the path sums
        check_fits(8.0 * (T * B * (6 * H + D) + 5 * H * (H + D)), f"--seq-len {T} with --batch {B} and --hidden {H}")

    @property
    def draws(self) -> bool:
        return bool(self.lengths) and wants_plots(self.plots, self.out)


@dataclass(frozen=True)
class Timing:
    seq_len: int
    efficient_s: float  # median wall time of one efficient gradient (with its forward)
    naive_s: float
    efficient_steps: int
    naive_paths: int


@dataclass(frozen=True)
class PathsResult:
    config: PathsConfig
    efficient: GradResult
    naive: GradResult
    contributions: np.ndarray  # (T, B, H): C_s, the path from l_s to h_1, s = 1..T
    max_abs_diff: float  # over every gradient, dL/dh_0 and dL/dh_t
    max_rel_diff: float
    timing: tuple[Timing, ...] = ()
    exponents: dict[str, tuple[float, float]] | None = None  # method -> (slope, r^2)
    plots: tuple[Path, ...] = ()

    def results(self) -> dict:
        T = self.config.seq_len
        path_sum = self.contributions.sum(axis=0)  # (B, H) sum of the T path contributions
        out: dict = {
            "network": {"activation": "identity", "loss": "half-square", "bias": False, "output_layer": False},
            "naive": {"path_walks": self.naive.paths, "jacobian_products": self.naive.jvps},
            "efficient": {"recursion_steps": self.efficient.paths, "jacobian_products": self.efficient.jvps},
            "expected_path_walks": T * (T + 1) // 2,
            "loss": self.efficient.loss,
            "max_abs_difference": self.max_abs_diff,
            "max_rel_difference": self.max_rel_diff,
            "dL_dh1": {
                "recursion": self.efficient.adjoints[0, 0],
                "sum_of_paths": path_sum[0],
                "path_contributions": self.contributions[:, 0, :],
            },
            "plots": [str(p) for p in self.plots],
        }
        if self.timing:
            out["timing"] = [t.__dict__ for t in self.timing]
            out["exponents"] = {m: {"slope": s, "r2": r2} for m, (s, r2) in self.exponents.items()}
        return out


def linear_example(
    rng: np.random.Generator,
    *,
    seq_len: int = 10,
    hidden: int = 4,
    input_size: int = 3,
    batch: int = 1,
    spectral_radius: float = 0.9,
    dtype: str = "float64",
) -> tuple[Params, np.ndarray]:
    """The worked example's network (linear, no bias, no output layer) and its inputs (T, B, D)."""
    params = init_params(
        rng, input_size=input_size, hidden_size=hidden, output_size=0, spectral_radius=spectral_radius, dtype=dtype
    )
    x = rng.normal(size=(seq_len, batch, params.input_size)).astype(params.dtype)
    return params, x


def compare_methods(params: Params, x: np.ndarray) -> tuple[GradResult, GradResult, np.ndarray, float, float]:
    """Both methods on the example, the path contributions to dL/dh_1, and their differences."""
    kw = dict(loss="half-square", activation="identity")
    eff = gradients(params, x, None, method="efficient", **kw)
    naive = gradients(params, x, None, method="naive", **kw)
    contrib = path_contributions(params, x, step=1, **kw)
    pairs = [(getattr(eff.grads, k), getattr(naive.grads, k)) for k in ("W_x", "W_h", "b")]
    pairs += [(eff.dh0, naive.dh0), (eff.adjoints, naive.adjoints)]
    abs_diff = max(float(np.max(np.abs(a - b))) for a, b in pairs)
    rel_diff = max(float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), np.finfo(float).tiny)) for a, b in pairs)
    return eff, naive, contrib, abs_diff, rel_diff


def time_methods(params: Params, lengths: tuple[int, ...], rng: np.random.Generator, repeats: int) -> list[Timing]:
    """Median wall time of both methods at each sequence length (the same network for all)."""
    rows = []
    for T in lengths:
        x = rng.normal(size=(T, 1, params.input_size))
        res, times = {}, {}
        for method in ("efficient", "naive"):
            samples = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                res[method] = gradients(params, x, None, loss="half-square", activation="identity", method=method)
                samples.append(time.perf_counter() - t0)
            times[method] = float(np.median(samples))
        rows.append(Timing(T, times["efficient"], times["naive"], res["efficient"].paths, res["naive"].paths))
    return rows


def fit_exponent(lengths: list[int] | tuple[int, ...], seconds: list[float]) -> tuple[float, float]:
    """Least-squares slope of log(time) against log(T), and its r^2: time ~ T^slope."""
    if len(lengths) < 2:
        raise ValueError("`lengths` needs at least two sequence lengths to fit a scaling exponent")
    lx, ly = np.log(np.asarray(lengths, float)), np.log(np.asarray(seconds, float))
    slope, intercept = np.polyfit(lx, ly, 1)
    resid = ly - (slope * lx + intercept)
    ss_tot = float(np.sum((ly - ly.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else 1.0
    return float(slope), r2


def run(config: PathsConfig) -> PathsResult:
    """The example, and the timing when `config.lengths` asks for it."""
    folder = ensure_folder(config.out) if config.draws else None  # a bad --out fails before any work
    c = config
    rng = np.random.default_rng(c.seed)
    params, x = linear_example(
        rng, seq_len=c.seq_len, hidden=c.hidden, input_size=c.input, batch=c.batch, spectral_radius=c.spectral_radius
    )
    eff, naive, contrib, abs_diff, rel_diff = compare_methods(params, x)
    if not c.lengths:
        return PathsResult(c, eff, naive, contrib, abs_diff, rel_diff)
    lengths = tuple(sorted(set(c.lengths)))
    timing = tuple(time_methods(params, lengths, rng, c.repeats))
    exps = {m: fit_exponent(lengths, [getattr(r, f"{m}_s") for r in timing]) for m in ("efficient", "naive")}
    plots: tuple[Path, ...] = ()
    if folder is not None:
        from bptt_cli.plots.paths import scaling_plot

        plots = (
            scaling_plot(
                folder / "paths-scaling.png",
                list(lengths),
                [r.efficient_s for r in timing],
                [r.naive_s for r in timing],
                {m: e[0] for m, e in exps.items()},
            ),
        )
    return PathsResult(c, eff, naive, contrib, abs_diff, rel_diff, timing, exps, plots)
