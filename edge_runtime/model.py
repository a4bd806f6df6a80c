"""A verified bundle opened with one interpreter, whatever its task.

A `Model` is the verified bundle plus one interpreter and the binding of its
step signature by name. The step model is stateless (state goes in and comes
out), so any number of sessions share that interpreter; each owns only its
state arrays. (A forecast session with a resident companion has an
interpreter of its own instead, its state inside: edge_runtime/resident.py.)
Sessions of one model must be stepped from one thread at a time.
Each task subclasses `Model` with its own `session()` (edge_runtime/session.py
for forecasts, edge_runtime/autocomplete.py for autocomplete);
edge_runtime/tasks.py picks the subclass from the manifest's task.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.backends import allocate, interpreter_class
from edge_runtime.binding import (SIGNATURE, StepBinding, check_ring_inputs, expected_signature, indices,
                                  signature_details)
from edge_runtime.manifest import BundleError, Manifest, Variant, verified_model_bytes, why_not_deployable
from edge_runtime.quant import Codec


class Model:
    """The task-independent part: variant choice, interpreter, signature checks, codecs, binding."""

    def __init__(self, manifest: Manifest, variant: str | None = None, backend: str | None = None,
                 num_threads: int = 1, max_mse_ratio: float | None = None):
        self.manifest = manifest
        self.backend, interpreter_cls = interpreter_class(backend)
        self.interpreter_cls, self.num_threads = interpreter_cls, num_threads  # for companions (resident, batched)
        self.variant = (choose_variant(manifest, self.backend, max_mse_ratio)
                        if variant is None and max_mse_ratio is not None else manifest.variant(variant))
        content = verified_model_bytes(manifest, self.variant)
        try:
            self.interpreter = interpreter_cls(model_content=content, num_threads=num_threads)
            allocate(self.interpreter)
            # name -> {index, shape, dtype, ...}, read once
            self.signature_inputs, self.signature_outputs = signature_details(self.interpreter)
        except (ValueError, RuntimeError) as e:
            raise BundleError(f"{manifest.path / self.variant.file}: the {self.backend} interpreter "
                              f"cannot open it ({e})") from None
        self._check_signature()
        # float32 <-> tensor type at the signature; integer only for integer-I/O variants
        units = self._state_units()
        self.codecs = {name: Codec(name, detail, units.get(name.removesuffix(":out"))) for name, detail in
                       {**self.signature_inputs, **{f"{k}:out": v for k, v in self.signature_outputs.items()}}.items()}
        self.integer_io = any(c.integer for c in self.codecs.values())
        self.binding = StepBinding(manifest, indices(self.signature_inputs), indices(self.signature_outputs),
                                   self.variant)

    def _state_units(self) -> dict[str, np.ndarray]:
        """state name -> (n,) the units its tensor holds the state in (a core LSTM's cell_scales), checked."""
        units = {}
        widths = {s.name: s.shape[1] for s in self.manifest.state}
        for name, values in (self.variant.raw.get("cell_scales") or {}).items():
            array = np.asarray(values, np.float64) if isinstance(values, list) else np.empty(0)
            if name not in widths or array.shape != (widths[name],) or not np.all(np.isfinite(array) & (array > 0)):
                what = f"{widths[name]} finite positive numbers" if name in widths else "a state of the model"
                raise BundleError(f"{self.manifest.path}: variant {self.variant.name}: cell_scales[{name!r}] "
                                  f"must be {what}")
            units[name] = array.astype(np.float32)
        return units

    def _check_signature(self) -> None:
        """Every tensor the manifest promises must be in the model, with the same shape."""
        file = self.manifest.path / self.variant.file
        check_ring_inputs(self.manifest, self.variant, self.signature_inputs)
        expected_in, expected_out = expected_signature(self.manifest, self.variant)
        for kind, expected, actual in (("input", expected_in, self.signature_inputs),
                                       ("output", expected_out, self.signature_outputs)):
            for name, shape in expected.items():
                if name not in actual:
                    raise BundleError(f"{file}: the model's '{SIGNATURE}' signature has no {kind} "
                                      f"{name!r} (it has {', '.join(sorted(actual))})")
                real = tuple(int(s) for s in actual[name]["shape"])
                if real != tuple(shape):
                    raise BundleError(f"{file}: {kind} {name!r} has shape {list(real)} in the model "
                                      f"but {list(shape)} in the manifest")

    def session(self):
        raise NotImplementedError("each task's Model subclass opens its own session (edge_runtime/tasks.py)")


def choose_variant(manifest: Manifest, backend: str, max_mse_ratio: float) -> Variant:
    """The smallest variant that `backend` opens and that is deployable within the error budget
    (edge_runtime.manifest.why_not_deployable: within budget, below persistence, no drift)."""
    fits, rejected = [], []
    for v in manifest.variants:
        refusal = v.raw.get("compatibility", {}).get(backend)
        reasons = why_not_deployable(manifest, v, max_mse_ratio)
        if refusal:
            rejected.append(f"{v.name}: {refusal}")
        elif reasons:
            rejected.append(f"{v.name}: not deployable ({'; '.join(reasons)})")
        elif v.raw.get("metrics", {}).get("mse_ratio") is None:
            rejected.append(f"{v.name}: no recorded MSE ratio")
        else:
            fits.append(v)
    if not fits:
        raise BundleError(f"{manifest.path}: no variant within an MSE ratio of {max_mse_ratio} opens in "
                          f"{backend}: " + "; ".join(rejected))
    return min(fits, key=lambda v: v.bytes)
