"""Word lists for autocomplete: Debian's `wamerican`, a file of one word per line, or the lecture's toy.

Only words made entirely of lowercase a-z are kept (the dictionary also has
proper nouns and possessives: "Aaron", "aardvark's"); duplicates are dropped.
A fixed, seeded 10% is held out for test, and 5% of the rest for validation
(early stopping, the n-gram's order): the same split for every model and the
n-gram baseline.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DEBIAN_WORDS = Path("/usr/share/dict/american-english")  # package wamerican
LOWERCASE_WORD = re.compile(r"^[a-z]+$")
TEST_FRACTION = 0.10
VAL_FRACTION = 0.05  # of what is left after the test words

# The lecture's toy: ten 4-letter words whose first three letters predict the fourth.
LECTURE_WORDS = ("word", "wood", "deep", "dive", "cold", "cool", "load", "love", "kiss", "kind")
WORD_SETS = {"lecture4": LECTURE_WORDS}


@dataclass
class WordSplits:
    train: list[str]
    val: list[str]
    test: list[str]
    source: dict  # where the words came from: path or built-in name, sha256, counts

    def to_dict(self) -> dict:
        return {"train": self.train, "val": self.val, "test": self.test, "source": self.source}


def read_word_list(path: str | Path) -> tuple[list[str], dict]:
    """Lowercase a-z words of a one-word-per-line file, deduplicated, in file order."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        hint = " (Debian: apt-get install wamerican)" if path == DEBIAN_WORDS else ""
        raise ValueError(f"{path}: word list not found{hint}") from None
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a UTF-8 text file ({e})") from None
    words = list(dict.fromkeys(w.strip() for w in lines if LOWERCASE_WORD.match(w.strip())))
    if len(words) < 20:
        raise ValueError(f"{path}: only {len(words)} lowercase a-z words; need at least 20 to split")
    return words, {"path": str(path), "sha256": hashlib.sha256(data).hexdigest(), "lines": len(lines),
                   "words_kept": len(words), "filter": LOWERCASE_WORD.pattern}


def split_words(words: list[str], seed: int = 0) -> tuple[list[str], list[str], list[str]]:
    """(train, val, test): a seeded permutation, test 10%, val 5% of the rest."""
    order = np.random.default_rng(seed).permutation(len(words))
    n_test = int(round(len(words) * TEST_FRACTION))
    n_val = int(round((len(words) - n_test) * VAL_FRACTION))
    shuffled = [words[i] for i in order]
    return shuffled[n_test + n_val:], shuffled[n_test:n_test + n_val], shuffled[:n_test]


def load_words(words_path: str | Path | None = None, word_set: str | None = None, seed: int = 0) -> WordSplits:
    """A word list file, or a built-in set. The lecture's toy is tiny and its test is
    its training set (the exercise asks whether the model learned the ten words)."""
    if word_set is not None:
        if word_set not in WORD_SETS:
            raise ValueError(f"unknown word set {word_set!r}; choose one of {', '.join(WORD_SETS)}")
        words = list(WORD_SETS[word_set])
        return WordSplits(words, words, words, {"builtin": word_set, "words_kept": len(words)})
    words, source = read_word_list(words_path or DEBIAN_WORDS)
    train, val, test = split_words(words, seed)
    return WordSplits(train, val, test, {**source, "seed": seed, "test_fraction": TEST_FRACTION,
                                         "val_fraction": VAL_FRACTION})


def word_batch(words: list[str], vocab) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded teacher-forcing batch: inputs ^word, targets word$, mask of real targets.

    inputs (B, T) int64, targets (B, T) int64, mask (B, T) bool, T = longest word + 1.
    Padding sits after the end symbol, so it never influences a real prediction.
    """
    length = max(len(w) for w in words) + 1
    inputs = np.full((len(words), length), vocab.end_index, np.int64)
    targets = np.full((len(words), length), vocab.end_index, np.int64)
    mask = np.zeros((len(words), length), bool)
    for b, word in enumerate(words):
        codes = vocab.encode(word)
        inputs[b, :len(codes) + 1] = [vocab.start_index, *codes]
        targets[b, :len(codes) + 1] = [*codes, vocab.end_index]
        mask[b, :len(codes) + 1] = True
    return inputs, targets, mask
