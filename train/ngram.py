"""The n-gram baseline lives in edge_eval/ngram.py (eval-complete scores it on the device's side);
training reaches it here, as it always has."""
from edge_eval.autocomplete import choose_order
from edge_eval.ngram import BEST_ORDERS, HIGH_ORDERS, NGRAM_ORDERS, AutocompleteNgram

__all__ = ["AutocompleteNgram", "choose_order", "NGRAM_ORDERS", "HIGH_ORDERS", "BEST_ORDERS"]
