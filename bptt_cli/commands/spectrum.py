"""`bptt spectrum`: the dominant eigenvalue of W_h done right, singular values, Lyapunov exponents, a verdict."""

from enum import Enum
from pathlib import Path
from typing import Annotated

import numpy as np
import typer

from bptt_cli.cli import (
    Activation,
    BatchOpt,
    HiddenOpt,
    Init,
    InitOpt,
    InputOpt,
    JsonOpt,
    OutOpt,
    Output,
    QuietOpt,
    SeedOpt,
    SpectralRadiusOpt,
    command,
    out_dir,
)
from bptt_cli.report import document, fmt, table
from bptt_cli.sources import resolve_params, saved_options, task_from_options
from bptt_cli.spectrum import lyapunov_exponents, power_iteration, reference_eigenvalues, singular_values
from bptt_cli.tasks import heldout_batch
from bptt_cli.verdict import DEFAULT_TOL, judge_matrix, pascanu_bounds

# numpy.linalg.eigvals is O(H^3) and holds all H eigenvalues: the default reference up to here
NUMPY_REFERENCE_MAX = 2048


class Method(str, Enum):
    krylov = "krylov"
    subspace = "subspace"


class Inputs(str, Enum):
    random = "random"
    recall = "recall"
    adding = "adding"
    sine = "sine"
    text = "text"


class Reference(str, Enum):
    numpy = "numpy"
    arpack = "arpack"
    none = "none"


def check_options(max_iter: int, tol: float, lyapunov: int, steps: int, warmup: int, verdict_tol: float) -> None:
    """The numeric options, checked here so that a bad value is one line naming the option."""
    if max_iter < 1:
        raise ValueError(f"--max-iter must be at least 1; got {max_iter}")
    if not (np.isfinite(tol) and tol > 0):
        raise ValueError(f"--tol must be a positive number; got {tol}")
    if lyapunov < 0:
        raise ValueError(f"--lyapunov must be 0 (off) or a positive count of exponents; got {lyapunov}")
    if steps < 1:
        raise ValueError(f"--steps must be at least 1; got {steps}")
    if not 0 <= warmup < steps:
        raise ValueError(f"--warmup must be in [0, --steps) = [0, {steps}); got {warmup}")
    if not (np.isfinite(verdict_tol) and 0 <= verdict_tol < 1):
        raise ValueError(f"--verdict-tol must be in [0, 1); got {verdict_tol}")


