"""The autocomplete lexicon's words and their frequencies: the word list, weighted by wordfreq.

wordfreq (PyPI, pinned in the train and convert extras) ships its English
frequency table inside its wheel and never downloads anything. Its code is
Apache-2.0; its data is CC-BY-SA 4.0, built from Wikipedia, OpenSubtitles,
SUBTLEX, the Google Books Ngrams, Reddit, Twitter and other sources (see its
README): the attribution below goes into every bundle's manifest. A word the
table does not list (wordfreq's English list stops near Zipf 1, about once
per 100 million words) gets Zipf 0.
"""
from __future__ import annotations

from importlib import metadata

import numpy as np

from edge_runtime.lexicon import Lexicon

FREQUENCY_LANGUAGE = "en"
FREQUENCY_SOURCE = {
    "package": "wordfreq", "list": "large", "language": FREQUENCY_LANGUAGE,
    "license": "code Apache-2.0 (wheel metadata 'License: Apache-2.0'); data CC-BY-SA 4.0 "
               "(https://creativecommons.org/licenses/by-sa/4.0/), as its README states",
    "attribution": "Word frequencies from wordfreq by Robyn Speer (https://github.com/rspeer/wordfreq), "
                   "built from Wikipedia, OpenSubtitles, SUBTLEX, Google Books Ngrams, Reddit, Twitter and "
                   "other sources; CC-BY-SA 4.0",
}


def word_zipf(words: list[str]) -> dict[str, float]:
    """word -> Zipf frequency (log10 of uses per billion words; 0 when wordfreq has never seen it)."""
    from wordfreq import zipf_frequency

    return {w: zipf_frequency(w, FREQUENCY_LANGUAGE, wordlist="large") for w in words}


def frequency_source() -> dict:
    return {**FREQUENCY_SOURCE, "version": metadata.version("wordfreq")}


def build_lexicon(words: list[str], alphabet: str) -> Lexicon:
    return Lexicon.build(word_zipf(sorted(set(words))), alphabet)


def usage_weights(words: list[str]) -> np.ndarray:
    """(N,) how often each word is used, relative: 10 ** Zipf (1 for a word wordfreq has never seen), the
    weights of edge_eval's frequency-weighted metrics."""
    zipf = word_zipf(words)
    return 10.0 ** np.array([zipf[w] for w in words])


def sampling_weights(words: list[str], exponent: float) -> np.ndarray:
    """(N,) probabilities of drawing each word for training: frequency ** exponent, normalized.
    0 is every word alike; 1 is as often as people use it. Unseen words count as Zipf 0."""
    zipf = np.array(list(word_zipf(words).values()))
    weights = 10.0 ** (exponent * zipf)
    return weights / weights.sum()
