"""The runs users bring, each against an independent computation (numpy, torch autograd,
mean-field theory, numpy's eigvals), with fixed seeds: docs/verdicts.md tells each case.

1. a blow-up without NaN is diverged, with the step, the loss and rho before and after;
2. a nilpotent W_h (rho = 0) whose gradient grows along a real trajectory: the matrix alone
   does not decide, the traced signal says exploding;
3. sigma_max(W_h) = 0.99 guarantees vanishing, and the verdict says so;
4. an IRNN that solves the adding problem at T = 200 is judged at the markers, not at t = 1;
5. one checkpoint, one label, from train, trace --model and spectrum --model;
6. h0 = 0 with zero input is a fixed point (ln g), h0 random reaches the attractor (mean field);
7. the evidence agrees with the message; the logged rho is numpy's eigvals.
"""

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose
from typer.testing import CliRunner

from bptt_cli.analyses import tasks
from bptt_cli.analyses.training.watch import DENSE_RHO_MAX, RHO_TOL, Watcher
from bptt_cli.cli.app import app
from bptt_cli.cli.render.common import _SKIP, EVIDENCE_LABELS
from bptt_cli.core.cells import RNNCell
from bptt_cli.core.rnn import Params, init_params
from bptt_cli.core.verdict import BLOW_UP, blew_up
from bptt_cli.io.checkpoint import load_checkpoint
from bptt_cli.io.runfolder import read_metrics

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tools import verdict_models  # noqa: E402 - the models docs/verdicts.md shows

runner = CliRunner()


def cli(*args, code: int = 0) -> dict:
    r = runner.invoke(app, [str(a) for a in args] + ["--json"])
    assert r.exit_code == code, r.stderr
    return json.loads(r.stdout)


def rho_of(path) -> float:
    return float(np.max(np.abs(np.linalg.eigvals(load_checkpoint(path).params.W_h))))


# ---------------------------------------------------------------- 1. a blow-up without NaN

BLOW = ["--init", "orthogonal", "--spectral-radius", "3", "--optimizer", "sgd", "--lr", "50"]


def test_a_blow_up_without_nan_is_diverged(tmp_path):
    out = tmp_path / "run"
    doc = cli("train", *BLOW, "--steps", "300", "--fail-on", "diverged", "--out", out, code=3)
    v = doc["verdict"]
    assert (v["label"], v["basis"]) == ("diverged", "training")
    rows = [r for r in read_metrics(out / "metrics.jsonl") if "event" not in r]
    # every step has its loss and gradient norm, and none is NaN: a non-finite detector sees nothing
    assert [r["step"] for r in rows] == list(range(1, 301))
    assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in rows)
    b = v["evidence"]["blow_up"]
    n = b["step"]
    assert v["evidence"]["diverged_at"] == n == 2  # the first step that can be compared with step 1
    assert v["evidence"]["nonfinite_at"] is None
    # the evidence is the run's own numbers
    first, at = rows[0], rows[n - 1]
    assert (b["loss_before"], b["loss"]) == (rows[n - 2]["loss"], at["loss"])
    assert at["loss"] > BLOW_UP * first["loss"] or at["param_norm"] > BLOW_UP * first["param_norm"]
    assert rows[-1]["loss"] > BLOW_UP * first["loss"]  # and it never came back
    # rho before and after the update: before, the initial W_h (orthogonal times 3: every
    # |eigenvalue| is 3); after, numpy's eigvals of the checkpoint of a run stopped after one update
    assert_allclose(b["rho_before"], 3.0, rtol=1e-12)
    cli("train", *BLOW, "--steps", n - 1, "--out", tmp_path / "after", "--no-plots")
    assert_allclose(b["rho_after"], rho_of(tmp_path / "after" / "model.npz"), rtol=1e-12)
    assert b["rho_after"] > 100 * b["rho_before"]
    msg = v["message"]
    assert f"blew up at step {n}" in msg and "Likely remedy" in msg and "--lr" in msg and "--clip 1" in msg
    # the plots start before the blow-up: step 1 is watched (rho, the metric) as well as logged
    assert rows[0]["log"] and rows[0]["rho"] == pytest.approx(3.0, rel=1e-12) and rows[0]["metric"] is not None
    assert {"train-curves.png", "train-rho.png", "train-grad-norm.png"} <= {p.name for p in out.iterdir()}