@command
def spectrum(
    model: Annotated[Path | None, typer.Option("--model", help="A bptt checkpoint (.npz) to take W_h from.")] = None,
    weights: Annotated[
        Path | None,
        typer.Option("--weights", help="A square matrix file: .npy, .npz (--key), or a PyTorch .pt/.pth state dict."),
    ] = None,
    key: Annotated[
        str | None,
        typer.Option("--key", help="Array in the --weights file (default: the only array; weight_hh_l0 for .pt)."),
    ] = None,
    hidden: HiddenOpt = 64,
    init: InitOpt = Init.gaussian,
    spectral_radius: SpectralRadiusOpt = None,
    activation: Annotated[
        Activation | None,
        typer.Option("--activation", help="Hidden activation f (default: the checkpoint's, else tanh)."),
    ] = None,
    method: Annotated[
        Method, typer.Option("--method", help="krylov: restarted Arnoldi; subspace: 2-D block power iteration.")
    ] = Method.krylov,
    max_iter: Annotated[
        int, typer.Option("--max-iter", help="Iteration budget (matvecs for krylov, block products for subspace).")
    ] = 1000,
    tol: Annotated[
        float, typer.Option("--tol", help="Relative residual ||Wu - lambda u|| / |lambda| to reach.")
    ] = 1e-10,
    reference: Annotated[
        Reference,
        typer.Option("--reference", help="Cross-check: numpy.linalg.eigvals, scipy's eigs (ARPACK), or none."),
    ] = Reference.numpy,
    lyapunov: Annotated[
        int, typer.Option("--lyapunov", help="Top K Lyapunov exponents along a trajectory (0: none).")
    ] = 1,
    steps: Annotated[int, typer.Option("--steps", help="Trajectory length for the Lyapunov exponents.")] = 500,
    warmup: Annotated[int, typer.Option("--warmup", help="Leading steps that only align the QR frame.")] = 100,
    task: Annotated[
        Inputs | None,
        typer.Option(
            "--task",
            help="Inputs of the trajectory: random N(0, s^2), or a held-out batch of a task "
            "(default: the checkpoint's task, else random).",
        ),
    ] = None,
    text: Annotated[Path | None, typer.Option("--text", help="The text file of --task text.")] = None,
    batch: BatchOpt = 4,
    input_size: InputOpt = 4,
    input_scale: Annotated[
        float, typer.Option("--input-scale", min=0.0, help="Std of the random N(0, s^2) inputs driving the trajectory.")
    ] = 1.0,
    verdict_tol: Annotated[
        float, typer.Option("--verdict-tol", help="A per-step gain within 1 +- tol is stable.")
    ] = DEFAULT_TOL,
    plot: Annotated[bool, typer.Option("--plot", help="Write the plots (implied by --out).")] = False,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """The dominant eigenvalue of W_h (restarted Arnoldi or block power iteration, with an honest
    convergence flag), cross-checked against numpy or ARPACK; singular values and the Pascanu
    bounds; Lyapunov exponents along a trajectory; and a verdict that names its basis."""
    check_options(max_iter, tol, lyapunov, steps, warmup, verdict_tol)
    o = Output(json, quiet)
    rng = np.random.default_rng(seed)
    # a checkpoint brings its activation and task (bptt train keeps them under "options")
    opts = saved_options(model, weights)
    task_name, the_task = task_from_options(
        task.value if task is not None else None, opts, seq_len=steps, text=text, model=model
    )
    if the_task is not None:
        input_size = the_task.input_size
    elif text is not None:
        raise ValueError("--text applies to --task text only")
    src = resolve_params(
        rng,
        model=model,
        weights=weights,
        key=key,
        hidden=hidden,
        init=init.value,
        spectral_radius=spectral_radius,
        input_size=input_size,
    )
    params = src.params
    act = activation.value if activation is not None else str(opts.get("activation") or "tanh")
    W = params.W_h.astype(np.float64)
    H = W.shape[0]
    if lyapunov > H:
        raise ValueError(f"--lyapunov must be at most the hidden size H = {H}; got {lyapunov}")
    ref_method = reference.value
    notes: list[str] = []
    if ref_method == "numpy" and H > NUMPY_REFERENCE_MAX:
        ref_method = "arpack"
        notes.append(f"H = {H} > {NUMPY_REFERENCE_MAX}: reference switched from numpy to arpack")
    config = dict(
        model=model,
        weights=weights,
        key=key,
        hidden=H,
        init=init.value if src.origin == "init" else None,
        spectral_radius=spectral_radius,
        activation=act,
        method=method.value,
        max_iter=max_iter,
        tol=tol,
        reference=reference.value,
        lyapunov=lyapunov,
        steps=steps,
        warmup=warmup,
        task=task_name,
        text=text if the_task is not None and the_task.name == "text" else None,
        batch=batch,
        input=params.input_size,
        input_scale=input_scale,
        verdict_tol=verdict_tol,
        plot=plot or out is not None,
        out=out,
        seed=seed,
    )

    # the run folder first: a bad --out fails before any work
    folder = out_dir(out, "spectrum") if plot or out is not None else None
    pr = power_iteration(W, max_iter=max_iter, tol=tol, rng=rng, method=method.value)
    ref_all = None if ref_method == "none" else reference_eigenvalues(W, ref_method)
    ref1 = None if ref_all is None else complex(ref_all[0])
    sigma = singular_values(W)
    rho, rho_source = pick_rho(pr, ref1, ref_method, notes)
    bounds = pascanu_bounds(rho, float(sigma[0]), act)
    lyap = None
    if lyapunov > 0:
        if the_task is not None:
            if the_task.input_size != params.input_size:
                raise ValueError(
                    f"the {task_name} task has input size {the_task.input_size} but W_x expects {params.input_size}"
                )
            x = heldout_batch(the_task, rng, batch).x.astype(params.dtype)  # (T, B, D) the task's inputs
        else:
            x = rng.normal(0.0, input_scale, size=(steps, batch, params.input_size)).astype(params.dtype)
        lyap = lyapunov_exponents(params, x, activation=act, k=lyapunov, warmup=warmup)
    verdict = judge_matrix(
        rho,
        float(sigma[0]),
        act,
        linear=act == "identity",
        lyapunov_gain=None if lyap is None else float(lyap.gains[0]),
        tol=verdict_tol,
    )

    results: dict = {
        "source": {"origin": src.origin, "description": src.description, "hidden": H, "dtype": str(params.dtype)},
        "power_iteration": {
            "method": pr.method,
            "eigenvalue": pr.eigenvalue,
            "abs_eigenvalue": pr.abs_eigenvalue,
            "is_complex_pair": pr.is_complex_pair,
            "converged": pr.converged,
            "iterations": pr.iterations,
            "matvecs": pr.matvecs,
            "residual": pr.residual,
            "ratio_estimate": pr.ratio_estimate,
            "history": pr.history,
            "residual_history": pr.residual_history,
            "history_iterations": pr.history_iterations,
        },
        "reference": None,
        "rho": rho,
        "rho_source": rho_source,
        "singular_values": {"max": float(sigma[0]), "min": float(sigma[-1]), "all": sigma},
        "bounds": bounds,
        "lyapunov": None,
        "notes": notes,
        "plots": [],
    }
    if ref1 is not None:
        results["reference"] = {
            "method": ref_method,
            "eigenvalue": ref1,
            "abs_eigenvalue": abs(ref1),
            "abs_difference": abs(pr.abs_eigenvalue - abs(ref1)),
            "relative_difference": abs(pr.abs_eigenvalue - abs(ref1)) / abs(ref1) if abs(ref1) > 0 else None,
            "top_eigenvalues": ref_all[:10],
        }
    if lyap is not None:
        results["lyapunov"] = {
            "exponents": lyap.exponents,
            "gains": lyap.gains,
            "steps": lyap.steps,
            "warmup": warmup,
            "batch": int(x.shape[1]),
            "inputs": task_name,
            "input_scale": input_scale if the_task is None else None,
        }
    if folder is not None:
        results["plots"] = write_plots(folder, W, pr, ref_all, sigma, bounds, tol)

    show(o, pr, results, lyap, verdict, tol, max_iter)
    o.emit(document("spectrum", config, results, verdict=verdict.as_dict()))


def pick_rho(pr, ref1: complex | None, ref_method: str, notes: list[str]) -> tuple[float, str]:
    """rho for the bounds and the verdict, and where it came from.

    numpy's eigvals computes every eigenvalue, so its largest modulus is rho. A Krylov answer
    (ours or ARPACK's) is an eigenvalue that may not be the largest, so the larger of the two
    converged ones is the better estimate; a disagreement is noted.
    """
    if ref1 is not None and ref_method == "numpy":
        return abs(ref1), "numpy"
    candidates = []
    if pr.converged:
        candidates.append((pr.abs_eigenvalue, pr.method))
    if ref1 is not None:
        candidates.append((abs(ref1), ref_method))
        if pr.converged and abs(abs(ref1) - pr.abs_eigenvalue) > 1e-6 * max(abs(ref1), 1e-300):
            notes.append(
                f"{pr.method} and {ref_method} disagree on |lambda_1| ({pr.abs_eigenvalue:.10g} vs {abs(ref1):.10g}): "
                "a Krylov method can converge to a non-dominant eigenvalue; the larger is used as rho"
            )
    if not candidates:
        return pr.abs_eigenvalue, f"{pr.method} (not converged)"
    value, source = max(candidates)
    return value, source


def write_plots(folder: Path, W, pr, ref_all, sigma, bounds, tol) -> list[Path]:
    from bptt_cli.plots import spectrum as plots

    H = W.shape[0]
    ref_abs = None if ref_all is None else float(abs(ref_all[0]))
    # the complex plane shows every eigenvalue when numpy gave them all, else only lambda_1
    every = ref_all if ref_all is not None and ref_all.size == H else None
    return [
        plots.eigenvalue_plane(
            folder / "spectrum-eigenvalues.png", every, pr.eigenvalue, title=f"eigenvalues of W_h (H = {H})"
        ),
        plots.convergence(
            folder / "spectrum-convergence.png",
            pr.history_iterations,
            pr.history,
            pr.residual_history,
            ref_abs,
            tol=tol,
            title=f"{pr.method}: error against iteration",
        ),
        plots.singular_spectrum(
            folder / "spectrum-singular-values.png",
            sigma,
            one_over_gamma=bounds["one_over_gamma"],
            rho=bounds["rho"],
            title=f"singular values of W_h (H = {H})",
        ),
    ]


def show(o: Output, pr, results: dict, lyap, verdict, tol: float, max_iter: int) -> None:
    src, ref = results["source"], results["reference"]
    rows = [
        ["lambda_1", fmt(pr.eigenvalue, 8), "-" if ref is None else fmt(ref["eigenvalue"], 8)],
        ["|lambda_1|", fmt(pr.abs_eigenvalue, 12), "-" if ref is None else fmt(ref["abs_eigenvalue"], 12)],
        ["complex pair", fmt(pr.is_complex_pair), "-" if ref is None else fmt(ref["eigenvalue"].imag != 0)],
        ["converged", fmt(pr.converged), ""],
        ["iterations / matvecs", f"{pr.iterations} / {pr.matvecs}", ""],
        ["residual", fmt(pr.residual, 3), ""],
        ["|lambda_2/lambda_1| est.", fmt(pr.ratio_estimate), ""],
    ]
    if ref is not None:
        rows.append(["|lambda_1| difference", fmt(ref["abs_difference"], 3), ""])
    caption = "residual = ||W u - lambda u|| / |lambda|"
    if not pr.converged:
        caption = (
            f"NOT converged within --max-iter {max_iter}: residual {pr.residual:.3g} > tol {tol:g}; "
            "the estimate is the best seen, not a result"
        )
    ref_name = "reference" if ref is None else f"reference ({ref['method']})"
    o.show(table(f"dominant eigenvalue of W_h: {src['description']}", ["", pr.method, ref_name], rows, caption=caption))
    b = results["bounds"]
    o.show(
        table(
            f"singular values and the Pascanu bounds (gamma = max|f'| = {b['gamma']:g})",
            ["quantity", "value", "meaning"],
            [
                ["sigma_max", b["sigma_max"], b["sigma_statement"]],
                ["sigma_min", results["singular_values"]["min"], ""],
                ["rho", b["rho"], b["rho_statement"]],
            ],
        )
    )
    if lyap is not None:
        r = results["lyapunov"]
        o.show(
            table(
                f"Lyapunov exponents along the trajectory ({r['steps']} steps after {r['warmup']} warm-up, "
                f"batch {r['batch']}, inputs "
                + (f"N(0, {r['input_scale']:g}^2))" if r["input_scale"] is not None else f"of the {r['inputs']} task)"),
                ["i", "exponent (log per step)", "gain per step"],
                [[i + 1, float(e), float(g)] for i, (e, g) in enumerate(zip(lyap.exponents, lyap.gains, strict=True))],
            )
        )
    for note in results["notes"]:
        o.show(f"note: {note}")
    if results["plots"]:
        o.show("plots: " + ", ".join(str(p) for p in results["plots"]))
    o.show(f"verdict: [bold]{verdict.label}[/bold] (basis: {verdict.basis}) - {verdict.message}")
