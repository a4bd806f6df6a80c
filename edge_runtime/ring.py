"""The Transformer's KV-ring bookkeeping, outside the quantized core (issue 18).

The ring's `age` state (B, W) is 0 for a slot never written, else 1 + the steps since
its sample was written (train/transformer.py). Which slot is due, the ages after the
write and the never-written mask need whole numbers exactly; carried through the
integer core's requantized tensors they drifted by 10-63 steps. So, like x_prev, the
ages live here (Session, StreamPool's rows, firmware_sim's DeviceModel) and the core
graph gets three exact inputs per step:

    ring_write   (B, W)  1 on the slot this sample goes to, else 0
    ring_since   (B, W)  steps since each slot's sample, after the write (age' - 1; 0 where never written)
    ring_empty   (B, W)  1 where no sample was ever written (after the write), else 0

Slot due = age[0] mod W; age' = (age + [age > 0]) (1 - write) + write (train/transformer.py says why).
The float variants keep this arithmetic in their graph (float32 holds it exactly).
"""
from __future__ import annotations

import numpy as np

AGE = "age"  # the state tensor's name (train/config.py takes it from here)
RING_WRITE, RING_SINCE, RING_EMPTY = "ring_write", "ring_since", "ring_empty"
RING_INPUTS = (RING_WRITE, RING_SINCE, RING_EMPTY)  # the core graph's input tensors, each (B, W)


def ring_step(age: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """age (B, W) before this sample -> ({ring input: (B, W) float32}, age after it (B, W) float32)."""
    age = np.rint(np.asarray(age, np.float64))  # whole numbers (a restored snapshot is float32)
    width = age.shape[1]
    slot = np.mod(age[:, :1], width)  # (B, 1) the slot due
    write = np.arange(width)[None] == slot  # (B, W) bool
    new_age = np.where(write, 1.0, age + (age > 0))  # (B, W)
    empty = new_age == 0
    since = np.where(empty, 0.0, new_age - 1.0)
    inputs = {RING_WRITE: write, RING_SINCE: since, RING_EMPTY: empty}
    return {name: value.astype(np.float32) for name, value in inputs.items()}, new_age.astype(np.float32)
