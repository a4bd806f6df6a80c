"""The autocomplete task's part of the bundle skeleton (convert/bundle.py).

The same variants, checks and atomic write as the forecasters; what differs
is only what the model is checked, calibrated and scored on: words instead
of a sensor stream.
- Parity: torch over whole words at once (teacher-forced) vs the TFLite step
  model one symbol at a time with state fed back, compared as log-probabilities
  at every symbol (tolerance PARITY_TOLERANCE).
- Calibration: (one-hot symbol, state) pairs from the float32 step model typing
  training words from their start symbol, as the device types them.
- Per-variant metrics on a fixed slice of the held-out words: next-symbol top-1
  and top-3, agreement with float32 torch's top-1, largest log-probability
  deviation. The full held-out set and the keystroke savings are scored by
  `python -m edge_eval eval-complete` (what `make demo` runs).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from convert.bundle import manifest_head, manifest_provenance
from edge_runtime.autocomplete import PRIOR_WEIGHT, TIE_BREAK, AutocompleteSession
from edge_runtime.lexicon import Lexicon
from edge_runtime.model import Model
from edge_runtime.vocabulary import Vocabulary
from train.autocomplete_model import AutocompleteNet, autocomplete_net_from_weights
from train.config import AutocompleteModelConfig
from train.lexicon import build_lexicon, frequency_source
from train.words import word_batch

LEXICON_FILE = "lexicon.npz"
PARITY_WORDS = 200
PARITY_TOLERANCE = 1e-4  # log-probability, float32 torch vs float32 TFLite
METRIC_WORDS = 400  # held-out words each variant is scored on at conversion
CALIBRATION_SAMPLES = 1000


def lexicon_manifest_entry(data: bytes, words: list[str], source: dict) -> dict:
    lexicon = Lexicon.from_bytes(data)
    return {"file": LEXICON_FILE, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "words": lexicon.words, "nodes": len(lexicon.degree), "alphabet": lexicon.alphabet,
            "format": "trie, breadth-first: degree, letter, Zipf code per node (edge_runtime/lexicon.py)",
            "word_list": {k: source[k] for k in ("path", "sha256", "filter") if k in source},
            "frequencies": frequency_source(), "prior_weight": PRIOR_WEIGHT,
            "tie_break": TIE_BREAK}


def build_autocomplete_manifest(name: str, config: AutocompleteModelConfig, info: dict, variants: list[dict]) -> dict:
    from convert.autocomplete_step import OUTPUT

    metrics = info["metrics"]
    return {
        **manifest_head(name, "autocomplete", config),
        "io": {"input": {"name": "x", "shape": [1, config.vocab_size], "dtype": "float32",
                         "units": "one-hot symbol of the vocabulary"},
               "output": {"name": OUTPUT, "shape": [1, config.vocab_size], "dtype": "float32",
                          "units": "logits of the next symbol"}},
        "vocabulary": info["vocabulary"],
        "variants": variants,
        "training": {k: v for k, v in metrics.items() if not k.startswith("ngram")},
        "baselines": {k: v for k, v in metrics.items() if k.startswith("ngram")},
        "data": info["data"],
        **manifest_provenance(info),
    }


@torch.inference_mode()
def torch_log_probs(model: AutocompleteNet, words: list[str], vocab: Vocabulary) -> list[np.ndarray]:
    """Per word, (len+1, V) log-probabilities of the symbol after ^ and each letter, start masked."""
    inputs, _, _ = word_batch(words, vocab)
    logits, _ = model(torch.from_numpy(inputs))  # (B, T, V)
    logits[..., vocab.start_index] = -np.inf
    log_probs = torch.log_softmax(logits.double(), dim=-1).numpy()
    return [log_probs[b, :len(w) + 1] for b, w in enumerate(words)]


def stepped_log_probs(session: AutocompleteSession, word: str) -> np.ndarray:
    """(len+1, V): the step model typing ^word one symbol at a time, state fed back."""
    node = session.start()
    rows = [node.log_probs]
    for symbol in session.vocabulary.encode(word):
        node = session.advance(node, symbol)
        rows.append(node.log_probs)
    return np.stack(rows)


def autocomplete_parity(torch_model: AutocompleteNet, session: AutocompleteSession, words: list[str]) -> dict:
    reference = torch_log_probs(torch_model, words, session.vocabulary)
    # the start symbol is -inf on both sides (masked); compare every other symbol
    errors = [np.abs(stepped_log_probs(session, w)[np.isfinite(r)] - r[np.isfinite(r)]).max()
              for w, r in zip(words, reference)]
    return {"words": len(words), "symbols": sum(len(w) + 1 for w in words),
            "max_abs_error": float(max(errors)), "mean_word_max_error": float(np.mean(errors)),
            "units": "log-probability", "backend": session.model.backend}


def autocomplete_variant_metrics(reference: list[np.ndarray], session: AutocompleteSession, words: list[str]) -> dict:
    """Next-symbol top-1/top-3 on `words` stepped on the runtime, and agreement with float32 torch."""
    vocab = session.vocabulary
    top1 = top3 = agree = count = 0
    deviation = 0.0
    for word, ref in zip(words, reference):
        lp = stepped_log_probs(session, word)  # (len+1, V)
        targets = np.array(vocab.encode(word) + [vocab.end_index])
        better = (lp >= lp[np.arange(len(targets)), targets][:, None]).sum(axis=1) - 1  # ties count against
        top1 += int((better == 0).sum())
        top3 += int((better < 3).sum())
        agree += int((lp.argmax(axis=1) == ref.argmax(axis=1)).sum())
        finite = np.isfinite(ref)
        deviation = max(deviation, float(np.abs(lp[finite] - ref[finite]).max()))
        count += len(targets)
    return {"top1": top1 / count, "top3": top3 / count, "top1_agreement_with_float32": agree / count,
            "max_abs_log_prob_error": deviation, "words": len(words), "positions": count,
            "backend": session.model.backend}


def autocomplete_calibration(session: AutocompleteSession, words: list[str], count: int = CALIBRATION_SAMPLES,
                     seed: int = 0) -> list[dict]:
    """(x, state) pairs as the step signature receives them while typing training words."""
    rng = np.random.default_rng(seed)
    vocab, samples = session.vocabulary, []
    start_state = {n: np.zeros_like(v) for n, v in session.start().state.items()}
    for i in rng.permutation(len(words)):
        node, state = None, start_state
        for symbol in [vocab.start_index] + vocab.encode(words[i]):
            x = np.zeros((1, len(vocab)), np.float32)
            x[0, symbol] = 1.0
            samples.append({"x": x, **{n: v.copy() for n, v in state.items()}})
            node = session.advance(node, symbol) if node is not None else session.start()
            state = node.state
        if len(samples) >= count:
            break
    return samples[:count]


class AutocompleteConversion:
    parity_tolerance = PARITY_TOLERANCE
    parity_units = "log-probability"
    batched = False  # the edge service runs forecasters; a typing session steps one symbol at a time
    resident = False  # a typing session branches (beam search): its state moves between nodes every step

    with_lexicon_for_toys = False  # the lecture's ten words are not a language: no lexicon

    def __init__(self, run_dir: Path, weights: dict, info: dict):
        self.weights, self.info = weights, info
        self.config = AutocompleteModelConfig.from_dict(info["model"])
        self.vocab = Vocabulary.from_dict(info["vocabulary"])
        self.words = json.loads((Path(run_dir) / "words.json").read_text())
        self.metric_words = self.words["test"][:METRIC_WORDS]
        self.torch_model = autocomplete_net_from_weights(weights, info)
        self._reference = None

    def step_graph(self, batch: int | None = 1):
        from convert.autocomplete_step import AutocompleteStepGraph

        assert batch == 1, "autocomplete bundles have no batched companion"
        return AutocompleteStepGraph(self.weights, self.config)

    def manifest(self, name: str, variants: list[dict]) -> dict:
        return build_autocomplete_manifest(name, self.config, self.info, variants)

    def parity(self, float_model: Model) -> dict:
        return autocomplete_parity(self.torch_model, AutocompleteSession(float_model), self.words["test"][:PARITY_WORDS])

    def add_sections(self, manifest: dict, float_model: Model) -> None:
        pass  # nothing beyond the vocabulary, which the manifest already has

    def extra_files(self, manifest: dict) -> dict[str, bytes]:
        """The lexicon: every word of the run's list (train, val and test: the words people type),
        with wordfreq's frequencies; its entry in the manifest like every file's."""
        if "builtin" in self.info["data"] and not self.with_lexicon_for_toys:
            return {}
        words = self.words["train"] + self.words["val"] + self.words["test"]
        data = build_lexicon(words, self.vocab.letters).to_bytes()
        manifest["lexicon"] = lexicon_manifest_entry(data, words, self.info["data"])
        return {LEXICON_FILE: data}

    def calibration(self, float_model: Model) -> list[dict]:
        return autocomplete_calibration(AutocompleteSession(float_model), self.words["train"])

    def score(self, model: Model, entry: dict) -> None:
        if self._reference is None:  # float32 torch's log-probabilities, once for every variant
            self._reference = torch_log_probs(self.torch_model, self.metric_words, self.vocab)
        entry["metrics"] = autocomplete_variant_metrics(self._reference, AutocompleteSession(model), self.metric_words)
