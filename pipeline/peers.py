"""What users would run instead of the edge runtime, on the same architecture and weights.

python -m pipeline.peers SYSTEM RUN_DIR --steps N --repeats R   -> one JSON line

Each peer runs in its own process (so its imports and memory are its own)
with one thread, takes one step's input features (1, F) and the full state,
and returns the forecast and the new state. Peers get the features ready
made, so they do less per step than Session.step (which also normalizes and
computes the delta feature inside the graph): the comparison favours them.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np

from edge_eval.bench import peak_rss_mb, summary, time_per_step
from train.checkpoint import load_checkpoint
from train.config import CELLS, ModelConfig

SYSTEMS = ("torch", "numpy", "onnxruntime", "keras")


def layer_weights(weights: dict, k: int) -> tuple[np.ndarray, ...]:
    return (weights[f"rnn.weight_ih_l{k}"], weights[f"rnn.weight_hh_l{k}"],
            weights[f"rnn.bias_ih_l{k}"], weights[f"rnn.bias_hh_l{k}"])


def numpy_step(weights: dict, config: ModelConfig, streams: int = 1):
    """A plain numpy step: the cell equations written out, state fed back; `streams` rows at once
    (features (B, F), state (B, H) per layer): the batched numpy step a many-stream gateway would write."""
    layers = [tuple(np.ascontiguousarray(w.T) if w.ndim == 2 else w for w in layer_weights(weights, k))
              for k in range(config.layers)]
    head_w, head_b = weights["head.weight"].T.copy(), weights["head.bias"]
    h = [np.zeros((streams, config.hidden), np.float32) for _ in range(config.layers)]  # (B, H) each
    c = [np.zeros((streams, config.hidden), np.float32) for _ in range(config.layers)]

    def sigmoid(v):
        return 1.0 / (1.0 + np.exp(-v))

    def step(features):
        inp = features
        for k, (w_ih, w_hh, b_ih, b_hh) in enumerate(layers):
            gi, gh = inp @ w_ih + b_ih, h[k] @ w_hh + b_hh  # (B, G)
            if config.cell == "lstm":
                i, f, g, o = np.split(gi + gh, 4, axis=1)
                c[k] = sigmoid(f) * c[k] + sigmoid(i) * np.tanh(g)
                h[k] = sigmoid(o) * np.tanh(c[k])
            elif config.cell == "gru":
                i_r, i_z, i_n = np.split(gi, 3, axis=1)
                h_r, h_z, h_n = np.split(gh, 3, axis=1)
                r, z = sigmoid(i_r + h_r), sigmoid(i_z + h_z)
                n = np.tanh(i_n + r * h_n)
                h[k] = n + z * (h[k] - n)
            else:
                h[k] = np.tanh(gi + gh)
            inp = h[k]
        return inp @ head_w + head_b
    return step


def torch_module(weights: dict, config: ModelConfig):
    """nn.LSTMCell / GRUCell / RNNCell stack + head, loaded with the trained weights."""
    import torch

    cell_cls = {"lstm": torch.nn.LSTMCell, "gru": torch.nn.GRUCell, "rnn": torch.nn.RNNCell}[config.cell]
    n_features = config.input_size * len(config.features)

    class CellStep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cells = torch.nn.ModuleList(
                cell_cls(n_features if k == 0 else config.hidden, config.hidden) for k in range(config.layers))
            self.head = torch.nn.Linear(config.hidden, config.output_size)

        def forward(self, x, *state):  # state: h0.., then c0.. for LSTM
            hs, cs = list(state[:config.layers]), list(state[config.layers:])
            inp = x
            for k, cell in enumerate(self.cells):
                if config.cell == "lstm":
                    hs[k], cs[k] = cell(inp, (hs[k], cs[k]))
                else:
                    hs[k] = cell(inp, hs[k])
                inp = hs[k]
            return (self.head(inp), *hs, *cs)

    module = CellStep().eval()
    with torch.no_grad():
        for k, cell in enumerate(module.cells):
            for name, value in zip(("weight_ih", "weight_hh", "bias_ih", "bias_hh"), layer_weights(weights, k)):
                getattr(cell, name).copy_(torch.as_tensor(value))
        module.head.weight.copy_(torch.as_tensor(weights["head.weight"]))
        module.head.bias.copy_(torch.as_tensor(weights["head.bias"]))
    return module


def initial_state(config: ModelConfig, zeros):
    n = config.layers * len(CELLS[config.cell].state)
    return [zeros((1, config.hidden)) for _ in range(n)]


def torch_step(weights: dict, config: ModelConfig):
    import torch

    torch.set_num_threads(1)
    module = torch_module(weights, config)
    state = initial_state(config, lambda s: torch.zeros(s))

    def step(features):
        nonlocal state
        with torch.inference_mode():
            out = module(torch.from_numpy(features), *state)
        state = list(out[1:])
        return out[0]
    return step


def onnxruntime_step(weights: dict, config: ModelConfig):
    """The same torch step exported to ONNX with explicit state inputs and outputs."""
    import tempfile

    import onnxruntime as ort
    import torch

    module = torch_module(weights, config)
    n_features = config.input_size * len(config.features)
    state = initial_state(config, lambda s: np.zeros(s, np.float32))
    names = [f"s{i}" for i in range(len(state))]
    path = tempfile.mktemp(suffix=".onnx")
    torch.onnx.export(module, (torch.zeros(1, n_features), *[torch.from_numpy(s) for s in state]), path,
                      input_names=["x", *names], output_names=["y", *[f"{n}_out" for n in names]], dynamo=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    feed = dict(zip(names, state))

    def step(features):
        feed["x"] = features
        out = session.run(None, feed)
        feed.update(zip(names, out[1:]))
        return out[0]
    return step


def keras_step(weights: dict, config: ModelConfig):
    """A stateful Keras model called once per step (what a Keras user would write)."""
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(1)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    except RuntimeError:  # TensorFlow already started (in the tests); in its own process this runs first
        pass
    layer_cls = {"lstm": tf.keras.layers.LSTM, "gru": tf.keras.layers.GRU, "rnn": tf.keras.layers.SimpleRNN}[config.cell]
    n_features = config.input_size * len(config.features)
    model = tf.keras.Sequential([tf.keras.Input(batch_shape=(1, 1, n_features))]
                                + [layer_cls(config.hidden, stateful=True, return_sequences=k < config.layers - 1)
                                   for k in range(config.layers)]
                                + [tf.keras.layers.Dense(config.output_size)])
    for k in range(config.layers):
        w_ih, w_hh, b_ih, b_hh = layer_weights(weights, k)
        if config.cell == "gru":  # torch gate order r,z,n; Keras z,r,h with reset_after biases (2, 3H)
            order = lambda w: np.concatenate([np.split(w, 3)[i] for i in (1, 0, 2)])  # noqa: E731
            w_ih, w_hh, b_ih, b_hh = order(w_ih), order(w_hh), order(b_ih), order(b_hh)
            model.layers[k].set_weights([w_ih.T, w_hh.T, np.stack([b_ih, b_hh])])
        else:
            model.layers[k].set_weights([w_ih.T, w_hh.T, b_ih + b_hh])
    model.layers[-1].set_weights([weights["head.weight"].T, weights["head.bias"]])

    def step(features):
        return model(features[:, None, :], training=False)
    return step


BUILDERS = {"torch": torch_step, "numpy": numpy_step, "onnxruntime": onnxruntime_step, "keras": keras_step}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.peers")
    p.add_argument("system", choices=SYSTEMS)
    p.add_argument("run", help="run folder with checkpoint.safetensors")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--streams", type=int, default=1, help="numpy only: rows per step (a batched step); the "
                   "result then also gives stream-steps per second")
    args = p.parse_args(argv)
    if args.streams != 1 and args.system != "numpy":
        p.error(f"--streams is for the numpy peer only, not {args.system}")
    started = time.perf_counter()
    weights, info = load_checkpoint(f"{args.run}/checkpoint.safetensors")
    config = ModelConfig.from_dict(info["model"])
    step = (numpy_step(weights, config, args.streams) if args.streams != 1
            else BUILDERS[args.system](weights, config))
    rng = np.random.default_rng(0)
    features = rng.standard_normal((args.steps, args.streams, config.input_size * len(config.features))
                                   ).astype(np.float32)  # (T, B, F)
    step(features[0])
    first_step_s = time.perf_counter() - started
    result = summary(time_per_step(step, features, args.repeats))
    result.update(system=args.system, first_step_s=first_step_s,
                  peak_rss_mb=peak_rss_mb(), streams=args.streams, steps_per_s=args.streams / result["median_us"] * 1e6)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
