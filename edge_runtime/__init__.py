"""edge_runtime: run an edge-rnn bundle step by step on a device.

numpy, one TFLite interpreter and the standard library only: this package
ships to devices. Never import torch, tensorflow, train or convert here.
Measuring (benchmarks, evaluation) lives in edge_eval/, which does not ship.

    import edge_runtime
    model = edge_runtime.load("artifacts/temperature-lstm")
    session = model.session()
    forecast = session.step([20.5, 4.0])   # raw sensor units in and out

    typing = edge_runtime.load("artifacts/words-lstm128").session()   # an autocomplete bundle
    typing.feed("q"); typing.suggest(3)                               # words by beam search
"""
from edge_runtime.autocomplete import Autocomplete
from edge_runtime.backends import BackendError, available_backends
from edge_runtime.manifest import BundleError, read_manifest
from edge_runtime.model import Model
from edge_runtime.session import Session
from edge_runtime.tasks import load

__all__ = ["load", "Model", "Session", "Autocomplete", "BundleError", "BackendError", "read_manifest", "available_backends"]
__version__ = "0.1.0"
