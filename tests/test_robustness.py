"""Nothing lost, nothing overwritten, no traceback (docs/robustness.md): run folders claimed by one
run, the user's files left alone, a resume under the run's own options, signals at any moment
(sent to real processes), sizes refused before allocating, quiet meaning quiet, odd streams and
messages that name the option. Each test reproduces a defect first found by hand."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from typer.testing import CliRunner

from bptt_cli.cli.app import app
from bptt_cli.io.checkpoint import load_checkpoint
from bptt_cli.io.runfolder import LOCK

runner = CliRunner()
TINY = ["--hidden", "8", "--batch", "4", "--seq-len", "12", "--delay", "3", "--log-every", "2", "--no-plots"]
BPTT = [sys.executable, "-m", "bptt_cli"]
ENV = {**os.environ, "BPTT_THREADS": "1", "MPLBACKEND": "Agg"}


def bptt(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 120
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*BPTT, *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env or ENV, timeout=timeout
    )


def start(*args: str, cwd: Path | None = None) -> subprocess.Popen:
    return subprocess.Popen([*BPTT, *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            cwd=cwd, env=ENV)  # fmt: skip


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("bptt: "), stderr
    assert "Traceback" not in stderr
    return lines[0]


def rows(folder: Path) -> list[dict]:
    out = []
    for line in (folder / "metrics.jsonl").read_text().splitlines():
        row = json.loads(line)
        row.pop("seconds", None)  # wall time: the one field two identical runs differ in
        out.append(row)
    return out


def wait_for_rows(folder: Path, n: int, proc: subprocess.Popen, limit: float = 60) -> None:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        metrics = folder / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count("\n") >= n:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run did not log {n} rows in {limit} s (exit {proc.poll()})")


# ---------------------------------------------------------------- 1. one run per folder


def test_two_runs_on_one_folder_exactly_one_proceeds(tmp_path):
    out = tmp_path / "same"
    procs = [start("train", *TINY, "--steps", "400", "--out", out) for _ in range(2)]
    results = [(p.wait(timeout=120), p.stderr.read()) for p in procs]
    codes = sorted(code for code, _ in results)
    assert codes == [0, 1], results
    loser = next(err for code, err in results if code == 1)
    assert "another bptt run" in one_error_line(loser) or "not empty" in loser
    # the folder is one run's, whole: its config, log, checkpoint and summary agree
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"] == json.loads((out / "config.json").read_text())
    assert load_checkpoint(out / "model.npz").config["train_state"]["step"] == summary["results"]["steps_done"] == 400
    assert [r["step"] for r in rows(out) if "event" not in r] == list(range(1, 401))
    assert not (out / LOCK).exists()


def test_default_folders_never_collide(tmp_path):
    procs = [start("train", *TINY, "--steps", "5", cwd=tmp_path) for _ in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0], [p.stderr.read() for p in procs]
    folders = sorted((tmp_path / "runs").iterdir())
    assert len(folders) == 3 and all((f / "summary.json").is_file() for f in folders)


# ---------------------------------------------------------------- 2. the user's files


@pytest.mark.parametrize("name", ["config.json", "metrics.jsonl", "summary.json", "notes.txt"])
def test_a_folder_of_someone_elses_is_never_written(tmp_path, name):
    out = tmp_path / "mine"
    out.mkdir()
    (out / name).write_text("my own file\n")
    r = bptt("train", *TINY, "--steps", "3", "--out", out)
    assert r.returncode == 1 and "not empty" in one_error_line(r.stderr) and name in r.stderr
    assert sorted(p.name for p in out.iterdir()) == [name] and (out / name).read_text() == "my own file\n"


def test_an_empty_out_is_refused(tmp_path):
    for command in (["train", *TINY], ["trace", "-H", "4"]):
        r = bptt(*command, "--out", "", cwd=tmp_path)
        assert r.returncode == 2 and "--out" in one_error_line(r.stderr) and "empty path" in r.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_refused_size_leaves_nothing_behind(tmp_path):
    r = bptt("train", "--batch", "500000000", "--out", tmp_path / "big", env={**ENV, "BPTT_MEMORY_LIMIT": "8G"})
    line = one_error_line(r.stderr)
    assert r.returncode == 2 and "--batch 500000000" in line and "TiB of memory" in line and "8 GiB" in line
    assert not (tmp_path / "big").exists()


# ---------------------------------------------------------------- 3. resume under the run's own options


def interrupted(out: Path, *args: str, rows_first: int = 6) -> subprocess.CompletedProcess:
    proc = start("train", *TINY, "--steps", "100000", "--out", out, *args)
    wait_for_rows(out, rows_first, proc)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)


def test_resume_keeps_fail_on_and_no_plots(tmp_path):
    out = tmp_path / "run"
    first = interrupted(out, "--fail-on", "stable,vanishing,exploding", "-q")
    assert first.returncode == 130 and f"continue with: bptt train --resume {out}" in first.stderr  # said under -q
    again = bptt("train", "--resume", out, "--steps", "40", "-q")
    assert again.returncode == 3, again.stderr  # --fail-on came back with the run
    assert not list(out.glob("*.png"))  # and so did --no-plots
    assert json.loads((out / "summary.json").read_text())["config"]["fail_on"] == ["stable", "vanishing", "exploding"]


def test_a_diverged_run_is_not_resumed_into_the_same_divergence(tmp_path):
    out = tmp_path / "run"
    args = ["--task", "adding", "--activation", "relu", "--spectral-radius", "3", "--optimizer", "sgd", "--lr", "1"]
    assert bptt("train", *args, "--steps", "200", "--out", out, "--no-plots").returncode == 0
    before = (out / "config.json").read_bytes(), (out / "metrics.jsonl").read_bytes()
    r = bptt("train", "--resume", out)
    assert r.returncode == 1 and "diverged at step 2" in one_error_line(r.stderr)
    assert ((out / "config.json").read_bytes(), (out / "metrics.jsonl").read_bytes()) == before
    events = [r["event"]["kind"] for r in rows(out) if "event" in r]
    assert events.count("diverged") == 1


TEXT = ("the quick brown fox jumps over the lazy dog. " * 60) + "\n"


def test_a_text_run_resumes_from_any_folder_and_notices_a_changed_text(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "t.txt").write_text(TEXT)
    out = tmp_path / "run"
    first = bptt("train", "--task", "text", "--text", "t.txt", "--steps", "4", "--hidden", "8", "--seq-len", "10",
                 "--batch", "4", "--no-plots", "--sample-len", "0", "--out", out, cwd=data)  # fmt: skip
    assert first.returncode == 0, first.stderr
    assert json.loads((out / "config.json").read_text())["text"] == str(data / "t.txt")  # kept absolute
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    r = bptt("train", "--resume", out, "--steps", "6", "--json", "-q", cwd=elsewhere)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["results"]["notes"] == []
    # the same characters in another order: the run goes on, and says the text changed
    (data / "t.txt").write_text(TEXT[::-1])
    r = bptt("train", "--resume", out, "--steps", "8", "--json", "-q", cwd=elsewhere)
    notes = json.loads(r.stdout)["results"]["notes"]
    assert r.returncode == 0 and len(notes) == 1 and "changed since the run started" in notes[0]
    # another vocabulary: refused, and nothing of the run is rewritten
    (data / "t.txt").write_text(TEXT.upper())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = bptt("train", "--resume", out, "--steps", "10", cwd=elsewhere)
    assert r.returncode == 1 and "another vocabulary" in one_error_line(r.stderr)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# ---------------------------------------------------------------- 4. signals


def wait_for_handlers(proc: subprocess.Popen, limit: float = 30) -> None:
    """Until bptt's first line has run: its entry module catches SIGTERM, which the kernel shows
    in /proc/PID/status (SigCgt, a bit mask of the caught signals)."""
    status = Path(f"/proc/{proc.pid}/status")
    assert status.parent.exists(), "premise: a Linux /proc to see when the handlers are installed"
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        caught = next((line for line in status.read_text().splitlines() if line.startswith("SigCgt:")), "0")
        if int(caught.split()[-1], 16) & (1 << (signal.SIGTERM - 1)):
            return
        time.sleep(0.002)
    raise AssertionError("bptt never installed its SIGTERM handler")


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.3, 0.6])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_at_any_moment_is_one_line(tmp_path, delay, sig):
    """From the first instruction of bptt on (importing numpy, parsing, validating, training):
    one line, 130 for SIGINT and 143 for SIGTERM, never a traceback. (The interpreter's own start-up,
    before bptt's first line runs, is Python's: a signal there is outside any program's reach.)"""
    proc = start("train", "--steps", "100000", "--out", tmp_path / "run", "-q")
    wait_for_handlers(proc)
    time.sleep(delay)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == (130 if sig == signal.SIGINT else 143), stderr
    line = one_error_line(stderr)
    assert "interrupted" in line
    if (tmp_path / "run").exists():  # it got as far as the run folder: the run is there to resume
        assert (tmp_path / "run" / "model.npz").is_file() and "--resume" in line


def test_sigterm_saves_the_run_and_says_so(tmp_path):
    out = tmp_path / "run"
    proc = start("train", *TINY, "--steps", "100000", "--out", out, "-q", "--json")
    wait_for_rows(out, 4, proc)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "continue with: bptt train --resume" in one_error_line(stderr)
    doc = json.loads(stdout)
    step = load_checkpoint(out / "model.npz").config["train_state"]["step"]
    assert doc["results"]["interrupted"] and doc["results"]["steps_done"] == step >= 2


def test_a_second_signal_stops_at_once_and_keeps_the_last_checkpoint(tmp_path):
    """SIGINT then SIGTERM, both pending at once (two SIGINTs that close together would merge into
    one: the kernel does not queue a signal that is already pending): the first asks for a stop
    after the step, the second stops at once, and the last periodic checkpoint is what is kept."""
    out = tmp_path / "run"
    proc = start("train", *TINY, "--steps", "100000", "--checkpoint-every", "10", "--out", out, "--json", "-q")
    wait_for_rows(out, 25, proc)
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 143, stderr
    line = one_error_line(stderr)
    kept = json.loads(stdout)["error"]["kept"]
    step = load_checkpoint(out / "model.npz").config["train_state"]["step"]
    assert kept["checkpoint_step"] == step and step % 10 == 0 and step >= 20
    assert f"at step {step}" in line and "stopped at once" in line and "--resume" in line
    assert not (out / LOCK).exists()
    assert bptt("train", "--resume", out, "--steps", step + 5).returncode == 0


def test_a_killed_run_resumes_from_its_last_checkpoint_exactly(tmp_path):
    """SIGKILL cannot be caught: the periodic checkpoint is what survives, and a resume from it
    equals the run that was never killed (every metrics row and every parameter)."""
    killed, whole = tmp_path / "killed", tmp_path / "whole"
    proc = start("train", *TINY, "--steps", "100000", "--checkpoint-every", "7", "--out", killed)
    wait_for_rows(killed, 30, proc)
    proc.kill()
    proc.wait(timeout=60)
    step = load_checkpoint(killed / "model.npz").config["train_state"]["step"]
    assert step >= 21 and step % 7 == 0
    total = step + 9
    resumed = bptt("train", "--resume", killed, "--steps", total)
    assert resumed.returncode == 0, resumed.stderr  # the dead run's lock did not outlive it
    assert bptt("train", *TINY, "--steps", total, "--out", whole).returncode == 0
    assert rows(killed) == rows(whole)
    a, b = load_checkpoint(killed / "model.npz").params, load_checkpoint(whole / "model.npz").params
    for name, arr in a.as_dict().items():
        assert_array_equal(arr, b.as_dict()[name], err_msg=name)


# ---------------------------------------------------------------- 5. sizes


@pytest.mark.parametrize(
    "args,named",
    [
        (["spectrum", "-T", "100000000"], "--seq-len 100000000"),
        (["trace", "--hidden", "100000"], "--hidden 100000"),
        (["trace", "--task", "recall", "--batch", "100000000"], "--batch 100000000"),
        (["gradcheck", "--hidden", "100000"], "--hidden 100000"),
        (["compare-truncation", "--batch", "100000000"], "--batch 100000000"),
        (["paths", "--seq-len", "100000000"], "--seq-len"),
    ],
)
def test_sizes_beyond_memory_are_refused_before_allocating(args, named, tmp_path):
    out = [] if args[0] == "gradcheck" else ["--out", tmp_path / "out"]  # gradcheck writes no files
    r = bptt(*args, *out, env={**ENV, "BPTT_MEMORY_LIMIT": "4G"}, timeout=30)
    assert r.returncode == 2 and named in one_error_line(r.stderr)
    assert not (tmp_path / "out").exists()


def test_a_file_whose_header_lies_is_refused_before_allocating(tmp_path):
    header = np.lib.format.header_data_from_array_1_0(np.zeros((2, 2)))
    header["shape"] = (100000, 100000)
    with open(tmp_path / "bomb.npy", "wb") as f:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(b"\0" * 64)
    for option in ("--model", "--inputs", "--h0"):
        args = ["trace", option, tmp_path / "bomb.npy"]
        r = bptt(*args, env={**ENV, "BPTT_MEMORY_LIMIT": "100G"}, timeout=30)
        assert r.returncode == 1 and f"{option} {tmp_path / 'bomb.npy'}" in one_error_line(r.stderr)
        assert "header claims shape (100000, 100000)" in r.stderr and "74.5 GiB" in r.stderr
    # a file that really holds what it claims, but more than the memory: the same refusal
    np.save(tmp_path / "w.npy", np.eye(64))
    r = bptt("trace", "--model", tmp_path / "w.npy", env={**ENV, "BPTT_MEMORY_LIMIT": "1K"}, timeout=30)
    assert r.returncode == 1 and "of memory" in one_error_line(r.stderr)


# ---------------------------------------------------------------- 7. quiet, and validation first


def test_quiet_silences_warnings_and_plain_runs_show_them_in_one_line(monkeypatch):
    import bptt_cli.analyses.trace as trace_analysis

    real, calls = trace_analysis.lyapunov_exponents, []

    def noisy(*args, **kwargs):
        calls.append(1)  # a new text each time: Python shows a repeated warning only once per process
        warnings.warn(f"divide by zero encountered in log ({len(calls)})", RuntimeWarning, stacklevel=1)
        return real(*args, **kwargs)

    monkeypatch.setattr(trace_analysis, "lyapunov_exponents", noisy)
    r = runner.invoke(app, ["trace", "-H", "4", "-T", "20", "-q"])
    assert r.exit_code == 0 and r.stderr == "" and r.stdout == "" and calls == [1]
    r = runner.invoke(app, ["trace", "-H", "4", "-T", "20", "--json"])
    assert r.exit_code == 0 and "bptt: warning: divide by zero encountered in log (2)\n" in r.stderr
    assert "RuntimeWarning" not in r.stderr and ".py" not in r.stderr


def test_compare_truncation_validates_before_any_work(tmp_path):
    started = time.monotonic()
    r = bptt("compare-truncation", "--clip", "0", "--out", tmp_path / "out", timeout=30)
    assert r.returncode == 2 and "--clip" in one_error_line(r.stderr)
    assert not (tmp_path / "out").exists() and time.monotonic() - started < 20


# ---------------------------------------------------------------- 8. odd streams


@pytest.mark.parametrize("json_mode", [False, True])
def test_a_reader_that_left_is_exit_141(json_mode):
    flags = ["--json"] if json_mode else []
    proc = subprocess.Popen([*BPTT, "spectrum", "-H", "200", *flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=ENV)  # fmt: skip
    proc.stdout.close()  # the reader is gone before anything is written
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 141 and b"Traceback" not in stderr


def test_a_closed_stdout_is_one_line_before_any_work():
    r = subprocess.run([*BPTT, "paths", "--json"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                       env=ENV, pass_fds=(), close_fds=True, preexec_fn=lambda: os.close(1))  # fmt: skip
    assert r.returncode == 1 and "stdout is closed" in one_error_line(r.stderr)
    quiet = subprocess.run([*BPTT, "paths", "-q"], stderr=subprocess.PIPE, text=True, env=ENV,
                           preexec_fn=lambda: os.close(1))  # fmt: skip
    assert quiet.returncode == 0 and quiet.stderr == ""  # -q prints nothing on stdout: nothing to refuse


# ---------------------------------------------------------------- 9. messages name the option


@pytest.mark.parametrize(
    "args,code,named",
    [
        (["train", "--delay", "40", "--seq-len", "30"], 2, "`--delay` must be less than `--seq-len`"),
        (["trace", "--spectral-radius", "inf"], 2, "`--spectral-radius`"),
        (["trace", "--input-scale", "inf"], 2, "`--input-scale`"),
        (["trace", "--activation", "sigmoid"], 2, "Invalid value for '--activation': 'sigmoid' is not one of"),
        (["trace", "--out", "/sys/bptt-cannot-be-here"], 1, "--out /sys/bptt-cannot-be-here: cannot create"),
        (["trace", "--out", "a" * 300], 1, "--out aaaa"),
        (["train", "--out", "a" * 300], 1, "--out aaaa"),
    ],
)
def test_messages_name_the_option(args, code, named, tmp_path):
    r = bptt(*args, cwd=tmp_path, timeout=30)
    line = one_error_line(r.stderr)
    assert r.returncode == code and named in line and "Value error" not in line and len(line) < 300, line


def test_a_pytorch_file_is_told_by_its_bytes(tmp_path):
    torch = pytest.importorskip("torch")
    rnn = torch.nn.RNN(3, 5)
    torch.save(rnn.state_dict(), tmp_path / "model.npz")  # a torch file under an .npz name
    r = bptt("spectrum", "--model", tmp_path / "model.npz", "--activation", "tanh", "--lyapunov", "0", "--json", "-q")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["results"]["network"]["hidden"] == 5
    for args in (["compare-truncation", "--model"], ["train", "--resume"]):
        r = bptt(*args, tmp_path / "model.npz", timeout=30)
        assert r.returncode == 1 and "a PyTorch file, not a bptt checkpoint" in one_error_line(r.stderr)
    torch.save(rnn, tmp_path / "whole.pt")  # a pickled module: never unpickled, one sentence of ours
    r = bptt("trace", "--model", tmp_path / "whole.pt", timeout=30)
    line = one_error_line(r.stderr)
    assert r.returncode == 1 and "save model.state_dict() instead" in line and "\x1b" not in line
