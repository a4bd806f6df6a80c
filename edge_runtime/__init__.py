"""edge_runtime: run an edge-rnn bundle step by step on a device.

numpy, one TFLite interpreter and the standard library only: this package
ships to devices. Never import torch, tensorflow, train or convert here.
Measuring (benchmarks, evaluation) lives in edge_eval/, which does not ship.

    import edge_runtime
    model = edge_runtime.load("artifacts/temperature-lstm")
    session = model.session()
    forecast = session.step([20.5, 4.0])   # raw sensor units in and out

    typing = edge_runtime.load("artifacts/words-lstm192").session()   # an autocomplete bundle
    typing.feed("q"); typing.suggest(3)          # real words from the bundle's lexicon, ranked by use

The names below load on first use, so `import edge_runtime.frontdoor` (the
`edge-rnn` command's --help) needs nothing but the standard library.
"""
import importlib

_EXPORTS = {"load": "edge_runtime.tasks", "Model": "edge_runtime.model", "Session": "edge_runtime.session",
            "Autocomplete": "edge_runtime.autocomplete", "BundleError": "edge_runtime.manifest",
            "read_manifest": "edge_runtime.manifest", "BackendError": "edge_runtime.backends",
            "available_backends": "edge_runtime.backends"}

__all__ = list(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'edge_runtime' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value  # resolved once
    return value
