"""Many streams' steps in one interpreter call, with the bundle's batched companion model.

The companion is the variant's step graph with a dynamic batch dimension
(convert/ writes it for the float variants and records file, sha256 and bytes
in the variant's manifest entry). A TFLite interpreter is resized and
re-allocated to one batch size at a time, which costs far more than a step,
so one interpreter per size bucket (2, 4, 8, ... max_batch) is opened lazily
and a batch is padded with zero rows up to its bucket. Every op of the step
graph works row by row, so padding rows never touch the real ones.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.backends import interpreter_class
from edge_runtime.manifest import BundleError, batched_companion, verified_file_bytes
from edge_runtime.binding import StepBinding, indices, signature_details
from edge_runtime.model import Model


def bucket_size(rows: int) -> int:
    """The smallest power of two >= rows (at least 2: a single row goes through the (1, n) model)."""
    size = 2
    while size < rows:
        size *= 2
    return size


class _Bucket:
    """One interpreter allocated for exactly `size` rows, with its step binding (tensor indices by name)."""

    def __init__(self, interpreter, size: int, manifest, widths: dict[str, int]):
        self.size = size
        inputs, outputs = signature_details(interpreter)
        self.binding = StepBinding(manifest, indices(inputs), indices(outputs))
        for name, index in ((manifest.input.name, self.binding.x), *((n, i) for n, i, _ in self.binding.state)):
            interpreter.resize_tensor_input(index, [size, widths[name]], strict=False)
        interpreter.allocate_tensors()
        self.interpreter = interpreter


class BatchedStep:
    """step(x (B, C), state {name: (B, n)}) -> (y (B, O), new state {name: (B, n)}), B <= max_batch."""

    def __init__(self, model: Model, max_batch: int = 256):
        m = model.manifest
        entry = batched_companion(m, model.variant)
        if entry is None:
            raise BundleError(f"{m.path}: variant {model.variant.name!r} has no batched step model")
        if model.integer_io:
            raise BundleError(f"{m.path}: variant {model.variant.name!r} has integer I/O; batched steps are float only")
        self._content = verified_file_bytes(m, entry["file"], entry["bytes"], entry["sha256"])
        self.file = entry["file"]
        self.max_batch = max_batch
        self._interpreter_cls = interpreter_class(model.backend)[1]
        self._manifest = m
        self._widths = {m.input.name: m.input.shape[1], **{s.name: s.shape[1] for s in m.state}}
        self._buckets: dict[int, _Bucket] = {}
        self._bucket(2)  # open one now: a bundle whose companion cannot open fails at start, not mid-stream

    def _bucket(self, size: int) -> _Bucket:
        bucket = self._buckets.get(size)
        if bucket is None:
            try:
                interpreter = self._interpreter_cls(model_content=self._content, num_threads=1)
                bucket = _Bucket(interpreter, size, self._manifest, self._widths)
            except (ValueError, RuntimeError, KeyError) as e:
                raise BundleError(f"{self.file}: cannot open the batched step model at batch {size} ({e})") from None
            self._buckets[size] = bucket
        return bucket

    def step(self, x: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        rows = len(x)
        if not 0 < rows <= self.max_batch:
            raise ValueError(f"batch of {rows} rows; this step takes 1..{self.max_batch}")
        bucket = self._bucket(bucket_size(rows))
        interp, binding = bucket.interpreter, bucket.binding
        interp.set_tensor(binding.x, _padded(x, bucket.size))
        for name, in_index, _ in binding.state:
            interp.set_tensor(in_index, _padded(state[name], bucket.size))
        interp.invoke()
        y = interp.get_tensor(binding.y)[:rows]  # (B, O)
        return y, {name: interp.get_tensor(out_index)[:rows] for name, _, out_index in binding.state}


def _padded(rows: np.ndarray, size: int) -> np.ndarray:
    """(B, n) -> (size, n) float32, zero rows appended."""
    rows = np.asarray(rows, np.float32)
    if len(rows) == size:
        return np.ascontiguousarray(rows)
    out = np.zeros((size, rows.shape[1]), np.float32)
    out[:len(rows)] = rows
    return out
