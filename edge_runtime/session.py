"""A forecast bundle run one step at a time with persistent, named state.

`ForecastModel` is a forecast bundle's `Model`: it knows the normalization
and opens one `Session` per sensor stream. Raw sensor units go in and come
out. A "raw" variant normalizes inside its graph; a "core" variant (the
integer ones, edge_runtime/binding.py) gets its change and level features
from here and its forecast is persistence plus its correction, added here in
float64; the session holds x_prev (normalized, float32) for it, so the named
state reads, snapshots and restores the same for every variant.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.binding import CORE_OUTPUT
from edge_runtime.model import Model


class ForecastModel(Model):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        norm = self.manifest.normalization
        self.mean = np.asarray(norm["mean"], np.float32)  # (C,)
        self.std = np.asarray(norm["std"], np.float32)  # (C,)

    def session(self) -> "Session":
        """One sensor stream."""
        return Session(self)


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
        for name, in_index, _ in self._state_io:
            self._set(in_index, codecs[name].encode(self.state[name]))
        self._invoke()
        for name, _, out_index in self._state_io:
            self.state[name] = codecs[f"{name}:out"].decode(self._get(out_index))
        if binding.holds_x_prev:
            self.state["x_prev"] = x_prev
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
