"""`bptt spectrum` through the CLI: the JSON contract, the verdicts of issue 3, plots, and bad input."""

import json
import os
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose
from typer.testing import CliRunner

import bptt_cli
from bptt_cli.cli.app import app
from bptt_cli.core.rnn import init_params
from bptt_cli.io.checkpoint import save_checkpoint

runner = CliRunner()
FAST = ["--hidden", "16", "--seq-len", "120", "--warmup", "20"]


def invoke(*args):
    return runner.invoke(app, ["spectrum", *[str(a) for a in args]])


def strict_json(text: str) -> dict:
    def refuse(token):
        raise AssertionError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def run_json(*args) -> dict:
    result = invoke(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return strict_json(result.stdout)


def one_error_line(result) -> str:
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert lines[0].startswith("bptt: error: ")
    if result.stdout:  # under --json: the error document, with the same message
        error = strict_json(result.stdout)["error"]
        assert error["message"] == lines[0].removeprefix("bptt: error: ")
        assert error["exit_code"] == result.exit_code
    return lines[0]


def test_json_document_contract():
    doc = run_json(*FAST, "--seed", "3")
    assert doc["command"] == "spectrum"
    assert doc["version"] == bptt_cli.__version__
    assert doc["nonfinite_as_null"] == 0
    options = (
        "model key hidden init spectral_radius activation method max_iter tol reference lyapunov "
        "seq_len warmup batch input input_scale verdict_tol plots out fail_on seed"
    ).split()
    assert set(options) <= set(doc["config"])
    assert doc["config"]["seed"] == 3
    pi, ref = doc["results"]["dominant_eigenvalue"], doc["results"]["reference"]
    assert pi["converged"] is True
    assert set(pi["eigenvalue"]) == {"re", "im"}  # complex numbers as {re, im}
    assert ref["method"] == "numpy"
    assert ref["abs_difference"] < 1e-8
    # the reference in the document is numpy's own answer
    v = doc["verdict"]
    # a trajectory ran: its gradient signal decides, the Lyapunov gain and the matrix are evidence
    assert v["label"] in {"exploding", "vanishing", "stable"} and v["basis"].startswith("trace_last_loss")
    assert set(v["evidence"]["weaker_bases"]) == {"lyapunov", "matrix_bounds"}
    assert "Decided by the traced signal of the last loss" in v["message"]
    assert len(doc["results"]["singular_values"]["all"]) == 16


def test_reference_is_numpy_eigvals_of_the_same_matrix(tmp_path):
    W = np.random.default_rng(9).normal(size=(20, 20)) / np.sqrt(20)
    np.save(tmp_path / "w.npy", W)
    doc = run_json("--model", tmp_path / "w.npy", "--lyapunov", "0")
    ev = np.linalg.eigvals(W)
    top = ev[np.argmax(np.abs(ev))]
    pi = doc["results"]["dominant_eigenvalue"]
    assert_allclose(pi["abs_eigenvalue"], abs(top), rtol=1e-9)
    assert_allclose(doc["results"]["reference"]["abs_eigenvalue"], abs(top), rtol=1e-12)
    assert_allclose(doc["results"]["singular_values"]["max"], np.linalg.norm(W, 2), rtol=1e-12)


@pytest.mark.parametrize(("rho", "label"), [("1.2", "exploding"), ("0.8", "vanishing"), ("1.0", "stable")])
@pytest.mark.parametrize("lyapunov", ["0", "1"])
def test_linear_verdicts(rho, label, lyapunov):
    doc = run_json(
        *FAST, "--activation", "identity", "--spectral-radius", rho, "--lyapunov", lyapunov, "--seq-len", "400"
    )
    v = doc["verdict"]
    assert v["label"] == label
    if lyapunov == "0":
        assert v["basis"] == "spectral_radius"
    else:  # the traced signal decides; the Lyapunov gain and rho agree with it
        assert v["basis"].startswith("trace_last_loss")
        assert v["evidence"]["weaker_bases"] == {"lyapunov": label, "spectral_radius": label}


def test_saturated_tanh_rho_3_is_not_exploding():
    doc = run_json(*FAST, "--hidden", "32", "--spectral-radius", "3", "--input-scale", "20", "--lyapunov", "1")
    v = doc["verdict"]
    assert v["label"] != "exploding"
    assert v["basis"].startswith("trace_last_loss")
    gain = doc["results"]["lyapunov"]["gains"][0]
    assert gain < 1 and v["evidence"]["weaker_bases"]["lyapunov"] == "vanishing"
    assert doc["results"]["bounds"]["explosion_possible"] is True
    # without a trajectory the matrix alone does not decide
    doc0 = run_json(*FAST, "--spectral-radius", "3", "--lyapunov", "0")
    assert doc0["verdict"]["label"] == "undetermined"
    assert "not determined by the matrix alone" in doc0["verdict"]["message"]


def test_plots_are_written_and_listed(tmp_path):
    out = tmp_path / "run"
    result = invoke(*FAST, "--out", out, "--json")
    doc = strict_json(result.stdout)
    plots = doc["results"]["plots"]
    assert [p.split("/")[-1] for p in plots] == [
        "spectrum-eigenvalues.png",
        "spectrum-convergence.png",
        "spectrum-singular-values.png",
    ]
    for p in plots:
        with open(p, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert result.stderr.count("plot: ") == 3  # the human output (on stderr under --json) names them


def test_human_output_and_reproducibility():
    result = invoke(*FAST, "--method", "subspace", "--reference", "arpack")
    assert result.exit_code == 0, result.stderr
    assert "dominant eigenvalue" in result.stdout and "verdict:" in result.stdout
    a, b = run_json(*FAST, "--seed", "5"), run_json(*FAST, "--seed", "5")
    assert a["results"] == b["results"]


def test_not_converged_is_reported_not_hidden():
    doc = run_json(*FAST, "--hidden", "64", "--max-iter", "3", "--lyapunov", "0")
    assert doc["results"]["dominant_eigenvalue"]["converged"] is False
    result = invoke(*FAST, "--hidden", "64", "--max-iter", "3", "--lyapunov", "0")
    assert "NOT converged" in result.stdout


def test_model_checkpoint_brings_its_activation(tmp_path):
    p = init_params(np.random.default_rng(0), input_size=3, hidden_size=8, output_size=2, spectral_radius=0.7)
    save_checkpoint(tmp_path / "m.npz", p, {"activation": "identity"})
    doc = run_json("--model", tmp_path / "m.npz", "--lyapunov", "0")
    assert doc["config"]["activation"] is None and doc["results"]["network"]["activation"] == "identity"
    assert doc["results"]["network"]["origin"] == "checkpoint"
    assert doc["verdict"]["label"] == "vanishing" and doc["verdict"]["basis"] == "spectral_radius"


def bad_inputs(tmp_path):
    torch = pytest.importorskip("torch")
    np.save(tmp_path / "rect.npy", np.ones((3, 4)))
    np.save(tmp_path / "empty.npy", np.ones((0, 0)))
    np.save(tmp_path / "text.npy", np.array([["a", "b"], ["c", "d"]]))
    np.save(tmp_path / "complex.npy", np.eye(3) * 1j)
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan], [0.0, 1.0]]))
    np.save(tmp_path / "inf.npy", np.array([[1.0, np.inf], [0.0, 1.0]]))
    np.save(tmp_path / "object.npy", np.array([[None, 1], [2, 3]], dtype=object), allow_pickle=True)
    np.savez(tmp_path / "keys.npz", a=np.eye(2))
    np.savez(tmp_path / "foreign.npz", a=np.eye(2), b=np.eye(3))
    torch.save({"w": torch.eye(3)}, tmp_path / "rnn.pt")
    return [
        (["--model", tmp_path / "absent.npy"], "no such file"),
        (["--model", tmp_path / "rect.npy"], "not a square matrix"),
        (["--model", tmp_path / "empty.npy"], "empty matrix"),
        (["--model", tmp_path / "text.npy"], "not a numeric matrix"),
        (["--model", tmp_path / "complex.npy"], "complex entries"),
        (["--model", tmp_path / "nan.npy"], "NaN or infinite"),
        (["--model", tmp_path / "inf.npy"], "NaN or infinite"),
        (["--model", tmp_path / "object.npy"], "pickled"),
        (["--model", tmp_path / "keys.npz", "--key", "W_h"], "no array named 'W_h'"),
        (["--model", tmp_path / "rnn.pt"], "no tensor named 'weight_hh_l0'"),
        (["--model", tmp_path / "foreign.npz"], "holds 2 arrays"),
        (["--model", tmp_path / "absent.npz"], "no such file"),
        (["--max-iter", "0"], "--max-iter"),
        (["--tol", "0"], "--tol"),
        (["--tol", "-1e-3"], "--tol"),
        (["--warmup", "500", "--seq-len", "500"], "--warmup"),
        (["--lyapunov", "100", "--hidden", "8"], "--lyapunov"),
    ]


