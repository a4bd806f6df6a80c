"""A .tflite step model as plain data: tensors, operators in execution order, the `step` signature.

Read with the maintained `tflite` flatbuffer schema package (pure Python).
Nothing here knows about particular models: the executor is driven by the
operator list this returns, so a new graph with known ops needs no code.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import tflite

OP_NAMES = {code: name for name, code in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}
TENSOR_TYPES = {  # flatbuffer TensorType -> numpy dtype
    tflite.TensorType.FLOAT32: np.float32, tflite.TensorType.INT8: np.int8, tflite.TensorType.UINT8: np.uint8,
    tflite.TensorType.INT16: np.int16, tflite.TensorType.INT32: np.int32, tflite.TensorType.INT64: np.int64,
    tflite.TensorType.BOOL: np.bool_,
}
ACTIVATIONS = {v: k for k, v in vars(tflite.ActivationFunctionType).items() if not k.startswith("_")}


class GraphError(ValueError):
    """A model the simulator cannot run; the message names the op or tensor."""


@dataclass
class Tensor:
    index: int
    name: str
    dtype: np.dtype
    shape: tuple[int, ...]
    scale: np.ndarray | None  # (1,) per-tensor or (channels,) per-channel; None for float/unquantized
    zero_point: np.ndarray | None
    quantized_dimension: int
    data: np.ndarray | None  # constant contents, or None for activations

    @property
    def bytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize

    @property
    def is_constant(self) -> bool:
        return self.data is not None

    @property
    def per_channel(self) -> bool:
        return self.scale is not None and len(self.scale) > 1

    def describe(self) -> str:
        q = f" scale={self.scale[0]:.6g} zp={int(self.zero_point[0])}" if self.scale is not None else ""
        return f"#{self.index} {self.name!r} {np.dtype(self.dtype).name}{list(self.shape)}{q}"


@dataclass
class Operator:
    index: int
    op: str  # builtin name, e.g. "FULLY_CONNECTED"
    version: int
    inputs: list[int]  # tensor indices; -1 = optional input left out
    outputs: list[int]
    options: dict = field(default_factory=dict)


@dataclass
class Graph:
    tensors: list[Tensor]
    operators: list[Operator]
    inputs: list[int]
    outputs: list[int]
    signature_inputs: dict[str, int]  # signature name -> tensor index
    signature_outputs: dict[str, int]
    model_bytes: int

    @property
    def op_names(self) -> list[str]:
        return sorted({o.op for o in self.operators})


def _quantization(t) -> tuple[np.ndarray | None, np.ndarray | None, int]:
    q = t.Quantization()
    if q is None or q.ScaleLength() == 0:
        return None, None, 0
    return (q.ScaleAsNumpy().astype(np.float32), q.ZeroPointAsNumpy().astype(np.int64), int(q.QuantizedDimension()))


def _options(op, name: str) -> dict:
    """The builtin options the kernels need, as a plain dict."""
    table = op.BuiltinOptions()
    if table is None:
        return {}
    cls_name = {"FULLY_CONNECTED": "FullyConnectedOptions", "ADD": "AddOptions", "SUB": "SubOptions",
                "MUL": "MulOptions", "CONCATENATION": "ConcatenationOptions", "GATHER": "GatherOptions",
                "SOFTMAX": "SoftmaxOptions", "SPLIT": "SplitOptions", "RESHAPE": "ReshapeOptions",
                "BATCH_MATMUL": "BatchMatMulOptions"}.get(name)
    if cls_name is None:
        return {}
    options = getattr(tflite, cls_name)()
    options.Init(table.Bytes, table.Pos)
    found = {}
    for attr in ("FusedActivationFunction", "PotScaleInt16", "Axis", "KeepNumDims", "Beta", "NumSplits",
                 "BatchDims", "WeightsFormat", "AdjX", "AdjY"):
        if hasattr(options, attr):
            found[attr] = getattr(options, attr)()
    if "FusedActivationFunction" in found:
        found["FusedActivationFunction"] = ACTIVATIONS[found["FusedActivationFunction"]]
    return found


def read_graph(flatbuffer: bytes) -> Graph:
    """Parse subgraph 0 of a .tflite file; constants are copied out as numpy arrays."""
    model = tflite.Model.GetRootAsModel(flatbuffer, 0)
    if model.SubgraphsLength() != 1:
        raise GraphError(f"model has {model.SubgraphsLength()} subgraphs; the simulator runs single-graph step models")
    g = model.Subgraphs(0)
    tensors = []
    for i in range(g.TensorsLength()):
        t = g.Tensors(i)
        if t.Type() not in TENSOR_TYPES:
            raise GraphError(f"tensor #{i} {t.Name().decode()!r} has unsupported type {t.Type()}")
        dtype = np.dtype(TENSOR_TYPES[t.Type()])
        shape = tuple(int(s) for s in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        buffer = model.Buffers(t.Buffer())
        data = None
        if buffer is not None and buffer.DataLength():
            data = np.frombuffer(buffer.DataAsNumpy().tobytes(), dtype=dtype).reshape(shape).copy()
        scale, zero_point, qdim = _quantization(t)
        tensors.append(Tensor(i, t.Name().decode(), dtype, shape, scale, zero_point, qdim, data))
    operators = []
    for i in range(g.OperatorsLength()):
        op = g.Operators(i)
        code = model.OperatorCodes(op.OpcodeIndex())
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = OP_NAMES.get(builtin, f"BUILTIN_{builtin}")
        operators.append(Operator(i, name, code.Version(), [int(x) for x in op.InputsAsNumpy()],
                                  [int(x) for x in op.OutputsAsNumpy()], _options(op, name)))
    sig_in, sig_out = {}, {}
    if model.SignatureDefsLength():
        sd = model.SignatureDefs(0)
        sig_in = {sd.Inputs(i).Name().decode(): int(sd.Inputs(i).TensorIndex()) for i in range(sd.InputsLength())}
        sig_out = {sd.Outputs(i).Name().decode(): int(sd.Outputs(i).TensorIndex()) for i in range(sd.OutputsLength())}
    return Graph(tensors, operators, [int(x) for x in g.InputsAsNumpy()], [int(x) for x in g.OutputsAsNumpy()],
                 sig_in, sig_out, len(flatbuffer))
