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
(edge_eval/ngram.py) implements the same three calls, so the metrics in
edge_eval/autocomplete.py score it and the LSTM with the same code. numpy
and the interpreter only.

Suggestions (issue 15) are real words: the bundle's lexicon (edge_runtime/lexicon.py,
every word of the list with how often it is used) and the user's own words
(edge_runtime/userwords.py) form one trie, and `Decoder` searches it, ranking
by frequency first and letting the model order words of equal frequency. Only
when the prefix starts no known word does the model propose words of its own,
marked new.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import NamedTuple

import numpy as np

from edge_runtime.lexicon import LN10, Lexicon, LexiconError
from edge_runtime.manifest import (TIE_BREAKS, BundleError, Manifest, lexicon_entry, read_manifest,
                                   verified_file_bytes)
from edge_runtime.model import Model
from edge_runtime.userwords import UserWords
from edge_runtime.vocabulary import Vocabulary

BEAM_WIDTH = 4  # hypotheses kept per step of the beam search
MAX_COMPLETION = 20  # letters a suggestion may add to the prefix
HISTORY = 48  # typed letters whose states are kept for backspace; older ones are recomputed
# How lexicon words are ranked: FREQUENCY_FIRST (-1) ranks by the word's frequency and lets the character
# model order words of equal frequency; a weight w >= 0 ranks by log P_model(word | prefix) + w ln(frequency).
# Measured on held-out words (DESIGN-NOTES): frequency first saves the most keys, weighted or not.
FREQUENCY_FIRST = -1.0
PRIOR_WEIGHT = FREQUENCY_FIRST
# Frequency first, the order of words of equal frequency (Decoder): measured on validation words, DESIGN-NOTES.
TIE_BREAK = TIE_BREAKS[0]
USER_ZIPF = 4.0  # how often a user's own word is taken to be used: a common word ("keyboard" is 4.3)


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

    @cached_property
    def lexicon(self) -> "Lexicon | None":
        """The bundle's lexicon, read and checked once per model (None: an open-vocabulary bundle)."""
        return read_lexicon(self.manifest)

    def session(self, user_words: "str | Path | UserWords | None" = None, **options) -> "Autocomplete":
        """A typing session with the bundle's lexicon and, when given, the user's dictionary
        (a UserWords, or the path of its file)."""
        if user_words is not None and not isinstance(user_words, UserWords):
            user_words = UserWords(user_words)
        if self.lexicon is not None:
            entry = lexicon_entry(self.manifest)
            options.setdefault("prior_weight", entry.get("prior_weight", PRIOR_WEIGHT))
            options.setdefault("tie_break", entry.get("tie_break", TIE_BREAK))
        return Autocomplete(AutocompleteSession(self), lexicon=self.lexicon, user_words=user_words, **options)


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


class Suggestion(NamedTuple):
    word: str
    probability: float  # lexicon words: share of the candidates' scores; new words: the model's P(word | prefix)
    source: str = "new"  # "lexicon", "user" (the user's own words) or "new" (made up by the character model)

    @property
    def new(self) -> bool:
        return self.source == "new"


