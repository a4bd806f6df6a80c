"""Run a .tflite step graph with the integer kernels, op by op, in the flatbuffer's order.

`Executor` is the device's interpreter: one arena (a list of numpy arrays,
one slot per tensor), constants loaded once, each operator prepared once.
`StepRunner` adds the step model's contract on top: signature tensors by
name, state carried from outputs back to inputs between calls, in the
tensors' own types (int8/int16 for integer-I/O variants, float32 at a
float-I/O variant's edge).

A state's output tensor may be quantized differently from its input tensor
(the converter calibrates each on its own: h0 in scale 0.0048 zp -7, out
0.0055 zp 1). Copying the output's bytes into the input would read them
under the wrong scale, so `StateCarry` requantizes them: decode with the
output's quantization, encode with the input's, with edge_runtime's `Codec`
(the Session's own arithmetic: its float state is exactly that round trip).
Where both sides share dtype, scale and zero point it is a plain copy.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.quant import Codec
from firmware_sim.graph import Graph, GraphError, Tensor
from firmware_sim.kernels import DEFAULT_FLAVOUR, prepare


def tensor_codec(t: Tensor) -> Codec:
    """edge_runtime's float32 <-> tensor codec for one per-tensor-quantized (or float) tensor."""
    if t.per_channel:
        raise GraphError(f"state tensor {t.describe()} is quantized per channel; a state needs one scale")
    quantization = (0.0, 0) if t.scale is None else (float(t.scale[0]), int(t.zero_point[0]))
    return Codec(t.name, {"dtype": t.dtype, "quantization": quantization})


class StateCarry:
    """One state's output tensor -> the next step's input tensor, in the input's type and quantization."""

    def __init__(self, name: str, source: Tensor, target: Tensor):
        self.name, self.target = name, target
        if source.shape != target.shape:
            raise GraphError(f"state {name!r}: output {source.describe()} does not fit input {target.describe()}")
        self.requantize = not _same_quantization(source, target)
        self._decode, self._encode = tensor_codec(source).decode, tensor_codec(target).encode

    def __call__(self, values: np.ndarray) -> np.ndarray:
        if not self.requantize:
            return values.copy()
        return np.asarray(self._encode(self._decode(values)), self.target.dtype).reshape(self.target.shape)


def _same_quantization(a: Tensor, b: Tensor) -> bool:
    if np.dtype(a.dtype) != np.dtype(b.dtype) or (a.scale is None) != (b.scale is None):
        return False
    return a.scale is None or (np.array_equal(a.scale, b.scale) and np.array_equal(a.zero_point, b.zero_point))


def state_carries(graph: Graph) -> dict[str, StateCarry]:
    """state name -> its carry; a state is a signature name that is both an input and an output."""
    names = sorted(set(graph.signature_inputs) & set(graph.signature_outputs))
    return {n: StateCarry(n, graph.tensors[graph.signature_outputs[n]], graph.tensors[graph.signature_inputs[n]])
            for n in names}


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
        self.carries = state_carries(g)
        self.state_names = list(self.carries)
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
        for name, carry in self.carries.items():  # kept in the input's type: what the next step reads
            self.state[name] = carry(ex.tensor(g.signature_outputs[name]))
        return ex.tensor(g.signature_outputs[self.output_name]).copy()
