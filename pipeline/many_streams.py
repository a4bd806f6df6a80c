"""Many streams, one process: StreamPool.step_rows, step_many, the raw batched interpreter call and a
numpy batched step of the same model, at N streams, timed in turns (issue 19).

python -m pipeline.many_streams RUN_DIR BUNDLE --backend B [--streams 64] -> one JSON line

Runs in a process of its own: the numpy peer needs only numpy and safetensors, and tflite-runtime
cannot share a process with TensorFlow. The numpy step gets its features ready made (normalized,
the delta computed): it does less per step than the pool, so the ratio favours it.
"""
from __future__ import annotations

import argparse
import json
import sys

import numpy as np

from edge_eval.bench import bench_streams
from pipeline.peers import numpy_step
from train.checkpoint import load_checkpoint
from train.config import ModelConfig

VARIANTS = ("float32", "int8-io", "int8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m pipeline.many_streams")
    p.add_argument("run", help="run folder with checkpoint.safetensors (the numpy peer's weights)")
    p.add_argument("bundle", help="the same model converted")
    p.add_argument("--backend", required=True)
    p.add_argument("--streams", type=int, default=64)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--variant", action="append", help=f"default: {', '.join(VARIANTS)}")
    args = p.parse_args(argv)
    weights, info = load_checkpoint(f"{args.run}/checkpoint.safetensors")
    config = ModelConfig.from_dict(info["model"])
    features = np.random.default_rng(0).standard_normal(
        (args.steps, args.streams, config.input_size * len(config.features))).astype(np.float32)  # (T, B, F)
    references = {"numpy_batched": (numpy_step(weights, config, args.streams), features)}
    result = bench_streams(args.bundle, args.variant or list(VARIANTS), args.backend, args.streams, args.steps,
                           args.repeats, references)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
