"""Many sensor streams on one model: per-stream state as rows of preallocated arrays, stepped together.

A `StreamPool` keeps every stream's state as one row of a preallocated array
per state tensor, (max_streams, n), so memory is fixed at start and a
snapshot is a slice. A stream id maps to its row once (`add`, `rows_of`);
the hot path is `step_rows(rows (B,), x (B, C)) -> y (B, O)`: gather the rows
(a slice when they are contiguous and in order, fancy indexing otherwise),
one interpreter call through the batched model (the float variants'
companion, or an int8-io core graph's own step model resized;
edge_runtime/batched.py), scatter the new state back, or, when the same
slice of rows steps again, feed it straight back (see _step_raw). When the
variant has a batched resident companion and that slice is a multiple of its
64 rows (a gateway's fixed set of streams), the steady state steps inside it
instead, one interpreter per 64-row block, the state kept in its variables
and read out only when asked (state, snapshots, set_state, reset, remove, a
different row set; see _hold). No per-stream Python object is touched.
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

from edge_runtime.batched import BatchedStep, ResidentBlocks, batched_source, bucket_size
from edge_runtime.binding import CORE_OUTPUT
from edge_runtime.manifest import BundleError
from edge_runtime.session import ForecastModel


_INT64, _FLOAT32 = np.dtype(np.int64), np.dtype(np.float32)  # builtin dtypes are singletons: `is` compares them


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
                              "(convert writes one for the float variants; integer-I/O core graphs resize "
                              "their own); set batched = false")
        self.batched = BatchedStep(model, max_batch) if source is not None and batched is not False else None
        self.max_streams, self.max_batch = max_streams, max_batch
        # the steady state's blocks (state in variables), or why the pool feeds the state in and out instead
        blocks = (ResidentBlocks.open(model, max_streams) if self.batched is not None
                  and self.batched.source == "companion" else "no float batched step model")
        self._blocks, self.resident_why_not = (None, blocks) if isinstance(blocks, str) else (blocks, None)
        self._held: slice | None = None  # rows whose state lives in the blocks now (block k: the k-th `rows` of them)
        self._held_calls = 0  # steps since it went in, not yet in self._steps
        self._held_engines: list[tuple] = []  # per block: (SetTensor, Invoke, GetTensor, subgraph, x index, y index)
        self._held_key: tuple | None = None  # (the held rows as int64 bytes, x's shape (B, C)): step_rows' fast check
        self._rows: dict[str, int] = {}
        self._free = list(range(max_streams - 1, -1, -1))  # pop() hands out row 0 first
        self._state = {s.name: np.zeros((max_streams, s.shape[1]), np.float32) for s in m.state}  # (S, n) each
        self._steps = np.zeros(max_streams, np.int64)  # (S,) samples since the stream's last reset
        # the last call's new state, not yet written to its rows: (slice, [(B, n) per plan entry], calls);
        # the next call on the same rows feeds it straight back (see step_rows); anything else writes it
        self._pending: tuple | None = None  # (slice, outputs, a core graph's new x_prev or None, calls)
        # (S,) flags over bytearrays, so a contiguous range is checked with bytearray.find (no numpy call)
        self._live_bytes, self._fresh_bytes = bytearray(max_streams), bytearray(max_streams)
        self.live = np.frombuffer(self._live_bytes, bool)  # rows that hold a stream
        self._fresh = np.frombuffer(self._fresh_bytes, bool)  # live rows with steps == 0 (prime x_prev)
        self._order = np.arange(max_streams, dtype=np.int64)  # (S,) for the contiguity and duplicate checks
        self._order_bytes = self._order.tobytes()
        self._mark = np.zeros(max_streams, np.int64)  # (S,) scratch for the duplicate check
        self._routes: dict[int, tuple] = {}  # batch rows -> (bucket, plan), see _route
        # the per-row engine, explicit state: the rows carry it (a resident session would write it in and read it
        # out around every step)
        self._session = model.session(resident=False)
        self._binding = model.binding  # the x_prev priming rule, the core features and forecast
        self._codecs = model.codecs
        self._core = model.binding.core
        self.channels = m.input.shape[1]
        self.outputs = m.output.shape[1]

    # -- state ----------------------------------------------------------------
    @property
    def state(self) -> dict[str, np.ndarray]:
        """name -> (max_streams, n) float32, a row per stream (normalized units, as Session's state).
        Current when read: take it after stepping, not a reference kept from before."""
        self._flush()
        return self._state

    @property
    def sample_dtype(self) -> type:
        """The dtype step_rows reads x in: float64 for an integer core graph, float32 otherwise (hand x over in
        it and no copy is made; float32 x also takes the steady-state path)."""
        return np.float64 if self._core else np.float32

    @property
    def steps(self) -> np.ndarray:
        """(max_streams,) int64 samples since each row's stream was last reset (current when read; reading
        it leaves the state where it is)."""
        pending = self._pending
        if pending is not None and pending[3]:
            self._steps[pending[0]] += pending[3]
            self._pending = (*pending[:3], 0)
        if self._held is not None and self._held_calls:
            self._steps[self._held] += self._held_calls
            self._held_calls = 0
        return self._steps

    def _flush(self) -> None:
        """Write the last call's new state and step counts to their rows (reading it out of the blocks)."""
        held = self._held
        if held is not None:
            self._held = self._held_key = None
            rows = self._blocks.rows
            for k in range(len(self._held_engines)):
                part = slice(held.start + k * rows, held.start + (k + 1) * rows)
                for name, value in self._blocks.block(k).read().items():
                    self._state[name][part] = value
            self._steps[held] += self._held_calls
        pending = self._pending
        if pending is not None:
            self._pending = None
            index, outputs, x_prev, calls = pending
            bucket, plan = self._route(index.stop - index.start)
            if self._core:  # integer outputs: decoded through the table Codec.decode filled
                for (array, _, _, _, decoded, offsets), q in zip(plan, outputs):
                    array[index] = decoded.take(q.view(np.uint8) + offsets)
                if x_prev is not None:
                    self._state["x_prev"][index] = x_prev
            else:
                for (array, _, _, _), value in zip(plan, outputs):
                    array[index] = value
            self._steps[index] += calls

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
        self._flush()
        self._rows[stream_id] = row
        self.live[row] = True
        self._zero(row)
        return row

    def remove(self, stream_id: str) -> None:
        self._flush()
        row = self._rows.pop(stream_id)
        self.live[row] = self._fresh[row] = False
        self._free.append(row)

    def reset(self, stream_id: str) -> None:
        """Zero the stream's state; its next sample primes x_prev, as after a cold start."""
        self._zero(self._rows[stream_id])

    def _zero(self, row: int) -> None:
        self._flush()
        for array in self._state.values():
            array[row] = 0.0
        self.steps[row] = 0
        self._fresh[row] = True

    def rows_of(self, stream_ids: list[str], add: bool = False) -> np.ndarray:
        """(N,) int64 rows of these streams in the state arrays (for step_rows, and snapshots:
        self.state[name][rows]). add: new ids get rows (StreamLimitError, and none added, if they do not fit)."""
        if add:
            new = {i for i in stream_ids if i not in self._rows}
            if len(new) > len(self._free):
                raise StreamLimitError(f"{len(new)} new streams, room for {len(self._free)} "
                                       f"(limit {self.max_streams})")
            return np.fromiter(map(self.add, stream_ids), np.int64, len(stream_ids))
        return np.fromiter(map(self._rows.__getitem__, stream_ids), np.int64, len(stream_ids))

    def steps_of(self, stream_id: str) -> int:  # leaves the state in the blocks (see steps)
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
        self._steps[row] = steps
        self._fresh[row] = steps == 0

    # -- stepping -------------------------------------------------------------
    def step_many(self, samples: dict[str, object]) -> dict[str, np.ndarray]:
        """{stream id: (C,) raw sample} -> {stream id: (O,) forecast of its next sample}.

        Unknown ids become new streams; if they would exceed max_streams nothing
        is stepped and StreamLimitError is raised.
        """
        ids = list(samples)
        if not ids:
            return {}
        try:
            rows = np.fromiter(map(self._rows.__getitem__, ids), np.int64, len(ids))  # (B,) known ids
        except KeyError:
            rows = self.rows_of(ids, add=True)  # new ids get rows, all or none
        # rows from the pool's own map: in range, live, once each (the ids are a dict's keys)
        count = len(ids)
        first = int(rows[0])
        index = (slice(first, first + count) if rows.tobytes() == self._order_bytes[8 * first:8 * (first + count)]
                 else rows)
        return dict(zip(ids, self._step_index(index, count, [samples[i] for i in ids])))

    def step_rows(self, rows, x) -> np.ndarray:
        """rows (B,) integer rows of live streams, each once (or a slice of rows); x (B, C) raw samples
        -> (B, O) float32 forecasts, row k for the stream in rows[k]. Rows in order and contiguous
        (rows_of of streams added together, or a slice) take the fastest path: slices, no gather."""
        key = self._held_key
        # the steady state, checked in a few attribute reads: the same (B,) int64 rows as the held slice (all
        # live, none fresh: whatever would change that reads the state out first), x (B, C) float32
        if key is not None and type(rows) is np.ndarray and type(x) is np.ndarray and rows.dtype is _INT64 \
                and x.dtype is _FLOAT32 and x.shape == key[1] and rows.ndim == 1 and rows.tobytes() == key[0]:
            return self._step_held(x)
        index, count = self._checked_rows(rows)
        return self._step_index(index, count, x)

    def _step_index(self, index: slice | np.ndarray, count: int, x) -> np.ndarray:
        """step_rows once the rows are checked (index: a slice, or (B,) distinct live rows)."""
        x = np.ascontiguousarray(x, np.float64 if self._core else np.float32)  # a core graph reads x in float64
        if x.shape != (count, self.channels):
            raise ValueError(f"samples have shape {list(x.shape)}, expected ({count}, {self.channels}) "
                             f"for {count} rows")
        if count == 0:
            return np.zeros((0, self.outputs), np.float32)
        if self._held is not None:
            if type(index) is slice and index == self._held:
                return self._step_held(x)
            self._flush()
        if self._blocks is not None and type(index) is slice and count % self._blocks.rows == 0:
            return self._hold(index, x)
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

    def _checked_rows(self, rows) -> tuple[slice | np.ndarray, int]:
        """(rows as a slice when contiguous and in order, else as an array; B); one-line ValueError if bad."""
        size = self.max_streams
        if isinstance(rows, slice):
            first, stop = rows.start or 0, rows.stop
            if rows.step not in (None, 1) or not isinstance(first, int) or not isinstance(stop, int) \
                    or not 0 <= first <= stop <= size:
                raise ValueError(f"rows {rows} is not a slice of rows 0..{size - 1} with step 1")
            index, count = slice(first, stop), stop - first
        else:
            rows = np.asarray(rows)
            if rows.ndim != 1 or (rows.size and rows.dtype.kind not in "iu"):
                raise ValueError(f"rows must be a 1-D array of integers, got shape {list(rows.shape)} of {rows.dtype}")
            count = len(rows)
            if count == 0:
                return rows, 0
            first = int(rows[0])
            if rows.dtype == np.int64 and 0 <= first <= size - count and \
                    rows.tobytes() == self._order_bytes[8 * first:8 * (first + count)]:
                index = slice(first, first + count)
            else:
                low, high = int(rows.min()), int(rows.max())
                if low < 0 or high >= size:
                    raise ValueError(f"row {low if low < 0 else high} is outside the pool (rows 0..{size - 1})")
                positions = self._order[:count]
                self._mark[rows] = positions
                repeated = self._mark[rows] != positions  # a row given twice: its first position was overwritten
                if repeated.any():
                    raise ValueError(f"row {int(rows[repeated.argmax()])} appears more than once; a stream steps "
                                     "once per call")
                live = self.live[rows]
                if not live.all():
                    raise ValueError(f"row {int(rows[live.argmin()])} holds no stream (add it first)")
                return rows, count
        dead = self._live_bytes.find(0, index.start, index.stop)
        if dead >= 0:
            raise ValueError(f"row {dead} holds no stream (add it first)")
        return index, count

    def _fresh_rows(self, index) -> np.ndarray | None:
        """(B,) bool: rows whose next sample primes x_prev, or None when there are none."""
        if isinstance(index, slice):
            return self._fresh[index].copy() if self._fresh_bytes.find(1, index.start, index.stop) >= 0 else None
        fresh = self._fresh[index]
        return fresh if fresh.any() else None

    def _route(self, count: int) -> tuple:
        """(bucket, plan) for a batch of `count` rows: plan is [(state array (S, n), input index, output
        index, primes x_prev)] of the tensors the model carries."""
        route = self._routes.get(count)
        if route is None:
            bucket = self.batched.bucket(bucket_size(count))
            if self._core:
                plan = [(self._state[name], i, o, *self._requantization(name)) for name, i, o in bucket.binding.state]
            else:
                plan = [(self._state[name], i, o, name == "x_prev" and self._binding.primes_x_prev)
                        for name, i, o in bucket.binding.state]
            route = self._routes[count] = (bucket, plan)
        return route

    def _requantization(self, name: str) -> tuple:
        """For a state tensor with one-byte integers in and out: (requantized, decoded, offsets), flat
        tables by column * 256 + the output byte, filled by the model's own Codecs: requantized[q] =
        encode(decode(q)) (what the next step's input gets from output q), decoded[q] = decode(q) (the
        named state). Both are element by element, so a table lookup is the Codec's result, bit for bit.
        (None, None, None) for wider integers (an int16 table would take 128 KB a column)."""
        encode, decode = self._codecs[name], self._codecs[f"{name}:out"]
        if not (encode.integer and decode.integer and encode.dtype.itemsize == decode.dtype.itemsize == 1):
            return None, None, None
        width = self._state[name].shape[1]
        grid = np.repeat(np.arange(256, dtype=np.uint8).view(decode.dtype)[:, None], width, axis=1)  # (256, n)
        decoded = decode.decode(grid)  # (256, n) float32
        requantized = encode.encode(decoded)  # (256, n) input dtype
        return (np.ascontiguousarray(requantized.T).reshape(-1), np.ascontiguousarray(decoded.T).reshape(-1),
                np.arange(width, dtype=np.intp) * 256)

    def _step_one(self, row: int, sample) -> np.ndarray:
        session = self._session
        session.state = {name: array[row:row + 1].copy() for name, array in self.state.items()}  # (1, n)
        session.steps = int(self.steps[row])
        y = session.step(sample)  # (O,)
        for name, array in self.state.items():
            array[row] = session.state[name][0]
        self.steps[row] = session.steps
        self._fresh[row] = session.steps == 0
        return y

    def _step_raw(self, index, x: np.ndarray) -> np.ndarray:
        """One call of the float companion for B <= max_batch rows: x (B, C) float32 -> (B, O).

        Rows that fill their bucket and come as a slice (streams added together, stepping together: a
        gateway's steady state) keep their new state as the arrays the interpreter handed out, and the
        next call on the same rows feeds them straight back: no scatter, no gather, as a hand-written
        loop would. Any other call, and every read of state or steps, writes them to their rows first."""
        count = len(x)
        bucket, plan = self._route(count)
        interp, binding = bucket.interpreter, bucket.binding
        get = interp.get_tensor
        exact = count == bucket.size
        pending = self._pending
        if pending is not None:
            if exact and isinstance(index, slice) and pending[0] == index:  # the same rows again: none of them is fresh
                put = interp.set_tensor
                put(binding.x, x)
                for (_, in_index, _, _), value in zip(plan, pending[1]):
                    put(in_index, value)
                interp.invoke()
                self._pending = (index, [get(out_index) for _, _, out_index, _ in plan], None, pending[3] + 1)
                return get(binding.y)  # (B, O)
            self._flush()
        put = interp.set_tensor if exact else bucket.put  # a slice of rows, or a gathered copy, is contiguous
        fresh = self._fresh_rows(index)
        put(binding.x, x)
        for array, in_index, _, primes in plan:
            rows = array[index]  # (B, n): a view for a slice, a copy otherwise
            if primes and fresh is not None:
                rows = rows.copy()
                rows[fresh] = self._binding.x_prev_from(x[fresh])  # a fresh stream's change reads 0
            put(in_index, rows)
        interp.invoke()
        if fresh is not None:
            self._fresh[index] = False
        if exact and isinstance(index, slice):
            self._pending = (index, [get(out_index) for _, _, out_index, _ in plan], None, 1)
            return get(binding.y)  # (B, O)
        for array, _, out_index, _ in plan:
            array[index] = get(out_index)[:count]
        self._steps[index] += 1
        return get(binding.y)[:count]  # (B, O)

    def _hold(self, index: slice, x: np.ndarray) -> np.ndarray:
        """Write these rows' state into the blocks (block k: the k-th `rows` rows; a fresh stream's x_prev
        primed from its sample, as in _step_raw), step them there; they stay until _flush reads them out."""
        self._flush()
        rows, count = self._blocks.rows, index.stop - index.start
        fresh = self._fresh_rows(index)
        state = {}
        for name, array in self._state.items():
            state[name] = array[index]  # (B, n) view
            if fresh is not None and name == "x_prev" and self._binding.primes_x_prev:
                state[name] = state[name].copy()
                state[name][fresh] = self._binding.x_prev_from(x[fresh])
        self._held_engines = []
        for k in range(count // rows):
            engine = self._blocks.block(k)
            engine.write({name: value[k * rows:(k + 1) * rows] for name, value in state.items()})
            w = engine.wrapper
            self._held_engines.append((w.SetTensor, w.Invoke, w.GetTensor, engine.subgraph["step"], engine.x, engine.y))
        if fresh is not None:
            self._fresh[index] = False
        self._held, self._held_calls = index, 0
        self._held_key = (self._order_bytes[8 * index.start:8 * index.stop], (count, self.channels))
        return self._step_held(x)

    def _step_held(self, x: np.ndarray) -> np.ndarray:
        """The steady state: x (B, C) float32 -> (B, O), each block's x set, invoked, y read; nothing else."""
        self._held_calls += 1
        engines = self._held_engines
        if len(engines) == 1:
            put, run, get, sub, x_index, y_index = engines[0]
            put(x_index, x, sub)
            run(sub)
            return get(y_index, sub)  # (B, O), a fresh array
        rows = self._blocks.rows
        y = np.empty((len(x), self.outputs), np.float32)  # (B, O)
        for k, (put, run, get, sub, x_index, y_index) in enumerate(engines):
            put(x_index, x[k * rows:(k + 1) * rows], sub)
            run(sub)
            y[k * rows:(k + 1) * rows] = get(y_index, sub)
        return y

    def _step_core(self, index, x: np.ndarray) -> np.ndarray:
        """One call of a core graph for B <= max_batch rows: x (B, C) float64 -> (B, O), as Session._step_core.

        The steady state (the same slice of rows filling its bucket, call after call) keeps the integer
        outputs pending, as _step_raw does, and feeds the next call requantized[q] from the tables
        (_requantization) instead of decoding and encoding again; reads decode them through the tables."""
        count, model_binding, codecs = len(x), self._binding, self._codecs
        bucket, plan = self._route(count)
        interp, binding = bucket.interpreter, bucket.binding
        get = interp.get_tensor
        holds = model_binding.holds_x_prev
        exact = count == bucket.size
        tables = all(entry[3] is not None for entry in plan)
        pending = self._pending
        if pending is not None and exact and tables and isinstance(index, slice) and pending[0] == index:
            fresh = np.zeros(count, bool) if holds else np.ones(count, bool)  # the same rows again: none is fresh
            features, x_prev = model_binding.core_rows(x, pending[2] if holds else x, fresh)  # (B, C) each
            put = interp.set_tensor
            for name, in_index in binding.features:
                put(in_index, codecs[name].encode(features[name]))
            for (_, in_index, _, requantized, _, offsets), q in zip(plan, pending[1]):
                put(in_index, requantized.take(q.view(np.uint8) + offsets))
            interp.invoke()
            self._pending = (index, [get(out_index) for _, _, out_index, *_ in plan], x_prev if holds else None,
                             pending[3] + 1)
            correction = codecs[f"{CORE_OUTPUT}:out"].decode(get(binding.y))  # (B, O)
            return model_binding.forecast_from(x, correction)
        self._flush()
        state = self._state
        fresh = self._fresh_rows(index) if holds else None
        fresh = np.zeros(count, bool) if fresh is None else fresh  # (B,)
        if not holds:
            fresh[:] = True  # no x_prev: the change always reads 0, as Session
        held = state["x_prev"][index] if holds else x  # (B, C), read only where not fresh
        features, x_prev = model_binding.core_rows(x, held, fresh)  # {name: (B, C)}, (B, C)
        for name, in_index in binding.features:
            bucket.put(in_index, codecs[name].encode(features[name]))
        for name, in_index, _ in binding.state:
            bucket.put(in_index, codecs[name].encode(state[name][index]))
        interp.invoke()
        self._fresh[index] = False
        if exact and tables and isinstance(index, slice):
            self._pending = (index, [get(out_index) for _, _, out_index, *_ in plan], x_prev if holds else None, 1)
        else:
            for name, _, out_index in binding.state:
                state[name][index] = codecs[f"{name}:out"].decode(get(out_index)[:count])
            if holds:
                state["x_prev"][index] = x_prev
            self._steps[index] += 1
        correction = codecs[f"{CORE_OUTPUT}:out"].decode(get(binding.y)[:count])  # (B, O)
        return model_binding.forecast_from(x, correction)
