"""The character vocabulary of an autocomplete model: one definition for train, convert and the device.

Symbols are single characters. Two of them are not letters: `start`, fed
once at the beginning of every word so the first letter has a context, and
`end`, which the model predicts when the word is complete. Standard library
only: it ships to devices inside the bundle's manifest.
"""
from __future__ import annotations

import string
from dataclasses import dataclass

START, END = "^", "$"


class VocabularyError(ValueError):
    """A vocabulary that cannot be used; the message names the problem."""


@dataclass(frozen=True)
class Vocabulary:
    symbols: tuple[str, ...]  # index -> symbol; the model's one-hot input and logits use this order
    start: str = START
    end: str = END

    def __post_init__(self) -> None:
        symbols = self.symbols
        if not symbols or not all(isinstance(s, str) and len(s) == 1 for s in symbols):
            raise VocabularyError(f"vocabulary symbols must be single characters, got {list(symbols)!r}")
        if len(set(symbols)) != len(symbols):
            duplicates = sorted({s for s in symbols if symbols.count(s) > 1})
            raise VocabularyError(f"vocabulary has duplicate symbols {duplicates}")
        for role, symbol in (("start", self.start), ("end", self.end)):
            if symbol not in symbols:
                raise VocabularyError(f"vocabulary {role} symbol {symbol!r} is not among its symbols")
        if self.start == self.end:
            raise VocabularyError("vocabulary start and end symbols must differ")
        if len(self.letters) == 0:
            raise VocabularyError("vocabulary has no letters besides start and end")
        object.__setattr__(self, "_index", {s: i for i, s in enumerate(symbols)})

    @classmethod
    def lowercase(cls) -> "Vocabulary":
        """start, end, then a-z: what the word-list models use."""
        return cls((START, END, *string.ascii_lowercase))

    @classmethod
    def from_dict(cls, d) -> "Vocabulary":
        if not isinstance(d, dict):
            raise VocabularyError(f"vocabulary must be an object with symbols, start and end, got {d!r}")
        unknown = set(d) - {"symbols", "start", "end"}
        if unknown:
            raise VocabularyError(f"unknown vocabulary keys {sorted(unknown)}")
        symbols = d.get("symbols")
        if not isinstance(symbols, list):
            raise VocabularyError(f"vocabulary 'symbols' must be a list of characters, got {symbols!r}")
        return cls(tuple(symbols), d.get("start", START), d.get("end", END))

    def to_dict(self) -> dict:
        return {"symbols": list(self.symbols), "start": self.start, "end": self.end}

    def __len__(self) -> int:
        return len(self.symbols)

    @property
    def letters(self) -> str:
        return "".join(s for s in self.symbols if s not in (self.start, self.end))

    @property
    def start_index(self) -> int:
        return self._index[self.start]

    @property
    def end_index(self) -> int:
        return self._index[self.end]

    def index(self, symbol: str) -> int:
        try:
            return self._index[symbol]
        except KeyError:
            raise VocabularyError(f"{symbol!r} is not in the vocabulary ({self.letters})") from None

    def encode(self, word: str) -> list[int]:
        """A word's letters as indices (no start or end)."""
        return [self.index(c) for c in word]

    def accepts(self, word: str) -> bool:
        return bool(word) and all(c in self._index and c not in (self.start, self.end) for c in word)
