"""Where things are inside a .tflite flatbuffer, for tests that change a model on purpose."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import tflite


def largest_constant(data: bytes) -> tuple[int, int]:
    """(offset, length) in `data` of the model's largest constant buffer (a weight matrix)."""
    model = tflite.Model.GetRootAsModel(bytearray(data), 0)
    base = np.frombuffer(model._tab.Bytes, np.uint8)
    found = (0, 0)
    for i in range(model.BuffersLength()):
        buffer = model.Buffers(i)
        if buffer.DataLength() > found[1]:
            found = (buffer.DataAsNumpy().ctypes.data - base.ctypes.data, buffer.DataLength())
    return found


def crash_model(data: bytes) -> bytes:
    """The model with operator 0's inputs offset pointing ~4 GB past the end of the buffer: tflite-runtime 2.14
    does not verify the flatbuffer and dies with SIGSEGV reading it; ai-edge-litert's verifier refuses it."""
    mutated = bytearray(data)
    op = tflite.Model.GetRootAsModel(mutated, 0).Subgraphs(0).Operators(0)
    inputs_field = op._tab.Pos + op._tab.Offset(6)  # Operator.inputs: a uoffset, little-endian
    mutated[inputs_field + 3] = 0xF0
    return bytes(mutated)


def make_crashing_bundle(source: Path, bundle: Path) -> Path:
    """A copy of a forecast bundle with only its float32 variant, whose (1, n) model crashes the interpreter;
    the manifest's sha256 is updated to match, so the bundle is self-consistent and only a probe stops it."""
    shutil.copytree(source, bundle)
    model = bundle / "model.float32.tflite"
    data = crash_model(model.read_bytes())
    model.write_bytes(data)
    manifest = json.loads((bundle / "manifest.json").read_text())
    float32 = next(v for v in manifest["variants"] if v["name"] == "float32")
    float32.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    float32.pop("batched", None)  # the (1, n) model is the one that crashes
    manifest["variants"] = [float32]
    (bundle / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return bundle
