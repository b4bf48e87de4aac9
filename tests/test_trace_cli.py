"""`bptt trace` through the CLI: the JSON document, the verdict, the plot, and bad input."""

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from bptt_cli.cli.app import app
from bptt_cli.core.rnn import init_params
from bptt_cli.io.checkpoint import save_checkpoint

runner = CliRunner()


def run(*args: str):
    return runner.invoke(app, ["trace", *args])


def run_json(*args: str) -> dict:
    res = run(*args, "--json")
    assert res.exit_code == 0, res.stderr
    return json.loads(res.stdout)


def all_numbers(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from all_numbers(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from all_numbers(v)
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield obj


def test_json_document(tmp_path):
    doc = run_json("-T", "60", "-B", "3", "-H", "8", "--seed", "2", "--out", str(tmp_path))
    assert doc["command"] == "trace" and doc["config"]["seed"] == 2 and doc["config"]["seq_len"] == 60
    r = doc["results"]
    steps = r["per_step"]
    assert steps["t"] == list(range(1, 61))
    for sig in ("last", "total"):
        for stat in ("ln_mean", "ln_min", "ln_max"):
            assert len(steps[sig][stat]) == 60
    assert len(steps["jacobian_norm"]) == 60 and len(steps["mean_fprime"]) == 60
    assert r["fit"]["points"] >= 2 and 0 <= r["fit"]["r2"] <= 1
    assert doc["verdict"]["basis"] == "trace_last_loss"
    assert doc["verdict"]["label"] in ("exploding", "vanishing", "stable")
    assert doc["verdict"]["evidence"]["gain"] == pytest.approx(r["fit"]["gain"])
    assert doc["verdict"]["evidence"]["weaker_bases"]["lyapunov"] in ("exploding", "vanishing", "stable")
    preds = r["predictions"]
    assert preds["rho"] > 0 and preds["sigma_max"] >= preds["rho"] * (1 - 1e-12)
    assert preds["lyapunov_gain"] > 0
    (plot,) = r["plots"]
    assert plot.endswith("trace.png") and (tmp_path / "trace.png").stat().st_size > 1000
    # the same seed gives the same numbers
    again = run_json("-T", "60", "-B", "3", "-H", "8", "--seed", "2", "--out", str(tmp_path))
    assert again["results"]["per_step"] == steps


def test_human_output_and_loss_all(tmp_path):
    res = run("-T", "40", "-B", "2", "-H", "6", "--signal", "all", "--lyapunov", "0", "--no-plots")
    assert res.exit_code == 0, res.stderr
    assert "theory beside measurement" in res.stdout and "verdict:" in res.stdout
    doc = run_json("-T", "40", "-B", "2", "-H", "6", "--signal", "all", "--lyapunov", "0", "--no-plots")
    assert doc["verdict"]["basis"].startswith("trace_all_losses")  # the gain, or the net change if not exponential
    ev, fit = doc["verdict"]["evidence"], doc["results"]["fit_total"]
    if doc["verdict"]["basis"].endswith("_net"):  # no per-step gain claimed: none printed
        assert ev["gain"] is None and ev["fitted_slope_gain"] == fit["gain"] and ev["r2"] < 0.5
    else:
        assert ev["gain"] == fit["gain"] and ev["r2"] == fit["r2"]
    assert doc["results"]["predictions"]["lyapunov_gain"] is None and doc["results"]["plots"] == []


def test_exploding_linear_10000_steps_all_finite():
    """x = 0 keeps the hidden state at 0, so dl_T/dh_t = (W_h^T)^(T-t) dl_T/dh_T grows as 1.5^k."""
    doc = run_json(
        "--activation", "identity", "--init", "orthogonal", "--spectral-radius", "1.5", "-H", "8",
        "-T", "10000", "-B", "1", "--input-scale", "0", "--no-plots", "--lyapunov", "0",
    )  # fmt: skip
    assert doc["nonfinite_as_null"] == 0
    assert all(math.isfinite(v) for v in all_numbers(doc["results"]))
    assert abs(doc["results"]["fit"]["gain"] - 1.5) < 1e-8
    assert doc["results"]["ln_start_fraction"] == pytest.approx(9999 * math.log(1.5), rel=1e-12)
    assert doc["verdict"]["label"] == "exploding"
    assert doc["results"]["predictions"]["matrix_verdict"]["label"] == "exploding"  # linear: rho decides


def test_saturated_tanh_rho_3_vanishes():
    doc = run_json("--spectral-radius", "3", "--input-scale", "10", "-T", "200", "-B", "4", "-H", "16", "--no-plots")
    assert doc["results"]["fit"]["gain"] < 1
    assert doc["verdict"]["label"] == "vanishing"
    matrix = doc["results"]["predictions"]["matrix_verdict"]
    assert matrix["label"] == "undetermined" and matrix["evidence"]["bounds"]["explosion_possible"]
    assert doc["results"]["predictions"]["rho"] == pytest.approx(3.0, rel=1e-10)


def test_model_and_weights_sources(tmp_path):
    rng = np.random.default_rng(0)
    p = init_params(rng, input_size=2, hidden_size=5, output_size=3)
    ckpt = save_checkpoint(tmp_path / "model.npz", p, {"activation": "relu", "loss": "mse"})
    doc = run_json("--model", str(ckpt), "-T", "30", "-B", "2", "--no-plots")
    net, data = doc["results"]["network"], doc["results"]["data"]
    assert (net["activation"], data["loss"], net["hidden"], net["input"], net["output"]) == ("relu", "mse", 5, 2, 3)
    assert doc["config"]["activation"] is None  # the options as typed; the checkpoint filled it in
    assert doc["results"]["predictions"]["rho"] == pytest.approx(np.max(np.abs(np.linalg.eigvals(p.W_h))), rel=1e-12)
    np.save(tmp_path / "w.npy", p.W_h)
    doc = run_json("--model", str(tmp_path / "w.npy"), "-T", "30", "--no-plots")
    assert doc["results"]["network"]["hidden"] == 5 and doc["results"]["network"]["origin"] == "matrix"
    assert doc["results"]["predictions"]["sigma_max"] == pytest.approx(np.linalg.norm(p.W_h, 2), rel=1e-12)


def test_inputs_file(tmp_path):
    x = np.random.default_rng(1).normal(size=(50, 3, 4))
    np.save(tmp_path / "x.npy", x)
    doc = run_json("--inputs", str(tmp_path / "x.npy"), "-T", "50", "-B", "3", "--no-plots")
    assert len(doc["results"]["per_step"]["t"]) == 50


def one_line_error(res, *needles: str, code: int = 1):
    assert res.exit_code == code
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bptt: error: ")
    assert "Traceback" not in res.stderr
    for n in needles:
        assert n in lines[0]


@pytest.mark.parametrize(
    "args, option",
    [
        (["-T", "0"], "--seq-len"),
        (["-B", "0"], "--batch"),
        (["--eps", "0"], "--eps"),
        (["--eps", "1"], "--eps"),
        (["--eps", "1.5"], "--eps"),
        (["--loss", "first"], "--loss"),
    ],
)
def test_usage_errors_name_the_option(args, option):
    res = run(*args, "--no-plots")
    assert res.exit_code == 2 and option in res.stderr and res.stdout == ""


def test_bad_files(tmp_path):
    one_line_error(run("--model", str(tmp_path / "nope.npz"), "--no-plots"), "nope.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    one_line_error(run("--model", str(tmp_path / "obj.npy"), "--no-plots"), "obj.npy", "pickle")
    np.savez(tmp_path / "two.npz", a=np.eye(3), b=np.eye(3))
    one_line_error(run("--model", str(tmp_path / "two.npz"), "--key", "W", "--no-plots"), "two.npz", "'W'")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    one_line_error(run("--model", str(tmp_path / "junk.npz"), "--no-plots"), "junk.npz")
    np.save(tmp_path / "rect.npy", np.ones((3, 4)))
    one_line_error(run("--model", str(tmp_path / "rect.npy"), "--no-plots"), "square")


def test_the_inputs_file_sets_t_b_and_d(tmp_path):
    """T, B and D come from --inputs; --seq-len and --batch may repeat them, never contradict them
    (issue 13: it used to take 8 of 16 sequences and want -T and -B typed by hand)."""
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(20, 16, 4)))
    doc = json.loads(run("--inputs", str(tmp_path / "x.npy"), "--json", "-q").stdout)
    assert (doc["results"]["data"]["seq_len"], doc["results"]["data"]["batch"]) == (20, 16)
    assert doc["results"]["network"]["input"] == 4 and "inputs from" in doc["results"]["data"]["description"]
    assert "random" not in doc["results"]["data"]["description"]
    one_line_error(
        run("--inputs", str(tmp_path / "x.npy"), "-T", "21", "--no-plots"), "`--seq-len` 21", "20 steps", code=2
    )
    one_line_error(
        run("--inputs", str(tmp_path / "x.npy"), "-B", "3", "--no-plots"), "`--batch` 3", "16 sequences", code=2
    )
    assert run("--inputs", str(tmp_path / "x.npy"), "-T", "20", "-B", "16", "-q").exit_code == 0
    # a model with D = 4 and inputs with D = 5
    save_checkpoint(
        tmp_path / "m.npz", init_params(np.random.default_rng(1), input_size=4, hidden_size=6, output_size=3), {}
    )
    np.save(tmp_path / "d.npy", np.zeros((20, 2, 5)))
    one_line_error(run("--model", str(tmp_path / "m.npz"), "--inputs", str(tmp_path / "d.npy"), "--no-plots"), "D = 5")


def test_batch_first_inputs_and_targets_equal_time_first(tmp_path):
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(25, 6, 3)), rng.integers(0, 4, size=(25, 6))
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    np.save(tmp_path / "xb.npy", x.swapaxes(0, 1))
    np.save(tmp_path / "yb.npy", y.swapaxes(0, 1))
    common = ["-H", "8", "--output", "4", "--json", "-q", "--seed", "5"]
    a = json.loads(run("--inputs", str(tmp_path / "x.npy"), "--targets", str(tmp_path / "y.npy"), *common).stdout)
    b = json.loads(
        run(
            "--inputs", str(tmp_path / "xb.npy"), "--targets", str(tmp_path / "yb.npy"), "--batch-first", *common
        ).stdout
    )
    assert a["results"]["per_step"] == b["results"]["per_step"] and a["results"]["data"]["loss"] == "xent"
    # without targets the loss is said, and it is the states' own
    c = json.loads(run("--inputs", str(tmp_path / "x.npy"), *common).stdout)
    assert c["results"]["data"]["loss"] == "half-square" and "no targets" in c["results"]["data"]["description"]
    one_line_error(run("--inputs", str(tmp_path / "x.npy"), "--targets", str(tmp_path / "yb.npy"), *common[:4]),
                   "--targets", "T = 25, B = 6")  # fmt: skip
    one_line_error(run("--targets", str(tmp_path / "y.npy"), "--no-plots"), "--targets", code=2)


