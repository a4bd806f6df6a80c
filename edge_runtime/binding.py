"""The step signature by name: which tensor index is x, y and each state tensor, and how x_prev starts.

Every caller that drives a step model (Session, StreamPool and its batched
companion, autocomplete, the firmware simulator's parity check, the
benchmarks' raw floor) takes its indices from one `StepBinding`, resolved
once by name (never by position: a converted function's input order is not
its argument order), and primes x_prev with its one rule.

Two graph kinds (the variant's manifest field "graph"):
- "raw": x in, y out, raw sensor units; x_prev (normalized) is a state
  tensor of the graph. The float variants, and every variant of bundles
  written before the field existed.
- "core": the forecaster's integer variants (convert/core_step.py): the
  features `delta` = (x - x_prev) / delta_std and `level` = (x - mean) / std
  in, `correction` out (in typical changes), the cell state only. x_prev is
  held outside the model, in normalized units as in a raw graph's state, so
  a session's named state is the same whatever the variant; the persistence
  add happens outside too: y = x[target] + correction * delta_std[target].
  A Transformer's core also leaves its KV ring's `age` state outside and reads
  ring_write, ring_since and ring_empty instead (edge_runtime/ring.py): the
  caller holds `age` as it holds x_prev.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.manifest import CORE_FEATURES, GRAPH_KINDS  # noqa: F401 (the core reads CORE_FEATURES in order)
from edge_runtime.manifest import BundleError
from edge_runtime.ring import AGE, RING_INPUTS, ring_step

SIGNATURE = "step"
CORE_OUTPUT = "correction"


def signature_details(interpreter) -> tuple[dict, dict]:
    """name -> {index, shape, dtype, quantization...} for the step signature's inputs and outputs."""
    runner = interpreter.get_signature_runner(SIGNATURE)
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    del runner  # ai-edge-litert refuses allocate/invoke while a runner holds its buffers
    return inputs, outputs


def indices(details: dict) -> dict[str, int]:
    """A TFLite details map reduced to name -> tensor index."""
    return {name: int(d["index"]) for name, d in details.items()}


def variant_graph(variant) -> str:
    """A variant's graph kind; bundles written before the field existed are all "raw"."""
    return "raw" if variant is None else variant.raw.get("graph", "raw")


def core_features(manifest) -> list[str]:
    """The feature tensors a core graph reads, from the forecaster's features."""
    return [f for f in CORE_FEATURES if f in manifest.raw.get("features", ())]


def has_ring(manifest) -> bool:
    """Whether the forecaster keeps a Transformer's KV ring (its `age` state)."""
    return any(s.name == AGE for s in manifest.state)


def check_ring_inputs(manifest, variant, input_names) -> None:
    """A core graph that still carries `age` inside (converted before the ring moved out) mis-steps its
    ring: its requantized ages drift. Refused in one line, not run."""
    if variant_graph(variant) == "core" and AGE in input_names:
        raise BundleError(f"{manifest.path}: variant {variant.name} is an integer Transformer core that keeps its "
                          "KV ring's ages inside the quantized graph, where they drift (written by an older "
                          "convert): reconvert the bundle")


def expected_signature(manifest, variant=None) -> tuple[dict, dict]:
    """name -> shape of the inputs and outputs the variant's step signature must have."""
    if variant_graph(variant) == "core":
        channels = manifest.input.shape
        held = {s.name: s.shape for s in manifest.state if s.name not in ("x_prev", AGE)}
        ring = {n: s.shape for s in manifest.state if s.name == AGE for n in RING_INPUTS}
        return ({**{f: channels for f in core_features(manifest)}, **ring, **held},
                {CORE_OUTPUT: manifest.output.shape, **held})
    state = {s.name: s.shape for s in manifest.state}
    return {manifest.input.name: manifest.input.shape, **state}, {manifest.output.name: manifest.output.shape, **state}


