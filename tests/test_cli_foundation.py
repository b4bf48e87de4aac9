"""The CLI conventions on `bptt gradcheck` and `bptt paths`, the JSON report helpers, and the
examples/ scripts.

Typer 0.29's CliRunner keeps stdout and stderr apart (result.stdout, result.stderr), which is
exactly the split the --json contract is about.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose
from typer.testing import CliRunner

import bptt_cli
from bptt_cli.cli.app import app
from bptt_cli.io.jsondoc import document, dumps, jsonable

ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


def invoke(*args: str):
    return runner.invoke(app, [str(a) for a in args])


def strict_json(text: str) -> dict:
    """Parse, refusing the NaN / Infinity tokens that Python's json would otherwise accept."""

    def refuse(token):
        raise AssertionError(f"non-strict JSON token {token}")

    return json.loads(text, parse_constant=refuse)


def assert_contract(doc: dict, command: str, *options: str) -> None:
    assert doc["command"] == command
    assert doc["version"] == bptt_cli.__version__
    assert isinstance(doc["results"], dict)
    assert "seed" in doc["config"]
    for opt in options:
        assert opt in doc["config"], opt
    assert doc["nonfinite_as_null"] == 0


def one_error_line(result) -> str:
    """The error convention: one line on stderr; under --json the same message in a JSON error document."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr and "Traceback" not in result.stdout
    assert lines[0].startswith("bptt: error: ")
    if result.stdout:
        doc = strict_json(result.stdout)
        assert set(doc) == {"command", "version", "error"} and doc["version"] == bptt_cli.__version__
        assert doc["error"] == {"message": lines[0].removeprefix("bptt: error: "), "exit_code": result.exit_code}
    return lines[0]


# ---------------------------------------------------------------- gradcheck


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["--activation", "relu", "--loss", "mse", "--mask"],
        ["--activation", "identity", "--loss", "half-square", "-T", "12"],
        ["--dtype", "float32", "--mask", "--seed", "3"],
    ],
)
def test_gradcheck_json(args):
    r = invoke("gradcheck", "--json", *args)
    assert r.exit_code == 0, r.stderr
    doc = strict_json(r.stdout)  # stdout is the one document and nothing else
    assert_contract(doc, "gradcheck", "seq_len", "batch", "hidden", "activation", "loss", "dtype", "mask", "fd_step")
    res = doc["results"]
    assert res["passed"] is True
    assert len(res["checks"]) == 17
    for row in res["checks"]:
        assert row["passed"] and row["rel_error"] <= row["tolerance"]
    assert set(res["max_rel_error"]) == {
        "efficient vs finite differences",
        "naive vs finite differences",
        "efficient vs naive",
    }
    assert "gradcheck" in r.stderr  # the table went to stderr


def test_gradcheck_human_output_quiet_and_reproducible():
    r = invoke("gradcheck")
    assert r.exit_code == 0
    assert "all checks passed" in r.stdout and "efficient vs naive" in r.stdout
    q = invoke("gradcheck", "--json", "--quiet")
    assert q.stderr == ""
    a, b = strict_json(q.stdout), strict_json(invoke("gradcheck", "--json", "--quiet").stdout)
    assert a == b  # same seed, same numbers
    c = strict_json(invoke("gradcheck", "--json", "--quiet", "--seed", "1").stdout)
    assert c["results"]["checks"] != a["results"]["checks"]


def test_gradcheck_failing_check_exits_4_with_document():
    # a step of 0.5 makes the central difference's O(eps^2) error far larger than 1e-6
    r = invoke("gradcheck", "--json", "--fd-step", "0.5")
    assert r.exit_code == 4  # not 1: a failed check is not bad input
    doc = strict_json(r.stdout)
    assert doc["results"]["passed"] is False
    failed = {row["check"] for row in doc["results"]["checks"] if not row["passed"]}
    assert failed <= {"efficient vs finite differences", "naive vs finite differences"} and failed
    assert "some checks failed" in invoke("gradcheck", "--fd-step", "0.5").stdout


def test_option_error_is_one_line(monkeypatch):
    r = invoke("gradcheck", "--fd-step", "0")
    assert r.exit_code == 2
    assert "`--fd-step` must be > 0" in one_error_line(r)
    monkeypatch.setenv("BPTT_DEBUG", "1")
    r = invoke("gradcheck", "--fd-step", "0")
    assert isinstance(r.exception, ValueError)  # the traceback is shown only on request


def test_overflow_is_one_line_not_nan():
    r = invoke("paths", "--json", "--spectral-radius", "1e6", "-T", "200")
    assert r.exit_code == 1
    assert "not finite" in one_error_line(r)


# ---------------------------------------------------------------- paths


def test_paths_json_worked_example():
    r = invoke("paths", "--json")
    assert r.exit_code == 0, r.stderr
    doc = strict_json(r.stdout)
    assert_contract(doc, "paths", "seq_len", "hidden", "spectral_radius", "lengths")
    assert doc["results"]["network"]["activation"] == "identity" and doc["results"]["network"]["loss"] == "half-square"
    res = doc["results"]
    assert res["naive"]["path_walks"] == res["expected_path_walks"] == 55
    assert res["efficient"]["recursion_steps"] == 10
    assert res["max_abs_difference"] < 1e-12
    dh1 = res["dL_dh1"]
    assert_allclose(dh1["sum_of_paths"], dh1["recursion"], rtol=1e-12, atol=1e-13)
    contrib = np.array(dh1["path_contributions"])
    assert contrib.shape == (10, 4)
    assert_allclose(contrib.sum(axis=0), dh1["recursion"], rtol=1e-12, atol=1e-13)
    assert "timing" not in res and res["plots"] == []


@pytest.mark.parametrize("T", [1, 7, 13])
def test_paths_counts(T):
    doc = strict_json(invoke("paths", "--json", "--quiet", "-T", T).stdout)
    assert doc["results"]["naive"]["path_walks"] == T * (T + 1) // 2
    assert doc["results"]["efficient"]["recursion_steps"] == T


def test_paths_lengths_writes_plot_and_exponents(tmp_path):
    out = tmp_path / "run"
    r = invoke("paths", "--json", "--lengths", "4,8,16", "--repeats", "1", "--out", out)
    assert r.exit_code == 0, r.stderr
    res = strict_json(r.stdout)["results"]
    plot = Path(res["plots"][0])
    assert plot.parent == out and plot.suffix == ".png"
    assert plot.stat().st_size > 1000 and plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [row["seq_len"] for row in res["timing"]] == [4, 8, 16]
    assert [row["naive_paths"] for row in res["timing"]] == [10, 36, 136]
    assert [row["efficient_steps"] for row in res["timing"]] == [4, 8, 16]
    for method in ("naive", "efficient"):
        e = res["exponents"][method]
        assert np.isfinite(e["slope"]) and e["r2"] <= 1.0
    human = invoke("paths", "--lengths", "4,8", "--repeats", "1", "--out", out)
    assert "fitted time ~ T^k" in human.stdout and "naive k =" in human.stdout


@pytest.mark.parametrize(
    "args",
    [
        ["paths", "--lengths", "abc"],
        ["paths", "--lengths", "25,25"],
        ["paths", "--lengths", "25"],
        ["paths", "--lengths", "0,10"],
        ["paths", "-T", "0"],
        ["gradcheck", "--activation", "sigmoid"],
        ["gradcheck", "--dtype", "float16"],
        ["gradcheck", "--coords", "0"],
        ["gradcheck", "--no-such-option"],
    ],
)
def test_usage_errors_exit_2(args):
    r = invoke(*args, "--json")
    assert r.exit_code == 2, (r.stdout, r.stderr)
    one_error_line(r)  # one line, not a usage box; the JSON error document on stdout
    assert strict_json(r.stdout)["command"] == args[0]


def test_unusable_out_folder(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    # an existing file is not a folder: bad input, exit 1, before any work
    r = invoke("paths", "--lengths", "4,8", "--repeats", "1", "--out", f)
    assert r.exit_code == 1 and "exists and is not a folder" in one_error_line(r)
    # a folder under a file cannot be created: the OSError becomes one line, exit 1
    r = invoke("paths", "--json", "--lengths", "4,8", "--repeats", "1", "--out", f / "sub")
    assert r.exit_code == 1
    assert "cannot create the folder" in one_error_line(r)
    assert f.read_text() == "x"  # nothing already there is touched


def test_python_m_bptt_cli_help():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    p = subprocess.run([sys.executable, "-m", "bptt_cli", "--help"], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert "gradcheck" in p.stdout and "paths" in p.stdout
    v = subprocess.run([sys.executable, "-m", "bptt_cli", "--version"], capture_output=True, text=True, env=env)
    assert v.returncode == 0 and v.stdout.strip() == f"bptt {bptt_cli.__version__}"


# ---------------------------------------------------------------- report helpers


@dataclass
class Row:
    name: str
    value: float


def test_jsonable_nonfinite_complex_and_friends():
    obj = {
        "nan": float("nan"),
        "inf": np.float32(np.inf),
        "arr": np.array([1.0, np.nan, -np.inf]),
        "z": 1 + 2j,
        "z64": np.complex64(3 - 4j),
        "zarr": np.array([0.5j]),
        "scalar0d": np.array(2.5),
        "ints": np.arange(3),
        "flag": np.bool_(True),
        "path": Path("a/b.png"),
        "row": Row("x", float("nan")),
        "mat": np.eye(2),
    }
    value, count = jsonable(obj)
    assert count == 5  # nan, inf, two in arr, the dataclass's nan
    assert value["nan"] is None and value["inf"] is None
    assert value["arr"] == [1.0, None, None]
    assert value["z"] == {"re": 1.0, "im": 2.0}
    assert value["z64"] == {"re": 3.0, "im": -4.0}
    assert value["zarr"] == [{"re": 0.0, "im": 0.5}]
    assert value["scalar0d"] == 2.5
    assert value["ints"] == [0, 1, 2] and value["flag"] is True
    assert value["path"] == "a/b.png"
    assert value["row"] == {"name": "x", "value": None}
    assert value["mat"] == [[1.0, 0.0], [0.0, 1.0]]
    assert strict_json(dumps(value)) == value
    with pytest.raises(TypeError):
        jsonable({"f": object()})


def test_document_counts_nonfinite_and_dumps_is_strict():
    doc = document("demo", {"seed": 0}, {"x": float("nan"), "y": [np.inf]})
    assert doc["nonfinite_as_null"] == 2
    assert doc["results"] == {"x": None, "y": [None]}
    assert "NaN" not in dumps(doc)
    with pytest.raises(ValueError):
        dumps({"x": float("nan")})  # raw NaN is refused, never written as a token


# ---------------------------------------------------------------- examples


def test_worked_example_script():
    p = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "worked_example.py")],
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "All 55 loss-to-state paths" in out
    assert len(re.findall(r"^  C_\d+ +=", out, flags=re.M)) == 10
    assert "naive (every path): 55 path walks; efficient (recursion): 10 steps" in out

    def vector(label):
        line = next(s for s in out.splitlines() if s.strip().startswith(label))
        return np.array([float(v) for v in line.split("[")[1].split("]")[0].split()])

    # the oracle: the notes' dL/dh_1 = sum_s h_s W_h^(s-1), from the same seed, in plain numpy
    rng = np.random.default_rng(0)
    params = bptt_cli.init_params(rng, input_size=3, hidden_size=4, output_size=0, spectral_radius=0.9)
    x = rng.normal(size=(10, 1, 3))
    h, want = np.zeros(4), np.zeros(4)
    for s in range(10):
        h = params.W_h @ h + params.W_x @ x[s, 0]
        want += h @ np.linalg.matrix_power(params.W_h, s)
    assert_allclose(vector("sum of the 10 paths"), want, atol=1e-6)  # printed with 6 decimals
    assert_allclose(vector("recursion's dL/dh_1"), want, atol=1e-6)
    diffs = [float(m) for m in re.findall(r"max \|[^=]*= ([0-9.e+-]+)", out)]
    assert len(diffs) == 3 and max(diffs) < 1e-12


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs a POSIX shell")
def test_pipeline_script():
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BPTT": f"{sys.executable} -m bptt_cli",
        "PYTHON": sys.executable,
    }
    p = subprocess.run(["sh", str(ROOT / "examples" / "pipeline.sh")], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert '"command": "paths"' in p.stdout
    assert "naive path walks: 55  recursion steps: 10" in p.stdout
    assert "gradcheck failed with exit code 4" in p.stdout
