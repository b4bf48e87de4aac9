"""`bptt gradcheck`: a random small RNN, its gradients checked three ways."""

from dataclasses import replace
from typing import Annotated

import numpy as np
import typer

from bptt_cli.cli import (
    Activation,
    ActivationOpt,
    BatchOpt,
    Dtype,
    DtypeOpt,
    HiddenOpt,
    InputOpt,
    JsonOpt,
    Loss,
    LossOpt,
    Output,
    OutputOpt,
    QuietOpt,
    SeedOpt,
    SeqLenOpt,
    command,
)
from bptt_cli.gradcheck import gradcheck as run_gradcheck
from bptt_cli.model import init_params
from bptt_cli.report import document, table


def random_problem(
    rng: np.random.Generator, *, T: int, B: int, D: int, H: int, V: int, loss: str, dtype: str, masked: bool
):
    """A random network, inputs, targets and (optionally) a random 0/1 mask."""
    out_size = 0 if loss == "half-square" else V
    params = init_params(rng, input_size=D, hidden_size=H, output_size=out_size, dtype=dtype)
    # non-zero biases so that their gradients are exercised away from the symmetric point
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


@command
def gradcheck(
    seq_len: SeqLenOpt = 8,
    batch: BatchOpt = 3,
    input_size: InputOpt = 4,
    hidden: HiddenOpt = 6,
    output: OutputOpt = 5,
    activation: ActivationOpt = Activation.tanh,
    loss: LossOpt = Loss.xent,
    dtype: DtypeOpt = Dtype.float64,
    mask: Annotated[bool, typer.Option("--mask/--no-mask", help="Score a random half of the steps only.")] = False,
    coords: Annotated[
        int, typer.Option("--coords", min=1, help="Coordinates per parameter for finite differences.")
    ] = 10,
    eps: Annotated[float, typer.Option("--eps", help="Finite-difference step (> 0).")] = 1e-6,
    seed: SeedOpt = 0,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Check BPTT on a random small RNN three ways: efficient vs finite differences, naive vs
    finite differences, efficient vs naive. Exit code 1 if any relative error exceeds its tolerance."""
    out = Output(json, quiet)
    config = dict(
        seq_len=seq_len,
        batch=batch,
        input=input_size,
        hidden=hidden,
        output=output,
        activation=activation.value,
        loss=loss.value,
        dtype=dtype.value,
        mask=mask,
        coords=coords,
        eps=eps,
        seed=seed,
    )
    rng = np.random.default_rng(seed)
    params, x, targets, m = random_problem(
        rng, T=seq_len, B=batch, D=input_size, H=hidden, V=output, loss=loss.value, dtype=dtype.value, masked=mask
    )
    rows = run_gradcheck(
        params, x, targets, rng=rng, n_coords=coords, eps=eps, loss=loss.value, activation=activation.value, mask=m
    )
    passed = all(r.passed for r in rows)
    results = {
        "passed": passed,
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
    out.show(
        table(
            f"gradcheck: {activation.value} RNN, {loss.value} loss, {dtype.value}, T={seq_len} B={batch} H={hidden}",
            ["check", "parameter", "relative error", "tolerance", "ok"],
            [[r.check, r.parameter, r.rel_error, r.tolerance, "ok" if r.passed else "FAIL"] for r in rows],
            caption="relative error = ||a - b|| / (||a|| + ||b||) over the compared entries",
        )
    )
    out.show("[green]all checks passed[/]" if passed else "[red]some checks failed[/]")
    out.emit(document("gradcheck", config, results))
    if not passed:
        raise typer.Exit(1)
