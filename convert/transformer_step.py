"""The transformer forecaster's step (train/transformer.py) as a TF graph: one sample in, one forecast out,
the KV cache a ring buffer of named state tensors.

State (all (B, n), as every bundle's): `age` (B, W), and per layer `k_cache<l>`, `v_cache<l>`
(B, heads * W * head_dim), laid out (heads, W, head_dim). One step:

    s = age[0] - W [age[0] = W]                  the slot due: age[0] mod W (train/transformer.py says why)
    onehot_j = relu(1 - (j - s)^2)               (B, W); ages are whole numbers, exact in float32
    age' = (age + min(age, 1)) (1 - onehot) + onehot
    per layer: cache' = cache * (1 - onehot) + onehot * k      (B, heads, W, hd): O(W d), no SLICE
               scores = q K'^T - slope (age' - 1) - BIG relu(1 - age')    (B, heads, 1, W)
               out = softmax(scores) V'                                    (B, heads, 1, hd)

The query scale 1/sqrt(head_dim) is folded into W_q. A slot never written has age' = 0 and gets -BIG
(1e4): its softmax weight underflows to exactly 0, as torch's -inf mask gives. Layer norm is written
out (MEAN, SUB, MUL, RSQRT): x - mean, times rsqrt(mean of squares + 1e-5), torch's eps.

Ops: FULLY_CONNECTED, BATCH_MATMUL, SOFTMAX, MEAN, RSQRT, RESHAPE, GATHER, MUL, ADD, SUB, MINIMUM,
(RELU fused where the converter can); convert/compat.py's table says which runtimes open them.
The raw graph (float variants) and the core graph (integer variants: delta/level in, correction out,
x_prev and persistence outside, convert/core_step.py) share everything after the embedding.

The core graph does not keep `age`: its ring bookkeeping needs whole numbers exactly, and through
requantized int8/int16 tensors the ages drifted by 10-63 steps (the one-hot write landed in the wrong
slot). The caller holds `age` (edge_runtime/ring.py, as x_prev) and hands in ring_write (the one-hot),
ring_since (age' - 1) and ring_empty, each (B, W), calibrated to exact codes (exact_ring_calibration);
its mask is CORE_MASKED = 16, not 1e4. So the core has no GATHER or MINIMUM, and its MULs stay version 2.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from convert.core_step import CoreStepGraph
from convert.tf_step import StepGraph
from edge_runtime.ring import RING_EMPTY, RING_SINCE, RING_WRITE
from train.config import AGE, ModelConfig

MASKED = 1e4  # subtracted from the score of a slot never written: exp(-1e4) is 0 in float32
# The core's (integer variants') mask: 1e4 made the int8 scores' scale ~40 (every real score one code) and a
# MUL rescale of 39 (MUL v3). With 16: a never-written slot's score is -16 (its key is 0, its `since` 0) and
# its value is 0, so the attended output is float's times (1 - E), E = the empty slots' softmax share
# <= (W - 1) e^(-16 - s) with s the best written slot's score (the current sample's slot is always written):
# 3.9e-4 at W 64 for s >= -4, 1e-5 for s >= 0. Only while the ring fills (the first W - 1 steps of a stream);
# after that no slot is empty and the mask does nothing.
CORE_MASKED = 16.0


class TransformerBody:
    """stack(features, t, out) -> the top layer's normed output (B, d), new state into out; for StepGraph and
    CoreStepGraph, which supply the weights (self.w) and the embedding's input."""

    config: ModelConfig

    def _np(self, key: str) -> np.ndarray:
        return np.asarray(self.w[key], np.float32)

    def _tf(self, value: np.ndarray) -> tf.Tensor:
        return tf.constant(np.ascontiguousarray(value, dtype=np.float32))

    def _linear(self, x: tf.Tensor, key: str, rows: slice = slice(None), scale: float = 1.0) -> tf.Tensor:
        """x (B, n) @ W[rows].T + b[rows], with `scale` folded into both."""
        w, b = self._np(f"{key}.weight")[rows] * scale, self._np(f"{key}.bias")[rows] * scale
        return tf.matmul(x, self._tf(w.T)) + self._tf(b)

    def _layer_norm(self, x: tf.Tensor, key: str) -> tf.Tensor:
        centred = x - tf.reduce_mean(x, axis=-1, keepdims=True)  # (B, d)
        variance = tf.reduce_mean(centred * centred, axis=-1, keepdims=True)  # (B, 1)
        return centred * tf.math.rsqrt(variance + 1e-5) * self._tf(self._np(f"{key}.weight")) + self._tf(
            self._np(f"{key}.bias"))

    def embed(self, features: tf.Tensor) -> tf.Tensor:
        return self._linear(features, "embed")  # (B, d)

    def stack(self, features, t: dict, out: dict) -> tf.Tensor:
        ring = self.ring(t, out)
        h = self.embed(features)  # (B, d)
        for layer in range(self.config.layers):
            h = self._block(layer, h, t, out, ring)
        return self._layer_norm(h, "norm")

    def ring(self, t: dict, out: dict) -> dict:
        """The ring's bookkeeping from the `age` state, in the graph (the float variants: exact in float32):
        keep/write (B, 1, W, 1), age (steps since each slot's sample) and masked (B, 1, 1, W)."""
        w = self.config.context
        age = t[AGE]  # (B, W)
        first = tf.gather(age, [0], axis=1)  # (B, 1) slot 0's age
        slot = first - float(w) * tf.nn.relu(first - float(w - 1))  # (B, 1) age[0] mod W (age[0] <= W)
        distance = self._tf(np.arange(w)[None]) - slot  # (B, W)
        onehot = tf.nn.relu(1.0 - distance * distance)  # (B, W) the slot this sample goes to
        new_age = (age + tf.minimum(age, 1.0)) * (1.0 - onehot) + onehot  # (B, W)
        out[AGE] = new_age
        ring = {
            "keep": tf.reshape(1.0 - onehot, (-1, 1, w, 1)), "write": tf.reshape(onehot, (-1, 1, w, 1)),
            "age": tf.reshape(new_age - 1.0, (-1, 1, 1, w)),  # steps since each slot's sample
            "masked": tf.reshape(tf.nn.relu(1.0 - new_age) * MASKED, (-1, 1, 1, w)),  # never written
        }
        return ring

    def _block(self, layer: int, h: tf.Tensor, t: dict, out: dict, ring: dict) -> tf.Tensor:
        cfg = self.config
        d, heads, w = cfg.hidden, cfg.heads, cfg.context
        hd = d // heads
        p = f"blocks.{layer}."
        x = self._layer_norm(h, p + "norm1")  # (B, d)
        q = self._linear(x, p + "qkv", slice(0, d), 1.0 / np.sqrt(hd))  # (B, d), scaled
        k = self._linear(x, p + "qkv", slice(d, 2 * d))
        v = self._linear(x, p + "qkv", slice(2 * d, 3 * d))
        caches = []
        for name, new in ((f"k_cache{layer}", k), (f"v_cache{layer}", v)):
            cache = tf.reshape(t[name], (-1, heads, w, hd))  # (B, heads, W, hd)
            cache = cache * ring["keep"] + ring["write"] * tf.reshape(new, (-1, heads, 1, hd))
            out[name] = tf.reshape(cache, (-1, heads * w * hd))
            caches.append(cache)
        keys, values = caches
        slopes = self._tf(self._np(p + "slopes").reshape(1, heads, 1, 1))
        scores = tf.matmul(tf.reshape(q, (-1, heads, 1, hd)), keys, transpose_b=True)  # (B, heads, 1, W)
        scores = scores - slopes * ring["age"] - ring["masked"]
        attended = tf.reshape(tf.matmul(tf.nn.softmax(scores), values), (-1, d))  # (B, d)
        h = h + self._linear(attended, p + "proj")
        x = self._layer_norm(h, p + "norm2")
        return h + self._linear(tf.nn.relu(self._linear(x, p + "up")), p + "down")


