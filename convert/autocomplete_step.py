"""One step of a next-character model as a TF graph with constant weights.

step(x (1, V) one-hot float, h0, h1.., c0, c1..) -> {logits (1, V), h0.., c0..}

The stacked cells are the forecaster's (`StepGraph.stack`: same PyTorch
gate math, same two-matmul layout that quantizes well); only the edges
differ: no normalization, a one-hot symbol in and raw logits out. One-hot
float input rather than an index: the first layer's matmul with a one-hot
row is the embedding lookup, it needs no GATHER on an integer tensor, and 0/1
quantize exactly in every integer mode, so every variant takes the same input.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from convert.tf_step import StepGraph
from train.config import AutocompleteModelConfig

OUTPUT = "logits"


class AutocompleteStepGraph(StepGraph):
    def __init__(self, weights: dict[str, np.ndarray], config: AutocompleteModelConfig):
        tf.Module.__init__(self)  # not StepGraph's: there is no normalization to fold
        self.config = config
        self.w = {k: v.astype(np.float32).copy() for k, v in weights.items()}
        names = ["x"] + config.state_names()
        shapes = {"x": (1, config.vocab_size), **config.state_shapes(1)}
        specs = [tf.TensorSpec(shapes[n], tf.float32, name=n) for n in names]
        self.step = tf.function(self._named_step(names), input_signature=specs, autograph=False)

    def forward(self, t: dict) -> dict:
        out = {}
        top = self.stack(t["x"], t, out)  # (1, H)
        out[OUTPUT] = tf.matmul(top, self._const("head.weight", True)) + self._const("head.bias")  # (1, V)
        return out
