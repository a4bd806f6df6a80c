"""Which TFLite interpreter runs the model.

Order of preference: tflite_runtime (what a Pi pip-installs), ai_edge_litert
(its successor), then tensorflow.lite as a development fallback. A caller
or the EDGE_RNN_BACKEND environment variable can name one; a named backend
that is not installed is an error, not a silent fallback.
"""
from __future__ import annotations

import importlib
import os
import sys
import tempfile

BACKENDS = {
    "tflite_runtime": "tflite_runtime.interpreter",
    "ai_edge_litert": "ai_edge_litert.interpreter",
    "tensorflow": "tensorflow.lite",  # imported by name only: a development fallback
}
ENV_VAR = "EDGE_RNN_BACKEND"
# What both runtimes print from C++ to file descriptor 2 at the first allocate_tensors() of a process, the
# XNNPACK delegate's banner: no Python setting reaches it, and in `serve` it was the one line of the log on
# stderr that was not JSON. The first allocation runs with fd 2 captured; every other line is passed on.
BANNERS = (b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",)
_banner_shown = False  # set once the first allocation of this process has run (TFLite prints it once)


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


def allocate(interpreter) -> None:
    """interpreter.allocate_tensors(), without the runtime's one-time banner on stderr (BANNERS).

    Only the process's first allocation is captured, into a file rather than a pipe (nothing can block on a
    full buffer), before any source thread runs; what else reached fd 2 meanwhile (an ERROR line from TFLite,
    another thread's log line) is written back unchanged once fd 2 is restored.
    """
    global _banner_shown
    if _banner_shown:
        interpreter.allocate_tensors()
        return
    _banner_shown = True
    try:
        if sys.stderr is not None:  # None when the process started without fd 2
            sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no fd 2 (a daemon with stderr closed), or sys.stderr closed: nothing to keep clean
        interpreter.allocate_tensors()
        return
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            interpreter.allocate_tensors()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if line.rstrip(b"\r\n") not in BANNERS]
            if kept:
                os.write(2, b"".join(kept))


def available_backends() -> list[str]:
    found = []
    for name in BACKENDS:
        try:
            _import(name)
            found.append(name)
        except ImportError:
            pass
    return found
