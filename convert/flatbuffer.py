"""What a .tflite file contains, read with the maintained `tflite` schema package."""
from __future__ import annotations

import tflite

_OP_NAMES = {code: name for name, code in vars(tflite.BuiltinOperator).items() if not name.startswith("_")}


def model_ops(flatbuffer: bytes) -> list[dict]:
    """Every operator code in the model with its version, sorted: [{"op": "FULLY_CONNECTED", "version": 1}, ...]."""
    model = tflite.Model.GetRootAsModel(flatbuffer, 0)
    found = set()
    for i in range(model.OperatorCodesLength()):
        code = model.OperatorCodes(i)
        # builtin codes above 127 live in BuiltinCode; older files only fill the deprecated byte
        builtin = max(code.BuiltinCode(), code.DeprecatedBuiltinCode())
        name = _OP_NAMES.get(builtin, f"BUILTIN_{builtin}")
        if builtin == tflite.BuiltinOperator.CUSTOM:
            name = f"CUSTOM:{code.CustomCode().decode()}"
        found.add((name, code.Version()))
    return [{"op": op, "version": v} for op, v in sorted(found)]


_TYPE_NAMES = {code: name for name, code in vars(tflite.TensorType).items() if not name.startswith("_")}


def op_input_types(flatbuffer: bytes) -> set[tuple[str, str]]:
    """(op, its first input's tensor type) for every operator: {("RSQRT", "INT16"), ...}."""
    model = tflite.Model.GetRootAsModel(flatbuffer, 0)
    found = set()
    for s in range(model.SubgraphsLength()):
        graph = model.Subgraphs(s)
        for i in range(graph.OperatorsLength()):
            op = graph.Operators(i)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = _OP_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "?")
            if op.InputsLength() and op.Inputs(0) >= 0:
                found.add((name, _TYPE_NAMES.get(graph.Tensors(op.Inputs(0)).Type(), "?")))
    return found


def constant_bytes(flatbuffer: bytes) -> int:
    """Bytes held in the model's constant buffers (weights, biases, folded constants).

    The rest of the file is the fixed cost of graph, tensors, quantization
    parameters and signature metadata; for a small model it dominates.
    """
    model = tflite.Model.GetRootAsModel(flatbuffer, 0)
    return sum(model.Buffers(i).DataLength() for i in range(model.BuffersLength()))


def shorten_tensor_names(flatbuffer: bytes) -> bytes:
    """The same model with each tensor named by the first part of its name only.

    The quantizer names a tensor after every op it was fused from, joined by ';'. The SPLIT of an
    AR(k) lag buffer has k-1 outputs, each named after all k-1 ("split;split1;...;split254"), so the
    names grow as k squared: 560 KB of an AR(256) int8 model's 587 KB were names. Only the
    signature's names are read (by the runtimes and firmware_sim); tensor names are labels.
    """
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    renamed = False
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            name = tensor.name.decode() if isinstance(tensor.name, bytes) else tensor.name
            if name and ";" in name:
                tensor.name = name.split(";", 1)[0]
                renamed = True
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)) if renamed else flatbuffer
