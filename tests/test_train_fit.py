"""train.fit: one step against a hand-made update, resume = uninterrupted, divergence, stop, watching."""

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from bptt_cli.analyses import tasks
from bptt_cli.analyses.training import loop as train
from bptt_cli.analyses.training import optim
from bptt_cli.analyses.training.events import detect_events
from bptt_cli.analyses.training.watch import adjoint_log_norms
from bptt_cli.core.bptt import gradients
from bptt_cli.core.eigen import dense_spectral_radius as spectral_radius
from bptt_cli.core.rnn import Params, init_params
from bptt_cli.core.truncation import parse_strategy, propagate_weights

WORDS = "the a river stone light wind small old green quiet runs falls holds turns over under near".split()


def _params(task: tasks.Task, seed: int = 0, hidden: int = 12, **kw) -> Params:
    return init_params(
        np.random.default_rng(seed), input_size=task.input_size, hidden_size=hidden, output_size=task.output_size, **kw
    )


def _text_task(tmp_path: Path, seq_len: int = 10) -> tasks.Task:
    rng = np.random.default_rng(0)
    p = tmp_path / "words.txt"
    p.write_text(" ".join(rng.choice(WORDS, size=600)) + ".\n", encoding="utf-8")
    return tasks.make_task("text", text=p, seq_len=seq_len)


