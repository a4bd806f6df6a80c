"""Many streams' steps in one interpreter call: the bundle's batched companion, or the resized step model.

Two sources of a batched step graph, both run row by row (row b of a batch
equals a (1, n) step on row b, bit for bit; tests/test_pool_rows.py):
- the float variants' companion model (convert/ writes it with a dynamic
  batch dimension and records file, sha256 and bytes in the variant's entry);
- an integer-I/O core graph's (int8-io) own step model, its (1, n) inputs
  resized to (B, n) at open time: every op of a core graph is row-wise and
  TFLite propagates the batch dimension through it under tflite-runtime 2.14
  and ai-edge-litert 2.3. The file is the variant's own, already verified.
  Core graphs with float32 at the signature (int8, int16x8) quantize inside
  the graph, and ai-edge-litert's QUANTIZE kernel rounded a tie differently
  for a (32, n) tensor than for a (1, n) one (1 output in 9,600 off by one
  ulp, int16x8): they keep one call per stream.
A TFLite interpreter is resized and re-allocated to one batch size at a time,
which costs far more than a step, so one interpreter per size bucket (2, 4,
8, ... max_batch) is opened lazily and a batch is padded up to its bucket
with zero rows. Every op works row by row, so padding rows never touch the
real ones.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.backends import allocate, interpreter_class
from edge_runtime.binding import StepBinding, indices, signature_details
from edge_runtime.manifest import (BundleError, batched_companion, batched_resident_companion, verified_file_bytes,
                                   verified_model_bytes)
from edge_runtime.model import Model
from edge_runtime.resident import ResidentStep, ResidentUnavailable, verified_companion


def bucket_size(rows: int) -> int:
    """The smallest power of two >= rows (at least 2: a single row goes through the (1, n) model)."""
    size = 2
    while size < rows:
        size *= 2
    return size


def batched_source(model: Model) -> str | None:
    """How this variant batches: "companion", "resized" (a core graph's own step model), or None."""
    if batched_companion(model.manifest, model.variant) is not None and not model.integer_io:
        return "companion"
    if model.binding.holds_ring:
        return None  # a Transformer core: its ring is held outside, per stream (StreamPool steps it by Session)
    if model.binding.core and all(c.integer for c in model.codecs.values()):
        return "resized"  # integer tensors only at the signature: every kernel is integer, exact at any batch
    return None


class _Bucket:
    """One interpreter allocated for exactly `size` rows, its step binding (tensor indices by name) and
    one zeroed input buffer per input tensor, (size, n) of the tensor's dtype, for padded batches."""

    def __init__(self, interpreter, size: int, model: Model):
        self.size = size
        m = model.manifest
        inputs, outputs = signature_details(interpreter)
        self.binding = StepBinding(m, indices(inputs), indices(outputs), model.variant)
        self.buffers = {}  # input tensor index -> (size, n) zeros of its dtype
        for detail in inputs.values():
            index, width = int(detail["index"]), int(detail["shape"][-1])
            interpreter.resize_tensor_input(index, [size, width], strict=False)
            self.buffers[index] = np.zeros((size, width), detail["dtype"])
        allocate(interpreter)
        self.interpreter = interpreter

    def put(self, index: int, rows: np.ndarray) -> None:
        """Set input `index` to these (B, n) rows, padded with zero rows up to the bucket."""
        if len(rows) == self.size:
            self.interpreter.set_tensor(index, np.ascontiguousarray(rows))
            return
        buffer = self.buffers[index]
        buffer[:len(rows)] = rows
        buffer[len(rows):] = 0
        self.interpreter.set_tensor(index, buffer)


class BatchedStep:
    """step(x (B, C), state {name: (B, n)}) -> (y (B, O), new state {name: (B, n)}), B <= max_batch.

    step() is the companion's float interface (raw graphs); StreamPool drives core graphs through
    bucket() and the bucket's binding directly, with the model's codecs.
    """

    def __init__(self, model: Model, max_batch: int = 256):
        m = model.manifest
        self.source = batched_source(model)
        if self.source is None:
            if model.integer_io:
                raise BundleError(f"{m.path}: variant {model.variant.name!r} has integer I/O and a raw graph; "
                                  "batched steps take a float companion or an integer-I/O core graph")
            raise BundleError(f"{m.path}: variant {model.variant.name!r} has no batched step model")
        if self.source == "companion":
            entry = batched_companion(m, model.variant)
            self._content = verified_file_bytes(m, entry["file"], entry["bytes"], entry["sha256"])
            self.file = entry["file"]
        else:
            self._content = verified_model_bytes(m, model.variant)
            self.file = model.variant.file
        self.max_batch = max_batch
        self._interpreter_cls = interpreter_class(model.backend)[1]
        self._model = model
        self._buckets: dict[int, _Bucket] = {}
        self.bucket(2)  # open one now: a bundle whose batched model cannot open fails at start, not mid-stream

    def bucket(self, size: int) -> _Bucket:
        bucket = self._buckets.get(size)
        if bucket is None:
            try:
                interpreter = self._interpreter_cls(model_content=self._content, num_threads=1)
                bucket = _Bucket(interpreter, size, self._model)
            except (ValueError, RuntimeError, KeyError) as e:
                raise BundleError(f"{self.file}: cannot open the batched step model at batch {size} ({e})") from None
            self._buckets[size] = bucket
        return bucket

    def step(self, x: np.ndarray, state: dict[str, np.ndarray]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if self.source != "companion":
            raise ValueError(f"{self.file}: a core graph steps through StreamPool (features in, correction out)")
        rows = len(x)
        if not 0 < rows <= self.max_batch:
            raise ValueError(f"batch of {rows} rows; this step takes 1..{self.max_batch}")
        bucket = self.bucket(bucket_size(rows))
        interp, binding = bucket.interpreter, bucket.binding
        bucket.put(binding.x, np.asarray(x, np.float32))
        for name, in_index, _ in binding.state:
            bucket.put(in_index, np.asarray(state[name], np.float32))
        interp.invoke()
        y = interp.get_tensor(binding.y)[:rows]  # (B, O)
        return y, {name: interp.get_tensor(out_index)[:rows] for name, _, out_index in binding.state}


class ResidentBlocks:
    """Interpreters of a variant's batched resident companion, each holding `rows` streams' state (one per
    row) in its variables: StreamPool's steady state steps a fixed block of streams without feeding the
    state in and out (issue 19). Block k's interpreter is opened when first needed and kept."""

    def __init__(self, model: Model, content: bytes, entry: dict):
        self.rows, self.file = int(entry["rows"]), entry["file"]
        self._open = lambda: ResidentStep(model.interpreter_cls, content, model.manifest, 1, self.file, self.rows)
        self._engines: list[ResidentStep] = []
        self.block(0)  # one now: a companion that cannot open shows at start (and falls back), not mid-stream

    @classmethod
    def open(cls, model: Model, max_streams: int) -> "ResidentBlocks | str":
        """The blocks, or why the pool feeds the state in and out instead (no companion, an integer variant,
        fewer streams than a block, a runtime that refuses it). A companion whose size or sha256 is not the
        manifest's: BundleError."""
        entry = batched_resident_companion(model.manifest, model.variant)
        if entry is not None and entry["rows"] > max_streams:
            return f"max_streams {max_streams} < a block of {entry['rows']} streams"
        content = verified_companion(model, entry, "batched resident step model")
        if isinstance(content, str):
            return content
        try:
            return cls(model, content, entry)
        except ResidentUnavailable as e:
            return str(e)

    def block(self, k: int) -> ResidentStep:
        """Block k's interpreter (rows k*rows .. of whatever slice the pool holds), opened on first use."""
        while len(self._engines) <= k:
            self._engines.append(self._open())
        return self._engines[k]

    @staticmethod
    def step(engine: ResidentStep, x: np.ndarray) -> np.ndarray:
        """x (rows, C) float32, C-contiguous -> y (rows, O); the state stays in the engine."""
        sub = engine.subgraph["step"]
        engine.wrapper.SetTensor(engine.x, x, sub)
        engine.wrapper.Invoke(sub)
        return engine.wrapper.GetTensor(engine.y, sub)
