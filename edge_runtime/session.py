"""A forecast bundle run one step at a time with persistent, named state.

`ForecastModel` is a forecast bundle's `Model`: it knows the normalization
and opens one `Session` per sensor stream. Raw sensor units go in and come
out. A "raw" variant normalizes inside its graph; a "core" variant (the
integer ones, edge_runtime/binding.py) gets its change and level features
from here and its forecast is persistence plus its correction, added here in
float64; the session holds x_prev (normalized, float32) for it, and a
Transformer core's ring ages (edge_runtime/ring.py), so the named state reads,
snapshots and restores the same for every variant.

One stream, state inside the interpreter (issue 19): when the variant has a
resident companion (edge_runtime/resident.py) that this backend opens, each
`session()` gets an interpreter of its own with the state kept in it, and a
step is set x, invoke, get y. The named state is read and written only when
asked (`state`, `get_state`, `set_state`, `reset`, the first sample's x_prev),
and it is the same bits the explicit-state model computes.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.binding import CORE_OUTPUT
from edge_runtime.manifest import BundleError, resident_companion
from edge_runtime.model import Model
from edge_runtime.resident import ResidentStep, ResidentUnavailable, verified_companion
from edge_runtime.ring import AGE


class ForecastModel(Model):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        norm = self.manifest.normalization
        self.mean = np.asarray(norm["mean"], np.float32)  # (C,)
        self.std = np.asarray(norm["std"], np.float32)  # (C,)
        self._resident_content: bytes | None = None
        self._spare: ResidentStep | None = None  # opened at load (a companion that cannot open shows now)
        self.resident_why_not = self._open_resident()  # None: sessions keep their state inside the interpreter

    def _open_resident(self) -> str | None:
        """Verify and open the resident companion; why a session steps with explicit state otherwise."""
        entry = resident_companion(self.manifest, self.variant)
        content = verified_companion(self, entry, "resident step model")
        if isinstance(content, str):
            return content
        try:
            self._spare = ResidentStep(self.interpreter_cls, content, self.manifest, self.num_threads, entry["file"])
        except ResidentUnavailable as e:
            return str(e)
        self._resident_content = content
        return None

    @property
    def resident(self) -> bool:
        """Whether sessions of this model keep their state inside the interpreter."""
        return self._resident_content is not None

    def session(self, resident: bool | None = None) -> "Session":
        """One sensor stream. resident: None keeps the state inside the interpreter when the variant's
        resident companion opens here, True requires it, False feeds the state in and out every step."""
        if resident is False or (resident is None and not self.resident):
            return Session(self)
        return ResidentSession(self, self.open_resident())

    def open_resident(self) -> ResidentStep:
        """A new interpreter of the resident companion (its own state, at zero): one per stream."""
        if not self.resident:
            raise BundleError(f"{self.manifest.path}: no resident step model: {self.resident_why_not}")
        engine, self._spare = self._spare, None
        return engine or ResidentStep(self.interpreter_cls, self._resident_content, self.manifest, self.num_threads)


class Session:
    """One stream: raw sensor units in, raw units out, state carried between steps."""

    def __init__(self, model: Model):
        self.model = model
        interp = model.interpreter
        self._set, self._get, self._invoke = interp.set_tensor, interp.get_tensor, interp.invoke
        m, binding = model.manifest, model.binding
        self._binding = binding
        self._x_index, self._y_index = binding.x, binding.y
        self._state_io = binding.state  # (name, input tensor index, output tensor index), resolved once by name
        self._x = np.zeros(m.input.shape, np.float32)  # (1, C) raw input buffer
        self._codecs = model.codecs if model.integer_io or binding.core else None
        self.state: dict[str, np.ndarray] = {}
        self.steps = 0
        self.resident = False  # the state goes in and out with every step (ResidentSession: it stays inside)
        self.reset()

    def reset(self) -> None:
        """Zero state; the next sample primes x_prev (so its change reads as 0)."""
        self.state = {s.name: np.zeros(s.shape, np.float32) for s in self.model.manifest.state}
        self.steps = 0

    def step(self, x_raw) -> np.ndarray:
        """x_raw: (C,) one sample in sensor units -> (O,) forecast of the next sample, in sensor units.

        The model normalizes inside its graph; here only the state goes in and out.
        State is kept as float32 (normalized units) whatever the variant, so it
        reads, snapshots and restores the same way for every variant.
        """
        x = self._x  # (1, C)
        x[0] = x_raw  # converts to float32 and checks the channel count
        if self._binding.core:
            return self._step_core(x_raw)
        if self.steps == 0 and self._binding.primes_x_prev:
            self.state["x_prev"] = self._binding.x_prev_from(x)
        if self._codecs is not None:
            return self._step_integer_io(x)
        self._set(self._x_index, x)
        for name, in_index, _ in self._state_io:
            self._set(in_index, self.state[name])
        self._invoke()
        for name, _, out_index in self._state_io:
            self.state[name] = self._get(out_index)
        self.steps += 1
        return self._get(self._y_index)[0]

    def _step_integer_io(self, x: np.ndarray) -> np.ndarray:
        """The same step for a model with integer tensors at its signature."""
        codecs, m = self._codecs, self.model.manifest
        self._set(self._x_index, codecs[m.input.name].encode(x))
        for name, in_index, _ in self._state_io:
            self._set(in_index, codecs[name].encode(self.state[name]))
        self._invoke()
        for name, _, out_index in self._state_io:
            self.state[name] = codecs[f"{name}:out"].decode(self._get(out_index))
        self.steps += 1
        return codecs[f"{m.output.name}:out"].decode(self._get(self._y_index))[0]

    def _step_core(self, x_raw) -> np.ndarray:
        """The step for a core graph: features in, correction out, x_prev and persistence outside."""
        binding, codecs = self._binding, self._codecs
        held = self.state.get("x_prev") if binding.holds_x_prev and self.steps > 0 else None
        features, x_prev = binding.core_inputs(x_raw, held)  # each (1, C)
        for name, index in binding.features:
            self._set(index, codecs[name].encode(features[name]))
        if binding.holds_ring:  # a Transformer core: the ring's ages stay here, exact (edge_runtime/ring.py)
            ring, age = binding.ring_inputs(self.state[AGE])  # {name: (1, W)}, (1, W)
            for name, index in binding.ring:
                self._set(index, codecs[name].encode(ring[name]))
        for name, in_index, _ in self._state_io:
            self._set(in_index, codecs[name].encode(self.state[name]))
        self._invoke()
        for name, _, out_index in self._state_io:
            self.state[name] = codecs[f"{name}:out"].decode(self._get(out_index))
        if binding.holds_x_prev:
            self.state["x_prev"] = x_prev
        if binding.holds_ring:
            self.state[AGE] = age
        self.steps += 1
        return binding.forecast_from(x_raw, codecs[f"{CORE_OUTPUT}:out"].decode(self._get(self._y_index))[0])

    def get_state(self, name: str) -> np.ndarray:
        if name not in self.state:
            raise KeyError(f"no state tensor {name!r}; this model has {', '.join(self.state)}")
        return self.state[name].copy()

    def set_state(self, name: str, value) -> None:
        current = self.get_state(name)
        value = np.asarray(value, np.float32)
        if value.shape != current.shape:
            raise ValueError(f"state {name!r} has shape {list(current.shape)}, got {list(value.shape)}")
        self.state[name] = value.copy()
        self.steps = max(self.steps, 1)  # an explicitly set state is not a fresh start


class ResidentSession(Session):
    """One stream whose state lives in its own interpreter's variables: set x, invoke, get y per step.

    `state` reads it out only when asked; a read, a write, `set_state` and `reset`
    leave it held here, and the next step writes it in first (priming x_prev on a
    fresh start, as Session does). So every Session behaviour, StreamPool's
    per-stream use included, is unchanged, and the values are the same bits.
    """

    def __init__(self, model: ForecastModel, engine: ResidentStep):
        self._engine = engine
        self._held: dict[str, np.ndarray] | None = None  # the named state when held here; None: in the interpreter
        super().__init__(model)
        self.resident = True
        w = engine.wrapper
        self._wset, self._winvoke, self._wget = w.SetTensor, w.Invoke, w.GetTensor
        self._sub, self._x_index, self._y_index = engine.subgraph["step"], engine.x, engine.y

    @property
    def state(self) -> dict[str, np.ndarray]:
        if self._held is None:
            self._held = self._engine.read()  # a caller may change it in place: the next step writes it back
        return self._held

    @state.setter
    def state(self, value: dict[str, np.ndarray]) -> None:
        self._held = value

    def step(self, x_raw) -> np.ndarray:
        """x_raw: (C,) sensor units -> (O,) forecast; the state stays in the interpreter."""
        x = self._x  # (1, C)
        x[0] = x_raw
        if self._held is not None:
            self._write_held(x)
        self._wset(self._x_index, x, self._sub)
        self._winvoke(self._sub)
        self.steps += 1
        return self._wget(self._y_index, self._sub)[0]

    def _write_held(self, x: np.ndarray) -> None:
        held = self._held
        if self.steps == 0 and self._binding.primes_x_prev:
            held["x_prev"] = self._binding.x_prev_from(x)
        self._engine.write(held)
        self._held = None
