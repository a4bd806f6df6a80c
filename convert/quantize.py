"""Quantized variants of the step model, calibrated on the stream the device will see.

The float variants convert the raw step graph (convert/tf_step.py); for a
forecaster the integer ones convert its core graph (convert/core_step.py:
change and level in, correction out, persistence outside), which keeps
int8 within 1.1x float32's MSE where the raw graph was 10-1,700x (issue 13).
Calibration samples come from running the float32 model over the training
split in order with its state carried, so the calibrator sees the state
ranges of a long-running device, not of a fresh start.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from edge_runtime.model import Model
from convert.flatbuffer import shorten_tensor_names

CALIBRATION_SAMPLES = 1000


@dataclass(frozen=True)
class VariantSpec:
    name: str
    dtype: str  # the manifest's dtype label
    integer_io: bool = False  # int8 tensors at the signature (x, y and state), for firmware
    note: str = ""
    core: bool = False  # converted from the core graph when the task has one (a forecaster's integer variants)


VARIANTS = (
    VariantSpec("float32", "float32"),
    VariantSpec("float16", "float16", note="weights stored as float16, computed in float32"),
    VariantSpec("dynamic-int8", "dynamic-int8",
                note="per-tensor weight scales: per-channel emits FULLY_CONNECTED v12, which "
                     "tflite-runtime 2.14 cannot open"),
    VariantSpec("int8", "int8", core=True,
                note="int8 weights and activations, float32 at the signature; a forecaster's is its core "
                     "graph with per-tensor weight scales"),
    VariantSpec("int16x8", "int16x8", core=True,
                note="int16 activations, int8 weights with per-tensor scales, float32 at the signature; "
                     "per-channel scales and int64 zero points cost 24 KB more on an LSTM-128 (42% of "
                     "float32's bytes instead of 30%) for test MSE x1.002 instead of x1.008"),
    VariantSpec("int8-io", "int8", integer_io=True, core=True,
                note="int8 weights and activations with int8 tensors at the signature: the firmware form; "
                     "a forecaster's is its core graph with per-tensor weight scales"),
)
VARIANT_NAMES = tuple(v.name for v in VARIANTS)


HEADROOM = 0.25  # of the training range, added on both sides of every input channel


def calibration_samples(float_model: Model, train_raw: np.ndarray, count: int = CALIBRATION_SAMPLES) -> list[dict]:
    """(x, state) pairs exactly as the step signature receives them, for the converter's calibrator.

    Most are evenly spaced points of the float32 model run over the training
    split in order with its state carried. A few repeat real states with
    inputs at the training range +-25% per channel: sensors drift past what
    training saw (the temperature sensor here does), and a quantized input
    saturates at its calibrated range; without headroom the int16x8 LSTM's
    test MSE was 1.5x float32's, almost all of it from clipped readings.
    """
    session = float_model.session()
    stride = max(1, len(train_raw) // count)
    samples = []
    for t, row in enumerate(train_raw):
        if t % stride == 0 and t > 0:  # t > 0: x_prev is primed from the first sample
            samples.append({"x": row[None].astype(np.float32),
                            **{name: value.copy() for name, value in session.state.items()}})
        session.step(row)
    low, high = train_raw.min(axis=0), train_raw.max(axis=0)  # (C,)
    margin = HEADROOM * (high - low)
    for i, edge in enumerate((low - margin, high + margin, low - margin, high + margin)):
        base = samples[(i * 7919) % len(samples)]  # a real state, picked without pattern
        samples[i * (len(samples) // 4)] = {**base, "x": edge[None].astype(np.float32)}
    return samples[:count]


DELTA_HEADROOM = 1.25  # times the largest change in training: the core's delta input range
CORE_EDGE_SAMPLES = 8


def core_calibration_samples(float_core: bytes, binding_for, train_raw: np.ndarray,
                             count: int = CALIBRATION_SAMPLES) -> list[dict]:
    """The core graph's inputs (features and state) as its step signature receives them.

    float_core: the float32 core .tflite; binding_for(interpreter) -> its StepBinding. Most
    samples are the float32 core run over the training split in order with its state carried.
    CORE_EDGE_SAMPLES of them repeat real states with the level at the training range +-25% and the
    change at +-1.25x the largest training change per channel, so a drifting sensor or a jump is
    inside the calibrated ranges.
    """
    from edge_runtime.backends import interpreter_class
    from edge_runtime.binding import signature_details

    interpreter = interpreter_class("ai_edge_litert")[1](model_content=float_core, num_threads=1)
    interpreter.allocate_tensors()
    inputs, outputs = signature_details(interpreter)
    binding = binding_for({n: int(d["index"]) for n, d in inputs.items()},
                          {n: int(d["index"]) for n, d in outputs.items()})
    state = {n: np.zeros(inputs[n]["shape"], np.float32) for n, _, _ in binding.state}  # (1, n) each
    age = np.zeros(inputs[binding.ring[0][0]]["shape"], np.float32) if binding.holds_ring else None  # (1, W)
    stride = max(1, len(train_raw) // count)
    samples, x_prev = [], None
    for t, row in enumerate(train_raw):
        features, x_prev = binding.core_inputs(row, x_prev)
        if binding.holds_ring:  # a Transformer core: the ring's inputs from the ages held here
            ring, age = binding.ring_inputs(age)
            features = {**features, **ring}
        if t % stride == 0 and t > 0:  # t > 0: the first change always reads 0
            samples.append({**features, **{n: v.copy() for n, v in state.items()}})
        for name, index in binding.features + binding.ring:
            interpreter.set_tensor(index, features[name])
        for name, index, _ in binding.state:
            interpreter.set_tensor(index, state[name])
        interpreter.invoke()
        state = {name: interpreter.get_tensor(out).copy() for name, _, out in binding.state}
    low, high = train_raw.min(axis=0), train_raw.max(axis=0)  # (C,)
    margin = HEADROOM * (high - low)
    largest = np.abs(np.diff(train_raw, axis=0)).max(axis=0) * DELTA_HEADROOM  # (C,) raw units
    for i in range(CORE_EDGE_SAMPLES):  # real states with edge features, spread without pattern
        edge_level = (low - margin) if i % 2 == 0 else (high + margin)  # (C,) raw
        change = largest if i % 4 < 2 else -largest
        features, _ = binding.core_inputs(edge_level, binding.x_prev_from(edge_level - change)[None])
        base = samples[(i * 7919) % len(samples)]  # (its ring inputs are kept with its state)
        samples[i * (len(samples) // CORE_EDGE_SAMPLES)] = {**base, **features}
    return samples[:count]


def convert_variant(saved_model_dir: str, spec: VariantSpec, calibration: list[dict], core: bool = False,
                    signatures: tuple[str, ...] = ("step",)) -> bytes:
    """core: the SavedModel is a core graph (int8 then gets per-tensor weight scales too). signatures: the
    SavedModel's signatures to keep (a resident companion has three, convert/resident_step.py)."""
    converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=list(signatures))
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if spec.name == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif spec.name == "dynamic-int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter._experimental_disable_per_channel = True  # see VARIANTS: keeps FULLY_CONNECTED at v9
    elif spec.name in ("int8", "int16x8", "int8-io"):
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: iter(calibration)
        converter.target_spec.supported_ops = [
            tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8
            if spec.name == "int16x8" else tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        # per-tensor weight scales: on a core graph an LSTM-64's int8-io is 32% of float32's bytes instead
        # of 53% per channel, for the same test MSE within 0.01 (17 runs, docs/DESIGN-NOTES.md); int16x8:
        # see VARIANTS. Autocomplete's raw int8 keeps the converter's per-channel default.
        if spec.name == "int16x8" or core:
            converter._experimental_disable_per_channel = True
        if spec.integer_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
    return shorten_tensor_names(converter.convert())
