"""The quantizable core of a forecaster's step: change (and level) in, correction out.

Why a second step graph: StepGraph takes the raw reading x, keeps x_prev as
state and adds persistence inside the graph, so a full-integer variant
carried the level in int8 at its input, its x_prev state and its output. 256
steps over the level's range are as large as the per-sample change the model
predicts: int8 came out 10-1,700x float32's MSE on real logs (issue 13).
Here everything that needs the level's full precision stays outside:

    outside (float64 in Session, wide integers in sensor counts in firmware):
        delta = (x - x_prev) / delta_std          (1, C) unit variance
        level = (x - mean) / std                  (1, C) only if the model reads the level
    core (this graph; the integer variants):
        h, c = cell(W_delta delta + W_level level + W_hh h + b)
        correction = head(h)                      (1, O) in typical changes
    outside again:
        y = x[target] + correction * delta_std[target]     persistence + correction, raw units

- delta and level are separate input tensors, each with its own scale, and
  go through separate matmuls (one concatenated tensor would share one scale).
- Normalization, the delta gain and de-normalization all happen outside, so
  no MUL by a broadcast per-channel constant is left: StepGraph's output
  `(level + head) * std` had a rescale factor of 1.34 on a 3-channel model,
  for which the converter emits MUL version 3, which neither runtime opened there.
- The state is only the cell's (h, c); x_prev lives outside with the level, and
  so do a Transformer's ring ages (edge_runtime/ring.py; convert/transformer_step.py).
- An LSTM's cell state is carried per unit in its own units (cell_scales):
  c' = c / s with s the unit's largest |c| on the training split, so every
  unit spans about [-1, 1] in the one per-tensor int8 scale of the state.
  One per-tensor scale over c's raw range (-11..+9 on the vibration LSTM,
  most units within +-3) gave the narrow units steps of 0.08, and with
  forget gates near 1 that rounding builds up step after step: the vibration
  LSTM's int8 forms were x1.25 float32's MSE, x1.155 with the scales. The
  float function is the same (c = s c'): two MULs by (1, H) constants per layer,
      c'_new = f c' + (i g) / s        h = o tanh(c'_new s)
  No scale is below 1/8 of the widest, so both constants keep >= 32 of their
  255 int8 steps (<= 1.6% off): the int8 cell keeps the trained input gain.
  Powers of two for s (exact constants) were worse, x1.22: rounding s up to
  the next power wastes up to half of a unit's range.

The weights are the trained Forecaster's, unchanged: torch's features are
concat([level, delta]) through W_ih, so W_ih splits into its level and delta
columns exactly; the head is not folded with the output gain (unit variance out).
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from convert.ar_step import ar_graph_weights, ar_term
from convert.tf_step import StepGraph
from edge_runtime.binding import CORE_FEATURES, CORE_OUTPUT
from edge_runtime.ring import RING_INPUTS
from train.config import AGE, AR_LAGS, ModelConfig


def core_input_names(config: ModelConfig) -> list[str]:
    """The core's input tensors: the features it reads (delta, level), a Transformer's ring inputs
    (edge_runtime/ring.py: its ages stay outside, as x_prev), then the state it carries."""
    ring = list(RING_INPUTS) if AGE in config.state_names() else []
    return ([f for f in CORE_FEATURES if f in config.features] + ring
            + [n for n in config.state_names() if n not in ("x_prev", AGE)])


class CoreStepGraph(StepGraph):
    """step(delta?, level?, h0.., c0.., lags?) -> {correction, h0.., c0.., lags?}; all tensors (B, n)."""

    def __init__(self, weights: dict[str, np.ndarray], config: ModelConfig, batch: int | None = 1,
                 cell_scales: dict[int, np.ndarray] | None = None):
        """cell_scales: layer -> (H,) an LSTM's cell-state units (cell_state_scales); none: c as trained."""
        tf.Module.__init__(self)
        self.config = config
        self.cell_scales = {k: np.asarray(v, np.float32)[None] for k, v in (cell_scales or {}).items()}  # (1, H)
        w = {k: v.astype(np.float32).copy() for k, v in weights.items()}  # head not folded: unit variance out
        c = config.input_size
        if config.recurrent_cell is not None:
            w_ih = w.pop("rnn.weight_ih_l0")  # (G, C * len(features)): columns [level | delta] as torch concats
            read = [f for f in ("level", "delta") if f in config.features]
            for i, feature in enumerate(read):
                w[f"rnn.weight_{feature}_l0"] = np.ascontiguousarray(w_ih[:, i * c:(i + 1) * c])  # (G, C)
        w.update(ar_graph_weights(weights, config))  # the AR term (ar, *+ar), in typical changes too
        self.w = w  # assigned whole: tf.Module tracks it, and a tracked dict must not be mutated
        self._features = [f for f in CORE_FEATURES if f in config.features]
        names = core_input_names(config)
        shapes = {"delta": (batch, c), "level": (batch, c), **config.state_shapes(batch),
                  **{n: (batch, config.context) for n in RING_INPUTS}}
        specs = [tf.TensorSpec(shapes[n], tf.float32, name=n) for n in names]
        self.step = tf.function(self._named_step(names), input_signature=specs, autograph=False)

    def forward(self, t: dict) -> dict:
        cfg = self.config
        out, correction = {}, None
        if cfg.has_head:  # a recurrent stack, or the transformer's (convert/transformer_step.py)
            self._inputs = t  # the first layer's _gates reads the feature tensors by name
            top = self.stack(None, t, out)  # (1, H)
            correction = tf.matmul(top, self._const("head.weight", True)) + self._const("head.bias")  # (1, O)
        if cfg.has_ar:  # the AR term: the ar cell's model, or the highway beside the cell
            ar, lags = ar_term(self, t["delta"], t.get("level"), t.get(AR_LAGS))  # (1, O)
            correction = ar if correction is None else correction + ar
            if lags is not None:
                out[AR_LAGS] = lags
        out[CORE_OUTPUT] = correction
        return out

    def _lstm(self, k, inp, h, c):
        """c is in the unit's own scale s (c' = c / s); the same function as StepGraph's cell."""
        if k not in self.cell_scales:
            return super()._lstm(k, inp, h, c)
        scale = tf.constant(self.cell_scales[k])  # (1, H)
        gi, gh = self._gates(k, inp, h)
        i, f, g, o = tf.split(gi + gh, 4, axis=1)  # each (1, H)
        c_new = tf.sigmoid(f) * c + (tf.sigmoid(i) * tf.tanh(g)) * tf.constant(1.0 / self.cell_scales[k])
        return tf.sigmoid(o) * tf.tanh(c_new * scale), c_new

    def _gates(self, k: int, inp, h):
        """First layer: one matmul per feature tensor (own scale each); deeper layers as StepGraph."""
        if k > 0:
            return super()._gates(k, inp, h)
        t, first = self._inputs, self._features[0]
        # the bias rides on the first matmul, so the converter fuses it into that FULLY_CONNECTED
        gi = tf.matmul(t[first], self._const(f"rnn.weight_{first}_l0", True)) + self._const("rnn.bias_ih_l0")
        for feature in self._features[1:]:
            gi = gi + tf.matmul(t[feature], self._const(f"rnn.weight_{feature}_l0", True))  # (1, G)
        gh = tf.matmul(h, self._const("rnn.weight_hh_l0", True)) + self._const("rnn.bias_hh_l0")
        return gi, gh


