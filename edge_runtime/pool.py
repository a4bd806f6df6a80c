"""Many sensor streams on one model: per-stream state as rows of preallocated arrays, stepped together.

A `StreamPool` keeps every stream's state as one row of a preallocated array
per state tensor, (max_streams, n), so memory is fixed at start and a
snapshot is a slice. A stream id maps to its row once (`add`, `rows_of`);
the hot path is `step_rows(rows (B,), x (B, C)) -> y (B, O)`: gather the rows
(a slice when they are contiguous and in order, fancy indexing otherwise),
one interpreter call through the batched model (the float variants'
companion, or a core graph's own step model resized; edge_runtime/batched.py),
scatter the new state back. No per-stream Python object is touched.
`step_many({id: sample})` is the dict API on top of it (the edge service's).

    pool = StreamPool(edge_runtime.load("artifacts/temperature-lstm"), max_streams=256)
    rows = pool.rows_of(["s1", "s2"], add=True)                   # (B,) once, outside the loop
    y = pool.step_rows(rows, [[20.1, 3.0], [19.8, 2.9]])          # (B, O) raw units
    forecasts = pool.step_many({"s1": [20.2, 3.0]})               # {id: (O,) raw units}
    pool.reset("s1")

Every step equals one Session per stream bit for bit (outputs and every state
tensor), batched or not: the integer variants' state goes through the same
Codec encode/decode as Session's. Non-finite samples are not refused here,
as in Session (the service refuses them when it parses a line): the stream's
state becomes non-finite, no other row is touched.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.batched import BatchedStep, batched_source, bucket_size
from edge_runtime.binding import CORE_OUTPUT
from edge_runtime.manifest import BundleError
from edge_runtime.session import ForecastModel


class StreamLimitError(RuntimeError):
    """A new stream id would exceed the pool's max_streams."""


