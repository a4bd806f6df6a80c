"""Autocomplete metrics: the same code scores the LSTM on the device runtime and the n-gram baseline.

Both are *predictors* (start, advance, log_probs; see edge_runtime/autocomplete.py),
so next-symbol accuracy and keystroke savings are computed identically for
either. numpy and edge_runtime only: it runs under tflite-runtime.

Metrics that match typing (issue 15), for a bundle with a lexicon:
- keystroke savings weighted by how often each held-out word is used (its
  Zipf frequency in the lexicon: a word used 10x as often counts 10x), with
  1 and with 3 suggestions shown: the user types until the word is among the
  suggestions shown and picks it with one key;
- against a frequency-ranked lexicon completer (the same lexicon, no model)
  and the best Witten-Bell n-gram up to order 7 behind the same decoder;
- next-letter top-1 and top-3, each held-out word once and frequency-weighted.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from edge_eval.ngram import BEST_ORDERS, NGRAM_ORDERS, AutocompleteNgram
from edge_runtime.autocomplete import (BEAM_WIDTH, PRIOR_WEIGHT, TIE_BREAK, AutocompleteModel, AutocompleteSession,
                                       Decoder, WordIndex, beam_search, predictor_vocabulary, read_lexicon)
from edge_runtime.lexicon import Lexicon
from edge_runtime.manifest import lexicon_entry, read_manifest
from edge_runtime.vocabulary import Vocabulary


def next_symbol_accuracy(predictor, words: list[str], weights=None) -> dict:
    """Top-1 and top-3 accuracy of the next symbol at every position of every word,
    the end symbol included (knowing a word is complete is part of the job).
    Ties count against the target. With `weights` (one per word, e.g. how often it
    is used) the weighted figures come too: each position counts its word's weight."""
    vocab = predictor_vocabulary(predictor)
    top1 = top3 = positions = 0
    weighted = np.zeros(3)  # top-1, top-3, all positions, each position weighted by its word
    start = predictor.start()
    for n, word in enumerate(words):
        node = start
        targets = vocab.encode(word) + [vocab.end_index]
        hits1 = hits3 = 0
        for i, target in enumerate(targets):
            lp = predictor.log_probs(node)
            # symbols ranked at or above the target besides itself: a tie counts against it, so a
            # quantized output whose coarse logits tie with the target cannot score by tying
            better = int(np.count_nonzero(lp >= lp[target])) - 1
            hits1 += better == 0
            hits3 += better < 3
            if i + 1 < len(targets):
                node = predictor.advance(node, target)
        top1, top3, positions = top1 + hits1, top3 + hits3, positions + len(targets)
        if weights is not None:
            weighted += float(weights[n]) * np.array([hits1, hits3, len(targets)])
    result = {"top1": top1 / positions, "top3": top3 / positions, "positions": positions, "words": len(words)}
    if weights is not None:
        result.update(top1_weighted=weighted[0] / weighted[2], top3_weighted=weighted[1] / weighted[2])
    return result


def choose_order(train: list[str], val: list[str], vocab: Vocabulary, orders=NGRAM_ORDERS,
                 weights=None) -> tuple[AutocompleteNgram, dict]:
    """The order with the best next-symbol top-1 accuracy on the validation words (each once)."""
    scores = {}
    best = None
    for order in orders:
        model = AutocompleteNgram(train, vocab, order, weights)
        scores[order] = next_symbol_accuracy(model, val)["top1"]
        if best is None or scores[order] > scores[best.order]:
            best = model
    return best, {str(k): v for k, v in scores.items()}


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
    """One word per line (a file, or a pipe such as `<(shuf words)`); ValueError naming the file otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start})") from None
    except IsADirectoryError:
        raise ValueError(f"{path}: is a folder, not a word list") from None
    words = [w.strip() for w in text.splitlines() if w.strip()]
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


class FrequencyCompleter:
    """The plain reference: the k most frequent lexicon words that start with the prefix. No model."""

    def __init__(self, lexicon: Lexicon):
        self.lexicon = lexicon

    def suggest(self, node, prefix: str, k: int) -> list[str]:
        return [w for w, _ in self.lexicon.most_frequent(prefix, k)]


class ModelCompleter:
    """A predictor behind the device's decoder (lexicon beam search + frequency prior)."""

    def __init__(self, predictor, lexicon: Lexicon, prior_weight: float = PRIOR_WEIGHT, tie_break: str = TIE_BREAK):
        self.predictor = predictor
        self.decoder = Decoder(predictor, WordIndex(lexicon), prior_weight, tie_break=tie_break)

    def suggest(self, node, prefix: str, k: int) -> list[str]:
        return [s.word for s in self.decoder.suggest(node, prefix, k)]


def typing_savings(completer, predictor, words: list[str], weights, shown=(1, 3)) -> dict:
    """Keystroke savings with `shown` suggestions, each word once and weighted by `weights`.

    For each word, the user types letters until it is among the first k
    suggestions, then picks it with one key; otherwise they type it all.
    keys(k) / letters, per word; KSR = 1 - sum(w * keys) / sum(w * letters).
    One suggest(max k) per prefix serves every k: the decoder's first j of k are its first j.
    """
    vocab = predictor_vocabulary(predictor) if predictor is not None else None
    most = max(shown)
    keys = {k: np.zeros(len(words)) for k in shown}
    letters = np.array([len(w) for w in words], float)
    start = predictor.start() if predictor is not None else None
    for n, word in enumerate(words):
        node, open_ks = start, set(shown)
        for k in shown:
            keys[k][n] = len(word)
        for typed in range(len(word) - 1):  # accepting after the last letter would save nothing
            offered = completer.suggest(node, word[:typed], most)
            for k in list(open_ks):
                if word in offered[:k]:
                    keys[k][n] = typed + 1
                    open_ks.discard(k)
            if not open_ks:
                break
            if predictor is not None:
                node = predictor.advance(node, vocab.index(word[typed]))
    w = np.asarray(weights, float)
    result = {"words": len(words), "letters": int(letters.sum())}
    for k in shown:
        result[f"ksr_weighted_{k}"] = float(1 - (w * keys[k]).sum() / (w * letters).sum())
        result[f"ksr_{k}"] = float(1 - keys[k].sum() / letters.sum())
    return result


