"""Training tasks: synthetic long-range problems and character-level text, each with its metric.

Every task draws batches from an explicit numpy Generator and returns time-major arrays:
x (T, B, D), targets (T, B) class indices for 'xent' or (T, B, V) floats for 'mse', and a
loss mask (T, B). The mask weights each scored step by 1 / (number of scored steps), so the
loss L = (1/B) sum_{t,b} m_{t,b} l_{t,b} is the mean loss per scored step, comparable across
tasks and sequence lengths (for text, exp(L) is the perplexity).

recall   one-hot symbols from K; the target at step t is the input at t - delay (earlier
         steps unscored). Metric: accuracy on the scored steps; chance is 1/K.
adding   Hochreiter & Schmidhuber 1997: channel 0 a value in U(0, 1), channel 1 a marker on
         two steps (one in each half); the target, at the last step only, is the sum of the
         two marked values. Metric: MSE; always predicting 1 scores 1/6 ~ 0.167.
sine     noisy sine waves of random frequency and phase; the target is the next clean value.
         Metric: MSE.
text     character-level language model of a UTF-8 file with its own vocabulary. Sequential
         partitioning (the corpus cut into B parallel streams read left to right, the hidden
         state carried between consecutive batches, the gradient cut at batch boundaries) or
         random sampling (random windows, zero initial state). Metric: perplexity on the
         held-out tail of the file (the last 10%).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from bptt_cli.analyses.text import CLEANINGS, Corpus, make_corpus
from bptt_cli.core.cells import Cell
from bptt_cli.core.validate import check_choice, check_float, check_int, check_positive_int, options

TASKS = ("recall", "adding", "sine", "text")
HELDOUT_SEED = 20130211  # the held-out data come from their own generator, never the training one
HELDOUT_SIZE = 256
SAMPLINGS = ("sequential", "random")
METRICS = {"recall": "accuracy", "adding": "mse", "sine": "mse", "text": "perplexity"}
DEFAULT_SEQ_LEN = {"recall": 30, "adding": 50, "sine": 50, "text": 50}


@dataclass(frozen=True)
class Batch:
    """One batch, time-major.

    x : (T, B, D) inputs
    targets : (T, B) int class indices (xent) or (T, B, V) floats (mse)
    mask : (T, B) loss weights (1 / scored steps on scored steps, 0 elsewhere)
    reset : text sequential only: True when this batch starts a new pass, so the carried
        hidden state must be dropped (zeros) rather than continued
    """

    x: np.ndarray
    targets: np.ndarray
    mask: np.ndarray
    reset: bool = True

    @property
    def size(self) -> int:
        return self.x.shape[1]


@dataclass(frozen=True)
class Task:
    """A task: sizes, loss and metric, and what its batches are drawn from.

    name : 'recall' | 'adding' | 'sine' | 'text'
    input_size, output_size : D and V of the model the task needs
    loss : 'xent' | 'mse'
    metric : 'accuracy' | 'mse' | 'perplexity'
    seq_len : T of every batch
    alphabet, delay : recall's alphabet size K and delay d
    noise : sine's observation noise std
    sampling : text's 'sequential' | 'random'
    corpus : text's Corpus (None for synthetic tasks)
    text_clean : how the text was prepared ('none' or 'letters', analyses/text.py)
    """

    name: str
    input_size: int
    output_size: int
    loss: str
    metric: str
    seq_len: int
    alphabet: int = 8
    delay: int = 10
    noise: float = 0.1
    sampling: str = "sequential"
    corpus: Corpus | None = field(default=None, repr=False)
    text_clean: str = "none"

    @property
    def higher_is_better(self) -> bool:
        return self.metric == "accuracy"

    @property
    def stateful(self) -> bool:
        """True when the hidden state is carried from one batch to the next (text, sequential)."""
        return self.name == "text" and self.sampling == "sequential"

    @property
    def chance(self) -> float | None:
        """The metric of a model that has learnt nothing useful (None when there is no simple one)."""
        if self.name == "recall":
            return 1.0 / self.alphabet
        if self.name == "adding":
            return 1.0 / 6.0  # Var(u1 + u2): always predicting the mean 1
        if self.name == "text":
            return self.corpus.unigram_perplexity()
        return None

    def config(self) -> dict:
        """The task's settings as plain JSON values."""
        out = {"task": self.name, "seq_len": self.seq_len, "metric": self.metric, "loss": self.loss}
        if self.name == "recall":
            out.update(alphabet=self.alphabet, delay=self.delay)
        if self.name == "sine":
            out.update(noise=self.noise)
        if self.name == "text":
            out.update(
                text=self.corpus.path,
                text_clean=self.text_clean,
                sampling=self.sampling,
                vocab_size=len(self.corpus.vocab),
                vocab=self.corpus.vocab,
                text_sha256=self.corpus.sha256,
            )
        return out


