"""The bundle's lexicon: the real words suggestions may come from, with how often each is used.

A trie in breadth-first order, stored as three arrays of one entry per
node (an .npz file, zip-compressed, in the bundle beside the models):

    degree  (N,) uint8   how many children the node has
    letter  (N,) uint8   the letter on the edge into the node (an index into `alphabet`)
    zipf    (N,) uint16  0: no word ends here; else 1 + round(ZIPF_STEPS * Zipf frequency)

Breadth-first order keeps every node's children next to each other, so the
children of node i are nodes start[i] .. start[i] + degree[i], with start
the running sum of degrees (computed on load, as is each subtree's most
frequent word, the bound the beam search prunes with). The Zipf frequency is
log10 of a word's uses per billion words (wordfreq's scale: "the" 7.7,
"keyboard" 4.3); 0 is a word of the list that the frequency source never
saw. numpy and the standard library only: it ships to devices, which also
build the user's small dictionary in memory with the same class.
"""
from __future__ import annotations

import heapq
import io
import math

import numpy as np

LEXICON_FORMAT = 1
ZIPF_STEPS = 100  # codes per Zipf unit: 0.01, wordfreq's own precision (coarser codes made ties it does not have)
MAX_CODE = 65535
LN10 = math.log(10)


class LexiconError(ValueError):
    """A lexicon file that cannot be used; the message names the problem."""


def zipf_code(zipf: float) -> int:
    """A Zipf frequency (0-8 in practice) -> its stored code, 1 and up (0 means 'not a word')."""
    return int(min(MAX_CODE, max(1, 1 + round(zipf * ZIPF_STEPS))))


