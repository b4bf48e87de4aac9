"""`bptt trace`: the gradient signal back through time, its measured gain, and the memory horizon."""

import math
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
    Loss,
    OutOpt,
    Output,
    OutputOpt,
    QuietOpt,
    SeedOpt,
    SpectralRadiusOpt,
    command,
    out_dir,
    usage_error,
)
from bptt_cli.report import document, fmt, table
from bptt_cli.sources import resolve_params, saved_options, task_from_options
from bptt_cli.spectrum import lyapunov_exponents, reference_eigenvalues, singular_values
from bptt_cli.tasks import TASKS, heldout_batch
from bptt_cli.trace import JACOBIAN_MODES, TraceResult
from bptt_cli.trace import trace as run_trace
from bptt_cli.verdict import DEFAULT_TOL, Verdict, judge_matrix, judge_trace

Signal = Enum("Signal", {"last": "last", "all": "all"}, type=str)
Jacobian = Enum("Jacobian", {m: m for m in JACOBIAN_MODES}, type=str)
TaskChoice = Enum("TaskChoice", {n: n for n in ("random", *TASKS)}, type=str)


def fmt_ln(ln: float, digits: int = 4) -> str:
    """A norm given by its natural log, printed as a number even beyond float range (1.5e+1760)."""
    if math.isnan(ln):
        return "nan"
    if ln == -math.inf:
        return "0"
    if ln == math.inf:
        return "inf"
    e10 = ln / math.log(10.0)
    exp = math.floor(e10)
    mant = 10 ** (e10 - exp)
    if mant >= 10 - 0.5 * 10 ** (1 - digits):  # rounds up to 10.0 in the mantissa
        mant, exp = mant / 10, exp + 1
    return f"{mant:.{digits - 1}f}e{exp:+d}" if abs(exp) >= 4 else f"{math.exp(ln):.{digits}g}"


def selected_steps(T: int, head: int = 5, between: int = 8) -> list[int]:
    """Steps back k to show: the first and last `head`, and `between` log-spaced in the middle."""
    ks = set(range(min(head, T))) | set(range(max(0, T - head), T))
    if T > 2 * head:
        ks |= {int(round(v)) for v in np.geomspace(head, T - head, between)}
    return sorted(k for k in ks if 0 <= k < T)


def load_inputs(path: Path, T: int, B: int, D: int) -> np.ndarray:
    """Inputs from a .npy file of shape (T_data, B_data, D) or (T_data, D): the first T steps, B sequences."""
    try:
        arr = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise ValueError(f"--inputs {path}: not a numeric .npy array without pickles ({e})") from None
    except (OSError, EOFError) as e:
        raise ValueError(f"--inputs {path}: cannot read ({e})") from None
    if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iuf":
        raise ValueError(f"--inputs {path}: not a real numeric array (dtype {getattr(arr, 'dtype', '?')})")
    if arr.ndim == 2:
        arr = arr[:, None, :]  # one sequence
    if arr.ndim != 3:
        raise ValueError(f"--inputs {path}: shape {arr.shape}; expected (T, B, D) or (T, D)")
    T_data, B_data, D_data = arr.shape
    if D_data != D:
        raise ValueError(f"--inputs {path}: input size D = {D_data}, but the model expects D = {D}")
    if T > T_data:
        raise ValueError(f"--seq-len {T} is larger than the {T_data} steps in --inputs {path}")
    if B > B_data:
        raise ValueError(f"--batch {B} is larger than the {B_data} sequences in --inputs {path}")
    if not np.all(np.isfinite(arr[:T, :B])):
        raise ValueError(f"--inputs {path}: contains NaN or infinite values")
    return arr[:T, :B].astype(np.float64)


def random_targets(rng: np.random.Generator, loss: str, T: int, B: int, V: int) -> np.ndarray | None:
    if loss == "xent":
        return rng.integers(0, V, size=(T, B))
    if loss == "mse":
        return rng.normal(size=(T, B, V))
    return None