# ---------------------------------------------------------------------------- construction


def make_task(
    name: str = "recall",
    *,
    seq_len: int | None = None,
    alphabet: int = 8,
    delay: int = 10,
    noise: float = 0.1,
    text: str | Path | None = None,
    sampling: str = "sequential",
    text_clean: str = "none",
) -> Task:
    """Build a task, validating its settings (ValueError naming the option and the rule).

    seq_len defaults per task (DEFAULT_SEQ_LEN). `text` is the file for the text task, and
    `text_clean` how it is prepared (analyses/text.py: 'none' or d2l's 'letters').
    """
    with options():  # a rule an option breaks is a usage error; the text file's problems are not
        check_choice("--task", name, TASKS)
        T = check_positive_int("--seq-len", DEFAULT_SEQ_LEN[name] if seq_len is None else seq_len)
        if name == "recall":
            K = check_int("--alphabet", alphabet, min=2)
            d = check_positive_int("--delay", delay)
            if d >= T:
                raise ValueError(f"`--delay` must be less than `--seq-len` ({T}); got {d}")
            return Task("recall", K, K, "xent", "accuracy", T, alphabet=K, delay=d)
        if name == "adding":
            if T < 2:
                raise ValueError(f"`--seq-len` must be at least 2 for the adding task; got {T}")
            return Task("adding", 2, 1, "mse", "mse", T)
        if name == "sine":
            noise = check_float("noise", noise, lo=0.0)
            return Task("sine", 1, 1, "mse", "mse", T, noise=noise)
        if text is None:
            raise ValueError("the text task needs a file: give `--text FILE`")
        check_choice("--sampling", sampling, SAMPLINGS)
        check_choice("--text-clean", text_clean, CLEANINGS)
    corpus = make_corpus(text, text_clean)
    n = min(len(corpus.train_ids), len(corpus.heldout_ids))
    if T + 1 > n:
        raise ValueError(
            f"`--seq-len` ({T}) is longer than the text allows: the file has {len(corpus.train_ids)} training and "
            f"{len(corpus.heldout_ids)} held-out characters, and each needs seq_len + 1"
        )
    V = len(corpus.vocab)
    return Task("text", V, V, "xent", "perplexity", T, sampling=sampling, corpus=corpus, text_clean=text_clean)


def check_batch_size(task: Task, batch_size: int) -> int:
    """Validate B; for sequential text, each of the B streams must hold one sequence at least."""
    B = check_positive_int("--batch", batch_size)
    if task.stateful and (len(task.corpus.train_ids) - 1) // B < task.seq_len:
        raise ValueError(
            f"`--batch` ({B}) x `--seq-len` ({task.seq_len}) is larger than the text's "
            f"{len(task.corpus.train_ids)} training characters; lower one of them"
        )
    return B


# ---------------------------------------------------------------------------- batches


def _one_hot(ids: np.ndarray, K: int) -> np.ndarray:
    """int (T, B) -> float (T, B, K)."""
    return np.eye(K)[ids]


