"""The step model with its state kept inside the interpreter: a variant's resident companion (issue 19).

Same StepGraph, same weights (constants), but the named state lives in
resource variables instead of going in and out with every step:

    step(x) -> {y}                 reads the variables, computes, writes them back
    get_state() -> {x_prev, h0..}  the variables, by name
    set_state(x_prev, h0..) -> {written}  writes them (a restore, a reset, the first sample's x_prev)

The variables start at explicit zeros (a CALL_ONCE initializer in the
.tflite), the zero state of the step contract. Why: feeding 3 state tensors
in and reading 3 out cost most of a step from Python; with the state inside,
one Session step is set x, invoke, get y (docs/DESIGN-NOTES.md, issue 19).
The step's arithmetic is the explicit model's op for op, so its outputs and
state are bit-identical to it; convert checks that before it writes the file.
Only one stream can use one interpreter of it: the explicit (1, n) model
stays the variant's file (firmware, many streams, snapshots from a pool).

rows > 1 builds the batched resident companion from the dynamic-batch graph
(the explicit batched companion's): the same signatures on (rows, n) tensors,
one stream per row, for StreamPool's steady state (a fixed set of streams
stepping together, state never leaving the interpreter between steps).
"""
from __future__ import annotations

import tensorflow as tf

from convert.tf_step import StepGraph

SIGNATURES = ("step", "get_state", "set_state")
BATCH_ROWS = 64  # streams per batched resident interpreter: a gateway's block (variables have a fixed shape)
WRITTEN = "written"  # set_state's one output: how many state tensors it wrote (edge_runtime/resident.py)


class ResidentStep(tf.Module):
    def __init__(self, graph: StepGraph, rows: int = 1):
        super().__init__()
        cfg = graph.config
        self.graph = graph
        shapes = cfg.state_shapes(rows)
        self.names = cfg.state_names()
        # explicit zeros: a fresh interpreter holds the zero state, as the contract says
        self.state = {n: tf.Variable(tf.zeros(shapes[n], tf.float32), name=n) for n in self.names}
        self.step = tf.function(self._step, autograph=False,
                                input_signature=[tf.TensorSpec((rows, cfg.input_size), tf.float32, name="x")])
        self.get_state = tf.function(self._get_state, autograph=False, input_signature=[])
        self.set_state = tf.function(self._set_state, autograph=False,
                                     input_signature=[tf.TensorSpec(shapes[n], tf.float32, name=n) for n in self.names])

    def _step(self, x):
        t = {"x": x, **{n: v.read_value() for n, v in self.state.items()}}  # every read before any write
        out = self.graph.forward(t)
        for name, variable in self.state.items():
            variable.assign(out[name])
        return {"y": out["y"]}

    def _get_state(self):
        return {n: tf.identity(v.read_value()) for n, v in self.state.items()}

    def _set_state(self, *values):
        writes = [variable.assign(value) for variable, value in zip(self.state.values(), values)]
        # a signature without outputs converts to one whose writes were pruned (seen: set_state did nothing)
        with tf.control_dependencies(writes):
            return {WRITTEN: tf.constant([len(writes)], tf.int32)}


def save_resident_model(graph: StepGraph, saved_model_dir: str, rows: int = 1) -> str:
    """SavedModel with the three signatures on `rows` streams; convert.quantize.convert_variant(...,
    signatures=SIGNATURES) converts it. rows > 1 takes the dynamic-batch graph (step_graph(batch=None))."""
    module = ResidentStep(graph, rows)
    tf.saved_model.save(module, saved_model_dir, signatures={
        "step": module.step.get_concrete_function(), "get_state": module.get_state.get_concrete_function(),
        "set_state": module.set_state.get_concrete_function()})
    return saved_model_dir
