"""AR(k) (train/ar.py) as step graphs: the raw one the float variants ship, the core the integer ones do.

The lag buffer is a shift register in a named state tensor, `lags` (1, m C): the m changes
the last forecast read, in typical changes, newest first (with x_prev: the last k samples for
AR(k) on the levels). One step:

    held = split(lags) into its m changes; lags' = concat([d, held but the oldest])   (1, m C)
    correction = W_delta concat([d, held]) + W_level level + b   (1, O) typical changes; the oldest
                                                                  held change has zero weights

Ops: one SPLIT of the lags input and two CONCATENATIONs: no SLICE or STRIDED_SLICE, which the
compatibility table and firmware_sim do not have, and the new lags are always a tensor of their
own (tflite-runtime 2.14 cannot open a model whose signature output is one of its inputs).
Every SPLIT output is read: with the oldest change unread the converter left the SPLIT in float
inside int8-io models (DEQUANTIZE, SPLIT, QUANTIZE) on some graphs and not on others; the zero
weights cost C bytes. Cutting the new lags out of the regressors (a SPLIT of a CONCATENATION's
output) did the same. The raw graph takes x in sensor units as StepGraph does,
with x_prev among its state; the core graph takes `delta` (and `level`) and returns the correction,
x_prev and the persistence add live outside (edge_runtime/binding.py), as for every forecaster.

In the integer variants d, lags, regress and the new lags must share one scale: a shift register
moves the same quantity, and firmware carries a state tensor's bytes from output to input, so a
scale that differed between the lags' input and output would rescale every change each step it
is held. `share_change_range` makes the calibration ranges of `delta` and `lags` identical, so
the converter gives all four the same scale and zero point and the shift is a byte copy.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from convert.core_step import core_input_names
from convert.tf_step import StepGraph
from edge_runtime.binding import CORE_OUTPUT
from train.config import AR_LAGS, ModelConfig


def _shift(d: tf.Tensor, lags: tf.Tensor | None, changes: int) -> tuple[tf.Tensor, tf.Tensor | None]:
    """(1, C) this change, (1, m C) the held ones -> what the matmul reads (1, (m+1) C: every change,
    the oldest with zero weights) and the new lags (1, m C): the oldest held change drops out."""
    if lags is None:
        return d, None
    held = tf.split(lags, changes, axis=1)  # m x (1, C), newest first
    return tf.concat([d, *held], axis=1), tf.concat([d, *held[:-1]], axis=1)


def _weight_delta(w: np.ndarray, config: ModelConfig) -> np.ndarray:
    """(O, m C) -> (O, (m+1) C) with zeros for the oldest held change when the model holds lags: every
    SPLIT output is then read by something (an unread one left the SPLIT in float inside int8 models)."""
    if AR_LAGS not in config.state_names():
        return w
    return np.concatenate([w, np.zeros((w.shape[0], config.input_size), w.dtype)], axis=1)


class ARStepGraph(StepGraph):
    """step(x, x_prev, lags?) -> {y, x_prev, lags?}: raw sensor units in and out, state normalized."""

    def __init__(self, weights: dict[str, np.ndarray], config: ModelConfig, normalization: dict,
                 batch: int | None = 1):
        tf.Module.__init__(self)
        self.config = config
        w = {k: np.asarray(v, np.float32) for k, v in weights.items()}
        gain = w["output_gain"]  # (O,) typical changes -> normalized level, folded into the weights
        self.w = {"weight_delta": _weight_delta(w["weight_delta"] * gain[:, None], config), "bias": w["bias"] * gain,
                  "delta_gain": w["delta_gain"],
                  **({"weight_level": w["weight_level"] * gain[:, None]} if "weight_level" in w else {})}
        mean, std = (np.asarray(normalization[k], np.float32) for k in ("mean", "std"))
        target = list(config.target)
        self.in_mean, self.in_scale = tf.constant(mean[None]), tf.constant((1.0 / std)[None])  # (1, C)
        self.out_mean, self.out_std = tf.constant(mean[None, target]), tf.constant(std[None, target])  # (1, O)
        names = ["x"] + config.state_names()
        shapes = {"x": (batch, config.input_size), **config.state_shapes(batch)}
        specs = [tf.TensorSpec(shapes[n], tf.float32, name=n) for n in names]
        self.step = tf.function(self._named_step(names), input_signature=specs, autograph=False)

    def forward(self, t: dict) -> dict:
        cfg = self.config
        x = (t["x"] - self.in_mean) * self.in_scale  # (1, C) normalized
        delta = x - t["x_prev"]  # (1, C)
        regress, lags = _shift(delta * self._const("delta_gain")[None], t.get(AR_LAGS), cfg.ar_changes)
        correction = tf.matmul(regress, self._const("weight_delta", True)) + self._const("bias")  # (1, O)
        if "level" in cfg.features:
            correction = correction + tf.matmul(x, self._const("weight_level", True))
        level = x if list(cfg.target) == list(range(cfg.input_size)) else tf.gather(x, list(cfg.target), axis=1)
        out = {"y": (level + correction) * self.out_std + self.out_mean,  # (1, O) raw units
               "x_prev": t["x_prev"] + delta}  # a tensor of its own, not x (see StepGraph.forward)
        if lags is not None:
            out[AR_LAGS] = lags
        return out


class ARCoreStepGraph(StepGraph):
    """step(delta, level?, lags?) -> {correction, lags?}: the integer variants' graph, all (1, n)."""

    def __init__(self, weights: dict[str, np.ndarray], config: ModelConfig, batch: int | None = 1):
        tf.Module.__init__(self)
        self.config = config
        w = {k: np.asarray(v, np.float32) for k, v in weights.items()}  # correction in typical changes
        self.w = {**w, "weight_delta": _weight_delta(w["weight_delta"], config)}
        names = core_input_names(config)
        shapes = {"delta": (batch, config.input_size), "level": (batch, config.input_size),
                  **config.state_shapes(batch)}
        specs = [tf.TensorSpec(shapes[n], tf.float32, name=n) for n in names]
        self.step = tf.function(self._named_step(names), input_signature=specs, autograph=False)

    def forward(self, t: dict) -> dict:
        cfg = self.config
        regress, lags = _shift(t["delta"], t.get(AR_LAGS), cfg.ar_changes)
        # the bias rides on the first matmul, so the converter fuses it into that FULLY_CONNECTED
        correction = tf.matmul(regress, self._const("weight_delta", True)) + self._const("bias")  # (1, O)
        if "level" in cfg.features:
            correction = correction + tf.matmul(t["level"], self._const("weight_level", True))
        out = {CORE_OUTPUT: correction}
        if lags is not None:
            out[AR_LAGS] = lags
        return out


def share_change_range(samples: list[dict]) -> list[dict]:
    """The core's calibration samples with `delta` and `lags` spanning the same range: two samples
    (real states otherwise) carry every change at the lowest and at the highest value either holds."""
    if not samples or AR_LAGS not in samples[0]:
        return samples
    values = np.concatenate([np.concatenate([s["delta"].ravel(), s[AR_LAGS].ravel()]) for s in samples])
    out = list(samples)
    for i, edge in ((len(out) // 3, values.min()), (2 * len(out) // 3, values.max())):
        out[i] = {**out[i], "delta": np.full_like(out[i]["delta"], edge),
                  AR_LAGS: np.full_like(out[i][AR_LAGS], edge)}
    return out
