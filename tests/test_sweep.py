"""`bptt sweep`: the grid, each point equal to its own command, the same numbers on every executor,
resume, lost workers, interruptions, and one-line errors."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bptt_cli.analyses.grid import grid_points, parse_axis, parse_grid, point_args, point_seed
from bptt_cli.cli.app import app
from bptt_cli.core.validate import OptionError
from bptt_cli.io.jsondoc import loads_strict
from bptt_cli.io.sweeplog import LOG

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()
SPECTRUM = ["spectrum", "-H", "16", "-T", "40", "-B", "2", "--reference", "none"]


def invoke(args: list[str], code: int = 0) -> dict:
    r = runner.invoke(app, [*args, "--json", "-q"])
    assert r.exit_code == code, r.stderr
    return loads_strict(r.stdout)


def bptt(*args: str, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "bptt_cli", *args], capture_output=True, text=True, env=env, **kw)


def rows(folder: Path) -> list[dict]:
    return [loads_strict(line) for line in (folder / LOG).read_text().splitlines()]


# ---------------------------------------------------------------------------- the grid


def test_lists_ranges_and_log_ranges():
    a = parse_axis("spectral-radius=0.5:3:6")
    assert a.texts == ("0.5", "1", "1.5", "2", "2.5", "3") and a.numeric and not a.log
    assert [a.value(i) for i in range(2)] == [0.5, 1]
    lr = parse_axis("lr=1e-4:1e-1:4:log")
    assert lr.log and lr.numbers == pytest.approx([1e-4, 1e-3, 1e-2, 1e-1], rel=1e-12)
    h = parse_axis("hidden=64:1024:5")
    assert h.texts == ("64", "304", "544", "784", "1024")  # integers, so that --hidden takes them
    act = parse_axis("activation=tanh,relu")
    assert act.texts == ("tanh", "relu") and not act.numeric
    assert parse_axis("--input-scale=0.01,1").name == "input-scale"  # the dashes are allowed


@pytest.mark.parametrize(
    "spec",
    ["spectral-radius", "=1,2", "spectral-radius=", "x=1:2", "x=1:2:1", "x=1:1:3", "x=0:1:3:log", "x=1,,2", "x=1,1",
     "x=1:2:3:lin", "x=a:b:3", "X Y=1"],
)  # fmt: skip
def test_a_bad_axis_is_one_usage_error(spec):
    with pytest.raises(OptionError, match="--grid"):
        parse_axis(spec)


def test_the_grid_is_the_product_last_axis_fastest():
    axes = parse_grid(["spectral-radius=0.5,2", "hidden=8,16,32"])
    points = grid_points(axes, 0)
    assert [p.coords for p in points][:4] == [
        {"spectral-radius": 0.5, "hidden": 8},
        {"spectral-radius": 0.5, "hidden": 16},
        {"spectral-radius": 0.5, "hidden": 32},
        {"spectral-radius": 2, "hidden": 8},
    ]
    assert len(points) == 6 and [p.index for p in points] == list(range(6))
    with pytest.raises(OptionError, match="twice"):
        parse_grid(["hidden=8", "hidden=16"])
    with pytest.raises(OptionError, match="required"):
        parse_grid([])


def test_a_points_seed_depends_on_its_coordinates_not_its_place():
    small = {p.key: p.seed for p in grid_points(parse_grid(["spectral-radius=1,2"]), 7)}
    big = {p.key: p.seed for p in grid_points(parse_grid(["spectral-radius=0.5,1,2,3"]), 7)}
    assert all(big[k] == s for k, s in small.items())  # adding values leaves the others' seeds alone
    assert len(set(big.values())) == 4  # and the points differ from each other
    assert point_seed(7, {"spectral-radius": 1}) != point_seed(8, {"spectral-radius": 1})  # the sweep's seed counts
    seeds = grid_points(parse_grid(["seed=3,5"]), 7)
    assert [p.seed for p in seeds] == [3, 5]  # a grid over seed uses those seeds
    assert point_args(parse_grid(["seed=3,5"]), seeds[0]) == ["--seed", "3"]
    with pytest.raises(OptionError, match="whole numbers"):
        grid_points(parse_grid(["seed=0.5,1"]), 0)


# ---------------------------------------------------------------------------- a point is its own command


def test_every_point_is_what_its_own_command_gives(tmp_path):
    doc = invoke(["sweep", *SPECTRUM, "--grid", "spectral-radius=0.5,3", "-j", "1", "--out", str(tmp_path / "s")])
    points = doc["results"]["points"]
    assert [p["coords"] for p in points] == [{"spectral-radius": 0.5}, {"spectral-radius": 3}]
    for p in points:
        words = p["command"].split()
        assert words[:2] == ["bptt", "spectrum"] and f"--seed {p['seed']}" in p["command"]
        alone = invoke(words[1:])
        assert p["results"] == alone["results"] and p["verdict"] == alone["verdict"]
    # the two ends of the axis are the two phases, as the standalone command says
    assert [p["headline"]["label"] for p in points] == ["vanishing", "exploding"]
    assert rows(tmp_path / "s") == [{k: v for k, v in p.items()} for p in points]


def test_the_same_numbers_on_every_executor(tmp_path):
    """Serial, two local processes and a Dask LocalCluster: identical sweep.jsonl lines, order
    aside (BLAS at one thread; each point seeded by its coordinates, not by who ran it or when)."""
    grid = ["--grid", "spectral-radius=0.5,1.5,3", "--grid", "input-scale=0.01,1"]
    serial = invoke(["sweep", *SPECTRUM, *grid, "-j", "1", "--out", str(tmp_path / "a")])
    procs = invoke(["sweep", *SPECTRUM, *grid, "-j", "2", "--out", str(tmp_path / "b")])
    dask = invoke(["sweep", *SPECTRUM, *grid, "-j", "2", "--scheduler", "local", "--out", str(tmp_path / "c")])
    assert (serial["results"]["executor"], procs["results"]["executor"], dask["results"]["executor"]) == (
        "serial",
        "processes",
        "dask",
    )
    a = serial["results"]["points"]
    assert len(a) == 6 and procs["results"]["points"] == a and dask["results"]["points"] == a  # in grid order
    lines = [sorted((tmp_path / x / LOG).read_text().splitlines()) for x in "abc"]
    assert lines[0] == lines[1] == lines[2] and len(lines[0]) == 6
    assert dask["results"]["dashboard"] is None or dask["results"]["dashboard"].startswith("http")


def test_train_points_keep_their_results_not_a_temporary_folder(tmp_path):
    doc = invoke(["sweep", "train", "--steps", "5", "-H", "8", "--grid", "lr=0.001,0.1", "-j", "1", "--out",
                  str(tmp_path / "t")])  # fmt: skip
    for p in doc["results"]["points"]:
        assert p["results"]["steps_done"] == 5 and "files" not in p["results"]
        assert p["headline"]["loss"] == p["results"]["final_loss"]
        assert "--no-plots" in p["command"]
    assert all(p.is_file() for p in (tmp_path / "t").iterdir())  # no run folders: they were temporary
    assert {"sweep.json", LOG} <= set(os.listdir(tmp_path / "t"))


# ---------------------------------------------------------------------------- resume


def test_a_rerun_continues_where_the_sweep_stopped(tmp_path):
    out = tmp_path / "s"
    args = ["sweep", *SPECTRUM, "--grid", "spectral-radius=0.5:2:4", "-j", "1", "--out", str(out)]
    full = invoke(args)["results"]["points"]
    log = out / LOG
    lines = log.read_text().splitlines(keepends=True)
    log.write_text(lines[0] + lines[1][: len(lines[1]) // 2])  # killed while writing the second point
    again = invoke(args)["results"]
    assert again["resumed"] == 1 and again["finished"] == 4
    assert again["points"] == full
    assert [r["key"] for r in rows(out)] == [p["key"] for p in full]  # every point once, the cut line gone
    # a third run has nothing to do
    assert invoke(args)["results"]["resumed"] == 4


def test_a_different_sweep_in_the_same_folder_is_refused(tmp_path):
    out = tmp_path / "s"
    invoke(["sweep", *SPECTRUM, "--grid", "spectral-radius=0.5,2", "-j", "1", "--out", str(out)])
    before = (out / LOG).read_text()
    r = runner.invoke(app, ["sweep", *SPECTRUM, "--grid", "spectral-radius=0.5,3", "-j", "1", "--out", str(out)])
    assert r.exit_code == 1 and "another sweep (its grid differ" in r.stderr
    r = runner.invoke(app, ["sweep", *SPECTRUM, "-H", "20", "--grid", "spectral-radius=0.5,2", "--out", str(out)])
    assert r.exit_code == 1 and "args" in r.stderr
    assert (out / LOG).read_text() == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    r = runner.invoke(app, ["sweep", *SPECTRUM, "--grid", "spectral-radius=1,2", "--out", str(tmp_path / "mine")])
    assert r.exit_code == 1 and "not empty" in r.stderr


# ---------------------------------------------------------------------------- faults


def _worker_pids(pid: int) -> list[int]:
    """The sweep's worker processes: the children of its children (the forkserver's)."""

    def children(p: int) -> list[int]:
        try:
            return [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            return []

    return [w for c in children(pid) for w in children(c)]


def _wait_for(predicate, seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.05)


TRACE = ["trace", "-H", "256", "-T", "2000", "-B", "8", "--lyapunov", "0"]  # about a second per point


def test_a_lost_worker_is_retried_and_its_point_written_once(tmp_path):
    out = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "bptt_cli", "sweep", *TRACE, "--grid", "seed=0:7:8", "-j", "2", "--out", str(out),
           "-q", "--no-plots"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        _wait_for(lambda: len(_worker_pids(proc.pid)) == 2)
        _wait_for(lambda: (out / LOG).exists() and (out / LOG).read_text().count("\n") >= 1)
        victim = _worker_pids(proc.pid)[0]
        os.kill(victim, signal.SIGKILL)  # as the kernel's OOM killer would
        stdout, stderr = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr
    keys = [r["key"] for r in rows(out)]
    assert sorted(keys) == sorted(json.dumps({"seed": s}, separators=(",", ":")) for s in range(8))
    assert len(keys) == len(set(keys))  # every point written once


@pytest.mark.parametrize("executor", [["-j", "2"], ["-j", "2", "--scheduler", "local"]], ids=["processes", "dask"])
def test_ctrl_c_keeps_every_finished_point_and_the_rerun_completes(tmp_path, executor):
    out = tmp_path / "s"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "bptt_cli", "sweep", *TRACE, "--grid", "seed=0:5:6", *executor, "--out", str(out),
           "--no-plots"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True
    )
    try:
        _wait_for(lambda: (out / LOG).exists() and (out / LOG).read_text().count("\n") >= 1)
        os.killpg(proc.pid, signal.SIGINT)  # a Ctrl-C reaches the whole process group: workers too
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "every finished point is kept" in stderr and "Traceback" not in stderr
    kept = rows(out)
    assert 1 <= len(kept) < 6
    r = bptt(*cmd[3:], timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(x["key"] for x in rows(out)) == sorted(
        json.dumps({"seed": s}, separators=(",", ":")) for s in range(6)
    )


def test_an_unreachable_scheduler_is_one_line_within_the_timeout(tmp_path):
    start = time.monotonic()
    r = bptt("sweep", *SPECTRUM, "--grid", "spectral-radius=1,2", "--scheduler", "tcp://127.0.0.1:9", "--timeout",
             "2", "--out", str(tmp_path / "s"), timeout=60)  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.startswith("bptt: error: --scheduler tcp://127.0.0.1:9: no Dask scheduler answered within 2 s")
    assert r.stderr.count("\n") == 1 and time.monotonic() - start < 30
    assert not (tmp_path / "s").exists()  # nothing left behind


def test_without_dask_the_scheduler_says_how_to_install_it():
    code = (
        "import sys; sys.modules['distributed'] = None\n"
        "from bptt_cli.cli.app import main; sys.argv = ['bptt'] + sys.argv[1:]; main()"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-c", code, "sweep", *SPECTRUM, "--grid", "spectral-radius=1,2",
                        "--scheduler", "local"], capture_output=True, text=True, env=env, timeout=60)  # fmt: skip
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "pip install -e '.[cluster]'" in r.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["sweep", "spectrum", "--grid", "nope=1,2"], "not an option of bptt spectrum"),
        (["sweep", "spectrum", "--grid", "hidden=8,0"], "--hidden"),
        (["sweep", "spectrum", "--grid", "spectral-radius=-1,1"], "--spectral-radius"),
        (["sweep", "spectrum", "--grid", "batch-first=1,2"], "switch"),
        (["sweep", "spectrum", "-H", "8", "--grid", "hidden=8,16"], "both an option and a grid axis"),
        (["sweep", "spectrum", "--fail-on", "exploding", "--grid", "hidden=8,16"], "not an option of a sweep's points"),
        (["sweep", "spectrum", "--grid", "out=a,b"], "not an option of bptt spectrum"),
        (["sweep", "nope", "--grid", "hidden=8,16"], "ANALYSIS must be one of"),
        (["sweep", "spectrum"], "--grid NAME=VALUES` is required"),
        (["sweep", "spectrum", "--grid", "spectral-radius="], "NAME=VALUES"),
        (["sweep", "spectrum", "--grid", "hidden=0:4:x"], "START:STOP:N"),
        (["sweep", "spectrum", "--grid", "hidden=8,16", "--grid", "seed=0:999:1000"], "pass --yes"),
        (["sweep", "spectrum", "--grid", "hidden=8,16", "--scheduler", "nowhere"], "tcp://HOST:PORT"),
    ],
)
def test_bad_input_is_one_line_and_exit_2_before_any_work(args, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = runner.invoke(app, args)
    assert r.exit_code == 2, r.stderr
    assert r.stderr.startswith("bptt: error: ") and r.stderr.count("\n") == 1 and message in r.stderr
    assert not (tmp_path / "runs").exists()  # nothing written


def test_a_lost_dask_worker_is_rerun_by_the_scheduler(tmp_path):
    """A LocalCluster worker killed mid-point: the scheduler reruns its task elsewhere, and the
    sweep writes each point once, with the numbers the serial run gives."""
    from bptt_cli.analyses import sweep
    from bptt_cli.analyses.executors import DaskExecutor
    from bptt_cli.cli.commands.sweep import plan

    axes, seed, planned = plan("trace", TRACE[1:], ["seed=0:3:4"])
    config = sweep.SweepConfig("trace", tuple(TRACE[1:]), axes, seed, tmp_path / "s", plots=False)
    ex = DaskExecutor("local", 2, timeout=30)
    pids = list(ex.client.run(os.getpid).values())
    assert len(pids) == 2
    killed = []

    def kill_once(point):
        if not killed:
            os.kill(pids[0], signal.SIGKILL)  # the other points are still running or queued
            killed.append(pids[0])

    result = sweep.run(config, planned, executor=ex, on_point=kill_once)
    assert killed and not result.missing and len(result.points) == 4
    keys = [r["key"] for r in rows(tmp_path / "s")]
    assert sorted(keys) == sorted(p.point.key for p in planned) and len(set(keys)) == 4
    serial = sweep.run(replace(config, out=tmp_path / "serial"), planned)
    assert [p.row() for p in result.points] == [p.row() for p in serial.points]


def _listening(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_running_dask_cluster_takes_the_sweep(tmp_path):
    """`dask scheduler` and `dask worker` started as a user would, the sweep submitted by address:
    the same sweep.jsonl lines as the serial run."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    dask = Path(sys.executable).with_name("dask")
    assert dask.exists(), "the cluster extra installs the dask command"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    scheduler = subprocess.Popen(
        [dask, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], **quiet
    )
    worker = None
    try:
        # before any worker joins: one line, not a sweep that waits forever
        _wait_for(lambda: _listening(port))  # the scheduler is up
        r = bptt("sweep", *SPECTRUM, "--grid", "spectral-radius=1,2", "--scheduler", address, "--timeout", "3",
                 "--out", str(tmp_path / "none"), timeout=120)  # fmt: skip
        assert r.returncode == 1 and "no workers" in r.stderr and r.stderr.count("\n") == 1, r.stderr
        assert not (tmp_path / "none").exists()
        worker = subprocess.Popen([dask, "worker", address, "--nworkers", "2", "--nthreads", "1", "--no-dashboard"],
                                  **quiet)  # fmt: skip
        grid = ["--grid", "spectral-radius=0.5,1.5,3"]
        # --timeout: the workers take a few seconds to join, and the sweep waits for one
        r = bptt("sweep", *SPECTRUM, *grid, "--scheduler", address, "--out", str(tmp_path / "d"), "--json",
                 "--timeout", "60", timeout=180)  # fmt: skip
        doc = loads_strict(r.stdout)
        assert r.returncode == 0, r.stderr
        assert doc["results"]["executor"] == "dask" and doc["results"]["workers"] >= 1
        serial = invoke(["sweep", *SPECTRUM, *grid, "-j", "1", "--out", str(tmp_path / "s")])
        assert doc["results"]["points"] == serial["results"]["points"]
        assert sorted((tmp_path / "d" / LOG).read_text().splitlines()) == sorted(
            (tmp_path / "s" / LOG).read_text().splitlines()
        )
    finally:
        for p in (worker, scheduler):
            if p is not None:
                p.terminate()
                p.wait(30)