def _recall(task: Task, rng: np.random.Generator, B: int) -> Batch:
    T, K, d = task.seq_len, task.alphabet, task.delay
    ids = rng.integers(0, K, size=(T, B))  # (T, B)
    targets = np.zeros((T, B), dtype=np.int64)
    targets[d:] = ids[:-d]  # target at t is the input at t - d
    mask = np.zeros((T, B))
    mask[d:] = 1.0 / (T - d)  # steps before d have nothing to recall
    return Batch(_one_hot(ids, K), targets, mask)


def _adding(task: Task, rng: np.random.Generator, B: int) -> Batch:
    T = task.seq_len
    half = T // 2
    x = np.zeros((T, B, 2))  # (T, B, 2): value, marker
    x[:, :, 0] = rng.random((T, B))
    first = rng.integers(0, half, size=B)  # one marker in each half, as in Hochreiter & Schmidhuber
    second = rng.integers(half, T, size=B)
    cols = np.arange(B)
    x[first, cols, 1] = 1.0
    x[second, cols, 1] = 1.0
    targets = np.zeros((T, B, 1))
    targets[-1, :, 0] = x[first, cols, 0] + x[second, cols, 0]
    mask = np.zeros((T, B))
    mask[-1] = 1.0  # only the last step is scored
    return Batch(x, targets, mask)


def _sine(task: Task, rng: np.random.Generator, B: int) -> Batch:
    T = task.seq_len
    omega = rng.uniform(0.1, 0.6, size=B)  # radians per step: periods of ~10 to ~60 steps
    phase = rng.uniform(0.0, 2 * np.pi, size=B)
    clean = np.sin(omega * np.arange(T + 1)[:, None] + phase)  # (T+1, B)
    noisy = clean[:-1] + task.noise * rng.standard_normal((T, B))
    mask = np.full((T, B), 1.0 / T)
    return Batch(noisy[:, :, None], clean[1:, :, None], mask)


def _text_windows(task: Task, ids: np.ndarray, starts: np.ndarray) -> Batch:
    T, V = task.seq_len, task.output_size
    idx = starts[None, :] + np.arange(T)[:, None]  # (T, B)
    mask = np.full(idx.shape, 1.0 / T)
    return Batch(_one_hot(ids[idx], V), ids[idx + 1], mask)


def sample_batch(task: Task, rng: np.random.Generator, batch_size: int, position: int = 0) -> tuple[Batch, int]:
    """A training batch and the data position after it.

    `position` matters only for sequential text: the offset into each of the B streams. The
    returned position is where the next batch continues; Batch.reset says a new pass began
    (the caller then starts from a zero hidden state). Other tasks return position unchanged.
    """
    B = check_batch_size(task, batch_size)
    if task.name == "recall":
        return _recall(task, rng, B), position
    if task.name == "adding":
        return _adding(task, rng, B), position
    if task.name == "sine":
        return _sine(task, rng, B), position
    ids = task.corpus.train_ids
    T = task.seq_len
    if task.sampling == "random":
        starts = rng.integers(0, len(ids) - T, size=B)
        return _text_windows(task, ids, starts), position
    L = (len(ids) - 1) // B  # stream length; stream b reads ids[b L : b L + L + 1]
    reset = position == 0
    if position + T > L:
        position, reset = 0, True  # the pass is over: start again from the beginning
    starts = np.arange(B) * L + position
    return replace(_text_windows(task, ids, starts), reset=reset), position + T


def heldout_set(task: Task, size: int = HELDOUT_SIZE) -> Batch:
    """The task's held-out set: the same sequences for every command (train's final verdict,
    trace --model, spectrum --model), so that they judge one model on the same data. The first
    `size` of them (at most HELDOUT_SIZE are drawn in one go, and more only when asked)."""
    full = heldout_batch(task, np.random.default_rng(HELDOUT_SEED), max(size, HELDOUT_SIZE))
    return first_sequences(full, size)


def first_sequences(batch: Batch, k: int) -> Batch:
    """The first k sequences of a batch."""
    return replace(batch, x=batch.x[:, :k], targets=batch.targets[:, :k], mask=batch.mask[:, :k])


