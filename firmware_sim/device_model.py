"""A bundle variant running on the integer executor: raw sensor units in and out, state by name.

The same contract as edge_runtime's Session, implemented on firmware_sim's
kernels: integer-I/O variants are quantized and dequantized here at the
edge (as the firmware would), float-I/O variants (int16x8) take float32 and
quantize inside the graph. The state stays in the tensor's own type, which
is what a snapshot in flash holds: the state input tensor's type and
quantization (the step's outputs are requantized into it as they are carried,
firmware_sim/executor.py StateCarry), so a snapshot is what the next step
reads and a restore needs no conversion.

A core variant (edge_runtime/binding.py) gets its features from an outer
step: for int8-io the firmware's integer one (firmware_sim/outer_step.py:
the previous reading in int32 sensor counts, per-channel fixed-point
multipliers, the persistence add in counts); for a float-I/O core (int8,
int16x8) the Session's float64 one, from the same StepBinding. A Transformer
core's ring ages are held here too, as whole numbers, its ring inputs written
from code tables (firmware_sim/ring.py).
"""
from __future__ import annotations

import numpy as np

from edge_runtime.binding import CORE_OUTPUT, StepBinding
from edge_runtime.manifest import Manifest, read_manifest, verified_model_bytes
from firmware_sim.executor import Executor, StepRunner
from firmware_sim.fixedpoint import round_half_away
from firmware_sim.graph import Graph, Tensor, read_graph
from firmware_sim.kernels import DEFAULT_FLAVOUR
from firmware_sim.outer_step import IntegerOuterStep
from firmware_sim.ring import RING_WRITE, DeviceRing


def encode(t: Tensor, values) -> np.ndarray:
    """float sensor-side values -> the tensor's type (QUANTIZE's rule for integer tensors)."""
    values = np.asarray(values, np.float32).reshape(t.shape)
    if np.dtype(t.dtype).kind == "f":
        return values
    info = np.iinfo(t.dtype)
    q = round_half_away((values / np.float32(t.scale[0])).astype(np.float32)) + int(t.zero_point[0])
    return np.clip(q, info.min, info.max).astype(t.dtype)


def decode(t: Tensor, values: np.ndarray) -> np.ndarray:
    if np.dtype(t.dtype).kind == "f":
        return values.astype(np.float32)
    return ((values.astype(np.float32) - int(t.zero_point[0])) * np.float32(t.scale[0])).astype(np.float32)


class DeviceModel:
    def __init__(self, manifest: Manifest, variant: str, flavour: str = DEFAULT_FLAVOUR):
        self.manifest = manifest
        self.variant = manifest.variant(variant)
        self.graph: Graph = read_graph(verified_model_bytes(manifest, self.variant))
        # the step signature by name and the x_prev rule, as edge_runtime's Session uses them
        self.binding = StepBinding(manifest, self.graph.signature_inputs, self.graph.signature_outputs, self.variant)
        self.core = self.binding.core
        output = CORE_OUTPUT if self.core else manifest.output.name
        self.output_name = output
        self.runner = StepRunner(Executor(self.graph, flavour), None if self.core else manifest.input.name, output)
        self.x_spec = None if self.core else self.runner.tensor_spec(manifest.input.name)
        self.y_spec = self.runner.tensor_spec(output, output=True)
        self.feature_specs = {name: self.graph.tensors[index] for name, index in self.binding.features}
        norm = manifest.normalization or {}  # an autocomplete bundle has none (one-hot input)
        self.std = np.asarray(norm.get("std", 1.0), np.float32)  # (C,) residual thresholds in sensor units
        self.outer = None  # the integer outer step of a core int8-io variant
        if self.core and all(np.dtype(t.dtype).kind == "i" for t in self.feature_specs.values()):
            from firmware_sim.sensor import Adc

            adc = Adc.around(norm["mean"], norm["std"])  # the simulator's default ADC; use_adc() sets the real one
            self.outer = IntegerOuterStep(manifest, self.feature_specs, self.y_spec, adc.low, adc.lsb)
        self.x_prev: np.ndarray | None = None  # (1, C) normalized, a float-I/O core's outer step
        self.ring = None  # a Transformer core's ring ages, held outside the graph (firmware_sim/ring.py)
        if self.binding.holds_ring:
            specs = {name: self.graph.tensors[index] for name, index in self.binding.ring}
            self.ring = DeviceRing(specs, specs[RING_WRITE].shape[-1], encode)
        self.steps = 0
        self._zero_state = {k: v.copy() for k, v in self.runner.state.items()}

    def use_adc(self, adc) -> None:
        """Sensor counts are this ADC's codes (the integer outer step's unit and offset)."""
        if self.outer is not None:
            self.outer = IntegerOuterStep(self.manifest, self.feature_specs, self.y_spec, adc.low, adc.lsb)

    @classmethod
    def load(cls, bundle: str, variant: str, flavour: str = DEFAULT_FLAVOUR) -> "DeviceModel":
        return cls(read_manifest(bundle), variant, flavour)

    @property
    def state_inputs(self) -> list[int]:
        return [self.graph.signature_inputs[n] for n in self.runner.state_names]

    def reset(self) -> None:
        self.runner.state = {k: v.copy() for k, v in self._zero_state.items()}
        self.steps = 0
        if self.ring is not None:
            self.ring.reset()

    def core_inputs(self, x_raw) -> dict[str, np.ndarray]:
        """A core graph's input tensors for one sample (features, a Transformer's ring inputs), in their own
        types; advances the held reading and ring ages."""
        ring = self.ring.inputs() if self.ring is not None else {}
        if self.outer is not None:
            if self.steps == 0:
                self.outer.prev = None  # a fresh start (or a restore) primes the previous reading
            return {**self.outer.inputs(self.outer.counts(x_raw)), **ring}
        features, self.x_prev = self.binding.core_inputs(x_raw, None if self.steps == 0 else self.x_prev)
        return {**{name: encode(self.feature_specs[name], features[name]) for name in self.feature_specs}, **ring}

    def step(self, x_raw) -> np.ndarray:
        """(C,) sensor units -> (O,) forecast of the next sample in sensor units."""
        if self.core:
            counts = self.outer.counts(x_raw) if self.outer is not None else None
            correction = self.runner.run_inputs(self.core_inputs(x_raw))
            self.steps += 1
            if self.outer is not None:
                return self.outer.to_units(self.outer.forecast_counts(counts, correction))
            return self.binding.forecast_from(x_raw, decode(self.y_spec, correction).reshape(-1))
        if self.steps == 0 and self.binding.primes_x_prev:  # prime x_prev as the Session does
            self.runner.state["x_prev"] = encode(self.runner.tensor_spec("x_prev"), self.binding.x_prev_from(x_raw))
        y = self.runner.run(encode(self.x_spec, x_raw))
        self.steps += 1
        return decode(self.y_spec, y).reshape(-1)

    def snapshot(self) -> dict:
        held = {"prev_counts": None if self.outer is None or self.outer.prev is None else self.outer.prev.copy(),
                "x_prev": None if self.x_prev is None else self.x_prev.copy(),
                "age": None if self.ring is None else self.ring.age.copy()}
        return {"steps": self.steps, "state": {k: v.copy() for k, v in self.runner.state.items()}, **held}

    def restore(self, snap: dict) -> None:
        self.runner.state = {k: v.copy() for k, v in snap["state"].items()}
        self.steps = snap["steps"]
        if self.outer is not None:
            self.outer.prev = snap.get("prev_counts")
        self.x_prev = snap.get("x_prev")
        if self.ring is not None:
            self.ring.age = snap["age"].copy()