class StreamPool:
    def __init__(self, model: ForecastModel, max_streams: int = 256, batched: bool | None = None, max_batch: int = 256):
        """batched: True requires a batched model, False never uses one, None uses one when the variant has it."""
        if max_streams < 1 or max_batch < 1:
            raise ValueError("max_streams and max_batch must be positive")
        self.model = model
        m = model.manifest
        source = batched_source(model)
        if batched and source is None:
            raise BundleError(f"{m.path}: variant {model.variant.name!r} has no batched step model "
                              "(convert writes one for the float variants; core graphs resize their own); "
                              "set batched = false")
        self.batched = BatchedStep(model, max_batch) if source is not None and batched is not False else None
        self.max_streams, self.max_batch = max_streams, max_batch
        self._rows: dict[str, int] = {}
        self._free = list(range(max_streams - 1, -1, -1))  # pop() hands out row 0 first
        self.state = {s.name: np.zeros((max_streams, s.shape[1]), np.float32) for s in m.state}  # (S, n) each
        self.steps = np.zeros(max_streams, np.int64)  # (S,) samples since the stream's last reset
        self.live = np.zeros(max_streams, bool)  # (S,) rows that hold a stream
        self._order = np.arange(max_streams)  # (S,) for the contiguity and duplicate checks
        self._mark = np.zeros(max_streams, np.int64)  # (S,) scratch for the duplicate check
        self._session = model.session()  # the engine for per-stream steps
        self._binding = model.binding  # the x_prev priming rule, the core features and forecast
        self._codecs = model.codecs
        self._core = model.binding.core
        self.channels = m.input.shape[1]
        self.outputs = m.output.shape[1]

    # -- streams --------------------------------------------------------------
    def ids(self) -> list[str]:
        return list(self._rows)

    def add(self, stream_id: str) -> int:
        """The stream's row, a fresh one (zero state) if the id is new."""
        row = self._rows.get(stream_id)
        if row is not None:
            return row
        if not self._free:
            raise StreamLimitError(f"stream {stream_id!r} would exceed the limit of {self.max_streams} streams")
        row = self._free.pop()
        self._rows[stream_id] = row
        self.live[row] = True
        self._zero(row)
        return row

    def remove(self, stream_id: str) -> None:
        row = self._rows.pop(stream_id)
        self.live[row] = False
        self._free.append(row)

    def reset(self, stream_id: str) -> None:
        """Zero the stream's state; its next sample primes x_prev, as after a cold start."""
        self._zero(self._rows[stream_id])

    def _zero(self, row: int) -> None:
        for array in self.state.values():
            array[row] = 0.0
        self.steps[row] = 0

    def rows_of(self, stream_ids: list[str], add: bool = False) -> np.ndarray:
        """(N,) rows of these streams in the state arrays (for step_rows, and snapshots:
        self.state[name][rows]). add: new ids get rows (StreamLimitError, and none added, if they do not fit)."""
        if add:
            new = {i for i in stream_ids if i not in self._rows}
            if len(new) > len(self._free):
                raise StreamLimitError(f"{len(new)} new streams, room for {len(self._free)} "
                                       f"(limit {self.max_streams})")
            return np.fromiter(map(self.add, stream_ids), np.int64, len(stream_ids))
        return np.fromiter(map(self._rows.__getitem__, stream_ids), np.int64, len(stream_ids))

    def steps_of(self, stream_id: str) -> int:
        return int(self.steps[self._rows[stream_id]])

    def set_state(self, stream_id: str, state: dict[str, np.ndarray], steps: int) -> None:
        self.add(stream_id)
        row = self._rows[stream_id]
        if set(state) != set(self.state):
            raise ValueError(f"state names {sorted(state)} do not match the model's {sorted(self.state)}")
        for name, value in state.items():
            value = np.asarray(value, np.float32).reshape(-1)
            if value.shape != self.state[name].shape[1:]:
                raise ValueError(f"state {name!r} has {self.state[name].shape[1]} values, got {value.size}")
            self.state[name][row] = value
        self.steps[row] = steps

    # -- stepping -------------------------------------------------------------
    def step_many(self, samples: dict[str, object]) -> dict[str, np.ndarray]:
        """{stream id: (C,) raw sample} -> {stream id: (O,) forecast of its next sample}.

        Unknown ids become new streams; if they would exceed max_streams nothing
        is stepped and StreamLimitError is raised.
        """
        ids = list(samples)
        if not ids:
            return {}
        rows = self.rows_of(ids, add=True)  # (B,)
        return dict(zip(ids, self.step_rows(rows, [samples[i] for i in ids])))

    def step_rows(self, rows, x) -> np.ndarray:
        """rows (B,) integer rows of live streams, each once; x (B, C) raw samples -> (B, O) float32
        forecasts, row k for the stream in rows[k]. Contiguous rows in order (rows_of of streams added
        together) take the fastest path: slices, no gather."""
        index = self._checked_rows(rows)
        count = len(rows)
        x = np.asarray(x, np.float64 if self._core else np.float32)  # a core graph reads x in float64
        if x.shape != (count, self.channels):
            raise ValueError(f"samples have shape {list(x.shape)}, expected ({count}, {self.channels}) "
                             f"for {count} rows")
        if count == 0:
            return np.zeros((0, self.outputs), np.float32)
        if self.batched is None or count == 1:
            if isinstance(index, slice):
                index = self._order[index]
            y = np.empty((count, self.outputs), np.float32)  # (B, O)
            for k in range(count):
                y[k] = self._step_one(int(index[k]), x[k])
            return y
        step = self._step_core if self._core else self._step_raw
        if count <= self.max_batch:
            return step(index, x)
        parts = []
        for start in range(0, count, self.max_batch):
            stop = min(start + self.max_batch, count)
            part = (slice(index.start + start, index.start + stop) if isinstance(index, slice)
                    else index[start:stop])
            parts.append(step(part, x[start:stop]))
        return np.concatenate(parts)

    def _checked_rows(self, rows) -> slice | np.ndarray:
        """rows as a slice when contiguous and in order, else as an array; one-line ValueError if bad."""
        rows = np.asarray(rows)
        if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
            raise ValueError(f"rows must be a 1-D array of integers, got shape {list(rows.shape)} of {rows.dtype}")
        count = len(rows)
        if count == 0:
            return rows
        first, last = int(rows[0]), int(rows[-1])
        if last - first == count - 1 and 0 <= first and last < self.max_streams and \
                (rows == self._order[first:last + 1]).all():
            index = slice(first, last + 1)
        else:
            low, high = int(rows.min()), int(rows.max())
            if low < 0 or high >= self.max_streams:
                raise ValueError(f"row {low if low < 0 else high} is outside the pool (rows 0..{self.max_streams - 1})")
            positions = self._order[:count]
            self._mark[rows] = positions
            repeated = self._mark[rows] != positions  # a row given twice: its first position was overwritten
            if repeated.any():
                raise ValueError(f"row {int(rows[repeated.argmax()])} appears more than once; a stream steps "
                                 "once per call")
            index = rows
        live = self.live[index]
        if not live.all():
            raise ValueError(f"row {int(np.asarray(rows)[live.argmin()])} holds no stream (add it first)")
        return index

    def _step_one(self, row: int, sample) -> np.ndarray:
        session = self._session
        session.state = {name: array[row:row + 1].copy() for name, array in self.state.items()}  # (1, n)
        session.steps = int(self.steps[row])
        y = session.step(sample)  # (O,)
        for name, array in self.state.items():
            array[row] = session.state[name][0]
        self.steps[row] = session.steps
        return y

    def _step_raw(self, index, x: np.ndarray) -> np.ndarray:
        """One call of the float companion for B <= max_batch rows: x (B, C) float32 -> (B, O)."""
        count = len(x)
        bucket = self.batched.bucket(bucket_size(count))
        interp, binding = bucket.interpreter, bucket.binding
        bucket.put(binding.x, x)
        for name, in_index, _ in binding.state:
            rows = self.state[name][index]  # (B, n): a view for a slice, a copy otherwise
            if name == "x_prev" and self._binding.primes_x_prev:
                fresh = self.steps[index] == 0  # (B,)
                if fresh.any():
                    rows = rows.copy()
                    rows[fresh] = self._binding.x_prev_from(x[fresh])  # a fresh stream's change reads 0
            bucket.put(in_index, rows)
        interp.invoke()
        for name, _, out_index in binding.state:
            self.state[name][index] = interp.get_tensor(out_index)[:count]
        self.steps[index] += 1
        return interp.get_tensor(binding.y)[:count]  # (B, O)

    def _step_core(self, index, x: np.ndarray) -> np.ndarray:
        """One call of a core graph for B <= max_batch rows: x (B, C) float64 -> (B, O), as Session._step_core."""
        count, model_binding, codecs = len(x), self._binding, self._codecs
        bucket = self.batched.bucket(bucket_size(count))
        interp, binding = bucket.interpreter, bucket.binding
        holds = model_binding.holds_x_prev
        fresh = self.steps[index] == 0 if holds else np.ones(count, bool)  # (B,)
        held = self.state["x_prev"][index] if holds else x  # (B, C), read only where not fresh
        features, x_prev = model_binding.core_rows(x, held, fresh)  # {name: (B, C)}, (B, C)
        for name, in_index in binding.features:
            bucket.put(in_index, codecs[name].encode(features[name]))
        for name, in_index, _ in binding.state:
            bucket.put(in_index, codecs[name].encode(self.state[name][index]))
        interp.invoke()
        for name, _, out_index in binding.state:
            self.state[name][index] = codecs[f"{name}:out"].decode(interp.get_tensor(out_index)[:count])
        if holds:
            self.state["x_prev"][index] = x_prev
        self.steps[index] += 1
        correction = codecs[f"{CORE_OUTPUT}:out"].decode(interp.get_tensor(binding.y)[:count])  # (B, O)
        return model_binding.forecast_from(x, correction)
