"""One stream's state kept inside its own interpreter: a variant's resident companion (issue 19).

The companion (convert/resident_step.py) is the variant's step graph with the
named state in resource variables, starting at explicit zeros, and three
signatures that share them:

    step(x) -> y                  the hot path: set x, invoke, get y
    get_state() -> {name: (1, n)} read only when asked (a snapshot, `session.state`)
    set_state({name: (1, n)})     written only when asked (a restore, a reset, priming x_prev);
                                  returns `written`, the count (a signature with no output converts
                                  to one whose writes are pruned)

Feeding the state in and out of an explicit-state model costs one
set_tensor/get_tensor call per state tensor per step, which from Python was
most of a step (issue 19: 12.3 us of a 14.5 us step). Each signature is a
subgraph of its own; the interpreter's `invoke()` and `set_tensor()` only
reach subgraph 0, so the steps go through the interpreter's wrapper with the
subgraph's index (the same calls its own SignatureRunner makes, without the
resize and allocate that runner repeats on every call). Every tensor is
found by signature and name, never by position, and checked against the
manifest. One interpreter holds one stream: each Session opens its own. The
batched resident companion (`rows` > 1, convert writes it with 64) holds a
block of that many streams, one per row, for StreamPool's steady state.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.backends import allocate
from edge_runtime.manifest import BundleError, verified_file_bytes

SIGNATURES = ("step", "get_state", "set_state")
WRITTEN = "written"  # set_state's output, (1,) int32: the number of state tensors written


def verified_companion(model, entry: dict | None, what: str) -> bytes | str:
    """A resident companion's bytes, checked against the manifest's size and sha256 (a mismatch is a
    BundleError), or why `model` steps with explicit state instead: no companion, an integer variant (its
    state is requantized outside the model), or a runtime the converter found cannot open it.
    `model` is an edge_runtime.model.Model (not imported: the model module imports this one's users)."""
    if entry is None:
        return f"variant {model.variant.name} has no {what}"
    if model.integer_io or model.binding.core:
        return f"variant {model.variant.name} is an integer variant (its state is requantized outside the model)"
    refusal = (entry.get("compatibility") or {}).get(model.backend)
    if refusal:
        return f"{model.backend} cannot open {entry['file']}: {refusal}"
    return verified_file_bytes(model.manifest, entry["file"], entry["bytes"], entry["sha256"])


class ResidentUnavailable(RuntimeError):
    """This interpreter cannot run the resident companion; the session falls back to explicit state."""


class ResidentStep:
    """An interpreter of the resident companion, its subgraphs and tensor indices by name."""

    def __init__(self, interpreter_cls, content: bytes, manifest, num_threads: int = 1, file: str = "resident",
                 rows: int = 1):
        try:
            interpreter = interpreter_cls(model_content=content, num_threads=num_threads)
            allocate(interpreter)
            wrapper = interpreter._interpreter  # the runtime's C++ wrapper: per-subgraph set, invoke and get
            if not all(hasattr(wrapper, f) for f in ("GetSubgraphIndexFromSignature", "AllocateTensors",
                                                     "SetTensor", "Invoke", "GetTensor")):
                raise ResidentUnavailable(f"{type(interpreter).__module__} has no per-subgraph calls")
            found = interpreter.get_signature_list()
            missing = [k for k in SIGNATURES if k not in found]
            if missing:
                raise BundleError(f"{manifest.path / file}: no signature {', '.join(missing)} "
                                  f"(it has {', '.join(sorted(found))})")
            details, self.subgraph = {}, {}
            for key in SIGNATURES:
                runner = interpreter.get_signature_runner(key)
                details[key] = (runner.get_input_details(), runner.get_output_details())
                del runner  # ai-edge-litert refuses allocate/invoke while a runner holds its buffers
                self.subgraph[key] = int(wrapper.GetSubgraphIndexFromSignature(key))
            for index in self.subgraph.values():
                wrapper.AllocateTensors(index)  # allocate_tensors() alone leaves the other subgraphs unallocated
        except (ValueError, RuntimeError, AttributeError) as e:
            if isinstance(e, (BundleError, ResidentUnavailable)):
                raise
            raise ResidentUnavailable(f"{manifest.path / file}: the interpreter cannot open it ({e})") from None
        self.interpreter, self.wrapper = interpreter, wrapper
        self.rows = rows
        self._check(manifest, details, file, rows)
        step_in, step_out = details["step"]
        self.x, self.y = int(step_in[manifest.input.name]["index"]), int(step_out[manifest.output.name]["index"])
        self.names = [s.name for s in manifest.state]  # the manifest's order
        self._reads = [(n, int(details["get_state"][1][n]["index"])) for n in self.names]
        self._writes = [(n, int(details["set_state"][0][n]["index"])) for n in self.names]

    @staticmethod
    def _check(manifest, details: dict, file: str, rows: int) -> None:
        """Each signature must take and return exactly what the manifest promises, by name and shape
        (the manifest's (1, n) shapes with `rows` rows)."""
        def shape(spec):
            return (rows, *spec.shape[1:])
        state = {s.name: (shape(s), np.float32) for s in manifest.state}
        expected = {"step": ({manifest.input.name: (shape(manifest.input), np.float32)},
                             {manifest.output.name: (shape(manifest.output), np.float32)}),
                    "get_state": ({}, state), "set_state": (state, {WRITTEN: ((1,), np.int32)})}
        for key, sides in expected.items():
            for kind, want, have in zip(("input", "output"), sides, details[key]):
                got = {n: (tuple(int(v) for v in d["shape"]), np.dtype(d["dtype"])) for n, d in have.items()}
                if got != {n: (tuple(shape), np.dtype(dtype)) for n, (shape, dtype) in want.items()}:
                    def text(m):
                        return ", ".join(f"{n} {list(shape)} {np.dtype(dtype).name}" for n, (shape, dtype) in m.items())
                    raise BundleError(f"{manifest.path / file}: signature {key!r} has {kind}s ({text(got)}) where "
                                      f"the manifest says ({text(want)})")

    def read(self) -> dict[str, np.ndarray]:
        """The state held in the interpreter: name -> (rows, n) float32 (fresh arrays), the manifest's order."""
        sub, get = self.subgraph["get_state"], self.wrapper.GetTensor
        self.wrapper.Invoke(sub)
        return {name: get(index, sub) for name, index in self._reads}

    def write(self, state: dict[str, np.ndarray]) -> None:
        """Set every state tensor inside the interpreter: name -> (rows, n) float32, C-contiguous."""
        sub, put = self.subgraph["set_state"], self.wrapper.SetTensor
        for name, index in self._writes:
            put(index, state[name], sub)
        self.wrapper.Invoke(sub)