def _same_rows(a: list[dict], b: list[dict]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        assert {k: v for k, v in ra.items() if k != "seconds"} == {k: v for k, v in rb.items() if k != "seconds"}


@pytest.mark.parametrize("spec", ["full", "chunk:3", "random:0.5"])
def test_one_step_is_the_update_of_the_bptt_gradient(spec: str) -> None:
    task = tasks.make_task("recall", seq_len=8, delay=3, alphabet=4)
    params = _params(task)
    lr = 0.1
    res = train.fit(
        params,
        task,
        steps=1,
        rng=np.random.default_rng(3),
        optimizer=optim.Optimizer("sgd", lr=lr),
        truncation=parse_strategy(spec),
        batch_size=5,
        watch=False,
    )
    # the oracle: the same draws in the same order (batch, then truncation weights), one SGD step by hand
    rng = np.random.default_rng(3)
    batch, _ = tasks.sample_batch(task, rng, 5)
    xi = propagate_weights(parse_strategy(spec), 8, 5, rng)
    g = gradients(params, batch.x, batch.targets, loss="xent", mask=batch.mask, propagate=xi)
    assert_allclose(res.params.flat(), params.flat() - lr * g.grads.flat(), rtol=1e-14, atol=1e-14)
    assert res.history[0]["loss"] == pytest.approx(g.loss, rel=1e-14)
    assert res.history[0]["grad_norm"] == pytest.approx(np.linalg.norm(g.grads.flat()), rel=1e-13)


def _checkpoint_round_trip(state: train.TrainState, opt: optim.Optimizer) -> train.TrainState:
    """What the train command does: arrays into the npz, meta through JSON text."""
    arrays, meta = state.to_checkpoint()
    arrays = {k: np.array(v) for k, v in arrays.items()}
    meta = json.loads(json.dumps(meta))
    return train.TrainState.from_checkpoint(state.params.copy(), opt, arrays, meta)


@pytest.mark.parametrize("opt_name", ["adam", "momentum"])
def test_resume_equals_an_uninterrupted_run(opt_name: str) -> None:
    task = tasks.make_task("recall", seq_len=12, delay=4, alphabet=5)
    opt = optim.Optimizer(opt_name, lr=0.02)
    kw = dict(
        optimizer=opt,
        truncation=parse_strategy("random:0.6"),
        batch_size=6,
        clip=0.5,
        log_every=3,
        spike_window=5,
        heldout=tasks.heldout_batch(task, np.random.default_rng(9), 16),
    )
    full = train.fit(_params(task), task, steps=20, rng=np.random.default_rng(5), **kw)
    first = train.fit(_params(task), task, steps=8, rng=np.random.default_rng(5), **kw)
    resumed_state = _checkpoint_round_trip(first.state, opt)
    # the generator passed on resume is overwritten with the saved state
    second = train.fit(
        resumed_state.params, task, steps=20, rng=np.random.default_rng(12345), resume=resumed_state, **kw
    )
    for k, v in full.params.as_dict().items():
        assert_array_equal(getattr(second.params, k), v)
    # every step has its row; the stopped run also watched its last step (8), which the
    # uninterrupted run did not: the two rows agree on the step's own scalars
    assert [r["step"] for r in first.history] == list(range(1, 9)) and first.history[-1]["log"]
    assert not full.history[7]["log"]
    for key in ("loss", "grad_norm", "param_norm", "clipped", "clip_count"):
        assert first.history[7][key] == full.history[7][key]
    _same_rows(first.history[:7] + second.history, full.history[:7] + full.history[8:])
    assert second.events == full.events
    assert second.state.clip_count == full.state.clip_count
    assert second.final_metric == full.final_metric


def test_resume_text_carries_the_hidden_state(tmp_path: Path) -> None:
    task = _text_task(tmp_path)
    opt = optim.Optimizer("adam", lr=0.01)
    kw = dict(optimizer=opt, batch_size=4, log_every=2)
    full = train.fit(_params(task), task, steps=14, rng=np.random.default_rng(1), **kw)
    calls = iter(range(100))
    stopped = train.fit(
        _params(task), task, steps=14, rng=np.random.default_rng(1), should_stop=lambda: next(calls) >= 5, **kw
    )
    assert stopped.stopped and stopped.steps_done == 5
    assert stopped.state.h is not None and stopped.state.position == 50
    state = _checkpoint_round_trip(stopped.state, opt)
    rest = train.fit(state.params, task, steps=14, rng=np.random.default_rng(0), resume=state, **kw)
    for k, v in full.params.as_dict().items():
        assert_array_equal(getattr(rest.params, k), v)
    _same_rows(stopped.history + rest.history, full.history)


def test_divergence_keeps_the_last_finite_parameters() -> None:
    task = tasks.make_task("adding", seq_len=30)
    params = _params(task, hidden=16, spectral_radius=3.0)
    kw = dict(optimizer=optim.Optimizer("sgd", lr=1.0), batch_size=8, log_every=1, watch=False)
    res = train.fit(params, task, steps=300, rng=np.random.default_rng(0), **kw)
    n = res.diverged_at
    assert n is not None and res.steps_done == n - 1
    assert res.verdict.label == "diverged" and f"non-finite at step {n}" in res.verdict.message
    assert res.verdict.evidence["nonfinite_at"] == n
    assert res.events[-1]["kind"] == "diverged" and res.events[-1]["step"] == n
    assert all(np.all(np.isfinite(v)) for v in res.params.as_dict().values())
    # the kept parameters are exactly those after step n - 1
    before = train.fit(params, task, steps=n - 1, rng=np.random.default_rng(0), **kw)
    assert before.diverged_at is None
    assert_array_equal(res.params.flat(), before.params.flat())
    assert [r["step"] for r in res.history] == list(range(1, n))


def test_clipping_prevents_the_same_divergence() -> None:
    task = tasks.make_task("adding", seq_len=30)
    params = _params(task, hidden=16, spectral_radius=3.0)
    kw = dict(optimizer=optim.Optimizer("sgd", lr=1.0), batch_size=8, log_every=10, watch=False)
    res = train.fit(params, task, steps=300, rng=np.random.default_rng(0), clip=1.0, **kw)
    assert res.diverged_at is None and res.steps_done == 300
    assert res.verdict.label != "diverged"
    assert res.state.clip_count > 0
    assert all(np.all(np.isfinite(v)) for v in res.params.as_dict().values())


def test_watching_rows() -> None:
    task = tasks.make_task("recall", seq_len=10, delay=3, alphabet=4)
    params = _params(task, hidden=10)
    rows = []
    res = train.fit(
        params,
        task,
        steps=6,
        rng=np.random.default_rng(2),
        log_every=3,
        eval_every=6,
        batch_size=5,
        callback=rows.append,
        optimizer=optim.Optimizer("sgd", lr=1e-9),
    )
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6] and rows == res.history
    assert [r["log"] for r in rows] == [True, False, True, False, False, True]  # step 1 is always watched
    assert all(r["rho"] is None and r["loss"] > 0 and r["grad_norm"] > 0 for r in rows if not r["log"])
    logged = [r for r in rows if r["log"]]  # steps 1, 3, 6; the metric at steps 1 and 6 (eval_every 6)
    assert [r["metric"] is not None for r in logged] == [True, False, True]
    last = logged[-1]
    # lr 1e-9: the parameters barely move, so rho is that of the initial W_h (LAPACK reference)
    assert_allclose(last["rho"], spectral_radius(params.W_h), rtol=1e-6)
    assert last["rho_exact"] is True and last["rho_residual"] == 0.0
    assert 0 < last["start_fraction"] < np.inf
    # log ||dL/dh_t|| of the step's own gradient
    rng = np.random.default_rng(2)
    for _ in range(6):
        batch, _ = tasks.sample_batch(task, rng, 5)
    g = gradients(params, batch.x, batch.targets, mask=batch.mask)
    assert_allclose(last["log_dh"], adjoint_log_norms(g.adjoints), rtol=1e-6)
    assert len(last["log_dh"]) == 10