class Lexicon:
    """Prefix queries over the trie: walk, children, is-a-word, frequency, most frequent completions."""

    def __init__(self, alphabet: str, degree: np.ndarray, letter: np.ndarray, zipf: np.ndarray):
        n = len(degree)
        if not (len(letter) == len(zipf) == n) or n == 0 or int(degree.sum()) != n - 1:
            raise LexiconError(f"lexicon arrays disagree: {n} nodes, degrees sum to {int(degree.sum())}, "
                               f"{len(letter)} letters, {len(zipf)} frequencies")
        if len(alphabet) and int(letter[1:].max(initial=0)) >= len(alphabet):
            raise LexiconError(f"lexicon letter index {int(letter.max())} outside its alphabet {alphabet!r}")
        self.alphabet = alphabet
        self.degree, self.letter, self.zipf = degree, letter, zipf
        self.start = np.concatenate([[1], 1 + np.cumsum(degree[:-1], dtype=np.int64)])  # (N,) first child
        self._letters = letter.tobytes()  # bytes.find is the fastest child lookup in pure Python
        self.best = self._subtree_best()  # (N,) the highest zipf code in each node's subtree
        self.words = int(np.count_nonzero(zipf))

    def _subtree_best(self) -> np.ndarray:
        best = self.zipf.copy()
        parent = np.repeat(np.arange(len(self.degree)), self.degree.astype(np.int64))  # (N-1,) parent of node 1..
        depth = np.zeros(len(self.degree), np.int64)
        for i in range(1, len(depth)):  # parents come before children in breadth-first order
            depth[i] = depth[parent[i - 1]] + 1
        for d in range(int(depth.max()), 0, -1):
            nodes = np.flatnonzero(depth == d)
            np.maximum.at(best, parent[nodes - 1], best[nodes])
        return best

    # --- building and the file format ---

    @classmethod
    def build(cls, words: dict[str, float], alphabet: str) -> "Lexicon":
        """word -> Zipf frequency; every word must spell with `alphabet`."""
        index = {c: i for i, c in enumerate(alphabet)}
        root: dict = {}
        for word, zipf in words.items():
            node = root
            for c in word:
                if c not in index:
                    raise LexiconError(f"{word!r}: {c!r} is not in the lexicon's alphabet {alphabet!r}")
                node = node.setdefault(c, {})
            node[""] = zipf_code(zipf)
        degree, letter, code = [], [], []
        queue, i = [(root, 0)], 0
        while i < len(queue):
            node, edge = queue[i]
            i += 1
            children = sorted(c for c in node if c)
            degree.append(len(children))
            letter.append(edge)
            code.append(node.get("", 0))
            queue += [(node[c], index[c]) for c in children]
        return cls(alphabet, np.array(degree, np.uint8), np.array(letter, np.uint8), np.array(code, np.uint16))

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez_compressed(buffer, format=np.array(LEXICON_FORMAT), alphabet=np.array(self.alphabet),
                            degree=self.degree, letter=self.letter, zipf=self.zipf)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = "lexicon") -> "Lexicon":
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as f:
                version = int(f["format"])
                if version != LEXICON_FORMAT:
                    raise LexiconError(f"{where}: lexicon format {version}, this runtime reads {LEXICON_FORMAT}")
                arrays = {k: f[k] for k in ("degree", "letter", "zipf")}
                alphabet = str(f["alphabet"])
        except LexiconError:
            raise
        except Exception as e:  # a zip, npy or key error: all mean the same to the caller
            raise LexiconError(f"{where}: not a lexicon file ({type(e).__name__}: {e})") from None
        dtypes = {"degree": np.uint8, "letter": np.uint8, "zipf": np.uint16}
        if any(a.dtype != dtypes[k] or a.ndim != 1 for k, a in arrays.items()):
            raise LexiconError(f"{where}: lexicon arrays must be one-dimensional: degree and letter uint8, "
                               "zipf uint16")
        try:
            return cls(alphabet, arrays["degree"], arrays["letter"], arrays["zipf"])
        except LexiconError as e:
            raise LexiconError(f"{where}: {e}") from None

    # --- queries (a node is an int; -1 is 'no such prefix') ---

    root = 0

    def child(self, node: int, letter: int) -> int:
        """The node after one more letter (its index in `alphabet`), or -1."""
        if node < 0:
            return -1
        first = int(self.start[node])
        at = self._letters.find(letter, first, first + int(self.degree[node]))
        return at

    def walk(self, prefix: str) -> int:
        node = self.root
        for c in prefix:
            i = self.alphabet.find(c)
            node = self.child(node, i) if i >= 0 else -1
            if node < 0:
                return -1
        return node

    def children(self, node: int) -> tuple[bytes, int]:
        """The letter indices of the node's children (bytes) and the first child's node number."""
        first = int(self.start[node])
        return self._letters[first:first + int(self.degree[node])], first

    def zipf_of(self, node: int) -> float | None:
        """The Zipf frequency of the word ending at node, or None when no word ends there."""
        code = int(self.zipf[node]) if node >= 0 else 0
        return (code - 1) / ZIPF_STEPS if code else None

    def best_zipf(self, node: int) -> float:
        """The Zipf frequency of the most frequent word at or below node."""
        return (int(self.best[node]) - 1) / ZIPF_STEPS

    def __contains__(self, word: str) -> bool:
        return self.zipf_of(self.walk(word)) is not None

    def most_frequent(self, prefix: str, k: int) -> list[tuple[str, float]]:
        """The k most frequent words starting with prefix, (word, Zipf), best first; ties alphabetical.

        Best-first over subtrees keyed by their most frequent word and their prefix
        (every word below sorts after it): it opens only the subtrees that can still
        hold one of the k, and pops words in exactly (frequency, spelling) order.
        """
        node = self.walk(prefix)
        if node < 0:
            return []
        found: list[tuple[str, float]] = []
        heap = [(-int(self.best[node]), prefix, 1, node)]  # (-code, text, 0 word / 1 subtree, node)
        while heap and len(found) < k:
            code, text, kind, nd = heapq.heappop(heap)
            if kind == 0:
                found.append((text, (-code - 1) / ZIPF_STEPS))
                continue
            if self.zipf[nd]:
                heapq.heappush(heap, (-int(self.zipf[nd]), text, 0, nd))
            letters, first = self.children(nd)
            for j, letter in enumerate(letters):
                heapq.heappush(heap, (-int(self.best[first + j]), text + self.alphabet[letter], 1, first + j))
        return found

    def iter_words(self):
        """(word, Zipf) for every word, breadth-first (shortest first)."""
        queue, i = [(0, "")], 0
        while i < len(queue):
            node, text = queue[i]
            i += 1
            if self.zipf[node]:
                yield text, self.zipf_of(node)
            letters, first = self.children(node)
            queue += [(first + j, text + self.alphabet[c]) for j, c in enumerate(letters)]