def beam_search(predictor, node, prefix: str, k: int = 3, beam_width: int = BEAM_WIDTH,
                max_length: int = MAX_COMPLETION) -> list[tuple[str, float]]:
    """Open vocabulary: the k most likely letter strings + end starting with `prefix`, with P(word | prefix).

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


class WordIndex:
    """The bundle's lexicon and the user's own words as one trie: a node is a pair (lexicon node, user node),
    -1 where that side has no such prefix. User words count as Zipf USER_ZIPF (or their lexicon's, if higher)."""

    def __init__(self, lexicon: Lexicon | None, user_words: UserWords | None = None):
        self.lexicon, self.user_words = lexicon, user_words
        self.alphabet = lexicon.alphabet if lexicon is not None else ""
        self._user: Lexicon | None = None
        self._user_version = -1

    @property
    def user(self) -> Lexicon | None:
        """The user's words as a small trie, rebuilt after each change."""
        words = self.user_words
        if words is None or not len(words):
            return None
        if self._user_version != words.version:
            alphabet = self.alphabet or "".join(sorted({c for w in words.words for c in w}))
            self._user = Lexicon.build({w: USER_ZIPF for w in words.words if all(c in alphabet for c in w)}, alphabet)
            self._user_version = words.version
        return self._user

    def walk(self, prefix: str) -> tuple[int, int] | None:
        lex, user = self.lexicon, self.user
        node = (lex.walk(prefix) if lex is not None else -1, user.walk(prefix) if user is not None else -1)
        return None if node == (-1, -1) else node

    def word_zipf(self, node: tuple[int, int]) -> tuple[float, str] | None:
        """(Zipf, source) of the word ending at node, or None."""
        lex = self.lexicon.zipf_of(node[0]) if node[0] >= 0 else None
        user = self._user.zipf_of(node[1]) if node[1] >= 0 else None
        if user is not None and (lex is None or user > lex):
            return user, "user"
        return (lex, "lexicon") if lex is not None else None

    def best_zipf(self, node: tuple[int, int]) -> float:
        return max(self.lexicon.best_zipf(node[0]) if node[0] >= 0 else 0.0,
                   self._user.best_zipf(node[1]) if node[1] >= 0 else 0.0)

    def children(self, node: tuple[int, int]) -> list[tuple[int, tuple[int, int]]]:
        """(letter index in the alphabet, child node) for each next letter either side knows."""
        found: dict[int, list[int]] = {}
        for side, trie in ((0, self.lexicon), (1, self._user)):
            if node[side] >= 0:
                letters, first = trie.children(node[side])
                for j, letter in enumerate(letters):
                    found.setdefault(letter, [-1, -1])[side] = first + j
        return [(letter, (pair[0], pair[1])) for letter, pair in found.items()]

    def __contains__(self, word: str) -> bool:
        node = self.walk(word)
        return node is not None and self.word_zipf(node) is not None


class Decoder:
    """Suggestions for a prefix: lexicon (and user) words first, by beam search over the trie, each scored

        prior_weight = FREQUENCY_FIRST:  Zipf(word) first; words of equal Zipf in `tie_break` order
        prior_weight = w >= 0:           log P_model(word | prefix) + w * ln(10) * Zipf(word)

    (w = 1: the model's probability times the word's frequency). Every ranking is a
    sort key, smallest first, and an open hypothesis's key is the best any word of
    its subtree can reach (its most frequent word; its score so far, which only
    falls as letters are added; its prefix, which every completion sorts after), so
    the search stops as soon as the k-th finished word's key is below every open
    bound. Frequency first, the beam keeps 4 of the subtrees with the most frequent
    words: a word is pruned only when 4 other disjoint subtrees each hold a word
    ranked above it, so it could not have been among the first 3 anyway.

    tie_break (frequency first) for words of equal Zipf:
        "alphabetical"  the frequency-ranked completer's order (Lexicon.most_frequent), so the
                        ranking equals it by construction, and no interpreter step is needed
        "model"         the model's P(word | prefix)
        "model-unknown" the model's only among words the frequency source never saw (Zipf 0:
                        the largest tie), alphabetical among words it knows

    When the prefix leaves the lexicon (and the user's words), the character model
    proposes words of its own, marked new.
    """

    def __init__(self, predictor, index: WordIndex | None = None, prior_weight: float = PRIOR_WEIGHT,
                 beam_width: int = BEAM_WIDTH, max_length: int = MAX_COMPLETION, tie_break: str = TIE_BREAK):
        if tie_break not in TIE_BREAKS:
            raise ValueError(f"tie_break should be one of {', '.join(TIE_BREAKS)}, got {tie_break!r}")
        self.predictor, self.index = predictor, index
        self.prior_weight, self.beam_width, self.max_length = prior_weight, beam_width, max_length
        self.tie_break = tie_break
        vocab = predictor_vocabulary(predictor)
        self.vocabulary = vocab
        self._symbol = [vocab.index(c) for c in index.alphabet] if index is not None and index.alphabet else []

    def suggest(self, node, prefix: str, k: int = 3) -> list[Suggestion]:
        trie_node = self.index.walk(prefix) if self.index is not None else None
        if trie_node is not None:  # real words complete the prefix: only real words are offered
            return self.lexicon_search(node, prefix, trie_node, k)
        return [Suggestion(word, p, "new")
                for word, p in beam_search(self.predictor, node, prefix, k, self.beam_width, self.max_length)]

    @property
    def uses_model(self) -> bool:
        """False when the model cannot change the ranking of lexicon words (no interpreter step needed)."""
        return not (self.prior_weight == FREQUENCY_FIRST and self.tie_break == "alphabetical")

    def sort_key(self, zipf: float, score: float, text: str) -> tuple:
        """The ranking as a key, smallest first: for a word, its Zipf, log P(word | prefix) and spelling;
        for an open hypothesis, its subtree's best Zipf, its score so far and its prefix (a bound)."""
        if self.prior_weight != FREQUENCY_FIRST:
            return (-(score + self.prior_weight * LN10 * zipf),)
        if self.tie_break == "model":
            return (-zipf, -score)
        if self.tie_break == "model-unknown":
            return (-zipf, -score if zipf == 0 else 0.0, text)
        return (-zipf, text)

    def lexicon_search(self, node, prefix: str, trie_node, k: int) -> list[Suggestion]:
        predictor, index = self.predictor, self.index
        uses_model = self.uses_model
        end, alphabet, symbol = self.vocabulary.end_index, index.alphabet, self._symbol
        beams = [(0.0, prefix, node, trie_node)]
        finished: list[tuple[tuple, float, float, str, str]] = []  # (key, zipf, score, word, source)
        for _ in range(self.max_length + 1):
            candidates = []
            for logp, word, nd, tn in beams:
                lp = predictor.log_probs(nd) if uses_model else None  # (V,)
                is_word = index.word_zipf(tn)
                if is_word is not None:
                    zipf, source = is_word
                    score = logp + float(lp[end]) if uses_model else 0.0
                    finished.append((self.sort_key(zipf, score, word), zipf, score, word, source))
                for letter, child in index.children(tn):
                    score = logp + float(lp[symbol[letter]]) if uses_model else 0.0
                    text = word + alphabet[letter]
                    candidates.append((self.sort_key(index.best_zipf(child), score, text), score, text, nd,
                                       symbol[letter], child))
            finished = sorted(finished, key=lambda f: f[0])[:k]
            candidates = sorted(candidates, key=lambda c: c[0])[:self.beam_width]
            if not candidates or (len(finished) == k and candidates[0][0] >= finished[-1][0]):
                break
            beams = [(score, text, predictor.advance(nd, s) if uses_model else nd, child)
                     for _, score, text, nd, s, child in candidates]
        if not finished:
            return []
        # shown probability: each word's share of exp(score + ln 10 Zipf) among the words found (frequency
        # first: the frequencies' share, the model's probability splitting equal frequencies)
        scores = [score + LN10 * zipf for _, zipf, score, _, _ in finished]
        top = max(scores)
        shares = [math.exp(x - top) for x in scores]
        return [Suggestion(word, share / sum(shares), source)
                for (_, _, _, word, source), share in zip(finished, shares)]


def read_lexicon(manifest: Manifest) -> Lexicon | None:
    """The bundle's lexicon, size and sha256 checked, or None for a bundle without one."""
    entry = lexicon_entry(manifest)
    if entry is None:
        return None
    data = verified_file_bytes(manifest, entry["file"], entry["bytes"], entry["sha256"])
    try:
        lexicon = Lexicon.from_bytes(data, str(manifest.path / entry["file"]))
    except LexiconError as e:
        raise BundleError(str(e)) from None
    if manifest.vocabulary is not None and not set(lexicon.alphabet) <= set(manifest.vocabulary.letters):
        raise BundleError(f"{manifest.path / entry['file']}: lexicon alphabet {lexicon.alphabet!r} has letters "
                          f"outside the vocabulary {manifest.vocabulary.letters!r}")
    return lexicon


class Autocomplete:
    """One typing session: feed letters, take back letters, ask for letters and words, accept words."""

    def __init__(self, predictor, beam_width: int = BEAM_WIDTH, max_length: int = MAX_COMPLETION,
                 history: int = HISTORY, lexicon: Lexicon | None = None, user_words: UserWords | None = None,
                 prior_weight: float = PRIOR_WEIGHT, tie_break: str = TIE_BREAK):
        self.predictor = predictor
        self.vocabulary = predictor_vocabulary(predictor)
        self.beam_width, self.max_length, self.history = beam_width, max_length, history
        self.lexicon, self.user_words = lexicon, user_words
        index = WordIndex(lexicon, user_words) if lexicon is not None or user_words is not None else None
        self.decoder = Decoder(predictor, index, prior_weight, beam_width, max_length, tie_break)
        self.reset()

    @classmethod
    def from_bundle(cls, bundle, variant: str | None = None, backend: str | None = None, trusted_key=None,
                    user_words: str | Path | UserWords | None = None, **options) -> "Autocomplete":
        """user_words: a UserWords, or the path of its file (created on the first accepted word);
        trusted_key: refuse a bundle not signed by it (edge_runtime/signature.py)."""
        model = AutocompleteModel(read_manifest(bundle, trusted_key), variant, backend)
        return model.session(user_words, **options)

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

    def suggest(self, k: int = 3) -> list[Suggestion]:
        """The k best words completing the prefix, best first: real words (the bundle's lexicon and the
        user's own) when any completes it, else the character model's, marked new."""
        return self.decoder.suggest(self.node, self._prefix, k)

    def accept(self, word: str | None = None) -> bool:
        """The user finished `word` (default: the prefix typed). A word outside the lexicon goes to the
        user's dictionary (saved at once), so it is suggested from now on; True when it was recorded."""
        word = self._prefix if word is None else word
        if self.user_words is None or not self.vocabulary.accepts(word):
            return False
        if self.lexicon is not None and word in self.lexicon and word not in self.user_words:
            return False  # a real word: the lexicon already knows it
        self.user_words.use(word)
        return True
