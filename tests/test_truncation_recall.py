"""Truncation on recall with delay 10 (the target at step t is the input at t - 10): chunk:5 cannot
carry the delayed dependency, in its gradient or in training; full BPTT can."""

import numpy as np
import pytest

from bptt_cli.analyses.tasks import make_task, sample_batch
from bptt_cli.analyses.training.optim import Optimizer
from bptt_cli.analyses.truncation import compare_training, estimator_statistics
from bptt_cli.core.bptt import gradients
from bptt_cli.core.rnn import init_params
from bptt_cli.core.truncation import Strategy, parse_strategies, propagate_weights

DELAY = 10


@pytest.fixture(scope="module")
def setup():
    task = make_task("recall", seq_len=20, delay=DELAY, alphabet=8)
    params = init_params(np.random.default_rng(0), input_size=8, hidden_size=32, output_size=8, init="orthogonal")
    batch = sample_batch(task, np.random.default_rng(1), 32)[0]
    return task, params, batch


@pytest.mark.parametrize("t", [10, 13, 19])  # 0-based steps whose target is the input at t - 10
def test_chunk5_signal_from_a_loss_never_reaches_its_source(setup, t):
    """The loss at step t alone: with chunk:5, dl_t/dh_s is exactly zero for s <= t - 5 (so at the
    step t - 10 where its answer was shown); with full BPTT it is not."""
    task, params, batch = setup
    T, B, _ = batch.x.shape
    mask = np.zeros((T, B))
    mask[t] = 1.0
    full = gradients(params, batch.x, batch.targets, mask=mask)
    chunk = gradients(
        params, batch.x, batch.targets, mask=mask, propagate=propagate_weights(Strategy("chunk", k=5), T, B)
    )
    assert np.all(chunk.adjoints[: t - t % 5] == 0)  # everything before t's chunk
    assert np.all(chunk.adjoints[t - DELAY] == 0)
    assert np.all(np.linalg.norm(full.adjoints[t - DELAY], axis=1) > 0)


def test_chunk5_gradient_is_clearly_misaligned(setup):
    task, params, batch = setup
    rows = estimator_statistics(
        params,
        batch.x,
        batch.targets,
        parse_strategies("chunk:5,chunk:10,chunk:20"),
        rng=np.random.default_rng(0),
        mask=batch.mask,
    ).rows
    cos = {r.spec: r.cosine for r in rows}
    assert cos["chunk:5"] < 0.95  # measured 0.87 at this seed
    assert cos["chunk:20"] == pytest.approx(1.0, abs=1e-12)  # one chunk: full BPTT
    assert cos["chunk:5"] < cos["chunk:10"] < 1.0


def test_chunk5_trains_to_chance_while_full_learns(setup):
    task, params, _ = setup
    rows = compare_training(
        params,
        task,
        parse_strategies("full,chunk:5"),
        steps=400,
        seed=0,
        optimizer=Optimizer("adam", lr=0.01),
        batch_size=32,
        clip=1.0,
        log_every=400,
        target=0.9,
    )
    full, chunk = rows
    assert full.final_metric > 0.9 and full.steps_to_target == 400
    assert abs(chunk.final_metric - task.chance) < 0.06  # chance = 1/8; measured 0.133
    assert chunk.steps_to_target is None
