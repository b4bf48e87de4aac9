"""`bptt trace`: the gradient signal back through time, its measured gain, and the memory horizon."""

from typing import Annotated

from bptt_cli.analyses import trace as analysis
from bptt_cli.analyses.common import config_dict
from bptt_cli.cli.options import (
    AnalysedActivationOpt,
    AnalysedLossOpt,
    BatchFirstOpt,
    DataAlphabetOpt,
    DataBatchOpt,
    DataDelayOpt,
    DataSeqLenOpt,
    DataTaskOpt,
    EpsOpt,
    FailOnOpt,
    H0Opt,
    HeadOpt,
    HiddenOpt,
    Init,
    InitOpt,
    InputOpt,
    InputScaleOpt,
    InputsOpt,
    Jacobian,
    JsonOpt,
    KeyOpt,
    LyapunovOpt,
    ModelOpt,
    OutOpt,
    OutputOpt,
    PlotsOpt,
    QuietOpt,
    SeedOpt,
    SignalChoice,
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
from bptt_cli.cli.render.trace import render

D = analysis.TraceConfig


def make_config(params: dict) -> "analysis.TraceConfig":
    """The analysis' config from the command's parameters (also each point of `bptt sweep trace`)."""
    return config_from(D, params)


@handle_errors("trace")
def command(
    model: ModelOpt = None,
    key: KeyOpt = None,
    head: HeadOpt = None,
    hidden: HiddenOpt = D.hidden,
    init: InitOpt = Init(D.init),
    spectral_radius: SpectralRadiusOpt = None,
    activation: AnalysedActivationOpt = None,
    input: InputOpt = D.input,
    output: OutputOpt = D.output,
    loss: AnalysedLossOpt = None,
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
    signal: Annotated[
        SignalChoice,
        choice("--signal", SignalChoice, "The signal the verdict judges: the last loss alone, or all losses"),
    ] = SignalChoice(D.signal),
    eps: EpsOpt = D.eps,
    verdict_tol: VerdictTolOpt = D.verdict_tol,
    jacobian: Annotated[
        Jacobian, choice("--jacobian", Jacobian, "||J_t||: auto (exact while cheap), its cheap bound, or exact")
    ] = Jacobian(D.jacobian),
    lyapunov: LyapunovOpt = D.lyapunov,
    warmup: WarmupOpt = None,
    fail_on: FailOnOpt = None,
    seed: SeedOpt = D.seed,
    out: OutOpt = None,
    plots: PlotsOpt = None,
    json: JsonOpt = False,
    quiet: QuietOpt = False,
) -> None:
    """Follow the gradient signal back through time: ||dL/dh_t|| (all losses) and ||dl_T/dh_t||
    (the last loss alone) per step, in log space so that nothing overflows; fit the per-step
    gain, find the memory horizon, and set the measurement beside rho(W_h), sigma_max(W_h) and
    the Lyapunov gain."""
    labels = parse_fail_on(fail_on)
    config = make_config(locals())
    result = analysis.run(config)
    o = Output(json, quiet, "trace")
    render(o, result)
    o.emit({**config_dict(config), "fail_on": list(labels)}, result.results(), result.verdict.as_dict())
    exit_for(result.verdict.label, labels)
