"""The AR term (train/ar.py) in the step graphs: the ar cell's whole model, and the highway of rnn+ar,
gru+ar and lstm+ar. StepGraph (convert/tf_step.py, the float variants) and CoreStepGraph
(convert/core_step.py, the integer ones) add it to their correction with `ar_term`.

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
output) did the same. The raw graph computes d from x and x_prev (its state); the core graph
reads d as its `delta` input, x_prev and the persistence add outside (edge_runtime/binding.py).

In the integer variants d, lags, regress and the new lags must share one scale: a shift register
moves the same quantity, and firmware carries a state tensor's bytes from output to input, so a
scale that differed between the lags' input and output would rescale every change each step it
is held. `share_change_range` makes the calibration ranges of `delta` and `lags` identical, so
the converter gives all four the same scale and zero point and the shift is a byte copy.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from train.config import AR_LAGS, ModelConfig


def _shift(d: tf.Tensor, lags: tf.Tensor | None, changes: int) -> tuple[tf.Tensor, tf.Tensor | None]:
    """(1, C) this change, (1, m C) the held ones -> what the matmul reads (1, (m+1) C: every change,
    the oldest with zero weights) and the new lags (1, m C): the oldest held change drops out."""
    if lags is None:
        return d, None
    held = tf.split(lags, changes, axis=1)  # m x (1, C), newest first
    return tf.concat([d, *held], axis=1), tf.concat([d, *held[:-1]], axis=1)


def ar_graph_weights(weights: dict[str, np.ndarray], config: ModelConfig,
                     gain: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """The AR term's float32 weights for a step graph: W_delta (O, m C) -> (O, (m+1) C) with zeros for the
    oldest held change when the model holds lags (every SPLIT output is then read: an unread one left the
    SPLIT in float inside int8 models); gain (O,) folded in (the raw graph's typical changes -> normalized)."""
    if not config.has_ar:
        return {}
    scale = np.ones(config.output_size, np.float32) if gain is None else np.asarray(gain, np.float32)
    w = {k: np.asarray(v, np.float32) * (scale if k == "ar.bias" else scale[:, None])
         for k, v in weights.items() if k.startswith("ar.")}
    if AR_LAGS in config.state_names():
        zeros = np.zeros((config.output_size, config.input_size), np.float32)
        w["ar.weight_delta"] = np.concatenate([w["ar.weight_delta"], zeros], axis=1)
    return w


def ar_term(graph, d: tf.Tensor, level: tf.Tensor | None, lags: tf.Tensor | None):
    """The AR correction (1, O) and the new lags (or None): d (1, C) this change in typical changes,
    level (1, C) normalized (read only when the model reads the level), lags the held changes."""
    config = graph.config
    regress, new_lags = _shift(d, lags, config.ar_changes)
    # the bias rides on the first matmul, so the converter fuses it into that FULLY_CONNECTED
    correction = tf.matmul(regress, graph._const("ar.weight_delta", True)) + graph._const("ar.bias")  # (1, O)
    if "level" in config.features:
        correction = correction + tf.matmul(level, graph._const("ar.weight_level", True))
    return correction, new_lags


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
