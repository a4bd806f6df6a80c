"""Keystroke autocomplete on the device: one character per step, suggestions by beam search.

The step model takes one symbol (one-hot, (1, V) float: the lecture's input,
and exact in every quantized mode since 0 and 1 quantize without error) and
the named state (h0, h1, c0, c1), and returns logits over the next symbol
and the new state. `AutocompleteSession` runs it over an `AutocompleteModel`
(the autocomplete task's `Model`); the forecaster's `Session` is untouched,
so its hot loop pays nothing for this.

Everything here talks to a *predictor*, anything with three calls:

    start()               -> node    the state after the start symbol
    advance(node, symbol) -> node    one more symbol (an index) fed
    log_probs(node)       -> (V,)    log-probabilities of the next symbol

A node is immutable once made, so a typing session keeps one node per typed
letter: backspace pops back to the previous node (no recomputation), and
beam search branches from a node without disturbing it. The n-gram baseline
(train/ngram.py) implements the same three calls, so the metrics in
edge_eval/autocomplete.py score it and the LSTM with the same code. numpy
and the interpreter only.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from edge_runtime.manifest import read_manifest
from edge_runtime.model import Model
from edge_runtime.vocabulary import Vocabulary

BEAM_WIDTH = 4  # hypotheses kept per step of the beam search
MAX_COMPLETION = 20  # letters a suggestion may add to the prefix
HISTORY = 48  # typed letters whose states are kept for backspace; older ones are recomputed


@dataclass(frozen=True)
class Node:
    """The model after some symbols: its state tensors and the next symbol's log-probabilities."""

    state: dict  # name -> (1, H) float32; never modified after creation
    log_probs: np.ndarray  # (V,)


def log_softmax(logits: np.ndarray, masked: int) -> np.ndarray:
    """(V,) logits -> log-probabilities, with symbol `masked` (start) impossible."""
    z = logits.astype(np.float64)
    z[masked] = -np.inf
    z = z - z.max()
    return z - math.log(np.exp(z).sum())


class AutocompleteModel(Model):
    """An autocomplete bundle's `Model`: each session is one typing session."""

    def session(self) -> "Autocomplete":
        return Autocomplete(AutocompleteSession(self))


class AutocompleteSession:
    """The step model of an autocomplete bundle as a predictor: symbol in, next-symbol distribution out."""

    def __init__(self, model: Model):
        m = model.manifest
        if m.task != "autocomplete":
            raise ValueError(f"{m.path}: a {m.task} bundle, not an autocomplete one")
        self.model, self.vocabulary = model, m.vocabulary
        interp = model.interpreter
        self._set, self._get, self._invoke = interp.set_tensor, interp.get_tensor, interp.invoke
        self._x_index, self._y_index = model.binding.x, model.binding.y
        self._state_io = model.binding.state  # (name, input tensor index, output tensor index)
        self._x = np.zeros(m.input.shape, np.float32)  # (1, V) one-hot buffer
        codecs = model.codecs if model.integer_io else {}
        identity = _Identity()
        self._encode_x = codecs.get(m.input.name, identity).encode
        self._decode_y = codecs.get(f"{m.output.name}:out", identity).decode
        self._encode = {s.name: codecs.get(s.name, identity).encode for s in m.state}
        self._decode = {s.name: codecs.get(f"{s.name}:out", identity).decode for s in m.state}
        self._zero = {s.name: np.zeros(s.shape, np.float32) for s in m.state}
        self._start_node = None

    def start(self) -> Node:
        if self._start_node is None:  # the same for every word: computed once
            self._start_node = self.advance(Node(self._zero, np.zeros(0)), self.vocabulary.start_index)
        return self._start_node

    def advance(self, node: Node, symbol: int) -> Node:
        x = self._x
        x.fill(0.0)
        x[0, symbol] = 1.0
        self._set(self._x_index, self._encode_x(x))
        for name, in_index, _ in self._state_io:
            self._set(in_index, self._encode[name](node.state[name]))
        self._invoke()
        state = {name: self._decode[name](self._get(out_index)) for name, _, out_index in self._state_io}
        logits = self._decode_y(self._get(self._y_index))[0]  # (V,)
        return Node(state, log_softmax(logits, self.vocabulary.start_index))

    @staticmethod
    def log_probs(node: Node) -> np.ndarray:
        return node.log_probs


class _Identity:
    @staticmethod
    def encode(values):
        return values

    decode = encode


