"""python -m convert: turn a training run (runs/<name>) into a bundle (artifacts/<name>)."""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

# TensorFlow is only the converter here: keep its start-up chatter off the terminal.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m convert", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("runs", nargs="+", help="run folders written by python -m train")
    p.add_argument("--out", default="artifacts", help="folder that receives artifacts/<name>/")
    p.add_argument("--parity-steps", type=int, default=2000, help="steps of the torch vs TFLite streaming check")
    args = p.parse_args(argv)
    missing = [r for r in args.runs if not (Path(r) / "checkpoint.safetensors").is_file()]
    if missing:
        print(f"error: no checkpoint.safetensors in {missing}; train first (python -m train)", file=sys.stderr)
        return 2
    from convert.bundle import convert_run  # TensorFlow loads only after the arguments are good

    for run in args.runs:
        out = Path(args.out) / Path(run).name
        manifest = convert_run(Path(run), out, args.parity_steps)
        v = manifest["variants"][0]
        print(json.dumps({"bundle": str(out), "bytes": v["bytes"], "parity_max_abs_error": v["parity"]["max_abs_error"],
                          "test_mse": v["metrics"]["test_mse"]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