def needed_span(task: Task, batch: Batch) -> int:
    """How many steps back from T the last loss depends on its inputs: recall, the delay; adding,
    the first marker (the mean over the batch of T - its step); sine and text, the sequence."""
    T = task.seq_len
    if task.name == "recall":
        return task.delay
    if task.name == "adding":
        first = np.argmax(batch.x[:, :, 1] > 0, axis=0)  # (B,) 0-based index of each first marker
        return int(round(float(np.mean(T - 1 - first))))
    return T - 1


def heldout_batch(task: Task, rng: np.random.Generator, size: int = 256) -> Batch:
    """Sequences the model never trains on: fresh draws from `rng` (keep it separate from the
    training generator), or for text the non-overlapping windows of the file's held-out tail."""
    n = check_positive_int("heldout", size)
    if task.name != "text":
        return sample_batch(task, rng, n)[0]
    ids = task.corpus.heldout_ids
    T = task.seq_len
    starts = np.arange(0, len(ids) - T, T)[:n]
    return _text_windows(task, ids, starts)


# ---------------------------------------------------------------------------- evaluation


def predict(cell: Cell, x: np.ndarray, s0: np.ndarray | None = None) -> np.ndarray:
    """Outputs y (T, B, V) of the network on x (T, B, D) (a forward pass, no gradient)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return cell.outputs(cell.run(x, s0))


def metric_value(task: Task, y: np.ndarray, batch: Batch) -> float:
    """The task's metric of outputs y (T, B, V) on `batch`, over the scored steps.

    accuracy: share of scored steps whose argmax is the target; mse: mean squared error per
    scored step; perplexity: exp(mean cross-entropy per scored step).
    """
    scored = batch.mask > 0  # (T, B)
    if task.metric == "accuracy":
        return float(np.mean(np.argmax(y, axis=-1)[scored] == batch.targets[scored]))
    with np.errstate(over="ignore", invalid="ignore"):  # a diverged model's outputs: inf, not a warning
        if task.metric == "mse":
            err = np.mean((y - batch.targets) ** 2, axis=-1)  # (T, B)
            return float(np.mean(err[scored]))
        z = y - y.max(axis=-1, keepdims=True)  # stable log-softmax
        logp = z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))  # (T, B, V)
        nll = -np.take_along_axis(logp, batch.targets[..., None], axis=-1)[..., 0]  # (T, B)
        return float(np.exp(np.mean(nll[scored])))


def evaluate(task: Task, cell: Cell, batch: Batch) -> float:
    """The metric of the model on `batch` (a held-out batch), from a zero initial state."""
    return metric_value(task, predict(cell, batch.x), batch)


def sample_text(
    cell: Cell, task: Task, rng: np.random.Generator, *, prime: str = "", length: int = 200, temperature: float = 1.0
) -> str:
    """Generate `length` characters after `prime` (fed first) by sampling from the softmax."""
    if task.name != "text":
        raise ValueError("text sampling needs the text task")
    n = check_positive_int("--sample-len", length, allow_zero=True)
    check_float("temperature", temperature, lo=0.0, lo_open=True)
    corpus = task.corpus
    V = len(corpus.vocab)
    seed_ids = corpus.encode(prime) if prime else np.array([rng.integers(0, V)])
    eye = np.eye(V, dtype=cell.dtype)

    def step(s: np.ndarray | None, i: int) -> tuple[np.ndarray, np.ndarray]:
        run = cell.run(eye[i][None, None, :], s)  # one step, one sequence
        return run.states[-1], cell.outputs(run)[0, 0]  # (1, S), (V,)

    s, y = None, None
    for i in seed_ids:
        s, y = step(s, i)
    out = []
    for _ in range(n):
        z = y / temperature  # (V,)
        p = np.exp(z - z.max())
        i = int(rng.choice(V, p=p / p.sum()))
        out.append(i)
        s, y = step(s, i)
    return (prime if prime else corpus.decode(seed_ids)) + corpus.decode(np.array(out, dtype=np.int64))
