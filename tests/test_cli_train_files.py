"""The run-folder files of `bptt train` (runfiles.py) and its plots (plots/train.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bptt_cli.io.runfolder import (
    MetricsLog,
    atomic_write_text,
    discard_folder,
    prepare_folder,
    read_json,
    read_metrics,
    write_json,
)
from bptt_cli.plots.train import heatmap_data, training_plots


def test_write_json_is_strict_and_leaves_no_temporary(tmp_path):
    path = write_json(tmp_path / "doc.json", {"a": np.float64("nan"), "b": [1.5, np.inf], "c": np.arange(3)})
    text = path.read_text()
    # json.loads with a hook that rejects NaN/Infinity tokens: strict JSON only
    doc = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict token {c}"))
    assert doc == {"a": None, "b": [1.5, None], "c": [0, 1, 2]}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["doc.json"]
    assert read_json(path) == doc


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = atomic_write_text(tmp_path / "f.txt", "old")

    class Boom:
        def __str__(self):
            raise RuntimeError("boom")

    with pytest.raises(TypeError):
        atomic_write_text(path, Boom())  # f.write rejects a non-str: nothing replaced
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


@pytest.mark.parametrize("content", ["", "not json", "[1, 2]"])
def test_read_json_names_the_file(tmp_path, content):
    path = tmp_path / "x.json"
    path.write_text(content)
    with pytest.raises(ValueError, match="x.json"):
        read_json(path)


def test_metrics_log_lines_are_flushed_and_resume_cuts_back(tmp_path):
    path = tmp_path / "metrics.jsonl"
    log = MetricsLog(path)
    for step in (0, 10, 20, 30):
        log.write({"step": step, "loss": 1.0 / (step + 1), "g": np.float32(np.nan)})
        # flushed: a second reader sees the line at once
        assert read_metrics(path)[-1]["step"] == step
    log.close()
    assert [json.loads(line)["g"] for line in path.read_text().splitlines()] == [None] * 4
    with MetricsLog(path, keep_until=10) as log2:
        assert [r["step"] for r in read_metrics(path)] == [0, 10]
        log2.write({"step": 20, "loss": 0.5})
    assert [r["step"] for r in read_metrics(path)] == [0, 10, 20]


def test_metrics_log_resumed_elsewhere_starts_from_the_source_rows(tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text("".join(json.dumps({"step": s}) + "\n" for s in (5, 10, 15)))
    with MetricsLog(tmp_path / "b.jsonl", keep_until=10, source=src) as log:
        log.write({"step": 20})
    assert [r["step"] for r in read_metrics(tmp_path / "b.jsonl")] == [5, 10, 20]
    assert [r["step"] for r in read_metrics(src)] == [5, 10, 15]


def test_read_metrics_skips_a_torn_last_line(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 0, "loss": 1}\n{"step": 1, "lo')
    assert read_metrics(path) == [{"step": 0, "loss": 1}]
    assert read_metrics(tmp_path / "missing.jsonl") == []


def test_prepare_folder_refuses_a_file_and_an_impossible_path(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="not a folder"):
        prepare_folder(blocker)
    with pytest.raises(OSError, match="cannot create"):
        prepare_folder(blocker / "sub")


def test_discard_folder_removes_only_what_the_run_created(tmp_path):
    fresh, created = prepare_folder(tmp_path / "new")
    assert created
    (fresh / "config.json").write_text("{}")
    discard_folder(fresh, created)
    assert not fresh.exists()
    old, created = prepare_folder(tmp_path)  # exists already: never removed
    assert not created
    discard_folder(old, created)
    assert old.exists()


def fake_rows(n: int, T: int) -> list[dict]:
    rng = np.random.default_rng(0)
    return [
        dict(
            step=5 * i,
            loss=float(2.0 / (1 + i)),
            metric=float(min(1.0, i / n)),
            grad_norm=float(np.exp(rng.normal())),
            clipped=bool(i % 3 == 0),
            rho=1.0 + 0.01 * i,
            log_dh=[float(v) for v in np.linspace(-i / 4, 0.0, T)],
        )
        for i in range(n)
    ]


def test_heatmap_data_keeps_rows_of_the_last_length_and_nulls_as_nan():
    rows = fake_rows(4, 6)
    rows[1]["log_dh"][2] = None
    rows.append({"step": 99, "loss": 1.0})  # a row without the per-step norms
    steps, grid = heatmap_data(rows)
    np.testing.assert_array_equal(steps, [0, 5, 10, 15])
    assert grid.shape == (4, 6)
    assert np.isnan(grid[1, 2]) and np.isfinite(np.delete(grid.ravel(), 1 * 6 + 2)).all()
    np.testing.assert_allclose(grid[3], np.linspace(-0.75, 0.0, 6), rtol=0, atol=1e-15)


def test_training_plots_writes_every_figure_even_with_gaps(tmp_path):
    rows = fake_rows(12, 10)
    rows[4]["loss"] = None
    rows[5]["grad_norm"] = None
    events = [
        {"step": 20, "kind": "spike", "grad_norm": 30.0},
        {"step": 40, "kind": "vanishing", "since": 30},
        {"step": 55, "kind": "diverged"},
    ]
    paths = training_plots(tmp_path, rows, metric="accuracy", clip=1.0, chance=0.125, diverged_at=55, events=events)
    names = [p.name for p in paths]
    assert names == ["train-curves.png", "train-grad-norm.png", "train-rho.png", "train-grad-heatmap.png"]
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # no per-step norms logged: no heat map, the rest still drawn
    bare = [{k: v for k, v in r.items() if k != "log_dh"} for r in rows]
    assert len(training_plots(tmp_path / "bare", bare, metric="mse", clip=None)) == 3