def test_forward_overflow_is_one_line():
    res = run("--activation", "identity", "--spectral-radius", "3", "-T", "1000", "--input-scale", "5", "--no-plots")
    one_line_error(res, "overflowed")


def test_task_inputs_and_a_train_checkpoint(tmp_path):
    doc = run_json("--task", "recall", "-H", "12", "--no-plots", "--lyapunov", "0")
    net, data = doc["results"]["network"], doc["results"]["data"]
    assert (data["task"], data["seq_len"], data["loss"], net["input"], net["output"]) == ("recall", 30, "xent", 8, 8)
    # bptt train's checkpoint layout: the task and activation sit under "options"
    p = init_params(np.random.default_rng(0), input_size=2, hidden_size=6, output_size=1)
    opts = {"task": "adding", "seq_len": 30, "activation": "relu"}
    ckpt = save_checkpoint(tmp_path / "model.npz", p, {"kind": "bptt-train", "options": opts})
    doc = run_json("--model", str(ckpt), "-B", "4", "--no-plots", "--lyapunov", "0")
    net, data = doc["results"]["network"], doc["results"]["data"]
    assert (data["task"], data["seq_len"], data["loss"], net["activation"], data["batch"]) == (
        "adding",
        30,
        "mse",
        "relu",
        4,
    )
    assert len(doc["results"]["per_step"]["t"]) == 30


