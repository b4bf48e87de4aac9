"""`bptt train` through the CLI (typer's CliRunner): the JSON contract, the run folder, resume
equal to an uninterrupted run, Ctrl-C, divergence with an intact checkpoint, --fail-on, and
one-line errors for bad input that leave nothing behind.

Runs are tiny (a few steps, H = 8) so the file stays fast; the default run's promise (>= 90%
held-out accuracy in under 60 s) is checked end to end, in a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

import bptt_cli.analyses.train as trainlib
from bptt_cli.cli.app import app
from bptt_cli.core.rnn import init_params
from bptt_cli.io.checkpoint import load_checkpoint, save_checkpoint

runner = CliRunner()
TINY = ["--hidden", "8", "--batch", "4", "--seq-len", "12", "--delay", "3", "--log-every", "2", "--no-plots"]
TEXT = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, "
    "it was the season of Darkness, it was the spring of hope, it was the winter of despair.\n"
) * 4


def invoke(*args: str):
    return runner.invoke(app, ["train", *args])


def strict_json(text: str):
    return json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON token {c}"))


def metric_rows(folder) -> list[dict]:
    """metrics.jsonl without the wall-clock field (the only thing two identical runs differ in)."""
    rows = [strict_json(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("seconds", None)
    return rows


def assert_same_params(a, b) -> None:
    for name, arr in a.as_dict().items():
        np.testing.assert_array_equal(arr, b.as_dict()[name], err_msg=name)


def test_json_run_writes_the_run_folder(tmp_path):
    out = tmp_path / "run"
    res = invoke(*TINY, "--steps", "6", "--plots", "--out", str(out), "--json", "--seed", "3")
    assert res.exit_code == 0, res.output
    doc = strict_json(res.stdout)  # stdout holds the one document, nothing else
    assert doc["command"] == "train" and doc["config"]["seed"] == 3
    assert doc["verdict"]["label"] in ("exploding", "vanishing", "stable", "undetermined")
    assert doc["verdict"]["basis"] and isinstance(doc["verdict"]["evidence"], dict)
    r = doc["results"]
    assert r["steps_done"] == 6 and r["metric"] == "accuracy" and 0.0 <= r["final_metric"] <= 1.0
    assert r["chance"] == pytest.approx(1 / 8, rel=0, abs=1e-15)
    # summary.json is the very document printed
    assert strict_json((out / "summary.json").read_text()) == doc
    config = strict_json((out / "config.json").read_text())
    for option in ("task", "truncation", "optimizer", "clip", "clip_value", "init", "spectral_radius", "activation"):
        assert option in config
    assert config["seed"] == 3 and config["hidden"] == 8 and config["steps"] == 6
    assert config["command_line"].startswith("bptt train") and "--seed 3" in config["command_line"]
    rows = metric_rows(out)
    assert [row["step"] for row in rows] == [1, 2, 3, 4, 5, 6]  # the loss and gradient norm of every step
    assert [row["step"] for row in rows if row["log"]] == [1, 2, 4, 6]  # the watching: step 1 and log steps
    assert all(len(row["log_dh"]) == 12 for row in rows if row["log"])
    assert set(r["plots"]) == {
        str(out / n) for n in ("train-curves.png", "train-grad-norm.png", "train-rho.png", "train-grad-heatmap.png")
    }
    for p in r["plots"]:
        assert open(p, "rb").read(4) == b"\x89PNG"
    ckpt = load_checkpoint(out / "model.npz")
    assert ckpt.config["options"]["hidden"] == 8 and ckpt.config["train_state"]["step"] == 6
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no temporary left over


def test_human_output_names_verdict_metric_and_files(tmp_path):
    out = tmp_path / "run"
    res = invoke(*TINY, "--steps", "4", "--out", str(out))
    assert res.exit_code == 0, res.output
    assert "verdict:" in res.stdout and "held-out accuracy" in res.stdout and str(out) in res.stdout
    assert "train" in res.stderr  # the progress bar lives on stderr


@pytest.mark.parametrize(
    "extra",
    [
        ["--task", "recall", "--truncation", "random:0.5"],
        ["--task", "adding", "--optimizer", "momentum", "--clip", "0.5", "--dtype", "float32"],
        ["--task", "text", "--sampling", "sequential", "--optimizer", "adagrad", "--clip-value", "5"],
    ],
    ids=["recall-random-trunc", "adding-float32", "text-sequential"],
)
def test_resume_equals_an_uninterrupted_run(tmp_path, extra):
    if "text" in extra:
        (tmp_path / "t.txt").write_text(TEXT)
        extra = [*extra, "--text", str(tmp_path / "t.txt")]
    args = [*TINY, *extra, "--seed", "7"]
    whole, part = tmp_path / "whole", tmp_path / "part"
    assert invoke(*args, "--steps", "8", "--out", str(whole), "-q").exit_code == 0
    assert invoke(*args, "--steps", "4", "--out", str(part), "-q").exit_code == 0
    res = invoke("--resume", str(part), "--steps", "8", "-q", "--json")
    assert res.exit_code == 0, res.output
    assert metric_rows(part) == metric_rows(whole)
    assert_same_params(load_checkpoint(part / "model.npz").params, load_checkpoint(whole / "model.npz").params)
    a = strict_json((whole / "summary.json").read_text())["results"]
    b = strict_json(res.stdout)["results"]
    assert a["final_metric"] == b["final_metric"] and a["steps_done"] == b["steps_done"] == 8


def test_ctrl_c_saves_and_resume_continues_exactly(tmp_path, monkeypatch):
    """SIGINT after step 4: the run stops cleanly, saves, says how to resume; resuming gives
    the numbers of the uninterrupted run."""
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert invoke(*TINY, "--steps", "10", "--out", str(whole), "-q").exit_code == 0
    real_fit = trainlib.fit

    def fit_interrupted(*args, callback, **kwargs):
        def cb(row):
            callback(row)
            if row.get("step") == 4:
                os.kill(os.getpid(), signal.SIGINT)

        return real_fit(*args, callback=cb, **kwargs)

    monkeypatch.setattr(trainlib, "fit", fit_interrupted)
    res = invoke(*TINY, "--steps", "10", "--out", str(cut))
    monkeypatch.setattr(trainlib, "fit", real_fit)
    assert res.exit_code == 130, res.output
    assert f"bptt train --resume {cut}" in res.stderr  # said on stderr, even under -q
    summary = strict_json((cut / "summary.json").read_text())["results"]
    assert summary["interrupted"] and summary["steps_done"] == 4
    assert load_checkpoint(cut / "model.npz").config["train_state"]["step"] == 4
    assert invoke("--resume", str(cut), "-q").exit_code == 0  # --steps comes from the checkpoint
    assert metric_rows(cut) == metric_rows(whole)
    assert_same_params(load_checkpoint(cut / "model.npz").params, load_checkpoint(whole / "model.npz").params)


def test_ctrl_c_after_training_still_writes_everything(tmp_path, monkeypatch):
    """A Ctrl-C while the plots are drawn is deferred: the summary and the plots are complete."""
    import bptt_cli.plots.train as train_plots

    real_plots = train_plots.training_plots

    def plots_interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        return real_plots(*args, **kwargs)

    monkeypatch.setattr(train_plots, "training_plots", plots_interrupted)
    out = tmp_path / "run"
    res = invoke(*TINY, "--steps", "4", "--plots", "--out", str(out), "--json")
    assert res.exit_code == 0, res.output
    doc = strict_json((out / "summary.json").read_text())
    assert doc == strict_json(res.stdout) and not doc["results"]["interrupted"]
    assert len(doc["results"]["plots"]) == 4 and all(os.path.exists(p) for p in doc["results"]["plots"])


DIVERGE = [
    "--task",
    "adding",
    "--init",
    "orthogonal",
    "--activation",
    "relu",
    "--spectral-radius",
    "3",
    "--optimizer",
    "sgd",
    "--lr",
    "1",
]


def test_divergence_is_reported_and_the_checkpoint_stays_finite(tmp_path):
    out = tmp_path / "run"
    res = invoke(*TINY, *DIVERGE, "--steps", "50", "--out", str(out), "--json", "--fail-on", "diverged")
    assert res.exit_code == 3, res.output
    doc = strict_json(res.stdout)
    step = doc["results"]["nonfinite_at"]
    assert doc["verdict"]["label"] == "diverged" and isinstance(step, int)
    assert str(step) in doc["verdict"]["message"]
    # the loss blew up before it became non-finite: the verdict names the first step
    assert doc["results"]["diverged_at"] == doc["results"]["blow_up"]["step"] < step
    assert doc["results"]["steps_done"] == step - 1
    ckpt = load_checkpoint(out / "model.npz")  # loads: every parameter finite (check_params)
    assert ckpt.config["train_state"]["step"] == step - 1
    # the same run with clipping does not diverge
    res = invoke(*TINY, *DIVERGE, "--steps", "50", "--clip", "1", "--out", str(tmp_path / "c"), "--json")
    assert res.exit_code == 0, res.output
    doc = strict_json(res.stdout)
    assert doc["results"]["diverged_at"] is None and doc["results"]["clip_count"] > 0


def test_fail_on_passes_when_the_verdict_is_not_listed(tmp_path):
    res = invoke(*TINY, "--steps", "4", "--out", str(tmp_path / "r"), "--json", "--fail-on", "diverged")
    assert res.exit_code == 0
    assert strict_json(res.stdout)["verdict"]["label"] != "diverged"


def text_file(tmp_path, name: str, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


BAD = {
    "missing text": (["--task", "text", "--text", "{tmp}/nope.txt"], 1, "no such file"),
    "empty text": (["--task", "text", "--text", "{empty}"], 1, "empty"),
    "binary text": (["--task", "text", "--text", "{binary}"], 1, "binary"),
    "non-utf8 text": (["--task", "text", "--text", "{latin1}"], 1, "UTF-8"),
    "seq-len over text": (["--task", "text", "--text", "{short}", "--seq-len", "40"], 1, "--seq-len"),
    "zero hidden": (["--hidden", "0"], 2, "--hidden"),
    "negative batch": (["--batch", "-2"], 2, "--batch"),
    "zero steps": (["--steps", "0"], 2, "--steps"),
    "zero lr": (["--lr", "0"], 2, "--lr"),
    "negative lr": (["--lr", "-0.1"], 2, "--lr"),
    "delay >= seq-len": (["--delay", "12"], 2, "--delay"),
    "unknown task": (["--task", "parity"], 2, "--task"),
    "chunk:0": (["--truncation", "chunk:0"], 2, "chunk:K"),
    "random:1.5": (["--truncation", "random:1.5"], 2, "random:P"),
    "window": (["--truncation", "window"], 2, "full"),
    "fail-on typo": (["--fail-on", "exploded"], 2, "--fail-on"),
    "epochs on recall": (["--epochs", "1"], 2, "--epochs"),
    "unwritable out": (["--out", "{blocker}/sub"], 1, "cannot create"),
    "resume missing": (["--resume", "{tmp}/nowhere"], 1, "no such file"),
    "resume corrupt": (["--resume", "{corrupt}"], 1, "not a bptt checkpoint"),
    "resume foreign npz": (["--resume", "{foreign}"], 1, "not a bptt checkpoint"),
    "resume other bptt checkpoint": (["--resume", "{other}"], 1, "not written by `bptt train`"),
}


@pytest.mark.parametrize("case", list(BAD), ids=list(BAD))
def test_bad_input_one_line_and_nothing_left(tmp_path, case):
    args, code, needle = BAD[case]
    files = {
        "tmp": str(tmp_path),
        "empty": text_file(tmp_path, "empty.txt", b""),
        "binary": text_file(tmp_path, "bin.txt", b"abc\x00def" * 20),
        "latin1": text_file(tmp_path, "latin1.txt", "caf\u00e9 au lait ".encode("latin-1") * 20),
        "short": text_file(tmp_path, "short.txt", b"a short text of a few words"),
        "blocker": text_file(tmp_path, "blocker", b"x"),
        "corrupt": text_file(tmp_path, "corrupt.npz", b"PK\x03\x04 not really"),
    }
    files["foreign"] = str(tmp_path / "foreign.npz")
    np.savez(files["foreign"], W=np.eye(3))
    files["other"] = str(tmp_path / "other.npz")
    params = init_params(np.random.default_rng(0), input_size=2, hidden_size=3, output_size=2)
    save_checkpoint(files["other"], params, {"command": "spectrum"})
    before = sorted(p.name for p in tmp_path.iterdir())
    out = tmp_path / "run"
    args = [a.format(**files) for a in args]
    if "--out" not in args:
        args += ["--out", str(out)]
    res = invoke(*TINY, "--steps", "3", *args)
    assert res.exit_code == code, res.output
    assert needle in res.stderr
    if code == 1:
        assert res.stderr.startswith("bptt: error: ") and res.stderr.count("\n") == 1
        assert "Traceback" not in res.output
    assert res.stdout == ""
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_a_library_rejection_before_training_leaves_nothing(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise ValueError("`batch_size` must be positive; got 0")

    monkeypatch.setattr(trainlib, "fit", refuse)
    res = invoke(*TINY, "--steps", "3", "--out", str(tmp_path / "run"))
    assert res.exit_code == 1 and res.stderr.endswith("\nbptt: error: `batch_size` must be positive; got 0\n")
    assert list(tmp_path.iterdir()) == []


def test_blas_threads_sets_and_restores_the_count():
    from bptt_cli.blas import _openblas, blas_threads

    api = _openblas()
    if api is None:
        pytest.skip("numpy does not use its bundled OpenBLAS here")
    setter, getter = api
    before = getter()
    with blas_threads(1):
        assert getter() == 1
    assert getter() == before
    with pytest.raises(RuntimeError), blas_threads(1):
        raise RuntimeError("the count comes back even on an error")
    assert getter() == before


def test_a_finished_run_is_never_overwritten(tmp_path):
    out = tmp_path / "run"
    assert invoke(*TINY, "--steps", "2", "--out", str(out), "-q").exit_code == 0
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    res = invoke(*TINY, "--steps", "2", "--out", str(out))
    assert res.exit_code == 1 and "the folder is not empty" in res.stderr and "--resume" in res.stderr
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files


def test_resume_into_another_folder_leaves_the_source_alone(tmp_path):
    whole, part, other = tmp_path / "whole", tmp_path / "part", tmp_path / "other"
    assert invoke(*TINY, "--steps", "6", "--out", str(whole), "-q").exit_code == 0
    assert invoke(*TINY, "--steps", "2", "--out", str(part), "-q").exit_code == 0
    before = {p.name: p.read_bytes() for p in part.iterdir()}
    assert invoke("--resume", str(part), "--steps", "6", "--out", str(other), "-q").exit_code == 0
    assert {p.name: p.read_bytes() for p in part.iterdir()} == before
    assert metric_rows(other) == metric_rows(whole)
    assert_same_params(load_checkpoint(other / "model.npz").params, load_checkpoint(whole / "model.npz").params)
    # a folder holding another run is not a place to resume into
    res = invoke("--resume", str(part), "--steps", "6", "--out", str(whole))
    assert res.exit_code == 1 and "the folder is not empty" in res.stderr and "--resume" in res.stderr


def test_resume_refuses_to_change_the_model(tmp_path):
    out = tmp_path / "run"
    assert invoke(*TINY, "--steps", "2", "--out", str(out), "-q").exit_code == 0
    res = invoke("--resume", str(out), "--hidden", "16", "--steps", "4")
    assert res.exit_code == 2 and "--hidden" in res.stderr
    res = invoke("--resume", str(out), "--steps", "2")
    assert res.exit_code == 2 and "--steps" in res.stderr


def test_text_task_samples_and_beats_nothing_trivially(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text(TEXT)
    out = tmp_path / "run"
    res = invoke(
        *TINY,
        "--task",
        "text",
        "--text",
        str(path),
        "--epochs",
        "1",
        "--prime",
        "It was",
        "--sample-len",
        "30",
        "--out",
        str(out),
        "--json",
    )
    assert res.exit_code == 0, res.output
    doc = strict_json(res.stdout)
    r = doc["results"]
    assert r["metric"] == "perplexity" and r["chance"] > 1
    # one epoch = the training text's B streams read once in windows of T
    train_chars = len(TEXT) - int(len(TEXT) * 0.1)
    assert r["steps_done"] == (train_chars - 1) // 4 // 12
    assert r["sample"].startswith("It was") and len(r["sample"]) == len("It was") + 30
    res = invoke(*TINY, "--task", "text", "--text", str(path), "--prime", "\u00df", "--out", str(tmp_path / "p"))
    assert res.exit_code == 2 and "prime" in res.stderr


def test_a_real_sigint_stops_the_process_cleanly(tmp_path):
    """The real signal path: a child `python -m bptt_cli train` gets SIGINT mid-run."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "bptt_cli", "train", *TINY, "--steps", "1000000", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        if (out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count("\n") >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"continue with: bptt train --resume {out}" in stderr
    summary = strict_json((out / "summary.json").read_text())["results"]
    ckpt = load_checkpoint(out / "model.npz")
    assert summary["interrupted"] and summary["steps_done"] == ckpt.config["train_state"]["step"] >= 4
    assert metric_rows(out)[-1]["step"] <= summary["steps_done"]


def test_the_default_run_learns_recall_within_a_minute(tmp_path):
    """`bptt train` with no options: >= 90% held-out accuracy in under 60 s, wall and CPU
    (it takes a few seconds with one BLAS thread; the margin is for a busy shared machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    res = invoke("--out", str(tmp_path / "default"), "--json", "--no-plots")
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    assert res.exit_code == 0, res.output
    doc = strict_json(res.stdout)
    assert doc["config"]["task"] == "recall" and doc["config"]["delay"] == 10
    assert doc["results"]["final_metric"] >= 0.9
    assert wall < 60 and cpu < 60