CELL_SCALE_FLOOR = 8  # no unit's scale below 1/8 of the widest's: 1/s keeps >= 32 int8 steps


def cell_state_scales(samples: list[dict], config: ModelConfig) -> dict[int, np.ndarray]:
    """layer -> (H,) each LSTM unit's cell-state scale: its largest |c| over the calibration samples
    (at least 1/CELL_SCALE_FLOOR of the widest unit's). Empty for a GRU or plain RNN (tanh bounds their state)."""
    if config.recurrent_cell != "lstm":
        return {}
    scales = {}
    for k in range(config.layers):
        largest = np.max(np.abs(np.concatenate([s[f"c{k}"] for s in samples])), axis=0)  # (H,)
        if not largest.max() > 0:  # a cell that never moved: nothing to rescale
            continue
        scales[k] = np.maximum(largest, largest.max() / CELL_SCALE_FLOOR).astype(np.float32)
    return scales


def rescale_cell_states(samples: list[dict], scales: dict[int, np.ndarray]) -> list[dict]:
    """The same calibration samples with every c_k in its units' scales (c' = c / s), as the scaled core reads it."""
    return [{**s, **{f"c{k}": (s[f"c{k}"] / scale[None]).astype(np.float32) for k, scale in scales.items()}}
            for s in samples]
