"""python -m train: train a recurrent forecaster on a built-in scenario or a CSV sensor log."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_runtime.csvrows import CsvError
from train.data import load_stream
from train.config import CELL_NAMES as CELLS, FEATURES, ModelConfig
from train.scenarios import SCENARIOS
from train.trainer import TrainConfig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--scenario", choices=sorted(SCENARIOS), help="built-in synthetic sensor stream")
    src.add_argument("--csv", help="sensor log: index/timestamp column, then one column per channel")
    p.add_argument("--columns", nargs="+", help="CSV value columns to use as inputs (default: all)")
    p.add_argument("--target", nargs="+", help="CSV columns to forecast (default: every input)")
    p.add_argument("--samples", type=int, default=30000, help="length of a generated scenario stream")
    p.add_argument("--cell", choices=sorted(CELLS), default="lstm")
    p.add_argument("--hidden", type=int, default=ModelConfig.hidden)
    p.add_argument("--layers", type=int, default=ModelConfig.layers)
    p.add_argument("--features", nargs="+", choices=FEATURES,
                   help="per-step inputs (default: level and delta; delta only for a non-stationary scenario)")
    for name, default in TrainConfig().to_dict().items():
        if name != "split":
            p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    p.add_argument("--name", help="run name (default: <scenario or csv stem>-<cell>)")
    p.add_argument("--out", default="runs", help="folder that receives runs/<name>/")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        stream = load_stream(args.scenario, args.csv, args.samples, args.seed, args.columns, args.target)
    except (CsvError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from train.run import train_run  # torch is imported only once the input is known to be good

    features = args.features or (FEATURES if stream.stationary else ("delta",))
    model_config = ModelConfig(cell=args.cell, hidden=args.hidden, layers=args.layers,
                               input_size=stream.values.shape[1], target=stream.target, features=features)
    train_keys = set(TrainConfig().to_dict()) - {"split"}
    train_config = TrainConfig.from_dict({k: getattr(args, k) for k in train_keys})
    name = args.name or f"{stream.name}-{args.cell}"
    metrics = train_run(stream, model_config, train_config, Path(args.out) / name, progress=not args.quiet)
    print(json.dumps({"run": str(Path(args.out) / name), **{k: metrics[k] for k in (
        "test_mse", "persistence_mse", "ar_mse", "ar_order", "parameters", "train_seconds")}}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