class TransformerStepGraph(TransformerBody, StepGraph):
    """step(x, x_prev?, age, k_cache0, v_cache0, ..) -> {y, x_prev?, age, ..}: raw units in and out (float variants)."""


class TransformerCoreStepGraph(TransformerBody, CoreStepGraph):
    """step(delta?, level?, ring_write, ring_since, ring_empty, k_cache0, ..) -> {correction, k_cache0, ..}:
    the integer variants' graph; the ring's ages stay outside (edge_runtime/ring.py)."""

    def __init__(self, weights: dict[str, np.ndarray], config: ModelConfig, batch: int | None = 1,
                 cell_scales=None):
        super().__init__(weights, config, batch)
        w = dict(self.w)
        embed, c = w.pop("embed.weight"), config.input_size  # (d, C * len(features)): columns [level | delta]
        read = [f for f in ("level", "delta") if f in config.features]
        for i, feature in enumerate(read):
            w[f"embed.weight_{feature}"] = np.ascontiguousarray(embed[:, i * c:(i + 1) * c])  # (d, C)
        self.w = w

    def forward(self, t: dict) -> dict:
        self._inputs = t  # embed reads the feature tensors by name
        return super().forward(t)

    def ring(self, t: dict, out: dict) -> dict:
        """The ring's bookkeeping handed in, exact (edge_runtime/ring.py; the caller holds `age`)."""
        w = self.config.context
        write = t[RING_WRITE]  # (B, W) one-hot
        return {"keep": tf.reshape(1.0 - write, (-1, 1, w, 1)), "write": tf.reshape(write, (-1, 1, w, 1)),
                "age": tf.reshape(t[RING_SINCE], (-1, 1, 1, w)),
                "masked": tf.reshape(t[RING_EMPTY] * CORE_MASKED, (-1, 1, 1, w))}

    def embed(self, features) -> tf.Tensor:
        """One matmul per feature tensor (each its own scale); the bias rides on the first."""
        t, first = self._inputs, self._features[0]
        h = tf.matmul(t[first], self._tf(self._np(f"embed.weight_{first}").T)) + self._tf(self._np("embed.bias"))
        for feature in self._features[1:]:
            h = h + tf.matmul(t[feature], self._tf(self._np(f"embed.weight_{feature}").T))
        return h  # (B, d)