def test_adjoint_log_norms_closed_form() -> None:
    adj = np.zeros((3, 2, 2))
    adj[0] = [[3.0, 4.0], [0.0, 1.0]]  # norms 5 and 1
    adj[1] = [[1.0, 0.0], [1.0, 0.0]]
    assert_allclose(adjoint_log_norms(adj), [np.log(3.0), 0.0, -np.inf])


def test_detect_events_spike_and_vanishing_stretch() -> None:
    norms, ref, run, found = np.zeros(0), None, 0, []
    sequence = [1.0] * 12 + [30.0] + [1.0] * 3 + [1e-5] * 6
    for step, n in enumerate(sequence, start=1):
        ev, norms, ref, run = detect_events(
            step, n, norms, ref, run, spike_factor=10, spike_window=10, vanish_ratio=1e-3, vanish_steps=4
        )
        found += ev
    assert [(e["kind"], e["step"]) for e in found] == [("spike", 13), ("vanishing", 20)]
    assert found[1]["since"] == 17 and ref == 1.0 and run == 6


def test_validation() -> None:
    task = tasks.make_task("recall", seq_len=8, delay=3, alphabet=4)
    params = _params(task)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="`--steps`"):
        train.fit(params, task, steps=0, rng=rng)
    with pytest.raises(ValueError, match="`--clip`"):
        train.fit(params, task, steps=1, rng=rng, clip=-1.0)
    with pytest.raises(ValueError, match="`--batch`"):
        train.fit(params, task, steps=1, rng=rng, batch_size=0)
    with pytest.raises(ValueError, match="input/output sizes"):
        train.fit(_params(tasks.make_task("adding")), task, steps=1, rng=rng)
    first = train.fit(params, task, steps=1, rng=rng, watch=False)
    with pytest.raises(ValueError, match="optimiser state"):
        train.fit(params, task, steps=2, rng=rng, resume=first.state, optimizer=optim.Optimizer("sgd", lr=0.1))
    arrays, meta = first.state.to_checkpoint()
    del meta["rng_state"]
    with pytest.raises(ValueError, match="rng_state"):
        train.TrainState.from_checkpoint(params, optim.Optimizer(), arrays, meta)


