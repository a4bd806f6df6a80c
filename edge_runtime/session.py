"""Load a bundle and run it one step at a time with persistent, named state.

A `Model` is the verified bundle plus one interpreter. The step model is
stateless (state goes in and comes out), so any number of `Session`s (one
per sensor stream) share that interpreter; each owns only its state arrays.
Sessions of one model must be stepped from one thread at a time.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.backends import interpreter_class
from edge_runtime.manifest import BundleError, Manifest, Variant, read_manifest, verified_model_bytes
from edge_runtime.quant import Codec

SIGNATURE = "step"


class Model:
    def __init__(self, manifest: Manifest, variant: str | None = None, backend: str | None = None,
                 num_threads: int = 1, max_mse_ratio: float | None = None):
        self.manifest = manifest
        self.backend, interpreter_cls = interpreter_class(backend)
        self.variant = (choose_variant(manifest, self.backend, max_mse_ratio)
                        if variant is None and max_mse_ratio is not None else manifest.variant(variant))
        content = verified_model_bytes(manifest, self.variant)
        try:
            self.interpreter = interpreter_cls(model_content=content, num_threads=num_threads)
            self.interpreter.allocate_tensors()
            # Read the signature's name -> tensor index map once, then drop the runner:
            # ai-edge-litert refuses allocate/invoke while a runner holds its buffers.
            runner = self.interpreter.get_signature_runner(SIGNATURE)
            self.signature_inputs = runner.get_input_details()  # name -> {index, shape, dtype, ...}
            self.signature_outputs = runner.get_output_details()
            del runner
        except (ValueError, RuntimeError) as e:
            raise BundleError(f"{manifest.path / self.variant.file}: the {self.backend} interpreter "
                              f"cannot open it ({e})") from None
        self._check_signature()
        # float32 <-> tensor type at the signature; integer only for integer-I/O variants
        self.codecs = {name: Codec(name, detail) for name, detail in
                       {**self.signature_inputs, **{f"{k}:out": v for k, v in self.signature_outputs.items()}}.items()}
        self.integer_io = any(c.integer for c in self.codecs.values())
        if manifest.task == "forecast":
            norm = manifest.normalization
            self.mean = np.asarray(norm["mean"], np.float32)  # (C,)
            self.std = np.asarray(norm["std"], np.float32)  # (C,)

    def _check_signature(self) -> None:
        """Every tensor the manifest promises must be in the model, with the same shape."""
        m, file = self.manifest, self.manifest.path / self.variant.file
        expected_in = {m.input.name: m.input.shape, **{s.name: s.shape for s in m.state}}
        expected_out = {m.output.name: m.output.shape, **{s.name: s.shape for s in m.state}}
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

    @property
    def state_names(self) -> list[str]:
        return [s.name for s in self.manifest.state]

    def session(self):
        """A forecast bundle: a `Session` per sensor stream. An autocomplete bundle: an
        `Autocomplete` per typing session (edge_runtime/autocomplete.py)."""
        if self.manifest.task == "autocomplete":
            from edge_runtime.autocomplete import Autocomplete, CharSession

            return Autocomplete(CharSession(self))
        return Session(self)


def load(bundle_dir: str | Path, variant: str | None = None, backend: str | None = None,
         num_threads: int = 1, max_mse_ratio: float | None = None) -> Model:
    """Read and verify a bundle, open one variant with one interpreter backend.

    variant: a name from the manifest; or None with max_mse_ratio: the smallest
    deployable variant whose recorded test MSE is within that multiple of the
    float32 model's and which this backend can open; or None: the first (float32).
    """
    return Model(read_manifest(bundle_dir), variant, backend, num_threads, max_mse_ratio)


def choose_variant(manifest: Manifest, backend: str, max_mse_ratio: float) -> Variant:
    """The smallest variant within the error budget that `backend` opens and that is deployable."""
    fits, rejected = [], []
    for v in manifest.variants:
        metrics = v.raw.get("metrics", {})
        refusal = v.raw.get("compatibility", {}).get(backend)
        ratio = metrics.get("mse_ratio")
        if refusal:
            rejected.append(f"{v.name}: {refusal}")
        elif not metrics.get("deployable", True):
            rejected.append(f"{v.name}: not deployable ({metrics.get('why_not_deployable')})")
        elif ratio is None or ratio > max_mse_ratio:
            rejected.append(f"{v.name}: MSE ratio {ratio}")
        else:
            fits.append(v)
    if not fits:
        raise BundleError(f"{manifest.path}: no variant within an MSE ratio of {max_mse_ratio} opens in "
                          f"{backend}: " + "; ".join(rejected))
    return min(fits, key=lambda v: v.bytes)


class Session:
    """One stream: raw sensor units in, raw units out, state carried between steps."""

    def __init__(self, model: Model):
        self.model = model
        interp = model.interpreter
        self._set, self._get, self._invoke = interp.set_tensor, interp.get_tensor, interp.invoke
        m = model.manifest
        self._x_index = model.signature_inputs[m.input.name]["index"]
        self._y_index = model.signature_outputs[m.output.name]["index"]
        # (name, input tensor index, output tensor index), resolved once by name
        self._state_io = [(s.name, model.signature_inputs[s.name]["index"], model.signature_outputs[s.name]["index"])
                          for s in m.state]
        self._x = np.zeros(m.input.shape, np.float32)  # (1, C) raw input buffer
        self._codecs = model.codecs if model.integer_io else None
        self.state: dict[str, np.ndarray] = {}
        self.steps = 0
        self.reset()

    def reset(self) -> None:
        """Zero state; the next sample primes x_prev (so its change reads as 0)."""
        self.state = {s.name: np.zeros(s.shape, np.float32) for s in self.model.manifest.state}
        self.steps = 0

    def step(self, x_raw) -> np.ndarray:
        """x_raw: (C,) one sample in sensor units -> (O,) forecast of the next sample, in sensor units.

        The model normalizes inside its graph; here only the state goes in and out.
        State is kept as float32 (normalized units) whatever the variant, so it
        reads, snapshots and restores the same way for every variant.
        """
        x = self._x  # (1, C)
        x[0] = x_raw  # converts to float32 and checks the channel count
        if self.steps == 0 and "x_prev" in self.state:
            self.state["x_prev"] = (x - self.model.mean) / self.model.std  # x_prev is normalized
        if self._codecs is not None:
            return self._step_integer_io(x)
        self._set(self._x_index, x)
        for name, in_index, _ in self._state_io:
            self._set(in_index, self.state[name])
        self._invoke()
        for name, _, out_index in self._state_io:
            self.state[name] = self._get(out_index)
        self.steps += 1
        return self._get(self._y_index)[0]

    def _step_integer_io(self, x: np.ndarray) -> np.ndarray:
        """The same step for a model with integer tensors at its signature."""
        codecs, m = self._codecs, self.model.manifest
        self._set(self._x_index, codecs[m.input.name].encode(x))
        for name, in_index, _ in self._state_io:
            self._set(in_index, codecs[name].encode(self.state[name]))
        self._invoke()
        for name, _, out_index in self._state_io:
            self.state[name] = codecs[f"{name}:out"].decode(self._get(out_index))
        self.steps += 1
        return codecs[f"{m.output.name}:out"].decode(self._get(self._y_index))[0]

    def get_state(self, name: str) -> np.ndarray:
        if name not in self.state:
            raise KeyError(f"no state tensor {name!r}; this model has {', '.join(self.state)}")
        return self.state[name].copy()

    def set_state(self, name: str, value) -> None:
        current = self.get_state(name)
        value = np.asarray(value, np.float32)
        if value.shape != current.shape:
            raise ValueError(f"state {name!r} has shape {list(current.shape)}, got {list(value.shape)}")
        self.state[name] = value.copy()
        self.steps = max(self.steps, 1)  # an explicitly set state is not a fresh start