# The quantized input's steps for a variant's activations: int8 asymmetric over [0, max] (scale max / 255),
# int16 symmetric (scale max / 32767), as the converter calibrates them.
INPUT_STEPS = {"int8": 255, "int8-io": 255, "int16x8": 32767}


def exact_ring_calibration(samples: list[dict], variant: str) -> list[dict]:
    """The core's calibration samples with ring_since's range widened so its scale is 1 / m for a whole m:
    every whole number of steps 0..W-1 is then an exact code (ring_write and ring_empty, 0 and 1, are exact
    over [0, 1] already). max = steps / floor(steps / (W - 1)): W 16 -> 15 in int8 (m 17), W 64 -> 63.75
    (m 4); int16: 15.0032, 63.013. Beyond W = 256 int8 has fewer codes than ages and rounds `since` to
    steps of (W - 1) / 255 (the age bias only; the ring itself is exact outside). Widened on one sample."""
    from edge_runtime.ring import RING_SINCE

    steps = INPUT_STEPS.get(variant)
    if steps is None or not samples or RING_SINCE not in samples[0]:
        return samples
    oldest = max(1, samples[0][RING_SINCE].shape[1] - 1)  # W - 1: a full ring's oldest slot, filled or not yet
    per_step = steps // oldest
    if per_step < 1:
        return samples
    since = samples[0][RING_SINCE].copy()  # (1, W)
    since[0, 0] = np.float32(steps / per_step)
    return [{**samples[0], RING_SINCE: since}, *samples[1:]]
