"""Run a .tflite step graph with the integer kernels, op by op, in the flatbuffer's order.

`Executor` is the device's interpreter: one arena (a list of numpy arrays,
one slot per tensor), constants loaded once, each operator prepared once.
`StepRunner` adds the step model's contract on top: signature tensors by
name, state carried from outputs back to inputs between calls, in the
tensors' own types (int8/int16 for integer-I/O variants, float32 at a
float-I/O variant's edge).
"""
from __future__ import annotations

import numpy as np

from firmware_sim.graph import Graph, GraphError
from firmware_sim.kernels import DEFAULT_FLAVOUR, prepare


class Executor:
    def __init__(self, graph: Graph, flavour: str = DEFAULT_FLAVOUR):
        self.graph, self.flavour = graph, flavour
        self.kernels = [prepare(op, graph, flavour) for op in graph.operators]
        self.arena: list[np.ndarray | None] = [t.data for t in graph.tensors]  # constants stay in place

    def set_input(self, index: int, value: np.ndarray) -> None:
        t = self.graph.tensors[index]
        value = np.asarray(value)
        if value.dtype != t.dtype or value.shape != t.shape:
            raise ValueError(f"input {t.describe()} given {value.dtype}{list(value.shape)}")
        self.arena[index] = value.copy()

    def invoke(self) -> None:
        for run in self.kernels:
            run(self.arena)

    def tensor(self, index: int) -> np.ndarray:
        return self.arena[index]


class StepRunner:
    """The step signature with state carried: run(x) -> y, state kept by name."""

    def __init__(self, executor: Executor, input_name: str = "x", output_name: str = "y"):
        g = executor.graph
        if not g.signature_inputs:
            raise GraphError("model has no signature; the step model is addressed by signature names")
        self.executor = executor
        self.input_name, self.output_name = input_name, output_name
        self.state_names = sorted(set(g.signature_inputs) & set(g.signature_outputs))
        self.state = {n: np.zeros(g.tensors[g.signature_inputs[n]].shape, g.tensors[g.signature_inputs[n]].dtype)
                      for n in self.state_names}
        for n in self.state_names:  # integer state starts at the quantized zero, not at raw 0
            t = g.tensors[g.signature_inputs[n]]
            if t.zero_point is not None:
                self.state[n][...] = int(t.zero_point[0])

    def tensor_spec(self, name: str, output: bool = False):
        g = self.executor.graph
        return g.tensors[(g.signature_outputs if output else g.signature_inputs)[name]]

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.run_inputs({self.input_name: x})

    def run_inputs(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Set every non-state input by name (x; or a core graph's delta and level), step, return the output."""
        g, ex = self.executor.graph, self.executor
        for name, value in inputs.items():
            ex.set_input(g.signature_inputs[name], value)
        for name in self.state_names:
            ex.set_input(g.signature_inputs[name], self.state[name])
        ex.invoke()
        for name in self.state_names:
            self.state[name] = ex.tensor(g.signature_outputs[name]).copy()
        return ex.tensor(g.signature_outputs[self.output_name]).copy()
