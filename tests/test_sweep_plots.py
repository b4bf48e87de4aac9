"""The figures of `bptt sweep` (plots/sweep.py): phase diagram, verdict map, lines, bars, and the
theory's edge of chaos on them. Results are built by hand (and once by a real, tiny sweep)."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from bptt_cli.analyses.grid import Axis
from bptt_cli.analyses.sweep import ANALYSES, SweepConfig, SweepPoint, SweepResult, headline
from bptt_cli.core.theory import mean_field
from bptt_cli.plots import pyplot
from bptt_cli.plots.sweep import (
    EDGE_GID,
    HEADLINE_KEYS,
    bars_figure,
    check_metric,
    lines_figure,
    phase_figure,
    sweep_plots,
)

PNG = b"\x89PNG\r\n\x1a\n"


def axis(name: str, values: list, log: bool = False) -> Axis:
    texts = tuple(str(v) for v in values)
    numeric = all(isinstance(v, (int, float)) for v in values)
    return Axis(name, texts, tuple(float(v) for v in values) if numeric else None, log)


def verdict_of(gain: float | None) -> str:
    if gain is None:
        return "undetermined"
    return "vanishing" if gain < 0.98 else "exploding" if gain > 1.02 else "stable"


def spectrum_value(coords: dict, *, theory: bool = True, shift: float = 0.0) -> dict:
    """A spectrum point's value: lambda from mean-field theory at g = spectral radius (plus noise)."""
    g = float(coords.get("spectral-radius", 1.0))
    mf = mean_field(g, float(coords.get("input-scale", 0.1)))
    lyap = mf.lyapunov + 0.02 * math.sin(7 * g) + shift
    gain = math.exp(lyap)
    head = {
        "label": verdict_of(gain),
        "basis": "trace_last_loss",
        "gain": gain,
        "lyapunov": lyap,
        "rho": g,
        "sigma_max": 2 * g,
        "theory_lyapunov": mf.lyapunov if theory else None,
        "theory_gain": mf.gain if theory else None,
    }
    results = {"theory": mf.as_dict() if theory else None}
    return {"results": results, "verdict": {"label": head["label"]}, "headline": head, "seconds": 0.0}


def make_result(axes: list[Axis], value=spectrum_value, *, analysis: str = "spectrum", skip=()) -> SweepResult:
    """A SweepResult over the product of `axes`; value(coords) gives each point's value (None: not run)."""
    points = []
    for index, idx in enumerate(itertools.product(*(range(len(a.texts)) for a in axes))):
        coords = {a.name: a.value(i) for a, i in zip(axes, idx, strict=True)}
        if index in skip:
            continue
        v = value(coords)
        points.append(SweepPoint(index, str(index), coords, index, "bptt ...", v))
    config = SweepConfig(analysis, ("--hidden", "32"), tuple(axes), 0)
    return SweepResult(config, tuple(points), (), "serial", 1, None, 0.0, None)


def edge_artists(fig) -> list:
    out = []
    for ax in fig.axes:
        out += [c for c in ax.collections if c.get_gid() == EDGE_GID]
        out += [ln for ln in ax.lines if ln.get_gid() == EDGE_GID]
    return out


def mesh_of(ax):
    from matplotlib.collections import QuadMesh

    return next(c for c in ax.collections if isinstance(c, QuadMesh))


def legend_labels(fig) -> list[str]:
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    return [t.get_text() for lg in legends for t in lg.get_texts()]


def assert_png(path: Path) -> None:
    assert path.is_file()
    data = path.read_bytes()
    assert data[:8] == PNG
    assert 5_000 < len(data) < 2_000_000
    img = pyplot().imread(path)
    assert img.ndim == 3 and 200 < img.shape[0] < 3000 and 200 < img.shape[1] < 4000


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    pyplot().close("all")


SR = axis("spectral-radius", [0.5, 1.0, 1.5, 2.0, 2.5])
IS = axis("input-scale", [0.01, 0.5, 1.0])


# ---------------------------------------------------------------------------- --metric


