"""Every command's --json output, its error documents and train's summary.json against the
documented contract, docs/json-schema.json (JSON Schema 2020-12, checked by jsonschema)."""

import json
from pathlib import Path

import jsonschema
import pytest
from typer.testing import CliRunner

from bptt_cli.cli.app import app
from bptt_cli.core.verdict import BASES, LABELS
from bptt_cli.io.jsondoc import loads_strict

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = json.loads((ROOT / "docs" / "json-schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
runner = CliRunner()

RUNS = {
    "paths": ["paths"],
    "paths timed": ["paths", "--lengths", "4,8", "--repeats", "1"],
    "gradcheck": ["gradcheck", "--loss", "mse", "--mask"],
    "gradcheck failed": ["gradcheck", "--fd-step", "0.5"],
    "spectrum": ["spectrum", "-H", "12", "-T", "60"],
    "spectrum no trajectory": ["spectrum", "-H", "12", "--lyapunov", "0", "--reference", "none"],
    "spectrum task": ["spectrum", "-H", "12", "--task", "recall"],
    "trace": ["trace", "-H", "8", "-T", "40", "-B", "4"],
    "trace all losses": ["trace", "-H", "8", "-T", "40", "--signal", "all", "--loss", "mse", "--lyapunov", "0"],
    "trace overflowing signal": [
        "trace", "--activation", "identity", "--init", "orthogonal", "--spectral-radius", "1.5",
        "-T", "3000", "-B", "1", "-H", "4", "--input-scale", "0", "--lyapunov", "0",
    ],
    "train": ["train", "--steps", "6", "--hidden", "8", "--log-every", "2", "--no-plots"],
    "train adding": ["train", "--task", "adding", "--steps", "4", "--hidden", "8", "--no-plots"],
    "compare-truncation": ["compare-truncation", "-H", "8", "--steps", "4", "--samples", "4", "--log-every", "2"],
    "compare-truncation influence": [
        "compare-truncation", "--task", "influence", "--steps", "5", "--samples", "4", "--batch", "4",
    ],
    "sweep spectrum": ["sweep", "spectrum", "-H", "12", "-T", "40", "--grid", "spectral-radius=0.5,2", "-j", "1"],
    "sweep train": ["sweep", "train", "--steps", "4", "--hidden", "8", "--grid", "lr=1e-3:1e-2:2:log", "-j", "1"],
}  # fmt: skip
ERRORS = {
    "usage: unknown option": (["trace", "--no-such"], 2),
    "usage: a rule": (["spectrum", "--tol", "0"], 2),
    "usage: a choice": (["gradcheck", "--activation", "sigmoid"], 2),
    "bad input: a file": (["trace", "--model", "/nonexistent/model.npz"], 1),
    "bad input: an overflow": (["paths", "--spectral-radius", "1e6", "-T", "200"], 1),
    "bad input: export a missing checkpoint": (["export", "/nonexistent/run", "--to", "/nonexistent/m.pt"], 1),
    "usage: export without --to": (["export", "/nonexistent/run"], 2),
    "usage: sweep over no option": (["sweep", "spectrum", "--grid", "nope=1,2"], 2),
    "usage: sweep over a bad value": (["sweep", "trace", "--grid", "hidden=8,0"], 2),
}


def test_the_schema_is_valid_and_speaks_the_verdict_vocabulary():
    jsonschema.Draft202012Validator.check_schema(SCHEMA)
    verdict = SCHEMA["$defs"]["verdict"]["properties"]
    assert verdict["label"]["enum"] == list(LABELS)
    assert verdict["basis"]["enum"] == list(BASES)


@pytest.mark.parametrize("name", list(RUNS))
def test_every_command_document_follows_the_schema(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # train keeps its run under runs/
    args = RUNS[name]
    out = [] if args[0] == "gradcheck" else ["--out", str(tmp_path / "out")]  # gradcheck writes nothing
    r = runner.invoke(app, [*args, "--json", *out])
    assert r.exit_code in (0, 4), r.stderr  # 4: the failing gradcheck
    doc = loads_strict(r.stdout)
    VALIDATOR.validate(doc)
    assert doc["command"] == args[0]
    if args[0] == "train":
        summary = loads_strict((tmp_path / "out" / "summary.json").read_text())
        VALIDATOR.validate(summary)
        assert summary == doc


@pytest.mark.parametrize("name", list(ERRORS))
def test_error_documents_follow_the_schema(name):
    args, code = ERRORS[name]
    r = runner.invoke(app, [*args, "--json"])
    assert r.exit_code == code, r.stderr
    doc = loads_strict(r.stdout)
    VALIDATOR.validate(doc)
    assert doc["error"]["exit_code"] == code and doc["command"] == args[0]


def test_the_schema_rejects_what_breaks_the_contract():
    """The schema has teeth: a verdict with an unknown basis, a judging command without a verdict,
    a NaN token's null count missing."""
    good = loads_strict(runner.invoke(app, ["trace", "-H", "4", "-T", "10", "--json", "--lyapunov", "0"]).stdout)
    VALIDATOR.validate(good)
    for broken in (
        {**good, "verdict": {**good["verdict"], "basis": "a hunch"}},
        {k: v for k, v in good.items() if k != "verdict"},
        {k: v for k, v in good.items() if k != "nonfinite_as_null"},
        {**good, "command": "dance"},
    ):
        with pytest.raises(jsonschema.ValidationError):
            VALIDATOR.validate(broken)
