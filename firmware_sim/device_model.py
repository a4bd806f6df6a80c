"""A bundle variant running on the integer executor: raw sensor units in and out, state by name.

The same contract as edge_runtime's Session, implemented on firmware_sim's
kernels: integer-I/O variants are quantized and dequantized here at the
edge (as the firmware would), float-I/O variants (int16x8) take float32 and
quantize inside the graph. The state stays in the tensor's own type, which
is what a snapshot in flash holds.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.binding import StepBinding
from edge_runtime.manifest import Manifest, read_manifest, verified_model_bytes
from firmware_sim.executor import Executor, StepRunner
from firmware_sim.fixedpoint import round_half_away
from firmware_sim.graph import Graph, Tensor, read_graph
from firmware_sim.kernels import DEFAULT_FLAVOUR


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
        self.runner = StepRunner(Executor(self.graph, flavour), manifest.input.name, manifest.output.name)
        self.x_spec = self.runner.tensor_spec(manifest.input.name)
        self.y_spec = self.runner.tensor_spec(manifest.output.name, output=True)
        # the step signature by name and the x_prev rule, as edge_runtime's Session uses them
        self.binding = StepBinding(manifest, self.graph.signature_inputs, self.graph.signature_outputs)
        norm = manifest.normalization or {}  # an autocomplete bundle has none (one-hot input)
        self.std = np.asarray(norm.get("std", 1.0), np.float32)  # (C,) residual thresholds in sensor units
        self.steps = 0
        self._zero_state = {k: v.copy() for k, v in self.runner.state.items()}

    @classmethod
    def load(cls, bundle: str, variant: str, flavour: str = DEFAULT_FLAVOUR) -> "DeviceModel":
        return cls(read_manifest(bundle), variant, flavour)

    @property
    def state_inputs(self) -> list[int]:
        return [self.graph.signature_inputs[n] for n in self.runner.state_names]

    def reset(self) -> None:
        self.runner.state = {k: v.copy() for k, v in self._zero_state.items()}
        self.steps = 0

    def step(self, x_raw) -> np.ndarray:
        """(C,) sensor units -> (O,) forecast of the next sample in sensor units."""
        if self.steps == 0 and self.binding.primes_x_prev:  # prime x_prev as the Session does
            self.runner.state["x_prev"] = encode(self.runner.tensor_spec("x_prev"), self.binding.x_prev_from(x_raw))
        y = self.runner.run(encode(self.x_spec, x_raw))
        self.steps += 1
        return decode(self.y_spec, y).reshape(-1)

    def snapshot(self) -> dict:
        return {"steps": self.steps, "state": {k: v.copy() for k, v in self.runner.state.items()}}

    def restore(self, snap: dict) -> None:
        self.runner.state = {k: v.copy() for k, v in snap["state"].items()}
        self.steps = snap["steps"]