def test_check_metric_accepts_headline_keys_and_rejects_others() -> None:
    check_metric("spectrum", None)
    check_metric("spectrum", "lyapunov")
    check_metric("trace", "horizon")
    check_metric("compare-truncation", "verdict")
    for analysis in ANALYSES:
        check_metric(analysis, "verdict")
        check_metric(analysis, "gain")
    with pytest.raises(ValueError, match=r"--metric.*lyapunov"):
        check_metric("spectrum", "horizon")  # a trace number, not a spectrum one
    with pytest.raises(ValueError, match="--metric"):
        check_metric("train", "bogus")
    with pytest.raises(ValueError):
        check_metric("nonsense", "gain")


def test_headline_keys_match_the_analyses_headline() -> None:
    for analysis in ANALYSES:
        assert set(headline(analysis, {}, {})) <= set(HEADLINE_KEYS[analysis]), analysis


def test_sweep_plots_rejects_a_metric_the_sweep_does_not_have(tmp_path: Path) -> None:
    r = make_result([SR, IS])
    with pytest.raises(ValueError, match=r"--metric.*lyapunov"):
        sweep_plots(tmp_path, r, "horizon")
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------- two axes


def test_phase_diagram_and_verdict_map_with_the_edge_of_chaos(tmp_path: Path) -> None:
    r = make_result([SR, IS])
    paths = sweep_plots(tmp_path, r, None)
    assert [p.name for p in paths] == ["sweep-lyapunov.png", "sweep-verdicts.png"]
    for p in paths:
        assert_png(p)
    fig = phase_figure(r, "lyapunov")
    ax = fig.axes[0]
    assert ax.get_xlabel() == "spectral-radius" and ax.get_ylabel() == "input-scale"
    assert len(edge_artists(fig)) == 1  # theory's lambda crosses 0 between g = 1 and 1.5
    assert "edge of chaos (mean-field theory)" in legend_labels(fig)
    assert mesh_of(ax).norm.vcenter == 0.0  # diverging, centred on lambda = 0
    z = np.ma.asarray(mesh_of(ax).get_array()).reshape(3, 5)
    assert not np.ma.getmaskarray(z).any()
    assert z[0, 0] == pytest.approx(r.points[0].value["headline"]["lyapunov"])  # row = input-scale 0.01
    verdicts = phase_figure(r, "verdict")
    assert len(edge_artists(verdicts)) == 1
    assert {"vanishing", "exploding"} <= set(legend_labels(verdicts))


def test_no_theory_draws_no_curve(tmp_path: Path) -> None:
    r = make_result([SR, IS], lambda c: spectrum_value(c, theory=False))
    assert edge_artists(phase_figure(r, "lyapunov")) == []
    assert edge_artists(phase_figure(r, "verdict")) == []
    for p in sweep_plots(tmp_path, r, "gain"):
        assert_png(p)
    fig = phase_figure(r, "gain")
    assert mesh_of(fig.axes[0]).norm.vcenter == 1.0  # gains are centred on 1


def test_theory_without_a_sign_change_draws_no_curve() -> None:
    r = make_result([axis("spectral-radius", [0.3, 0.5, 0.7]), IS])
    fig = phase_figure(r, "lyapunov")
    assert edge_artists(fig) == []
    assert any("lambda < 0 over the whole grid" in t for t in legend_labels(fig))


