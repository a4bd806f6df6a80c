"""Autocomplete metrics: the same code scores the LSTM on the device runtime and the n-gram baseline.

Both are *predictors* (start, advance, log_probs; see edge_runtime/autocomplete.py),
so next-symbol accuracy and keystroke savings are computed identically for
either. numpy and edge_runtime only: it runs under tflite-runtime.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge_runtime.autocomplete import (BEAM_WIDTH, AutocompleteModel, AutocompleteSession, beam_search,
                                       predictor_vocabulary)
from edge_runtime.manifest import read_manifest


def next_symbol_accuracy(predictor, words: list[str]) -> dict:
    """Top-1 and top-3 accuracy of the next symbol at every position of every word,
    the end symbol included (knowing a word is complete is part of the job).
    Ties count against the target."""
    vocab = predictor_vocabulary(predictor)
    top1 = top3 = positions = 0
    start = predictor.start()
    for word in words:
        node = start
        targets = vocab.encode(word) + [vocab.end_index]
        for i, target in enumerate(targets):
            lp = predictor.log_probs(node)
            # symbols ranked at or above the target besides itself: a tie counts against it, so a
            # quantized output whose coarse logits tie with the target cannot score by tying
            better = int(np.count_nonzero(lp >= lp[target])) - 1
            top1 += better == 0
            top3 += better < 3
            positions += 1
            if i + 1 < len(targets):
                node = predictor.advance(node, target)
    return {"top1": top1 / positions, "top3": top3 / positions, "positions": positions, "words": len(words)}


KSR_SUBSET = 500  # the first held-out words, on which every variant's KSR is compared (integer variants are slow)


def keystroke_savings(predictor, words: list[str], beam_width: int = BEAM_WIDTH, subset: int = KSR_SUBSET) -> dict:
    """KSR = 1 - keys pressed / letters, over `words` (and over the first `subset` of them).

    The user types letters until the top suggestion is the word, then accepts
    it with one key (Tab); with no right suggestion they type every letter.
    The suggestion is also offered before the first letter.
    """
    vocab = predictor_vocabulary(predictor)
    keys = letters = accepted = 0
    first = {}
    start = predictor.start()
    for n, word in enumerate(words):
        if n == subset:
            first = {"ksr_first": 1 - keys / letters, "ksr_first_words": subset}
        node, pressed = start, len(word)
        for typed in range(len(word) - 1):  # accepting after the last letter would save nothing
            top = beam_search(predictor, node, word[:typed], 1, beam_width)
            if top and top[0][0] == word:
                pressed, accepted = typed + 1, accepted + 1
                break
            node = predictor.advance(node, vocab.index(word[typed]))
        keys += pressed
        letters += len(word)
    if not first and letters:
        first = {"ksr_first": 1 - keys / letters, "ksr_first_words": len(words)}
    return {"ksr": 1 - keys / letters if letters else None, "keys": keys, "letters": letters, "words": len(words),
            "accepted": accepted, "beam_width": beam_width, **first}


def read_words(path: str | Path) -> list[str]:
    words = [w.strip() for w in Path(path).read_text().splitlines() if w.strip()]
    if not words:
        raise ValueError(f"{path}: no words")
    return words


def evaluate_bundle(bundle, words: list[str], ksr_words: list[str], variant: str | None = None,
                    backend: str | None = None) -> dict:
    """Next-symbol accuracy and KSR of one variant, run step by step on the interpreter."""
    model = AutocompleteModel(read_manifest(bundle), variant, backend)
    session = AutocompleteSession(model)
    bad = [w for w in words + ksr_words if not session.vocabulary.accepts(w)]
    if bad:
        raise ValueError(f"{len(bad)} words have symbols outside the vocabulary, e.g. {bad[0]!r}")
    started = time.perf_counter()
    result = {**next_symbol_accuracy(session, words), **keystroke_savings(session, ksr_words)}
    result["ksr_words"] = result.pop("words")
    result["words"] = len(words)
    return {**result, "variant": model.variant.name, "bytes": model.variant.bytes, "backend": model.backend,
            "seconds": round(time.perf_counter() - started, 2)}
