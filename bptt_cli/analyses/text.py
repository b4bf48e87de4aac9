"""Text for the character-level language model: the file, its vocabulary, the held-out tail."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HELDOUT_FRACTION = 0.1  # the tail of the file kept for the perplexity
CLEANINGS = ("none", "letters")


@dataclass(frozen=True)
class Corpus:
    """A text file as symbol ids: the training part and the held-out tail, with the vocabulary."""

    path: str
    vocab: str  # the distinct characters, sorted; id = position
    train_ids: np.ndarray  # (N_train,) int
    heldout_ids: np.ndarray  # (N_heldout,) int
    sha256: str = ""  # of the file's text: a resumed run tells a changed file from the same one

    def encode(self, text: str) -> np.ndarray:
        index = {ch: i for i, ch in enumerate(self.vocab)}
        missing = sorted({ch for ch in text if ch not in index})
        if missing:
            raise ValueError(f"`prime` has characters not in the text's vocabulary: {''.join(missing)!r}")
        return np.array([index[ch] for ch in text], dtype=np.int64)

    def decode(self, ids: np.ndarray) -> str:
        return "".join(self.vocab[int(i)] for i in ids)

    def unigram_perplexity(self) -> float:
        """exp of the entropy of the character frequencies of the whole file (the no-context baseline)."""
        counts = np.bincount(np.concatenate([self.train_ids, self.heldout_ids]), minlength=len(self.vocab))
        p = counts[counts > 0] / counts.sum()
        return float(np.exp(-np.sum(p * np.log(p))))


def read_text(path: str | Path) -> str:
    """The file's text; ValueError naming the file when it is missing, empty, binary or not UTF-8."""
    p = Path(path)
    if not p.exists():
        raise ValueError(f"--text {p}: no such file")
    if not p.is_file():
        raise ValueError(f"--text {p}: not a file")
    try:
        raw = p.read_bytes()
    except OSError as e:
        raise ValueError(f"--text {p}: cannot be read ({e.strerror or e})") from None
    if not raw:
        raise ValueError(f"--text {p}: the file is empty")
    if b"\x00" in raw:
        raise ValueError(f"--text {p}: looks binary (it contains NUL bytes); give a UTF-8 text file")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"--text {p}: not valid UTF-8 (byte {e.start}); give a UTF-8 text file") from None


def clean_text(text: str, cleaning: str = "none") -> str:
    """'none': the text as it is; 'letters': as d2l prepares The Time Machine (lowercase, every run
    of characters that are not letters A-Z becomes one space), so that its RNN chapter can be
    reproduced on its own terms."""
    if cleaning == "none":
        return text
    if cleaning == "letters":
        return re.sub("[^A-Za-z]+", " ", text).lower()
    raise ValueError(f"`--text-clean` must be one of {', '.join(CLEANINGS)}; got {cleaning!r}")


def make_corpus(path: str | Path, cleaning: str = "none") -> Corpus:
    text = clean_text(read_text(path), cleaning)
    if not text.strip():
        raise ValueError(f"--text {path}: nothing is left after --text-clean {cleaning}")
    vocab = "".join(sorted(set(text)))
    index = {ch: i for i, ch in enumerate(vocab)}
    ids = np.fromiter((index[ch] for ch in text), dtype=np.int64, count=len(text))  # (N,)
    n_held = int(len(ids) * HELDOUT_FRACTION)
    return Corpus(
        path=str(path),
        vocab=vocab,
        train_ids=ids[: len(ids) - n_held],
        heldout_ids=ids[len(ids) - n_held :],
        sha256=hashlib.sha256(text.encode("utf-8")).hexdigest(),
    )
