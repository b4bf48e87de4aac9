"""`bptt compare-truncation` through the Typer app: the JSON contract, the plots, reproducibility,
the influence task's signs, and the bad-input rules (usage errors listing the valid forms)."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from bptt_cli.cli.app import app
from bptt_cli.core.truncation import SPEC_FORMS

runner = CliRunner()
SMALL = ["--hidden", "12", "--batch", "8", "--samples", "12", "--steps", "20", "--log-every", "5"]


def run_json(tmp_path, *args):
    r = runner.invoke(app, ["compare-truncation", "--json", "--out", str(tmp_path / "out"), *args])
    assert r.exit_code == 0, r.stderr
    return json.loads(r.stdout), r


def test_recall_json_document(tmp_path):
    doc, r = run_json(tmp_path, *SMALL)
    assert doc["command"] == "compare-truncation" and doc["nonfinite_as_null"] == 0
    cfg = doc["config"]
    assert cfg["strategies"] == ["full", "chunk:5", "chunk:20", "random:0.9", "random:0.5"]
    assert (cfg["task"], cfg["seq_len"], cfg["delay"], cfg["seed"], cfg["samples"]) == ("recall", None, 10, 0, 12)
    assert doc["results"]["seq_len"] == 30  # recall's default length
    stats = {s["strategy"]: s for s in doc["results"]["statistics"]}
    assert list(stats) == cfg["strategies"]
    assert stats["full"]["rel_bias"] == 0.0 and stats["full"]["cosine"] == pytest.approx(1.0, abs=1e-12)
    assert stats["chunk:5"]["samples"] == 1 and not stats["chunk:5"]["bias_consistent_with_zero"]
    assert stats["random:0.9"]["samples"] == 12 and len(stats["random:0.9"]["bias_curve"]) >= 2
    train = {t["strategy"]: t for t in doc["results"]["training"]}
    assert list(train) == cfg["strategies"]
    assert train["full"]["curve"]["step"] == [1, 5, 10, 15, 20]
    assert doc["results"]["chance"] == pytest.approx(1 / 8)
    assert set(doc["verdict"]["evidence"]["biased"]) == {"chunk:5", "chunk:20"}
    assert doc["verdict"]["basis"] == "estimator_statistics"
    names = sorted(p.split("/")[-1] for p in doc["results"]["plots"])
    assert names == ["bias-cost.png", "cosine.png", "learning-curves.png"]
    for p in doc["results"]["plots"]:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert "gradient estimators on recall" in r.stderr  # the tables went to stderr under --json


def test_same_seed_same_numbers_and_training_data_shared(tmp_path):
    args = [
        *SMALL,
        "--seq-len",
        "12",
        "--delay",
        "4",
        "--strategies",
        "full,chunk:12,random:1,random:0.7",
        "--seed",
        "5",
    ]
    a, _ = run_json(tmp_path, *args)
    b, _ = run_json(tmp_path, *args)
    for key in ("statistics", "training"):
        for ra, rb in zip(a["results"][key], b["results"][key], strict=True):
            ra.pop("seconds"), rb.pop("seconds")
            assert ra == rb
    # chunk:12 (one chunk) and random:1 are full BPTT: the same data order gives the same curve
    train = {t["strategy"]: t for t in a["results"]["training"]}
    assert train["chunk:12"]["curve"] == train["full"]["curve"] == train["random:1"]["curve"]


def test_train_steps_zero_skips_training(tmp_path):
    doc, _ = run_json(tmp_path, "--steps", "0", "--samples", "4", "--hidden", "8")
    assert "training" not in doc["results"] and doc["verdict"]["evidence"]["reached_target"] is None
    assert len(doc["results"]["plots"]) == 2


def test_influence_signs(tmp_path):
    doc, r = run_json(
        tmp_path, "--task", "influence", "--strategies", "full,chunk:5,chunk:20,random:0.9", "--samples", "30",
        "--steps", "40", "--batch", "8",
    )  # fmt: skip
    rows = {s["strategy"]: s for s in doc["results"]["strategies"]}
    assert doc["results"]["seq_len"] == 200 and doc["results"]["theta0"] == 0.5
    assert rows["full"]["sign_agrees"] and rows["full"]["dtheta_mean"] == pytest.approx(doc["results"]["full_dtheta"])
    assert not rows["chunk:5"]["sign_agrees"] and not rows["chunk:20"]["sign_agrees"]
    assert rows["random:0.9"]["sign_agrees"]
    assert doc["verdict"]["evidence"]["wrong_sign"] == ["chunk:5", "chunk:20"]
    assert doc["verdict"]["label"] == "diverged"  # chunk:5 and chunk:20 run away (1-based steps below)
    assert all(d >= 1 for d in doc["verdict"]["evidence"]["diverged"].values())
    assert rows["full"]["steps_to_target"] is not None and rows["chunk:5"]["steps_to_target"] is None
    assert rows["chunk:5"]["final_theta"] > rows["chunk:5"]["theta_trajectory"][0] > rows["full"]["final_theta"]
    names = sorted(p.split("/")[-1] for p in doc["results"]["plots"])
    assert names == ["bias-cost.png", "gradient-signs.png", "theta.png"]


@pytest.mark.parametrize(
    "spec", ["chunk:0", "chunk:-3", "chunk:x", "random:0", "random:1.5", "lstm", "", "full,,chunk:0"]
)
def test_malformed_strategies_are_usage_errors(tmp_path, spec):
    r = runner.invoke(app, ["compare-truncation", "--strategies", spec, "--out", str(tmp_path)])
    assert r.exit_code == 2, (r.stdout, r.stderr)
    flat = " ".join(line.strip(" │") for line in r.stderr.splitlines())
    assert "--strategies" in flat and " ".join(SPEC_FORMS.split()) in " ".join(flat.split())
    assert r.stdout == "" and "Traceback" not in r.stderr
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("samples", ["1", "0"])
def test_samples_below_two_with_a_random_strategy(tmp_path, samples):
    r = runner.invoke(app, ["compare-truncation", "--samples", samples, "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--samples" in r.stderr and "standard error" in r.stderr
    # without a random strategy, one evaluation is all a deterministic estimator needs
    ok = runner.invoke(
        app,
        ["compare-truncation", "--samples", "1", "--strategies", "full,chunk:3", "--steps", "0", "-q", "--out",
         str(tmp_path)],
    )  # fmt: skip
    assert ok.exit_code == 0, ok.stderr and ok.stdout == ""


def test_impossible_task_setting_is_one_line_error(tmp_path):
    r = runner.invoke(app, ["compare-truncation", "--delay", "40", "--out", str(tmp_path)])
    assert r.exit_code == 2  # a rule between two options: a usage error
    assert r.stderr.strip().splitlines() == ["bptt: error: `--delay` must be less than `--seq-len` (30); got 40"]


def test_checkpoint_start(tmp_path):
    from bptt_cli.core.rnn import init_params
    from bptt_cli.io.checkpoint import save_checkpoint

    params = init_params(np.random.default_rng(3), input_size=8, hidden_size=10, output_size=8)
    path = save_checkpoint(tmp_path / "m.npz", params, {"activation": "tanh"})
    doc, _ = run_json(tmp_path, "--model", str(path), "--steps", "0", "--samples", "4")
    assert doc["config"]["model"] == str(path)
    from bptt_cli.analyses.tasks import make_task, sample_batch
    from bptt_cli.core.bptt import gradients

    batch = sample_batch(make_task("recall", seq_len=30), np.random.default_rng([0, 1]), 32)[0]
    full = gradients(params, batch.x, batch.targets, mask=batch.mask)
    assert doc["results"]["full_grad_norm"] == pytest.approx(np.linalg.norm(full.grads.flat()), rel=1e-12)
    wrong = init_params(np.random.default_rng(3), input_size=3, hidden_size=10, output_size=8)
    path2 = save_checkpoint(tmp_path / "w.npz", wrong, {})
    r = runner.invoke(app, ["compare-truncation", "--model", str(path2), "--out", str(tmp_path / "o")])
    assert r.exit_code == 1 and "input/output sizes 3/8" in r.stderr


def test_checkpoint_does_not_apply_to_influence(tmp_path):
    r = runner.invoke(app, ["compare-truncation", "--task", "influence", "--model", "m.npz", "--out", str(tmp_path)])
    assert r.exit_code == 2 and "--model" in r.stderr and not any(tmp_path.iterdir())
