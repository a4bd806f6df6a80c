"""A Transformer core's KV-ring ages on the device, outside the integer graph (edge_runtime/ring.py).

The firmware keeps `age` (W,) as uint16 whole numbers and writes the core's three ring inputs from code
tables filled once from the tensors' own quantization (encode: QUANTIZE's rule): ring_write and
ring_empty take one of two codes, ring_since one of W (code[k] for k steps). So nothing the ring needs
passes through requantization, and the codes equal what the Session's Codec gives for the same ages.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.ring import AGE, RING_EMPTY, RING_SINCE, RING_WRITE, ring_step

AGE_BYTES = 2  # per slot: uint16 ages (W <= 4096, a bundle's width cap, so age <= W fits)


class DeviceRing:
    """ages (1, W) held by the firmware; inputs() -> the ring inputs' codes for this step, ages advanced."""

    def __init__(self, specs: dict, width: int, encode):
        """specs: ring input name -> its graph Tensor (1, W); encode(tensor, (1, W) values) -> its codes."""
        self.width = width
        zeros, ones = np.zeros((1, width), np.float32), np.ones((1, width), np.float32)
        self.flags = {name: (encode(specs[name], zeros), encode(specs[name], ones))  # codes of 0 and of 1
                      for name in (RING_WRITE, RING_EMPTY)}
        self.since = encode(specs[RING_SINCE], np.arange(width, dtype=np.float32)[None])[0]  # (W,) code of k steps
        self.age = np.zeros((1, width), np.uint16)

    def inputs(self) -> dict[str, np.ndarray]:
        """The ring inputs' codes for this step, each (1, W) of its tensor's type; the ages advance."""
        values, new_age = ring_step(self.age.astype(np.float32))  # whole numbers, the Session's arithmetic
        self.age = new_age.astype(np.uint16)
        codes = {name: np.where(values[name] > 0, one, zero) for name, (zero, one) in self.flags.items()}
        codes[RING_SINCE] = self.since[values[RING_SINCE].astype(np.intp)]  # (1, W)
        return codes

    def reset(self) -> None:
        self.age[...] = 0

    def held_bytes(self) -> int:
        return AGE_BYTES * self.width


def held_ring_bytes(manifest, core: bool) -> int:
    """RAM the firmware holds for a core's ring ages (0 for anything else)."""
    width = next((s.shape[1] for s in manifest.state if s.name == AGE), 0)
    return AGE_BYTES * width if core else 0
