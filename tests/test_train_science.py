"""What training must show (issue 5), with fixed seeds and small budgets.

- recall, delay 10: full BPTT learns it; chunk:5 cannot, since no gradient reaches 10 steps back.
- text: perplexity on held-out text falls well below the file's unigram perplexity.
- adding, T = 50: full BPTT gets below 0.05 MSE (predicting 1 scores 1/6).
- the default configuration (TrainConfig(), the run `make demo` does) reaches its 90% target.
Divergence without clipping and its prevention by clipping are in test_train_fit.py.
"""

from pathlib import Path

import numpy as np

from bptt_cli.analyses import tasks
from bptt_cli.analyses.train import TrainConfig, run
from bptt_cli.analyses.training import loop as train
from bptt_cli.analyses.training import optim
from bptt_cli.core.cells import RNNCell
from bptt_cli.core.rnn import init_params
from bptt_cli.core.truncation import parse_strategy

SUBJECTS = [
    "the old man", "a young woman", "the children", "my brother", "the farmer", "our neighbour",
    "the little dog", "a tired traveller", "the teacher", "her mother",
]  # fmt: skip
VERBS = [
    "walked to", "looked at", "talked about", "thought of", "waited for", "ran towards", "sang about",
    "painted", "remembered", "found",
]  # fmt: skip
OBJECTS = [
    "the river", "the quiet village", "a small house", "the green hills", "the morning light",
    "the old bridge", "the market", "the sea", "a letter", "the garden",
]  # fmt: skip
ENDINGS = ["", " in the evening", " after the rain", " before dinner", " every morning", " with great care"]


def english_text(n_chars: int, seed: int = 0) -> str:
    """Simple English prose from a small grammar: sentences in paragraphs, ~n_chars characters."""
    rng = np.random.default_rng(seed)
    paragraphs, size = [], 0
    while size < n_chars:
        sentences = []
        for _ in range(rng.integers(3, 7)):
            s = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}{rng.choice(ENDINGS)}"
            if rng.random() < 0.3:
                s += f", and then {rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
            sentences.append(s[0].upper() + s[1:] + ".")
        paragraphs.append(" ".join(sentences))
        size += len(paragraphs[-1]) + 1
    return "\n".join(paragraphs) + "\n"


def _recall_accuracy(spec: str) -> float:
    task = tasks.make_task("recall", delay=10, seq_len=20, alphabet=8)
    rng = np.random.default_rng(0)
    params = init_params(rng, input_size=8, hidden_size=64, output_size=8, init="gaussian")
    res = train.fit(
        params,
        task,
        steps=600,
        rng=rng,
        optimizer=optim.Optimizer("adam", lr=3e-3),
        truncation=parse_strategy(spec),
        log_every=600,
        watch=False,
    )
    assert res.diverged_at is None
    return res.final_metric


def test_recall_delay_10_full_bptt_learns_it() -> None:
    assert _recall_accuracy("full") >= 0.9


def test_recall_delay_10_chunk_5_stays_near_chance() -> None:
    # chance is 1/8. Not exactly chance: the readout W_y alone can decode a little of x_{t-10}
    # from whatever memory the random recurrence happens to keep (reservoir style), which
    # needs no gradient through time; learning inside the chunks then erodes that memory.
    assert _recall_accuracy("chunk:5") < 2 / 8


def test_text_perplexity_falls_well_below_unigram(tmp_path: Path) -> None:
    path = tmp_path / "prose.txt"
    path.write_text(english_text(30_000), encoding="utf-8")
    task = tasks.make_task("text", text=path, seq_len=40)
    unigram = task.corpus.unigram_perplexity()
    rng = np.random.default_rng(0)
    params = init_params(rng, input_size=task.input_size, hidden_size=64, output_size=task.output_size)
    before = tasks.evaluate(task, RNNCell(params), tasks.heldout_batch(task, rng))
    res = train.fit(
        params,
        task,
        steps=400,
        rng=rng,
        optimizer=optim.Optimizer("adam", lr=1e-2),
        clip=5.0,
        log_every=400,
        watch=False,
    )
    assert 15 < unigram < 25  # English letters: ~4.1 bits per character
    assert before > unigram  # an untrained model is worse than the unigram baseline
    assert res.final_metric < 0.5 * unigram
    sample = tasks.sample_text(res.cell, task, np.random.default_rng(1), prime="The ", length=60)
    assert sample.startswith("The ") and len(sample) == 64


def test_adding_T50_full_bptt_goes_below_0_05() -> None:
    # IRNN (Le et al. 2015): identity W_h with relu keeps the signal of the two marked values alive
    # over 50 steps from the start; a tanh net with orthogonal W_h sits at ~0.167 for thousands of steps
    task = tasks.make_task("adding", seq_len=50)
    rng = np.random.default_rng(0)
    params = init_params(rng, input_size=2, hidden_size=32, output_size=1, init="identity")
    res = train.fit(
        params,
        task,
        steps=800,
        rng=rng,
        optimizer=optim.Optimizer("adam", lr=2e-3),
        activation="relu",
        clip=1.0,
        log_every=800,
        watch=False,
    )
    assert res.diverged_at is None
    assert res.final_metric < 0.05 < task.chance


def test_default_configuration_reaches_90_percent(tmp_path: Path) -> None:
    result = run(TrainConfig(out=tmp_path / "run", plots=False))
    assert (result.task.name, result.task.seq_len, result.config.hidden) == ("recall", 30, 64)
    assert result.fit.diverged_at is None and result.fit.steps_done == 500
    assert result.fit.final_metric >= 0.9