def test_bad_input_is_one_line_and_non_zero(tmp_path):
    for args, fragment in bad_inputs(tmp_path):
        line = one_error_line(invoke(*args, "--json"))
        assert fragment in line, (args, line)
        files = [str(a) for a in args if "/" in str(a)]
        if files:
            assert files[0] in line  # names the file


def test_torch_missing(tmp_path, monkeypatch):
    torch = pytest.importorskip("torch")
    torch.save({"weight_hh_l0": torch.eye(3)}, tmp_path / "rnn.pt")
    assert run_json("--model", tmp_path / "rnn.pt", "--lyapunov", "0")["results"]["rho"] == pytest.approx(1.0)
    monkeypatch.setitem(sys.modules, "torch", None)
    line = one_error_line(invoke("--model", tmp_path / "rnn.pt"))
    assert "needs torch, which is not installed" in line and "rnn.pt" in line


def test_task_inputs_drive_the_trajectory():
    doc = run_json(*FAST, "--task", "recall", "--seq-len", "60", "--warmup", "10")
    assert doc["config"]["task"] == "recall" and doc["results"]["data"]["task"] == "recall"
    assert doc["results"]["network"]["input"] == 8  # recall's one-hot alphabet of 8 symbols
    assert doc["results"]["lyapunov"]["inputs"] == "held-out set of the recall task"
    assert doc["results"]["lyapunov"]["steps"] == 50