def test_a_failed_point_and_missing_values_are_grey(tmp_path: Path) -> None:
    def value(c: dict) -> dict:
        if c == {"spectral-radius": 1.5, "input-scale": 0.5}:
            return {"error": "ValueError: the network blew up", "seconds": 0.0}
        v = spectrum_value(c)
        if c["spectral-radius"] == 2.5:
            v["headline"] |= {"lyapunov": None, "theory_lyapunov": None, "theory_gain": None}
            v["results"] = {"theory": None}
        return v

    r = make_result([SR, IS], value, skip={1})  # index 1 (0.5, 0.5) never finished
    paths = sweep_plots(tmp_path, r, "lyapunov")
    for p in paths:
        assert_png(p)
    fig = phase_figure(r, "lyapunov")
    mesh = mesh_of(fig.axes[0])
    mask = np.ma.getmaskarray(np.ma.asarray(mesh.get_array())).reshape(3, 5)
    expect = np.zeros((3, 5), bool)
    expect[1, 2] = True  # the error
    expect[1, 0] = True  # not run
    expect[:, 4] = True  # no value
    assert (mask == expect).all()
    assert mesh.cmap.get_bad()[:3] == pytest.approx((200 / 255,) * 3)  # grey
    texts = {t.get_text() for t in fig.axes[0].texts}
    assert {"error", "not run", "n/a"} <= texts
    assert len(edge_artists(fig)) == 1  # drawn through the cells that have theory
    assert {"error", "not run"} <= set(legend_labels(phase_figure(r, "verdict")))


def test_every_point_failed_still_draws(tmp_path: Path) -> None:
    r = make_result([SR, IS], lambda c: {"error": "OSError: no such file", "seconds": 0.0})
    paths = sweep_plots(tmp_path, r, None)
    assert [p.name for p in paths] == ["sweep-lyapunov.png", "sweep-verdicts.png"]
    assert all(p.is_file() for p in paths)


def test_log_axis_and_a_third_axis_facets() -> None:
    lr = axis("spectral-radius", [0.5, 1.0, 2.0, 4.0], log=True)
    hid = axis("hidden", [16, 32])
    r = make_result([lr, IS, hid])
    fig = phase_figure(r, "lyapunov")
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_xlabel() == "spectral-radius"]
    assert len(panels) == 2
    assert [ax.get_title() for ax in panels] == ["hidden = 16", "hidden = 32"]
    assert panels[0].get_xscale() == "log" and panels[0].get_yscale() == "linear"
    edges = mesh_of(panels[0]).get_coordinates()[0, :, 0]
    assert edges[1] == pytest.approx(math.sqrt(0.5 * 1.0))  # halfway in log space


def test_too_many_combinations_take_the_first_value() -> None:
    seeds = axis("seed", list(range(10)))
    r = make_result([SR, IS, seeds])
    fig = phase_figure(r, "lyapunov")
    assert len([ax for ax in fig.axes if ax.get_xlabel() == "spectral-radius"]) == 1
    assert "taken at seed = 0" in fig.get_suptitle()


def test_verdict_metric_writes_only_the_verdict_map(tmp_path: Path) -> None:
    r = make_result([SR, IS], analysis="compare-truncation")
    paths = sweep_plots(tmp_path, r, None)
    assert [p.name for p in paths] == ["sweep-verdicts.png"]
    assert_png(paths[0])


# ---------------------------------------------------------------------------- one axis, none


def test_lines_with_theory_and_the_edge(tmp_path: Path) -> None:
    r = make_result([axis("spectral-radius", [0.5, 0.8, 1.1, 1.4, 1.7, 2.0])])
    (path,) = sweep_plots(tmp_path, r, None)
    assert path.name == "sweep-lines.png"
    assert_png(path)
    fig = lines_figure(r, "lyapunov")
    ax = fig.axes[0]
    styles = {ln.get_label(): ln.get_linestyle() for ln in ax.lines}
    assert styles["measured"] == "-" and styles["mean-field theory"] == "--"
    (edge,) = edge_artists(fig)
    x = edge.get_xdata()[0]
    assert 1.0 < x < 1.3  # where the theory's lambda crosses 0 for this input std
    assert any(ln.get_ydata()[0] == 0 and ln.get_linestyle() == ":" for ln in ax.lines)  # lambda = 0