COMMON_WORDS, COMMON_MIN_LETTERS, COMMON_TYPED = 20, 7, 4  # issue 15: the 20 most used words of 7+ letters, 4 typed


def common_long_words(lexicon: Lexicon, count: int = COMMON_WORDS, min_letters: int = COMMON_MIN_LETTERS) -> list[str]:
    """The `count` most frequent lexicon words of at least `min_letters` letters (by the lexicon's Zipf
    frequencies, which are the frequency source's; ties alphabetical)."""
    long_words = [(-zipf, word) for word, zipf in lexicon.iter_words() if len(word) >= min_letters]
    return [word for _, word in sorted(long_words)[:count]]


def common_words_after_prefix(completer, predictor, words: list[str], typed: int = COMMON_TYPED, k: int = 3) -> dict:
    """How many of `words`, typed to their `typed`-th letter, are among the first k suggestions."""
    vocab = predictor_vocabulary(predictor) if predictor is not None else None
    misses = []
    for word in words:
        node = predictor.start() if predictor is not None else None
        for c in word[:typed] if predictor is not None else "":
            node = predictor.advance(node, vocab.index(c))
        if word not in completer.suggest(node, word[:typed], k)[:k]:
            misses.append(word)
    return {"words": len(words), "typed": typed, "shown": k, "found": len(words) - len(misses), "misses": misses}


def usage_weights(lexicon: Lexicon, words: list[str]) -> np.ndarray:
    """(N,) how often each word is used, relative: 10 ** Zipf from the lexicon (Zipf 0 if not in it)."""
    return np.array([10.0 ** (lexicon.zipf_of(lexicon.walk(w)) or 0.0) for w in words])


def training_weights(lexicon: Lexicon, words: list[str], exponent: float) -> np.ndarray | None:
    """The weighting the model was trained with (frequency ** exponent), for the n-gram; None if uniform."""
    return None if exponent == 0 else usage_weights(lexicon, words) ** exponent


def evaluate_typing(bundle, words: list[str], variant: str | None = None, backend: str | None = None,
                    splits: dict | None = None, typing_words: int | None = None, tie_break: str | None = None) -> dict:
    """The metrics that match typing (module docstring), for a bundle with a lexicon.

    splits (a run's words.json: train, val, test) adds the best n-gram up to order 7,
    trained on the same words with the same weighting as the model; tie_break overrides
    the bundle's order for words of equal frequency (to measure the choices)."""
    manifest = read_manifest(bundle)
    lexicon = read_lexicon(manifest)
    if lexicon is None:
        raise ValueError(f"{bundle}: the bundle has no lexicon (convert it again to add one)")
    entry = lexicon_entry(manifest)
    model = AutocompleteModel(manifest, variant, backend)
    session = AutocompleteSession(model)
    weights = usage_weights(lexicon, words)
    typed = words[:typing_words] if typing_words else words
    typed_weights = weights[:len(typed)]
    started = time.perf_counter()
    result = {"variant": model.variant.name, "backend": model.backend, "held_out_words": len(words),
              "typing_words": len(typed), "weights": "10 ** Zipf frequency of the word (wordfreq, in the lexicon)",
              "lexicon_bytes": entry["bytes"], "model_bytes": model.variant.bytes,
              "prior_weight": entry.get("prior_weight", PRIOR_WEIGHT),
              "tie_break": tie_break or entry.get("tie_break", TIE_BREAK)}
    completer = ModelCompleter(session, lexicon, result["prior_weight"], result["tie_break"])
    result["model"] = {**typing_savings(completer, session, typed, typed_weights),
                       "common_words": common_words_after_prefix(completer, session, common_long_words(lexicon)),
                       **next_symbol_accuracy(session, words, weights), "bytes": model.variant.bytes + entry["bytes"]}
    frequency = FrequencyCompleter(lexicon)
    result["frequency_completer"] = {**typing_savings(frequency, None, typed, typed_weights),
                                     "common_words": common_words_after_prefix(frequency, None,
                                                                               common_long_words(lexicon)),
                                     "bytes": entry["bytes"]}
    if splits is not None:
        exponent = float(manifest.raw.get("train_config", {}).get("frequency_exponent", 0.0))
        train = splits["train"]
        ngram, val_top1 = choose_order(train, splits["val"], session.vocabulary, BEST_ORDERS,
                                       training_weights(lexicon, train, exponent))
        result["ngram"] = {"order": ngram.order, "val_top1_by_order": val_top1, "training_frequency_exponent": exponent,
                           **typing_savings(ModelCompleter(ngram, lexicon, result["prior_weight"], result["tie_break"]),
                                            ngram, typed, typed_weights),
                           **next_symbol_accuracy(ngram, words, weights),
                           "bytes": ngram.serialized_bytes() + entry["bytes"],
                           "ngram_bytes": ngram.serialized_bytes()}
    result["seconds"] = round(time.perf_counter() - started, 1)
    return result
