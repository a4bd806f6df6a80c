"""Which TFLite interpreter runs the model.

Order of preference: tflite_runtime (what a Pi pip-installs), ai_edge_litert
(its successor), then tensorflow.lite as a development fallback. A caller
or the EDGE_RNN_BACKEND environment variable can name one; a named backend
that is not installed is an error, not a silent fallback.
"""
from __future__ import annotations

import importlib
import os

BACKENDS = {
    "tflite_runtime": "tflite_runtime.interpreter",
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tensorflow": "tensorflow.lite",  # imported by name only: a development fallback
}
ENV_VAR = "EDGE_RNN_BACKEND"


class BackendError(RuntimeError):
    pass


def _import(name: str):
    """The Interpreter class; ImportError also when the module is there without one (TensorFlow 2.20 removed
    tf.lite.Interpreter in favour of ai_edge_litert)."""
    module = importlib.import_module(BACKENDS[name])
    interpreter = getattr(module, "Interpreter", None)
    if interpreter is None:
        raise ImportError(f"{BACKENDS[name]} has no Interpreter in this version")
    return interpreter


def interpreter_class(name: str | None = None) -> tuple[str, type]:
    """Return (backend name, Interpreter class) for `name`, $EDGE_RNN_BACKEND, or the first installed."""
    origin = "backend"
    if not name and os.environ.get(ENV_VAR):
        name, origin = os.environ[ENV_VAR], f"{ENV_VAR}={os.environ[ENV_VAR]}"
    if name:
        if name not in BACKENDS:
            raise BackendError(f"{origin}: unknown backend {name!r}; choose one of {', '.join(BACKENDS)}")
        try:
            return name, _import(name)
        except ImportError as e:
            raise BackendError(f"{origin}: backend {name!r} is not usable ({e})") from None
    for candidate in BACKENDS:
        try:
            return candidate, _import(candidate)
        except ImportError:
            continue
    raise BackendError("no TFLite interpreter installed: pip install tflite-runtime==2.14.0 "
                       "(or ai-edge-litert==2.3.0)")


def available_backends() -> list[str]:
    found = []
    for name in BACKENDS:
        try:
            _import(name)
            found.append(name)
        except ImportError:
            pass
    return found
