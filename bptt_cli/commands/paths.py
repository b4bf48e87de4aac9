"""`bptt paths`: the notes' worked example, 55 path walks against 10 recursion steps."""

from typing import Annotated

import numpy as np
import typer

from bptt_cli.cli import (
    BatchOpt,
    HiddenOpt,
    InputOpt,
    JsonOpt,
    OutOpt,
    Output,
    QuietOpt,
    SeedOpt,
    SeqLenOpt,
    command,
    out_dir,
    usage_error,
)
from bptt_cli.pathdemo import fit_exponent, linear_example, run_example, time_methods
from bptt_cli.report import document, table


def parse_lengths(text: str | None) -> list[int]:
    """'25,50,100' -> [25, 50, 100]; each a positive integer, at least two of them."""
    if text is None:
        return []
    try:
        lengths = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        usage_error("--lengths", f"expected comma-separated integers like 25,50,100; got {text!r}")
    # counted after removing repeats: 25,25 is one length, and one point fits no exponent
    if len(set(lengths)) < 2 or min(lengths) < 1:
        usage_error("--lengths", f"needs at least two different positive lengths to fit an exponent; got {text!r}")
    return sorted(set(lengths))


@command
def paths(
    seq_len: SeqLenOpt = 10,
    hidden: HiddenOpt = 4,
    input_size: InputOpt = 3,
    batch: BatchOpt = 1,
    spectral_radius: Annotated[float, typer.Option("--spectral-radius", min=0.0, help="Spectral radius of W_h.")] = 0.9,
    lengths: Annotated[
        str | None,
        typer.Option(
            "--lengths",
            help="Also time both methods at these T (e.g. 25,50,100,200,400), fit "
            "each one's scaling exponent and save the log-log plot.",
        ),
    ] = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timing repeats per length (median).")] = 5,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """The notes' worked example: a linear RNN h_t = W_h h_(t-1) + W_x x_t with l_t = 1/2 ||h_t||^2.
    The naive method walks all T(T+1)/2 loss-to-state paths (55 for T = 10); BPTT's recursion takes
    T steps and gives the same gradients to rounding error."""
    length_list = parse_lengths(lengths)
    o = Output(json, quiet)
    # the output folder is checked before any work, so a bad --out fails fast with nothing printed
    folder = out_dir(out, "paths") if length_list else None
    config = dict(
        seq_len=seq_len,
        hidden=hidden,
        input=input_size,
        batch=batch,
        spectral_radius=spectral_radius,
        lengths=length_list or None,
        repeats=repeats,
        seed=seed,
        activation="identity",
        loss="half-square",
    )
    rng = np.random.default_rng(seed)
    params, x = linear_example(
        rng, seq_len=seq_len, hidden=hidden, input_size=input_size, batch=batch, spectral_radius=spectral_radius
    )
    ex = run_example(params, x)
    recursion_dh1 = ex.efficient.adjoints[0]  # (B, H) dL/dh_1 from the recursion
    path_sum = ex.contributions.sum(axis=0)  # (B, H) sum of the T path contributions
    results: dict = {
        "naive": {"path_walks": ex.naive.paths, "jacobian_products": ex.naive.jvps},
        "efficient": {"recursion_steps": ex.efficient.paths, "jacobian_products": ex.efficient.jvps},
        "expected_path_walks": seq_len * (seq_len + 1) // 2,
        "loss": ex.efficient.loss,
        "max_abs_difference": ex.max_abs_diff,
        "max_rel_difference": ex.max_rel_diff,
        "dL_dh1": {
            "recursion": recursion_dh1[0],
            "sum_of_paths": path_sum[0],
            "path_contributions": ex.contributions[:, 0, :],
        },
    }
    o.show(
        table(
            f"paths to h_1: what each loss l_s sends back (sequence 1, T={seq_len}, H={hidden})",
            ["loss", "path", "walk length", "||C_s||", "C_s[0]"],
            [
                [f"l_{s + 1}", f"l_{s + 1} -> h_{s + 1} -> ... -> h_1", s, float(np.linalg.norm(c)), float(c[0])]
                for s, c in enumerate(ex.contributions[:, 0, :])
            ],
        )
    )
    o.show(
        table(
            "naive path enumeration vs BPTT recursion",
            ["method", "backward walks", "products with W_h", "dL/dh_1[0]"],
            [
                ["naive (every path)", ex.naive.paths, ex.naive.jvps, float(path_sum[0, 0])],
                ["efficient (recursion)", ex.efficient.paths, ex.efficient.jvps, float(recursion_dh1[0, 0])],
            ],
            caption=f"max |difference| over all gradients and dL/dh_t: {ex.max_abs_diff:.3g} "
            f"(relative {ex.max_rel_diff:.3g})",
        )
    )
    if length_list:
        rows = time_methods(
            length_list,
            rng,
            repeats=repeats,
            hidden=hidden,
            input_size=input_size,
            batch=batch,
            spectral_radius=spectral_radius,
        )
        exps = {m: fit_exponent(length_list, [getattr(r, f"{m}_s") for r in rows]) for m in ("efficient", "naive")}
        from bptt_cli.plots.paths import scaling_plot

        plot = scaling_plot(
            folder / "paths-scaling.png",
            length_list,
            [r.efficient_s for r in rows],
            [r.naive_s for r in rows],
            {m: e[0] for m, e in exps.items()},
        )
        results["timing"] = [r.__dict__ for r in rows]
        results["exponents"] = {m: {"slope": e[0], "r2": e[1]} for m, e in exps.items()}
        results["plots"] = [str(plot)]
        o.show(
            table(
                f"wall time per gradient (median of {repeats})",
                ["T", "naive paths", "naive s", "efficient steps", "efficient s", "naive / efficient"],
                [
                    [r.seq_len, r.naive_paths, r.naive_s, r.efficient_steps, r.efficient_s, r.naive_s / r.efficient_s]
                    for r in rows
                ],
                caption=f"fitted time ~ T^k: naive k = {exps['naive'][0]:.2f} (r^2 {exps['naive'][1]:.3f}), "
                f"efficient k = {exps['efficient'][0]:.2f} (r^2 {exps['efficient'][1]:.3f}); plot: {plot}",
            )
        )
    o.emit(document("paths", config, results))