def test_train_checkpoint_layout_brings_activation_and_task(tmp_path):
    """bptt train stores its options under config["options"]."""
    p = init_params(np.random.default_rng(0), input_size=2, hidden_size=8, output_size=1, spectral_radius=1.3)
    save_checkpoint(tmp_path / "m.npz", p, {"kind": "x", "options": {"activation": "identity", "task": "adding"}})
    doc = run_json("--model", tmp_path / "m.npz", "--seq-len", "200", "--warmup", "50")
    assert doc["results"]["network"]["activation"] == "identity" and doc["results"]["data"]["task"] == "adding"
    assert doc["verdict"]["basis"] == "task_horizon" and doc["verdict"]["label"] == "exploding"
    assert doc["verdict"]["evidence"]["weaker_bases"]["lyapunov"] == "exploding"
    assert_allclose(doc["results"]["lyapunov"]["gains"][0], 1.3, rtol=2e-2)


def test_text_without_text_task_is_an_error(tmp_path):
    (tmp_path / "t.txt").write_text("hello world " * 50)
    line = one_error_line(invoke("--text", tmp_path / "t.txt"))
    assert "--text" in line


def test_rho_source_follows_the_reference():
    assert run_json(*FAST, "--lyapunov", "0")["results"]["rho_source"] == "numpy"
    assert run_json(*FAST, "--lyapunov", "0", "--reference", "none")["results"]["rho_source"] == "krylov-schur"
    doc = run_json(*FAST, "--lyapunov", "0", "--max-iter", "2", "--reference", "none")
    assert doc["results"]["rho_source"] == "krylov-schur (not converged)"


def test_choose_rho_takes_the_larger_krylov_answer_and_says_so():
    from bptt_cli.core.verdict import choose_rho

    value, source, note = choose_rho(1.05, True, "krylov-schur", 1.1, "arpack")
    assert (value, source) == (1.1, "arpack") and "disagree" in note
    assert choose_rho(1.05, True, "krylov-schur", abs(0.9 + 0.1j), "arpack")[:2] == (1.05, "krylov-schur")
    assert choose_rho(1.05, True, "krylov-schur", 0.5, "numpy") == (0.5, "numpy", None)  # numpy has them all
    assert choose_rho(1.05, False, "krylov-schur", None, None)[1] == "krylov-schur (not converged)"


def test_json_pipes_into_json_tool():
    """`bptt spectrum --json | python -m json.tool`, as a shell pipeline would run it."""
    import subprocess

    env = {**os.environ, "COLUMNS": "80"}
    producer = subprocess.run(
        [sys.executable, "-m", "bptt_cli", "spectrum", "--json", "--hidden", "8", "--lyapunov", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert producer.returncode == 0, producer.stderr
    tool = subprocess.run(
        [sys.executable, "-m", "json.tool"], input=producer.stdout, capture_output=True, text=True, timeout=60
    )
    assert tool.returncode == 0, tool.stderr
    assert json.loads(tool.stdout)["command"] == "spectrum"
    assert "dominant eigenvalue" in producer.stderr  # the table went to stderr


def test_out_that_cannot_be_created_fails_before_any_work(tmp_path):
    (tmp_path / "f").write_text("x")
    line = one_error_line(invoke(*FAST, "--out", tmp_path / "f" / "run"))
    assert "--out" in line and "cannot create the folder" in line
