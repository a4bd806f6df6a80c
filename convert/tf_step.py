"""Rebuild a trained forecaster's single time step as a TF graph with constant weights.

Why by hand instead of converting Keras layers: a converted Keras LSTM
becomes a WHILE loop, and weights held as variables become READ_VARIABLE
ops that tflite-runtime 2.14 cannot run (see DESIGN.md). A flat graph of
matmuls and elementwise ops with constant weights converts in every mode.

The math follows PyTorch's cells exactly (gate order i,f,g,o for LSTM and
r,z,n for GRU). The graph takes and returns raw sensor units: normalization
is four elementwise ops inside the graph, so the device's hot loop does no
numpy arithmetic (measured: that arithmetic cost more than the invoke). The
state, x_prev included, stays in normalized units. Normalization is not
folded into the weights: for a sensor with a large offset (101325 Pa) the
folded bias would cancel catastrophically in float32.

Shaped for quantization, measured on the int16x8 and int8 variants:
- The delta feature's gain (10-20x) is a MUL, not folded into W_ih: folded,
  it dominated each row's int8 weight scale and blurred the other weights.
- Input and hidden state go through separate matmuls (W_ih x + W_hh h), not
  one matmul over concat([x, h]): one concatenated tensor gets one activation
  scale, and h in [-1, 1] lost its resolution to the larger input features.
The output gain (a uniform scale per output channel) is folded into the head.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from convert.ar_step import ar_graph_weights, ar_term
from train.config import AR_LAGS, ModelConfig


def _fold_weights(weights: dict[str, np.ndarray], config: ModelConfig) -> dict[str, np.ndarray]:
    w = {k: v.astype(np.float32).copy() for k, v in weights.items()}
    if "head.weight" in w:  # the ar cell has no head
        w["head.weight"] *= w["output_gain"][:, None]
        w["head.bias"] *= w["output_gain"]
    return {**w, **ar_graph_weights(weights, config, w["output_gain"])}


class StepGraph(tf.Module):
    """step(x, x_prev?, h0.., c0..) -> {y, x_prev?, h0.., c0..}; all tensors (B, n).

    x and y are in raw sensor units; the state is in normalized units.
    batch=1 is the step model every variant ships (static shapes, what firmware
    needs); batch=None gives the edge service's companion model with a dynamic
    batch dimension (shape_signature [-1, n]), one row per stream. Every op
    here is row-wise, so row b of a batched step equals a (1, n) step on row b.
    """

    def __init__(self, weights: dict[str, np.ndarray], config: ModelConfig, normalization: dict,
                 batch: int | None = 1):
        super().__init__()
        self.config = config
        self.w = _fold_weights(weights, config)
        mean, std = (np.asarray(normalization[k], np.float32) for k in ("mean", "std"))
        target = list(config.target)
        self.in_mean, self.in_scale = tf.constant(mean[None]), tf.constant((1.0 / std)[None])  # (1, C)
        self.out_mean, self.out_std = tf.constant(mean[None, target]), tf.constant(std[None, target])  # (1, O)
        names = ["x"] + config.state_names()
        shapes = {"x": (batch, config.input_size), **config.state_shapes(batch)}
        specs = [tf.TensorSpec(shapes[n], tf.float32, name=n) for n in names]
        self.step = tf.function(self._named_step(names), input_signature=specs, autograph=False)

    def _named_step(self, names: list[str]):
        def step(*tensors):
            return self.forward(dict(zip(names, tensors)))
        return step

    def _const(self, key: str, transpose: bool = False) -> tf.Tensor:
        value = self.w[key].T if transpose else self.w[key]
        return tf.constant(np.ascontiguousarray(value), dtype=tf.float32)

    def features(self, x: tf.Tensor, delta: tf.Tensor | None) -> tf.Tensor:
        parts = []
        if "level" in self.config.features:
            parts.append(x)
        if delta is not None:
            parts.append(delta * self._const("delta_gain")[None])  # (1, C), unit variance
        return parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)

    def forward(self, t: dict) -> dict:
        cfg = self.config
        out = {}
        x = (t["x"] - self.in_mean) * self.in_scale  # (1, C) normalized
        delta = x - t["x_prev"] if "delta" in cfg.features else None  # (1, C)
        head = None
        if cfg.has_head:  # a recurrent stack, or the transformer's (convert/transformer_step.py)
            inp = self.stack(self.features(x, delta), t, out)  # (1, H)
            head = tf.matmul(inp, self._const("head.weight", True)) + self._const("head.bias")  # (1, O)
        if cfg.has_ar:  # the AR term: the ar cell's model, or the highway beside the cell
            ar, lags = ar_term(self, delta * self._const("delta_gain")[None], x, t.get(AR_LAGS))  # (1, O)
            head = ar if head is None else head + ar
            if lags is not None:
                out[AR_LAGS] = lags
        level = x if list(cfg.target) == list(range(cfg.input_size)) else tf.gather(
            x, list(cfg.target), axis=1)  # (1, O)
        out["y"] = (level + head) * self.out_std + self.out_mean  # (1, O) raw units
        if delta is not None:
            # Not x itself: were it an input tensor, the converter would alias the
            # output to it, and tflite-runtime 2.14 cannot open a model whose signature
            # output is one of its inputs ("vector::reserve"). x_prev + delta == x
            # within 1 ulp and is always a tensor of its own.
            out["x_prev"] = t["x_prev"] + delta
        return out

    def stack(self, inp: tf.Tensor, t: dict, out: dict) -> tf.Tensor:
        """The stacked cells: (1, F) input and state t -> the top layer's h (1, H); new state into out."""
        cfg = self.config
        for k in range(cfg.layers):
            h = t[f"h{k}"]  # (1, H)
            if cfg.recurrent_cell == "lstm":
                h, out[f"c{k}"] = self._lstm(k, inp, h, t[f"c{k}"])
            elif cfg.recurrent_cell == "gru":
                h = self._gru(k, inp, h)
            else:
                h = self._rnn(k, inp, h)
            out[f"h{k}"] = h
            inp = h
        return inp

    def _gates(self, k: int, inp: tf.Tensor, h: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """W_ih inp + b_ih and W_hh h + b_hh, each (1, G): two matmuls, two activation scales."""
        gi = tf.matmul(inp, self._const(f"rnn.weight_ih_l{k}", True)) + self._const(f"rnn.bias_ih_l{k}")
        gh = tf.matmul(h, self._const(f"rnn.weight_hh_l{k}", True)) + self._const(f"rnn.bias_hh_l{k}")
        return gi, gh

    def _rnn(self, k, inp, h):
        gi, gh = self._gates(k, inp, h)
        return tf.tanh(gi + gh)  # (1, H)

    def _lstm(self, k, inp, h, c):
        gi, gh = self._gates(k, inp, h)
        i, f, g, o = tf.split(gi + gh, 4, axis=1)  # each (1, H)
        c_new = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
        return tf.sigmoid(o) * tf.tanh(c_new), c_new

    def _gru(self, k, inp, h):
        gi, gh = self._gates(k, inp, h)  # r multiplies only the hidden part of n
        i_r, i_z, i_n = tf.split(gi, 3, axis=1)  # each (1, H)
        h_r, h_z, h_n = tf.split(gh, 3, axis=1)
        r = tf.sigmoid(i_r + h_r)
        z = tf.sigmoid(i_z + h_z)
        n = tf.tanh(i_n + r * h_n)
        return n + z * (h - n)  # == (1 - z) * n + z * h


def save_step_model(graph: StepGraph, saved_model_dir: str) -> str:
    """SavedModel with one signature, 'step': what every variant is converted from."""
    tf.saved_model.save(graph, saved_model_dir, signatures={"step": graph.step.get_concrete_function()})
    return saved_model_dir
