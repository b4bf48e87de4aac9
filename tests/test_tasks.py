"""Tasks: what the batches hold (checked against their definitions), metrics, text, validation."""

from pathlib import Path

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal

from bptt_cli.analyses import tasks
from bptt_cli.core.cells import RNNCell
from bptt_cli.core.rnn import init_params

TEXT = "the quick brown fox jumps over the lazy dog. " * 40


@pytest.fixture
def text_file(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.txt"
    p.write_text(TEXT, encoding="utf-8")
    return p


@pytest.mark.parametrize("K,d,T", [(8, 10, 20), (3, 1, 4), (5, 7, 30)])
def test_recall_target_is_the_input_d_steps_back(K: int, d: int, T: int) -> None:
    task = tasks.make_task("recall", alphabet=K, delay=d, seq_len=T)
    b, _ = tasks.sample_batch(task, np.random.default_rng(0), 16)
    assert b.x.shape == (T, 16, K) and b.targets.shape == (T, 16) and b.mask.shape == (T, 16)
    assert_array_equal(b.x.sum(axis=2), 1.0)  # one-hot
    symbols = b.x.argmax(axis=2)  # (T, B)
    assert_array_equal(b.targets[d:], symbols[:-d])
    assert_array_equal(b.mask[:d], 0.0)
    assert_allclose(b.mask.sum(axis=0), 1.0, rtol=1e-15)  # mean over the scored steps
    assert task.chance == 1.0 / K


def test_adding_markers_and_target() -> None:
    T, B = 50, 4000
    task = tasks.make_task("adding", seq_len=T)
    b, _ = tasks.sample_batch(task, np.random.default_rng(1), B)
    markers = b.x[:, :, 1]  # (T, B)
    assert_array_equal(markers.sum(axis=0), 2.0)
    first = markers[: T // 2].argmax(axis=0)
    second = T // 2 + markers[T // 2 :].argmax(axis=0)
    cols = np.arange(B)
    assert_allclose(b.targets[-1, :, 0], b.x[first, cols, 0] + b.x[second, cols, 0], rtol=1e-15)
    assert_array_equal(b.mask[:-1], 0.0)
    assert_array_equal(b.mask[-1], 1.0)
    # always predicting 1: E (u1 + u2 - 1)^2 = Var(u1 + u2) = 1/6; standard error ~ 0.1/sqrt(B)
    y = np.ones((T, B, 1))
    assert abs(tasks.metric_value(task, y, b) - 1 / 6) < 5 * 0.15 / np.sqrt(B)
    assert task.chance == pytest.approx(1 / 6)


def test_sine_target_is_the_next_clean_value() -> None:
    task = tasks.make_task("sine", seq_len=40, noise=0.0)
    b, _ = tasks.sample_batch(task, np.random.default_rng(2), 8)
    assert_allclose(b.x[1:, :, 0], b.targets[:-1, :, 0], rtol=0, atol=1e-15)  # noise 0: input t+1 = target t
    noisy = tasks.make_task("sine", seq_len=2000, noise=0.3)
    b2, _ = tasks.sample_batch(noisy, np.random.default_rng(3), 8)
    resid = b2.x[1:, :, 0] - b2.targets[:-1, :, 0]
    assert abs(resid.std() - 0.3) < 0.02


@pytest.mark.parametrize("name", ["recall", "adding", "sine"])
def test_same_seed_same_batch(name: str) -> None:
    task = tasks.make_task(name)
    a, _ = tasks.sample_batch(task, np.random.default_rng(7), 5)
    b, _ = tasks.sample_batch(task, np.random.default_rng(7), 5)
    assert_array_equal(a.x, b.x)
    assert_array_equal(a.targets, b.targets)


def test_text_sequential_streams_continue(text_file: Path) -> None:
    task = tasks.make_task("text", text=text_file, seq_len=10)
    corpus = task.corpus
    assert corpus.decode(np.concatenate([corpus.train_ids, corpus.heldout_ids])) == TEXT
    rng = np.random.default_rng(0)
    B = 4
    b1, pos = tasks.sample_batch(task, rng, B, 0)
    b2, pos2 = tasks.sample_batch(task, rng, B, pos)
    assert b1.reset and not b2.reset and (pos, pos2) == (10, 20)
    ids1, ids2 = b1.x.argmax(axis=2), b2.x.argmax(axis=2)  # (T, B)
    assert_array_equal(ids1[1:], b1.targets[:-1])  # next-character targets
    assert_array_equal(ids2[0], b1.targets[-1])  # stream b continues where it stopped
    L = (len(corpus.train_ids) - 1) // B
    assert_array_equal(ids1[0], corpus.train_ids[np.arange(B) * L])
    # a pass ends when the next window no longer fits: back to the start, reset
    last = (L // 10) * 10
    b3, pos3 = tasks.sample_batch(task, rng, B, last)
    assert b3.reset and pos3 == 10
    assert_array_equal(b3.x.argmax(axis=2), ids1)


def test_text_random_windows_are_substrings(text_file: Path) -> None:
    task = tasks.make_task("text", text=text_file, seq_len=12, sampling="random")
    b, pos = tasks.sample_batch(task, np.random.default_rng(4), 6)
    train_text = task.corpus.decode(task.corpus.train_ids)
    for j in range(6):
        window = task.corpus.decode(b.x[:, j].argmax(axis=1)) + task.corpus.decode(b.targets[-1:, j])
        assert window in train_text
    assert pos == 0


def test_unigram_perplexity_closed_form(tmp_path: Path) -> None:
    p = tmp_path / "ab.txt"
    p.write_text("aaab" * 30, encoding="utf-8")
    corpus = tasks.make_corpus(p)
    h = -(0.75 * np.log(0.75) + 0.25 * np.log(0.25))
    assert_allclose(corpus.unigram_perplexity(), np.exp(h), rtol=1e-12)


def test_metrics_closed_forms(text_file: Path) -> None:
    task = tasks.make_task("text", text=text_file, seq_len=5)
    V = task.output_size
    b = tasks.heldout_batch(task, np.random.default_rng(0), 3)
    assert_allclose(tasks.metric_value(task, np.zeros(b.targets.shape + (V,)), b), V, rtol=1e-12)  # uniform: V
    recall = tasks.make_task("recall", seq_len=4, delay=2, alphabet=3)
    rb = tasks.Batch(
        np.zeros((4, 2, 3)), np.array([[0, 0], [0, 0], [1, 2], [0, 1]]), np.array([[0, 0], [0, 0], [1, 1], [1, 1]]) / 2
    )
    y = np.zeros((4, 2, 3))
    y[2, 0, 1] = y[2, 1, 0] = y[3, 0, 0] = y[3, 1, 1] = 1.0  # right, wrong, right, right
    assert tasks.metric_value(recall, y, rb) == 0.75


def test_heldout_text_is_the_tail(text_file: Path) -> None:
    task = tasks.make_task("text", text=text_file, seq_len=8)
    b = tasks.heldout_batch(task, np.random.default_rng(0))
    held = task.corpus.heldout_ids
    assert_array_equal(b.x[:, 0].argmax(axis=1), held[:8])
    assert_array_equal(b.targets[:, 1], held[9:17])


def test_sample_text(text_file: Path) -> None:
    task = tasks.make_task("text", text=text_file, seq_len=8)
    params = RNNCell(
        init_params(np.random.default_rng(0), input_size=task.input_size, hidden_size=8, output_size=task.output_size)
    )
    s = tasks.sample_text(params, task, np.random.default_rng(1), prime="the ", length=30)
    assert s.startswith("the ") and len(s) == 34 and set(s) <= set(task.corpus.vocab)
    assert s == tasks.sample_text(params, task, np.random.default_rng(1), prime="the ", length=30)
    with pytest.raises(ValueError, match="prime"):
        tasks.sample_text(params, task, np.random.default_rng(1), prime="THE", length=3)


@pytest.mark.parametrize(
    "content,match",
    [(None, "no such file"), (b"", "empty"), (b"abc\x00def", "binary"), (b"caf\xe9 au lait", "UTF-8")],
)
def test_bad_text_files(tmp_path: Path, content: bytes | None, match: str) -> None:
    p = tmp_path / "t.txt"
    if content is not None:
        p.write_bytes(content)
    with pytest.raises(ValueError, match=match) as e:
        tasks.make_task("text", text=p)
    assert str(e.value).startswith(f"--text {p}")  # the option and the file the user typed


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"name": "copy"}, "`--task`"),
        ({"name": "recall", "delay": 20, "seq_len": 20}, "`--delay` must be less than `--seq-len`"),
        ({"name": "recall", "delay": 0}, "`--delay`"),
        ({"name": "recall", "seq_len": 0}, "`--seq-len`"),
        ({"name": "recall", "alphabet": 1}, "`--alphabet`"),
        ({"name": "adding", "seq_len": -3}, "`--seq-len`"),
        ({"name": "sine", "noise": -0.1}, "`noise`"),
        ({"name": "text"}, "`--text FILE`"),
    ],
)
def test_bad_settings(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tasks.make_task(**kwargs)


def test_text_too_short_for_seq_len_or_batch(text_file: Path) -> None:
    with pytest.raises(ValueError, match="`--seq-len`"):
        tasks.make_task("text", text=text_file, seq_len=len(TEXT))
    task = tasks.make_task("text", text=text_file, seq_len=100)
    with pytest.raises(ValueError, match="`--batch`"):
        tasks.sample_batch(task, np.random.default_rng(0), 64)
    with pytest.raises(ValueError, match="`--sampling`"):
        tasks.make_task("text", text=text_file, sampling="shuffled")
    with pytest.raises(ValueError, match="`--batch`"):
        tasks.sample_batch(tasks.make_task("recall"), np.random.default_rng(0), 0)