def test_an_absurd_learning_rate_is_diverged_at_step_2(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = cli("train", *BLOW[:-1], "1e300", "--steps", "50", "--fail-on", "diverged", "--no-plots", code=3)
    v = doc["verdict"]
    assert (v["label"], v["basis"]) == ("diverged", "training") and v["evidence"]["diverged_at"] == 2


def test_the_blow_up_rule_has_no_blind_spot_and_no_false_alarm():
    # judged from step 2 against step 1 alone: no window of earlier norms is needed
    assert blew_up(10.1 * 2.3, 2.3, 25.0, 25.0) and not blew_up(9.9 * 2.3, 2.3, 25.0, 25.0)
    # weights 10x their first norm count only while the loss is worse than at the start
    assert blew_up(2.4, 2.3, 251.0, 25.0) and not blew_up(2.2, 2.3, 251.0, 25.0)
    assert blew_up(math.inf, 2.3, 25.0, 25.0) and blew_up(2.0, 2.3, math.nan, 25.0)


def test_a_healthy_run_has_no_blow_up(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the run folder goes under runs/
    doc = cli("train", "--steps", "60", "--no-plots")
    assert doc["results"]["blow_up"] is None and doc["verdict"]["label"] != "diverged"


# ---------------------------------------------------------------- 2. a nilpotent W_h that explodes


def test_a_nilpotent_matrix_can_explode_along_a_trajectory(tmp_path):
    verdict_models.write("nilpotent", tmp_path / "nil.npz")
    p = verdict_models.nilpotent_params()
    # the trajectory is chaotic (the forward map stretches as the gradient grows), so two correct
    # forward passes whose rounding differs part after ~70 steps: T = 40 keeps that below 1e-7
    T = 40
    doc = cli(
        "trace", "--model", tmp_path / "nil.npz", "--input-scale", "0", "--loss", "half-square",
        "-T", T, "-B", "1", "--warmup", "5",
    )  # fmt: skip
    # the oracle: the forward pass and J_t^T = W_h^T diag(1 - h_t^2) written out in numpy
    assert np.max(np.abs(p.W_h @ p.W_h)) == 0.0
    h = [np.zeros(8)]
    for _ in range(T):
        h.append(np.tanh(p.W_h @ h[-1] + p.b))  # zero input
    g = h[T].copy()  # dl_T/dh_T of 1/2 ||h_T||^2
    log_norm = {T: math.log(np.linalg.norm(g))}
    for t in range(T, 1, -1):
        g = p.W_h.T @ ((1 - h[t] ** 2) * g)  # dl_T/dh_{t-1}
        log_norm[t - 1] = math.log(np.linalg.norm(g))
    measured = doc["results"]["per_step"]["last"]["ln_mean"]  # index t - 1 holds step t
    assert_allclose([measured[t - 1] - measured[T - 1] for t in range(1, T + 1)],
                    [log_norm[t] - log_norm[T] for t in range(1, T + 1)], atol=1e-6)  # fmt: skip
    slope = np.polyfit(np.arange(T), [log_norm[T - k] for k in range(T)], 1)[0]
    gain = doc["results"]["fit"]["gain"]
    assert_allclose(gain, math.exp(slope), rtol=1e-6)
    assert gain > 1.3  # it grows, although rho = 0
    preds = doc["results"]["predictions"]
    assert preds["rho"] < 1e-6 and preds["sigma_max"] == pytest.approx(6.0, rel=1e-12)
    matrix = preds["matrix_verdict"]
    assert matrix["label"] == "undetermined" and matrix["evidence"]["bounds"]["explosion_possible"] is True
    assert "impossible" not in json.dumps(doc)
    v = doc["verdict"]
    assert (v["label"], v["basis"]) == ("exploding", "trace_last_loss")
    assert v["evidence"]["weaker_bases"] == {"lyapunov": "exploding", "matrix_bounds": "undetermined"}


# ---------------------------------------------------------------- 3. sigma_max = 0.99


def test_sigma_max_below_one_is_guaranteed_vanishing(tmp_path):
    W = verdict_models.contraction_matrix()
    verdict_models.write("contraction", tmp_path / "w.npy")
    assert np.linalg.norm(W, 2) == pytest.approx(0.99, rel=1e-12)
    doc = cli("spectrum", "--model", tmp_path / "w.npy", "--lyapunov", "0")
    v = doc["verdict"]
    assert (v["label"], v["basis"]) == ("vanishing", "sigma_max")
    assert "vanishing is guaranteed" in v["message"] and "undetermined" not in v["message"]
    assert_allclose(doc["results"]["bounds"]["sigma_max"], np.linalg.norm(W, 2), rtol=1e-12)
    # with a trajectory the traced signal decides, and it must agree: no Jacobian grows the signal
    doc = cli("spectrum", "--model", tmp_path / "w.npy", "-T", "100")
    assert (
        doc["verdict"]["label"] == "vanishing"
        and doc["verdict"]["evidence"]["weaker_bases"]["sigma_max"] == "vanishing"
    )
    assert doc["results"]["signal"]["fit"]["gain"] <= 0.99 * (1 + 1e-12)


# ---------------------------------------------------------------- 4 and 5. the task's span, one answer

IRNN = ["--task", "adding", "--activation", "relu", "--init", "identity", "--clip", "1", "--seq-len", "200"]


@pytest.fixture(scope="module")
def irnn(tmp_path_factory):
    out = tmp_path_factory.mktemp("irnn") / "run"
    return cli("train", *IRNN, "--steps", "800", "--no-plots", "--out", out), out


def test_an_irnn_that_solves_adding_is_judged_at_the_markers(irnn):
    torch = pytest.importorskip("torch")
    doc, out = irnn
    assert doc["results"]["final_metric"] < 0.02, "premise: the IRNN solves the adding problem (1/6 is no skill)"
    v, ev = doc["verdict"], doc["verdict"]["evidence"]
    assert v["basis"] == "task_horizon" and v["label"] != "vanishing"
    # the span: the mean distance from T back to the first marker, over the 32 held-out sequences judged
    held = tasks.first_sequences(tasks.heldout_set(tasks.make_task("adding", seq_len=200)), 32)
    firsts = [int(np.nonzero(held.x[:, b, 1])[0].min()) for b in range(32)]
    k = round(float(np.mean([199 - f for f in firsts])))
    assert ev["span_needed"] == k and 50 < k < 200
    # the signal there, by torch autograd: mean ||dl_T/dh_{T-k}|| / mean ||dl_T/dh_T||
    p = load_checkpoint(out / "model.npz").params
    P = {
        n: torch.tensor(getattr(p, n), dtype=torch.float64, requires_grad=True) for n in ("W_x", "W_h", "b", "W_y", "c")
    }
    x = torch.tensor(held.x, dtype=torch.float64)
    hs, h = [], torch.zeros(32, p.hidden_size, dtype=torch.float64)
    for t in range(200):
        h = torch.relu(x[t] @ P["W_x"].T + h @ P["W_h"].T + P["b"])
        h.retain_grad()
        hs.append(h)
    y = h @ P["W_y"].T + P["c"]
    ((y - torch.tensor(held.targets[-1], dtype=torch.float64)) ** 2).sum().backward()
    ratio = hs[199 - k].grad.norm(dim=1).mean() / hs[199].grad.norm(dim=1).mean()
    assert_allclose(ev["signal_at_span"], float(ratio), rtol=1e-9)
    assert ev["signal_at_span"] > 1e-3  # the eps the verdict uses: the markers are reached
    assert f"the adding task needs {k}" in v["message"] and "steps back" in v["message"]


def test_one_checkpoint_one_label_irnn(irnn):
    doc, out = irnn
    same_label_everywhere(doc["verdict"], out)


@pytest.mark.parametrize("args", [["--steps", "150"], ["--spectral-radius", "0.5", "--steps", "30"]])
def test_one_checkpoint_one_label(tmp_path, args):
    doc = cli("train", *args, "--no-plots", "--out", tmp_path / "run")
    same_label_everywhere(doc["verdict"], tmp_path / "run")


def same_label_everywhere(train_verdict: dict, folder) -> None:
    """trace --model and spectrum --model on the checkpoint: the same held-out data, the same label
    and basis as train's final verdict, and the same number deciding it."""
    for command in ("trace", "spectrum"):
        v = cli(command, "--model", folder)["verdict"]
        assert (v["label"], v["basis"]) == (train_verdict["label"], train_verdict["basis"]), command
        assert_allclose(v["evidence"]["ln_signal_at_span"], train_verdict["evidence"]["ln_signal_at_span"], rtol=1e-12)
        assert "Decided by the signal at the task's span" in v["message"]


# ---------------------------------------------------------------- 6. the fixed point at zero


def mean_field_exponent(g: float) -> float:
    """Top Lyapunov exponent of a large random tanh net, W_ij ~ N(0, g^2/H), zero input: the
    fixed point q* = g^2 E[tanh(sqrt(q*) z)^2], lambda = 1/2 ln(g^2 E[tanh'(sqrt(q*) z)^2])."""
    z, w = np.polynomial.hermite_e.hermegauss(201)
    w = w / w.sum()
    q = 1.0
    for _ in range(3000):
        q = g * g * float(np.sum(w * np.tanh(math.sqrt(q) * z) ** 2))
    return 0.5 * math.log(g * g * float(np.sum(w * (1 - np.tanh(math.sqrt(q) * z) ** 2) ** 2)))


FIXED = ["spectrum", "-H", "800", "--spectral-radius", "2", "--input-scale", "0", "-T", "800", "-B", "2"]


def test_h0_zero_is_a_fixed_point_and_h0_random_reaches_the_attractor():
    at_zero = cli(*FIXED, "--reference", "none")
    # the state never leaves 0: J_t = W_h, the exponent is ln rho = ln 2 up to the O(1/T) transient
    # of a complex-pair rotation over the 750 averaged steps
    assert at_zero["results"]["lyapunov"]["exponents"][0] == pytest.approx(math.log(2.0), abs=5e-3)
    assert any("never leaves its start" in n and "--h0 random" in n for n in at_zero["results"]["notes"])
    moving = cli(*FIXED, "--reference", "none", "--h0", "random")
    assert moving["results"]["notes"] == []
    sigma = np.asarray(moving["results"]["singular_values"]["all"])
    g = math.sqrt(float(np.sum(sigma**2)) / 800)  # the matrix's own gain: ||W_h||_F / sqrt(H)
    # finite H = 800 (fluctuations ~ 1/sqrt(H)) and 750 averaged steps of 2 sequences
    assert moving["results"]["lyapunov"]["exponents"][0] == pytest.approx(mean_field_exponent(g), abs=0.02)
    assert abs(mean_field_exponent(2.0) - 0.1547) < 1e-4  # the number the issue quotes


def test_h0_from_a_file_and_bad_h0(tmp_path):
    np.save(tmp_path / "h0.npy", np.full(12, 0.5))
    doc = cli("trace", "-H", "12", "-T", "30", "-B", "3", "--h0", tmp_path / "h0.npy", "--lyapunov", "0")
    assert doc["results"]["data"]["h0"] == f"h0 from {tmp_path / 'h0.npy'}"
    np.save(tmp_path / "bad.npy", np.zeros(5))
    r = runner.invoke(app, ["trace", "-H", "12", "--h0", str(tmp_path / "bad.npy")])
    assert r.exit_code == 1 and "--h0" in r.stderr and "(12,)" in r.stderr
    r = runner.invoke(app, ["trace", "--h0", "ones"])
    assert r.exit_code == 2 and "--h0" in r.stderr


# ---------------------------------------------------------------- 7. evidence and rho


def test_logged_rho_is_numpys_eigvals(tmp_path):
    out = tmp_path / "run"
    cli("train", "--steps", "12", "--log-every", "4", "--hidden", "24", "--no-plots", "--out", out)
    logged = [r for r in read_metrics(out / "metrics.jsonl") if r.get("log")]
    assert [r["step"] for r in logged] == [1, 4, 8, 12]
    assert logged[0]["rho_exact"] is True
    for r in logged[1:]:  # the parameters of step n are those after n - 1 updates
        cli("train", "--steps", r["step"] - 1, "--log-every", "4", "--hidden", "24", "--no-plots", "--out",
            tmp_path / f"at{r['step']}")  # fmt: skip
        assert r["rho_exact"] is True
        assert_allclose(r["rho"], rho_of(tmp_path / f"at{r['step']}" / "model.npz"), rtol=1e-6)


def test_rho_beyond_the_dense_size_is_krylov_with_its_residual():
    H = DENSE_RHO_MAX + 44
    p = init_params(np.random.default_rng(3), input_size=2, hidden_size=H, output_size=2)
    cell = RNNCell(p, "tanh")
    exact = float(np.max(np.abs(np.linalg.eigvals(p.W_h))))
    rho = Watcher().rho(cell, None)
    assert rho.exact and rho.residual <= RHO_TOL
    assert_allclose(rho.value, exact, rtol=1e-6)
    # warm-started from the previous vector on a matrix that moved a little
    moved = RNNCell(Params(**{**p.as_dict(), "W_h": p.W_h * 1.01}), "tanh")
    again = Watcher().rho(moved, rho.vector)
    assert again.exact and again.residual <= RHO_TOL
    assert_allclose(again.value, 1.01 * exact, rtol=1e-6)


def test_no_gain_is_printed_when_none_is_claimed():
    """A signal that is not a line in k: the message says no per-step gain is claimed, so the
    evidence's gain is null with the reason (the fitted slope kept under its own name)."""
    doc = cli("trace", "-H", "8", "-T", "40", "-B", "2", "--signal", "all", "--lyapunov", "0", "--seed", "0")
    v = doc["verdict"]
    assert v["basis"].endswith("_net"), "premise: the all-loss signal of this seed is not exponential (r^2 < 0.5)"
    assert "no per-step gain is claimed" in v["message"]
    assert v["evidence"]["gain"] is None and v["evidence"]["gain_not_claimed"]
    assert v["evidence"]["fitted_slope_gain"] == doc["results"]["fit_total"]["gain"]


def test_a_window_beyond_t_is_marked_extrapolated(irnn):
    doc, _ = irnn
    ev = doc["verdict"]["evidence"]
    assert ev["horizon_method"] == "extrapolated", "premise: the IRNN's signal outlives T = 200"
    assert ev["suggested_window"] > 200 and ev["suggested_window_extrapolated"] is True
    r = runner.invoke(app, ["trace", "--model", str(doc["results"]["files"]["folder"])])
    assert "(extrapolated beyond T = 200)" in r.stdout.replace("\n", " ")


@pytest.mark.parametrize(
    "args",
    [
        ["train", "--steps", "20", "--no-plots"],
        ["train", *BLOW, "--steps", "20", "--no-plots"],
        ["trace", "-H", "8", "-T", "40"],
        ["spectrum", "-H", "8", "--lyapunov", "0"],
        ["spectrum", "-H", "8", "--task", "recall"],
        ["compare-truncation", "-H", "8", "--steps", "4", "--samples", "4"],
    ],
)
def test_every_evidence_key_has_a_human_label(args, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    ev = cli(*args)["verdict"]["evidence"]
    for key, value in ev.items():
        if key in _SKIP:
            continue
        if key == "bounds":
            assert {k for k in value if k.endswith("statement")} <= set(EVIDENCE_LABELS)
        else:
            assert key in EVIDENCE_LABELS, key
