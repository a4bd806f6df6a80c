"""Where things are inside a .tflite flatbuffer, for tests that change a model on purpose."""
from __future__ import annotations

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
