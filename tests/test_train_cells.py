"""bptt train --cell gru|lstm --layers N: the stacked cells train, resume bit-identically from their
checkpoints (NetParams in PyTorch's layout), and the checkpoint gets one label from train, trace
--model and spectrum --model."""

import json

import numpy as np
import pytest
from numpy.testing import assert_array_equal
from typer.testing import CliRunner

from bptt_cli.cli.app import app
from bptt_cli.core.net import NetParams
from bptt_cli.io.checkpoint import load_checkpoint

runner = CliRunner()
SMALL = ["--hidden", "8", "--batch", "4", "--seq-len", "12", "--delay", "3", "--log-every", "2", "--no-plots"]


def cli(*args, code=0):
    r = runner.invoke(app, [str(a) for a in args] + ["--json"])
    assert r.exit_code == code, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize(("cell", "layers"), [("gru", 1), ("lstm", 2), ("rnn", 2)])
def test_a_stacked_cell_trains_resumes_exactly_and_gets_one_label(tmp_path, cell, layers):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    doc = cli("train", *SMALL, "--cell", cell, "--layers", layers, "--steps", "12", "--out", whole)
    params = load_checkpoint(whole / "model.npz").params
    assert isinstance(params, NetParams) and (params.kind, params.num_layers) == (cell, layers)
    assert doc["results"]["steps_done"] == 12
    # interrupted at step 6 (a shorter run), resumed to 12: the same parameters, bit for bit
    cli("train", *SMALL, "--cell", cell, "--layers", layers, "--steps", "6", "--out", cut)
    cli("train", "--resume", cut, "--steps", "12")
    a, b = load_checkpoint(cut / "model.npz").params, params
    for name, arr in a.as_dict().items():
        assert_array_equal(arr, b.as_dict()[name], err_msg=name)
    # one model, one answer
    v = doc["verdict"]
    for command in ("trace", "spectrum"):
        w = cli(command, "--model", whole)["verdict"]
        assert (w["label"], w["basis"]) == (v["label"], v["basis"]), command
    assert doc["results"]["final_rho"] is None or cell == "rnn"


def test_cell_options_are_checked():
    r = runner.invoke(app, ["train", "--cell", "lstm", "--spectral-radius", "2"])
    assert r.exit_code == 2 and "--spectral-radius" in r.stderr
    r = runner.invoke(app, ["train", "--cell", "gru", "--activation", "relu"])
    assert r.exit_code == 2 and "--activation" in r.stderr


def test_an_lstm_starts_with_its_forget_gate_open():
    from bptt_cli.analyses import tasks
    from bptt_cli.analyses.train import TrainConfig, _fresh_params

    c = TrainConfig(cell="lstm", layers=2, hidden=8)
    p = _fresh_params(c, tasks.make_task("recall"), np.random.default_rng(0))
    for layer in p.layers:  # rows i, f, g, o: the forget gate's bias is 1 in total
        assert_array_equal(layer.b_ih[8:16] + layer.b_hh[8:16], np.ones(8))
        assert np.all(np.abs(layer.b_ih[:8]) <= 1 / np.sqrt(8))  # the other gates as PyTorch initialises them