def test_task_bad_input(tmp_path):
    (tmp_path / "short.txt").write_text("hello world, a short text\n" * 3)
    res = run("--task", "text", "--text", str(tmp_path / "short.txt"), "-T", "500", "--no-plots")
    one_line_error(res, "--seq-len", "500")
    assert run("--task", "bogus", "--no-plots").exit_code == 2
    np.save(tmp_path / "x.npy", np.zeros((20, 2, 8)))
    res = run("--task", "recall", "--inputs", str(tmp_path / "x.npy"), "--no-plots")
    assert res.exit_code == 2 and "--inputs" in res.stderr
    res = run("--task", "recall", "--loss", "mse", "--no-plots")
    assert res.exit_code == 2 and "--loss" in res.stderr


def test_plots_only_with_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    doc = run_json("-T", "20", "-B", "2", "-H", "4", "--lyapunov", "0")
    assert doc["results"]["plots"] == [] and list(tmp_path.iterdir()) == []  # nothing written without --out
    res = run("-T", "20", "-B", "2", "-H", "4", "--plots")
    assert res.exit_code == 2 and "--out" in res.stderr  # --plots alone has nowhere to go
    doc = run_json("-T", "20", "-B", "2", "-H", "4", "--lyapunov", "0", "--out", "pics", "--no-plots")
    assert doc["results"]["plots"] == []
    doc = run_json("-T", "20", "-B", "2", "-H", "4", "--lyapunov", "0", "--out", "pics")
    (plot,) = doc["results"]["plots"]
    assert plot == "pics/trace.png" and (tmp_path / plot).is_file()
    res = run("--verdict-tol", "1.5")
    assert res.exit_code == 2 and "--verdict-tol" in res.stderr
