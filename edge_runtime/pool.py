"""Many sensor streams on one model: per-stream state, advanced together when they can be.

A `StreamPool` keeps every stream's state as one row of a preallocated
array per state tensor (max_streams, n), so memory is fixed at start and
snapshots are a slice. `step_many({id: sample})` advances several streams:
in one interpreter call through the bundle's batched companion model when
the variant has one, otherwise one (1, n) step per stream through a Session.

    pool = StreamPool(edge_runtime.load("artifacts/temperature-lstm"), max_streams=256)
    forecasts = pool.step_many({"s1": [20.1, 3.0], "s2": [19.8, 2.9]})   # {id: (O,) raw units}
    pool.reset("s1")
"""
from __future__ import annotations

import numpy as np

from edge_runtime.batched import BatchedStep
from edge_runtime.manifest import BundleError, batched_companion
from edge_runtime.session import ForecastModel


class StreamLimitError(RuntimeError):
    """A new stream id would exceed the pool's max_streams."""


class StreamPool:
    def __init__(self, model: ForecastModel, max_streams: int = 256, batched: bool | None = None, max_batch: int = 256):
        """batched: True requires the companion model, False never uses it, None uses it when present."""
        if max_streams < 1 or max_batch < 1:
            raise ValueError("max_streams and max_batch must be positive")
        self.model = model
        m = model.manifest
        has_companion = batched_companion(m, model.variant) is not None and not model.integer_io
        if batched and not has_companion:
            raise BundleError(f"{m.path}: variant {model.variant.name!r} has no batched step model "
                              "(convert writes one for the float variants); set batched = false")
        self.batched = BatchedStep(model, max_batch) if has_companion and batched is not False else None
        self.max_streams, self.max_batch = max_streams, max_batch
        self._rows: dict[str, int] = {}
        self._free = list(range(max_streams - 1, -1, -1))  # pop() hands out row 0 first
        self.state = {s.name: np.zeros((max_streams, s.shape[1]), np.float32) for s in m.state}  # (S, n) each
        self.steps = np.zeros(max_streams, np.int64)  # (S,) samples since the stream's last reset
        self._session = model.session()  # the engine for per-stream steps
        self._binding = model.binding  # the x_prev priming rule
        self.channels = m.input.shape[1]

    # -- streams --------------------------------------------------------------
    def ids(self) -> list[str]:
        return list(self._rows)

    def add(self, stream_id: str) -> None:
        if stream_id in self._rows:
            return
        if not self._free:
            raise StreamLimitError(f"stream {stream_id!r} would exceed the limit of {self.max_streams} streams")
        row = self._free.pop()
        self._rows[stream_id] = row
        self._zero(row)

    def remove(self, stream_id: str) -> None:
        self._free.append(self._rows.pop(stream_id))

    def reset(self, stream_id: str) -> None:
        """Zero the stream's state; its next sample primes x_prev, as after a cold start."""
        self._zero(self._rows[stream_id])

    def _zero(self, row: int) -> None:
        for array in self.state.values():
            array[row] = 0.0
        self.steps[row] = 0

    def rows_of(self, stream_ids: list[str]) -> np.ndarray:
        """(N,) rows of these streams in the state arrays (for snapshots: self.state[name][rows])."""
        return np.asarray([self._rows[i] for i in stream_ids], np.int64)

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
        new = [i for i in samples if i not in self._rows]
        if len(new) > len(self._free):
            raise StreamLimitError(f"{len(new)} new streams, room for {len(self._free)} "
                                   f"(limit {self.max_streams})")
        for stream_id in new:
            self.add(stream_id)
        ids = list(samples)
        if self.batched is None or len(ids) == 1:
            return {i: self._step_one(self._rows[i], samples[i]) for i in ids}
        out = {}
        for start in range(0, len(ids), self.max_batch):
            chunk = ids[start:start + self.max_batch]
            out.update(zip(chunk, self._step_batch([self._rows[i] for i in chunk], [samples[i] for i in chunk])))
        return out

    def _step_one(self, row: int, sample) -> np.ndarray:
        session = self._session
        session.state = {name: array[row:row + 1].copy() for name, array in self.state.items()}  # (1, n)
        session.steps = int(self.steps[row])
        y = session.step(sample)  # (O,)
        for name, array in self.state.items():
            array[row] = session.state[name][0]
        self.steps[row] = session.steps
        return y

    def _step_batch(self, rows: list[int], batch) -> list[np.ndarray]:
        x = np.asarray(batch, np.float32)  # (B, C)
        if x.ndim != 2 or x.shape[1] != self.channels:
            raise ValueError(f"samples have shape {list(x.shape)}, expected (B, {self.channels})")
        index = np.asarray(rows)  # (B,)
        state = {name: array[index] for name, array in self.state.items()}  # (B, n) each
        fresh = self.steps[index] == 0
        if self._binding.primes_x_prev and fresh.any():
            state["x_prev"][fresh] = self._binding.x_prev_from(x[fresh])  # a fresh stream's change reads 0
        y, new_state = self.batched.step(x, state)
        for name, array in self.state.items():
            array[index] = new_state[name]
        self.steps[index] += 1
        return list(y)  # B rows of (O,)
