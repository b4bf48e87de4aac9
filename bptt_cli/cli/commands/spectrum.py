"""`bptt spectrum`: the dominant eigenvalue of W_h done right, singular values, Lyapunov exponents, a verdict."""

from typing import Annotated

import typer

from bptt_cli.analyses import spectrum as analysis
from bptt_cli.analyses.common import config_dict
from bptt_cli.cli.options import (
    AnalysedActivationOpt,
    BatchFirstOpt,
    DataAlphabetOpt,
    DataBatchOpt,
    DataDelayOpt,
    DataSeqLenOpt,
    DataTaskOpt,
    FailOnOpt,
    H0Opt,
    HeadOpt,
    HiddenOpt,
    Init,
    InitOpt,
    InputOpt,
    InputScaleOpt,
    InputsOpt,
    JsonOpt,
    KeyOpt,
    LyapunovOpt,
    Method,
    ModelOpt,
    OutOpt,
    PlotsOpt,
    QuietOpt,
    Reference,
    SeedOpt,
    SpanOpt,
    SpectralRadiusOpt,
    TargetsOpt,
    TextClean,
    TextCleanOpt,
    TextOpt,
    VerdictTolOpt,
    WarmupOpt,
    choice,
    config_from,
    parse_fail_on,
)
from bptt_cli.cli.output import Output, exit_for, handle_errors
from bptt_cli.cli.render.spectrum import render

D = analysis.SpectrumConfig


def make_config(params: dict) -> "analysis.SpectrumConfig":
    """The analysis' config from the command's parameters (also each point of `bptt sweep spectrum`)."""
    return config_from(D, params)


@handle_errors("spectrum")
def command(
    model: ModelOpt = None,
    key: KeyOpt = None,
    head: HeadOpt = None,
    hidden: HiddenOpt = D.hidden,
    init: InitOpt = Init(D.init),
    spectral_radius: SpectralRadiusOpt = None,
    activation: AnalysedActivationOpt = None,
    input: InputOpt = D.input,
    method: Annotated[
        Method, choice("--method", Method, "Restarted Arnoldi (krylov-schur), 2-D block or plain power iteration")
    ] = Method(D.method),
    max_iter: Annotated[
        int, typer.Option("--max-iter", min=1, metavar="N", help="Iteration budget (matvecs for krylov-schur).")
    ] = D.max_iter,
    tol: Annotated[
        float, typer.Option("--tol", metavar="X", help="Relative residual ||Wu - lambda u|| / |lambda| to reach (> 0).")
    ] = D.tol,
    reference: Annotated[
        Reference, choice("--reference", Reference, "Cross-check with numpy.linalg.eigvals, ARPACK's eigs, or none")
    ] = Reference(D.reference),
    lyapunov: LyapunovOpt = D.lyapunov,
    warmup: WarmupOpt = None,
    task: DataTaskOpt = None,
    text: TextOpt = None,
    text_clean: TextCleanOpt = TextClean(D.text_clean),
    seq_len: DataSeqLenOpt = None,
    batch: DataBatchOpt = None,
    input_scale: InputScaleOpt = D.input_scale,
    inputs: InputsOpt = None,
    targets: TargetsOpt = None,
    batch_first: BatchFirstOpt = False,
    span: SpanOpt = None,
    delay: DataDelayOpt = None,
    alphabet: DataAlphabetOpt = None,
    h0: H0Opt = D.h0,
    verdict_tol: VerdictTolOpt = D.verdict_tol,
    fail_on: FailOnOpt = None,
    seed: SeedOpt = D.seed,
    out: OutOpt = None,
    plots: PlotsOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """The dominant eigenvalue of W_h (restarted Arnoldi, block or plain power iteration, with an
    honest convergence flag), cross-checked against numpy or ARPACK; the singular values and
    the Pascanu bounds; the Lyapunov exponents along a trajectory; and a verdict that names its
    basis."""
    labels = parse_fail_on(fail_on)
    config = make_config(locals())
    result = analysis.run(config)
    o = Output(json, quiet, "spectrum")
    render(o, result)
    o.emit({**config_dict(config), "fail_on": list(labels)}, result.results(), result.verdict.as_dict())
    exit_for(result.verdict.label, labels)