def test_lines_per_categorical_value_and_a_failed_point() -> None:
    def value(c: dict) -> dict:
        if c == {"spectral-radius": 1.0, "activation": "relu"}:
            return {"error": "ValueError: overflow", "seconds": 0.0}
        return spectrum_value(c, theory=c["activation"] == "tanh")

    r = make_result([axis("spectral-radius", [0.5, 1.0, 1.5]), axis("activation", ["tanh", "relu"])], value)
    fig = lines_figure(r, "gain")
    labels = [ln.get_label() for ln in fig.axes[0].lines]
    assert "measured, activation = tanh" in labels and "measured, activation = relu" in labels
    assert "mean-field theory, activation = tanh" in labels
    assert "mean-field theory, activation = relu" not in labels
    assert "error" in legend_labels(fig)
    strip = lines_figure(r, "verdict")  # a row per activation, the edge on the tanh row only
    (edge,) = edge_artists(strip)
    ((x0, y0), (x1, y1)) = edge.get_segments()[0]
    assert 1.0 < x0 == x1 < 1.5 and (y0, y1) == (-0.5, 0.5)
    assert {"vanishing", "exploding", "error"} <= set(legend_labels(strip))


def test_trace_horizon_that_never_decays() -> None:
    def value(c: dict) -> dict:
        g = c["spectral-radius"]
        never = g > 1.5
        head = {
            "label": "exploding" if never else "vanishing",
            "basis": "trace_last_loss",
            "gain": g / 1.5,
            "horizon": None if never else 10 * g,
            "loss": 1.0,
            "theory_lyapunov": None,
            "theory_gain": None,
        }
        results = {"horizon": {"eps": 1e-3, "steps": head["horizon"], "method": "never" if never else "measured"}}
        return {"results": results, "verdict": {}, "headline": head}

    r = make_result([SR, axis("seq-len", [50, 100])], value, analysis="trace")
    fig = phase_figure(r, "horizon")
    assert "never" in {t.get_text() for t in fig.axes[0].texts}
    mesh = mesh_of(fig.axes[0])
    z = np.ma.asarray(mesh.get_array()).reshape(2, 5)
    assert not np.ma.getmaskarray(z).any()  # 'never' is the top colour, not grey
    assert (z[:, 3:] > mesh.norm.vmax).all() and (z[:, :3] <= mesh.norm.vmax).all()
    fig = lines_figure(make_result([SR], value, analysis="trace"), "horizon")
    assert fig.axes[0].get_ylabel().startswith("memory horizon")


def test_categorical_axes_only_give_bars(tmp_path: Path) -> None:
    def value(c: dict) -> dict:
        if c["activation"] == "identity":
            return {"error": "ValueError: nope", "seconds": 0.0}
        return spectrum_value({"spectral-radius": 1.4 if c["activation"] == "tanh" else 0.8})

    r = make_result([axis("activation", ["tanh", "relu", "identity"])], value)
    (path,) = sweep_plots(tmp_path, r, None)
    assert path.name == "sweep-lyapunov.png"
    assert_png(path)
    fig = bars_figure(r, "lyapunov")
    assert len(fig.axes[0].patches) == 2  # the failed point has no bar, only a note
    assert "error" in {t.get_text() for t in fig.axes[0].texts}
    (path,) = sweep_plots(tmp_path, r, "verdict")
    assert path.name == "sweep-verdicts.png"


# ---------------------------------------------------------------------------- a real sweep


def test_a_real_tiny_spectrum_sweep(tmp_path: Path) -> None:
    from bptt_cli.analyses import sweep as analysis
    from bptt_cli.analyses.executors import SerialExecutor
    from bptt_cli.cli.commands.sweep import plan

    args = ["--hidden", "24", "--seq-len", "30", "--batch", "2"]
    axes, seed, planned = plan("spectrum", args, ["spectral-radius=0.6,1.2,2.4", "input-scale=0.01,1"])
    config = analysis.SweepConfig("spectrum", tuple(args), axes, seed, tmp_path / "sweep", 1, plots=True)
    r = analysis.run(config, planned, executor=SerialExecutor())
    assert [p.name for p in r.plots] == ["sweep-lyapunov.png", "sweep-verdicts.png"]
    for p in r.plots:
        assert_png(p)
    theory = [p.value["headline"]["theory_lyapunov"] for p in r.points]
    assert min(theory) < 0 < max(theory)
    assert len(edge_artists(phase_figure(r, None))) == 1