def test_adam_training_matches_pytorch() -> None:
    """Five steps of fit (full BPTT, Adam, clipping) against torch.nn.RNN + Linear trained on the same batches."""
    torch = pytest.importorskip("torch")
    task = tasks.make_task("recall", seq_len=9, delay=4, alphabet=5)
    params = _params(task, hidden=7)
    opt = optim.Optimizer("adam", lr=0.05)
    res = train.fit(
        params, task, steps=5, rng=np.random.default_rng(4), optimizer=opt, batch_size=3, clip=0.3, watch=False
    )

    W_x, W_h, b, W_y, c = (torch.tensor(v.copy(), requires_grad=True) for v in params.as_dict().values())
    topt = torch.optim.Adam([W_x, W_h, b, W_y, c], lr=opt.lr, betas=(opt.beta1, opt.beta2), eps=opt.eps)
    rng = np.random.default_rng(4)
    for _ in range(5):
        batch, _ = tasks.sample_batch(task, rng, 3)
        x, tg, mask = (torch.from_numpy(a) for a in (batch.x, batch.targets, batch.mask))
        h = torch.zeros(3, 7, dtype=torch.float64)
        loss = 0.0
        for t in range(9):
            h = torch.tanh(x[t] @ W_x.T + h @ W_h.T + b)
            nll = torch.nn.functional.cross_entropy(h @ W_y.T + c, tg[t], reduction="none")
            loss = loss + (mask[t] * nll).sum() / 3
        topt.zero_grad()
        loss.backward()
        # g min(1, theta/||g||) by hand: torch's clip_grad_norm_ divides by ||g|| + 1e-6
        norm = torch.sqrt(sum((p.grad**2).sum() for p in (W_x, W_h, b, W_y, c)))
        for p in (W_x, W_h, b, W_y, c):
            p.grad *= min(1.0, 0.3 / float(norm))
        topt.step()
    assert res.state.clip_count > 0  # the clipping path is exercised
    for name, t in zip(params.as_dict(), (W_x, W_h, b, W_y, c), strict=True):
        assert_allclose(getattr(res.params, name), t.detach().numpy(), rtol=1e-9, atol=1e-11)


def test_resume_with_another_bit_generator() -> None:
    """MT19937 keeps a numpy array in its state: it must still pass through JSON and resume exactly."""
    task = tasks.make_task("recall", seq_len=8, delay=3, alphabet=4)
    opt = optim.Optimizer("adagrad", lr=0.05)
    kw = dict(optimizer=opt, truncation=parse_strategy("random:0.5"), batch_size=4, log_every=2, watch=False)
    full = train.fit(_params(task), task, steps=6, rng=np.random.Generator(np.random.MT19937(3)), **kw)
    part = train.fit(_params(task), task, steps=4, rng=np.random.Generator(np.random.MT19937(3)), **kw)
    state = _checkpoint_round_trip(part.state, opt)
    rest = train.fit(state.params, task, steps=6, rng=np.random.Generator(np.random.MT19937(0)), resume=state, **kw)
    assert_array_equal(rest.params.flat(), full.params.flat())


def test_resume_restores_the_strategy_s_own_generator() -> None:
    """A random strategy may carry its own generator (compare-truncation does): resume restores it too."""
    task = tasks.make_task("recall", seq_len=8, delay=3, alphabet=4)
    opt = optim.Optimizer("sgd", lr=0.1)

    def strategy() -> object:
        return replace(parse_strategy("random:0.5"), xi_rng=np.random.default_rng(11))

    kw = dict(optimizer=opt, batch_size=4, log_every=2, watch=False)
    full = train.fit(_params(task), task, steps=6, rng=np.random.default_rng(3), truncation=strategy(), **kw)
    part = train.fit(_params(task), task, steps=3, rng=np.random.default_rng(3), truncation=strategy(), **kw)
    state = _checkpoint_round_trip(part.state, opt)
    rest = train.fit(
        state.params, task, steps=6, rng=np.random.default_rng(0), truncation=strategy(), resume=state, **kw
    )
    assert_array_equal(rest.params.flat(), full.params.flat())