def predictor_vocabulary(predictor) -> Vocabulary:
    return predictor.vocabulary if hasattr(predictor, "vocabulary") else predictor.vocab


def beam_search(predictor, node, prefix: str, k: int = 3, beam_width: int = BEAM_WIDTH,
                max_length: int = MAX_COMPLETION) -> list[tuple[str, float]]:
    """The k most likely whole words starting with `prefix`, with P(word | prefix).

    A word's probability is the product of its letters' and the end symbol's
    probabilities. Hypotheses only lose probability as they grow, so the
    search stops as soon as the k-th finished word beats every open one.
    """
    vocab = predictor_vocabulary(predictor)
    end = vocab.end_index
    letters = np.array([vocab.index(c) for c in vocab.letters])  # (L,)
    width = min(beam_width, len(letters))
    beams = [(0.0, prefix, node)]
    finished: list[tuple[float, str]] = []
    for _ in range(max_length + 1):
        candidates = []
        for logp, word, nd in beams:
            lp = predictor.log_probs(nd)  # (V,)
            if word:
                finished.append((logp + float(lp[end]), word))
            best = letters[np.argpartition(-lp[letters], width - 1)[:width]]
            candidates += [(logp + float(lp[c]), word + vocab.symbols[c], nd, int(c)) for c in best]
        finished = sorted(finished, key=lambda f: -f[0])[:k]
        candidates = sorted(candidates, key=lambda c: -c[0])[:width]
        if not candidates or (len(finished) == k and candidates[0][0] <= finished[-1][0]):
            break
        beams = [(logp, word, predictor.advance(nd, c)) for logp, word, nd, c in candidates]
    return [(word, math.exp(logp)) for logp, word in finished]


class Autocomplete:
    """One typing session: feed letters, take back letters, ask for letters and words."""

    def __init__(self, predictor, beam_width: int = BEAM_WIDTH, max_length: int = MAX_COMPLETION,
                 history: int = HISTORY):
        self.predictor = predictor
        self.vocabulary = predictor_vocabulary(predictor)
        self.beam_width, self.max_length, self.history = beam_width, max_length, history
        self.reset()

    @classmethod
    def from_bundle(cls, bundle, variant: str | None = None, backend: str | None = None, trusted_key=None,
                    **options) -> "Autocomplete":
        return cls(AutocompleteSession(AutocompleteModel(read_manifest(bundle, trusted_key), variant, backend)), **options)

    @property
    def prefix(self) -> str:
        return self._prefix

    @property
    def node(self) -> Node:
        """The model after the start symbol and the typed prefix."""
        return self._nodes[-1]

    def reset(self) -> None:
        """A word boundary: back to the state after the start symbol."""
        self._prefix = ""
        self._nodes = [self.predictor.start()]  # node i: after i typed letters (older ones may be dropped)
        self._dropped = 0  # letters whose nodes were dropped from the front of the stack

    def feed(self, char: str) -> None:
        """Advance one keystroke. Raises ValueError for a character outside the vocabulary."""
        if len(char) != 1 or char in (self.vocabulary.start, self.vocabulary.end):
            raise ValueError(f"feed takes one letter of {self.vocabulary.letters!r}, got {char!r}")
        symbol = self.vocabulary.index(char)
        self._nodes.append(self.predictor.advance(self._nodes[-1], symbol))
        self._prefix += char
        if len(self._nodes) > self.history + 1:  # keep the start node and the newest `history`
            del self._nodes[1]
            self._dropped += 1

    def backspace(self) -> bool:
        """Take back the last letter; False when there is none. Restores the kept state, no recompute
        (unless the word is longer than `history`, whose oldest states are rebuilt from the start)."""
        if not self._prefix:
            return False
        self._prefix = self._prefix[:-1]
        self._nodes.pop()
        if len(self._nodes) == 1 and self._dropped:
            prefix = self._prefix
            self.reset()
            for c in prefix:
                self.feed(c)
        return True

    def next_chars(self, k: int = 3) -> list[tuple[str, float]]:
        """The k most likely next symbols (letters, or the end symbol for 'the word is complete')."""
        p = np.exp(self.predictor.log_probs(self.node))  # (V,)
        order = np.argsort(-p, kind="stable")[:k]
        return [(self.vocabulary.symbols[i], float(p[i])) for i in order if p[i] > 0]

    def suggest(self, k: int = 3) -> list[tuple[str, float]]:
        """The k most likely words completing the prefix, with P(word | prefix), best first."""
        return beam_search(self.predictor, self.node, self._prefix, k, self.beam_width, self.max_length)