def signal_dict(sig) -> dict:
    return {"ln_mean": sig.log_mean, "ln_min": sig.log_min, "ln_max": sig.log_max}


def make_verdict(res: TraceResult, signal: str, tol: float, eps: float, evidence: dict) -> Verdict:
    fit, sig = (res.fit, res.last) if signal == "last" else (res.fit_total, res.total)
    basis = "trace_last_loss" if signal == "last" else "trace_all_losses"
    # ln(||signal at t = 1|| / ||signal at t = T||), in python floats: -inf - -inf is nan, quietly
    log_net = float(sig.log_mean[0]) - float(sig.log_mean[-1])
    return judge_trace(
        fit.gain,
        fit.r2,
        fit.points,
        log_net,
        res.seq_len - 1,
        basis=basis,
        tol=tol,
        eps=eps,
        evidence={"fit": fit.as_dict(), **evidence},
    )


@command
def trace(
    model: Annotated[Path | None, typer.Option("--model", help="A bptt checkpoint (.npz) to trace.")] = None,
    weights: Annotated[Path | None, typer.Option("--weights", help="W_h from .npy/.npz/.pt/.pth.")] = None,
    key: Annotated[str | None, typer.Option("--key", help="Array name inside --weights (.npz/.pt).")] = None,
    hidden: HiddenOpt = 32,
    init: InitOpt = Init.gaussian,
    spectral_radius: SpectralRadiusOpt = None,
    input_size: InputOpt = 4,
    output: OutputOpt = 4,
    activation: Annotated[
        Activation | None,
        typer.Option("--activation", help="Hidden activation f (default: the checkpoint's, or tanh)."),
    ] = None,
    loss_fn: Annotated[
        Loss | None,
        typer.Option("--loss-fn", help="Per-step loss (default: the task's or the checkpoint's, else xent)."),
    ] = None,
    seq_len: Annotated[
        int | None, typer.Option("--seq-len", "-T", min=1, help="Sequence length T (default: 200, or the task's).")
    ] = None,
    batch: BatchOpt = 8,
    input_scale: Annotated[
        float, typer.Option("--input-scale", min=0.0, help="Std of the random inputs (large values saturate tanh).")
    ] = 1.0,
    inputs: Annotated[
        Path | None, typer.Option("--inputs", help="Inputs from a .npy file, (T, B, D) or (T, D), instead of random.")
    ] = None,
    task: Annotated[
        TaskChoice | None,
        typer.Option(
            "--task",
            help="Inputs: random, or a held-out batch of a task (recall, adding, sine, text) "
            "(default: the checkpoint's task, else random).",
        ),
    ] = None,
    text: Annotated[Path | None, typer.Option("--text", help="The text file of --task text.")] = None,
    signal: Annotated[
        Signal, typer.Option("--loss", help="Signal the verdict uses: the last loss alone, or all losses.")
    ] = Signal.last,
    eps: Annotated[float, typer.Option("--eps", help="Horizon: the fraction of ||dl_T/dh_T||, in (0, 1).")] = 1e-3,
    tol: Annotated[
        float, typer.Option("--verdict-tol", help="A per-step gain within 1 +- tol is stable.")
    ] = DEFAULT_TOL,
    jacobian: Annotated[
        Jacobian, typer.Option("--jacobian", help="||J_t||: exact spectral norm, its cheap bound, or auto.")
    ] = Jacobian.auto,
    lyapunov: Annotated[
        bool, typer.Option("--lyapunov/--no-lyapunov", help="Also measure the Lyapunov gain (QR method).")
    ] = True,
    plot: Annotated[
        bool | None, typer.Option("--plot/--no-plot", help="Write the plot (default: when --out is given).")
    ] = None,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Follow the gradient signal back through time: ||dL/dh_t|| (all losses) and ||dl_T/dh_t||
    (the last loss alone) per step, in log space so that nothing overflows; fit the per-step gain,
    find the memory horizon, and set the measurement beside rho(W_h), sigma_max(W_h) and the
    Lyapunov gain."""
    if not (math.isfinite(eps) and 0 < eps < 1):
        usage_error("--eps", f"must be in (0, 1); got {eps:g}")
    if not (math.isfinite(tol) and 0 <= tol < 1):
        usage_error("--verdict-tol", f"must be in [0, 1); got {tol:g}")
    if not math.isfinite(input_scale):
        usage_error("--input-scale", f"must be finite; got {input_scale}")
    plot = plot if plot is not None else out is not None
    o = Output(json, quiet)
    rng = np.random.default_rng(seed)
    # a checkpoint brings its own activation, loss and task (unless the options say otherwise)
    opts = saved_options(model, weights)
    task_name, the_task = task_from_options(
        task.value if task is not None else None,
        opts,
        seq_len=seq_len if seq_len is not None else opts.get("seq_len"),
        text=text,
        model=model,
    )
    if the_task is not None and inputs is not None:
        usage_error("--inputs", f"gives the inputs itself; it cannot be combined with the {task_name} task")
    if the_task is not None:
        if loss_fn is not None and loss_fn.value != the_task.loss:
            usage_error("--loss-fn", f"{loss_fn.value} does not match the {task_name} task's loss {the_task.loss}")
        lf = the_task.loss
        input_size, output = the_task.input_size, the_task.output_size
    else:
        lf = loss_fn.value if loss_fn is not None else str(opts.get("loss") or "xent")
    src = resolve_params(
        rng,
        model=model,
        weights=weights,
        key=key,
        hidden=hidden,
        init=init.value,
        spectral_radius=spectral_radius,
        input_size=input_size,
        output_size=0 if lf == "half-square" else output,
    )
    act = activation.value if activation is not None else str(opts.get("activation") or "tanh")
    params = src.params
    D, H, V = params.input_size, params.hidden_size, params.output_size
    mask = None
    if the_task is not None:  # a held-out batch of the task: its inputs, targets and loss mask
        held = heldout_batch(the_task, rng, batch)
        x, targets, mask = held.x, held.targets, held.mask
        T, B = x.shape[0], x.shape[1]
    else:
        T, B = (seq_len if seq_len is not None else 200), batch
        if inputs is not None:
            x = load_inputs(inputs, T, B, D)
        else:
            x = input_scale * rng.normal(size=(T, B, D))  # (T, B, D)
        targets = random_targets(rng, lf, T, B, V)
    config = dict(
        model=model,
        weights=weights,
        key=key,
        hidden=H,
        init=init.value,
        spectral_radius=spectral_radius,
        input=D,
        output=V,
        activation=act,
        loss_fn=lf,
        seq_len=T,
        batch=B,
        input_scale=input_scale,
        inputs=inputs,
        task=task_name,
        text=text if text is not None else (opts.get("text") if the_task is not None else None),
        loss=signal.value,
        eps=eps,
        verdict_tol=tol,
        jacobian=jacobian.value,
        lyapunov=lyapunov,
        plot=plot,
        seed=seed,
        out=out,
        source=src.description,
    )
    res = run_trace(params, x, targets, loss=lf, activation=act, mask=mask, eps=eps, jacobian=jacobian.value)

    W = params.W_h.astype(np.float64)
    rho = float(np.abs(reference_eigenvalues(W)[0]))
    sigma_max = float(singular_values(W)[0])
    lyap_gain = float(lyapunov_exponents(params, x, activation=act).gains[0]) if lyapunov else None
    matrix_verdict = judge_matrix(rho, sigma_max, act, linear=act == "identity", tol=tol)
    predictions = {
        "rho": rho,
        "sigma_max": sigma_max,
        "lyapunov_gain": lyap_gain,
        "matrix_verdict": matrix_verdict.as_dict(),
    }
    verdict = make_verdict(
        res, signal.value, tol, eps, {"rho": rho, "sigma_max": sigma_max, "lyapunov_gain": lyap_gain}
    )
    results: dict = {
        "loss_value": res.loss,
        "fit": res.fit.as_dict(),
        "fit_total": res.fit_total.as_dict(),
        "horizon": res.horizon.as_dict(),
        "suggested_window": res.suggested_window,
        "ln_start_fraction": res.log_start_fraction,
        "predictions": predictions,
        "jacobian_kind": res.jacobian_kind,
        "per_step": {
            "t": np.arange(1, T + 1),
            "last": signal_dict(res.last),
            "total": signal_dict(res.total),
            "jacobian_norm": res.jacobian_norm,
            "saturation": res.saturation,
        },
    }
    if plot:
        from bptt_cli.plots.trace import trace_plot

        results["plots"] = [trace_plot(out_dir(out, "trace") / "trace.png", res, signal=signal.value)]

    jac_name = "||J_t||" if res.jacobian_kind == "exact" else "||J_t|| bound"
    rows = []
    for k in selected_steps(T):
        t = T - 1 - k
        rows.append(
            [
                t + 1,
                k,
                fmt_ln(res.last.log_mean[t]),
                fmt_ln(res.last.log_min[t], 3),
                fmt_ln(res.last.log_max[t], 3),
                fmt_ln(res.total.log_mean[t]),
                float(res.jacobian_norm[t]),
                float(res.saturation[t]),
            ]
        )
    o.show(
        table(
            f"trace: {act} RNN, {lf} loss, {task_name} inputs, T={T} B={B} H={H} ({src.description})",
            ["t", "k back", "||dl_T/dh_t||", "min", "max", "||dL/dh_t||", jac_name, "mean f'"],
            rows,
            caption="batch means of per-sequence norms; "
            + ("exact spectral norms" if res.jacobian_kind == "exact" else "bound max f'(a_t) * sigma_max(W_h)"),
        )
    )
    fit, fit_t, h = res.fit, res.fit_total, res.horizon
    o.show(
        table(
            "theory beside measurement (per-step gain of the gradient signal)",
            ["quantity", "value", "what it says"],
            [
                ["rho(W_h)", rho, "linear net: the gain; nonlinear: > 1 only makes explosion possible"],
                ["sigma_max(W_h)", sigma_max, "< 1 guarantees vanishing (gamma = 1)"],
                ["Lyapunov gain", lyap_gain, "top exponent of the Jacobian product along this trajectory"],
                ["measured gain, last loss", fit.gain, f"r^2 {fmt(fit.r2)} over k = {fit.first}..{fit.last}"],
                ["measured gain, all losses", fit_t.gain, f"r^2 {fmt(fit_t.r2)} over k = {fit_t.first}..{fit_t.last}"],
            ],
        )
    )
    horizon_txt = (
        f"{h.steps:.4g} steps ({h.method})" if h.steps is not None else f"{h.method} (the signal does not decay)"
    )
    o.show(
        f"horizon (eps = {eps:g}): {horizon_txt}; suggested truncation window: "
        f"{res.suggested_window if res.suggested_window is not None else 'none (use full BPTT with clipping)'}; "
        f"||dl_T/dh_1|| / ||dl_T/dh_T|| = {fmt_ln(res.log_start_fraction)}"
    )
    o.show(f"spectrum from the matrix alone: {matrix_verdict.label} ({matrix_verdict.message})")
    color = {"exploding": "red", "vanishing": "yellow", "stable": "green"}.get(verdict.label, "magenta")
    o.show(f"[bold {color}]verdict: {verdict.label}[/] - {verdict.message}")
    if plot:
        o.show(f"plot: {results['plots'][0]}")
    o.emit(document("trace", config, results, verdict=verdict.as_dict()))
