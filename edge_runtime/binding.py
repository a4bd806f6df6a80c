"""The step signature by name: which tensor index is x, y and each state tensor, and how x_prev starts.

Every caller that drives a step model (Session, StreamPool and its batched
companion, autocomplete, the firmware simulator's parity check, the
benchmarks' raw floor) takes its indices from one `StepBinding`, resolved
once by name (never by position: a converted function's input order is not
its argument order), and primes x_prev with its one rule.
"""
from __future__ import annotations

import numpy as np

SIGNATURE = "step"


def signature_details(interpreter) -> tuple[dict, dict]:
    """name -> {index, shape, dtype, quantization...} for the step signature's inputs and outputs."""
    runner = interpreter.get_signature_runner(SIGNATURE)
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    del runner  # ai-edge-litert refuses allocate/invoke while a runner holds its buffers
    return inputs, outputs


def indices(details: dict) -> dict[str, int]:
    """A TFLite details map reduced to name -> tensor index."""
    return {name: int(d["index"]) for name, d in details.items()}


class StepBinding:
    """Tensor indices of x, y and every state tensor, from name -> index maps of one interpreter.

    state: [(name, input index, output index)] in the manifest's order.
    The x_prev rule: a fresh stream's first sample primes x_prev (normalized),
    so the first change the model sees reads 0.
    """

    def __init__(self, manifest, inputs: dict[str, int], outputs: dict[str, int]):
        self.x = inputs[manifest.input.name]
        self.y = outputs[manifest.output.name]
        self.state = [(s.name, inputs[s.name], outputs[s.name]) for s in manifest.state]
        self.primes_x_prev = any(s.name == "x_prev" for s in manifest.state)
        if self.primes_x_prev:  # only forecasters with the delta feature carry x_prev
            self._mean = np.asarray(manifest.normalization["mean"], np.float32)  # (C,)
            self._std = np.asarray(manifest.normalization["std"], np.float32)  # (C,)

    def x_prev_from(self, x_raw) -> np.ndarray:
        """(..., C) raw sensor units -> the normalized x_prev a fresh stream starts from."""
        return (np.asarray(x_raw, np.float32) - self._mean) / self._std