class StepBinding:
    """Tensor indices of x, y and every state tensor, from name -> index maps of one interpreter.

    state: [(name, input index, output index)] of the tensors the model carries, in the manifest's
    order (for a core graph: without x_prev, which the caller holds). features: [(name, input index)]
    of a core graph (empty for a raw one); y is then the correction's output index and x is None.
    ring: [(name, input index)] of a Transformer core's ring inputs (edge_runtime/ring.py), whose `age`
    the caller holds (holds_ring), as x_prev; empty otherwise.
    The x_prev rule: a fresh stream's first sample primes x_prev (normalized),
    so the first change the model sees reads 0.
    """

    def __init__(self, manifest, inputs: dict[str, int], outputs: dict[str, int], variant=None):
        self.graph = variant_graph(variant)
        self.core = self.graph == "core"
        self.primes_x_prev = any(s.name == "x_prev" for s in manifest.state)
        self.holds_x_prev = self.core and self.primes_x_prev  # x_prev lives outside the model
        check_ring_inputs(manifest, variant, inputs)
        self.holds_ring = self.core and has_ring(manifest)  # so does a Transformer core's ring (its ages)
        self.ring = [(n, inputs[n]) for n in RING_INPUTS] if self.holds_ring else []
        if self.core:
            self.x, self.y = None, outputs[CORE_OUTPUT]
            self.features = [(f, inputs[f]) for f in core_features(manifest)]
        else:
            self.x, self.y = inputs[manifest.input.name], outputs[manifest.output.name]
            self.features = []
        held = {"x_prev"} if self.holds_x_prev else set()
        held |= {AGE} if self.holds_ring else set()
        self.state = [(s.name, inputs[s.name], outputs[s.name]) for s in manifest.state if s.name not in held]
        if self.primes_x_prev or self.core:  # only forecasters carry x_prev or have a core
            norm = manifest.normalization
            self._mean = np.asarray(norm["mean"], np.float32)  # (C,)
            self._std = np.asarray(norm["std"], np.float32)  # (C,)
            self._mean64, self._std64 = (np.asarray(norm[k], np.float64) for k in ("mean", "std"))  # (C,)
            self._delta_std = np.asarray(norm["delta_std"], np.float64)  # (C,)
            self._delta_gain = self._std64 / self._delta_std  # normalized change -> typical changes
            self._target = list(manifest.target)

    def x_prev_from(self, x_raw) -> np.ndarray:
        """(..., C) raw sensor units -> the normalized x_prev a fresh stream starts from."""
        return (np.asarray(x_raw, np.float32) - self._mean) / self._std

    def core_inputs(self, x_raw, x_prev: np.ndarray | None) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A core graph's features for one sample, and the x_prev to hold for the next one.

        x_raw (C,) sensor units; x_prev (1, C) normalized, or None on a fresh start (primes it, so
        the change reads 0). Computed in float64: the level is subtracted before anything is rounded.
        Returns ({feature: (1, C) float32}, new x_prev (1, C) float32 normalized).
        """
        level = (np.asarray(x_raw, np.float64) - self._mean64) / self._std64  # (C,)
        previous = level if x_prev is None else np.asarray(x_prev, np.float64).reshape(-1)
        values = {"delta": (level - previous) * self._delta_gain, "level": level}  # each (C,)
        return ({f: values[f][None].astype(np.float32) for f, _ in self.features},
                level[None].astype(np.float32))

    def core_rows(self, x_raw: np.ndarray, x_prev: np.ndarray, fresh: np.ndarray
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """core_inputs for B streams at once, element for element the same arithmetic.

        x_raw (B, C) float64 sensor units; x_prev (B, C) float32 normalized (read where not fresh);
        fresh (B,) bool: rows that prime x_prev (their change reads 0).
        Returns ({feature: (B, C) float32}, new x_prev (B, C) float32 normalized).
        """
        level = (x_raw - self._mean64) / self._std64  # (B, C)
        previous = np.where(fresh[:, None], level, np.asarray(x_prev, np.float64))  # (B, C)
        values = {"delta": (level - previous) * self._delta_gain, "level": level}  # each (B, C)
        return {f: values[f].astype(np.float32) for f, _ in self.features}, level.astype(np.float32)

    @staticmethod
    def ring_inputs(age: np.ndarray) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """A Transformer core's ring inputs for the held ages (B, W), and the ages after this step."""
        return ring_step(age)

    def forecast_from(self, x_raw, correction: np.ndarray) -> np.ndarray:
        """Persistence plus the core's correction: (..., C) raw, (..., O) typical changes -> (..., O) raw float32."""
        x = np.asarray(x_raw, np.float64)
        return (x[..., self._target] + np.asarray(correction, np.float64) * self._delta_std[self._target]).astype(
            np.float32)
