"""python -m train: train a recurrent forecaster on a built-in scenario or a CSV sensor log,
or (--task autocomplete) a next-character model on a word list."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from edge_runtime.csvrows import CsvError
from train.data import load_stream
from train.config import AR_CELL, CELL_NAMES as CELLS, FEATURES, FORECAST_CELLS, ModelConfig
from train.scenarios import SCENARIOS
from train.trainer import TrainConfig
from train.wander import choose_csv_features

TASKS = ("forecast", "autocomplete")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m train", description=__doc__,
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--task", choices=TASKS, default="forecast",
                   help="autocomplete: see python -m train --task autocomplete --help")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--scenario", choices=sorted(SCENARIOS), help="built-in synthetic sensor stream")
    src.add_argument("--csv", help="sensor log: index/timestamp column, then one column per channel")
    p.add_argument("--columns", nargs="+", help="CSV value columns to use as inputs (default: all)")
    p.add_argument("--target", nargs="+", help="CSV columns to forecast (default: every input)")
    p.add_argument("--samples", type=int, default=30000, help="length of a generated scenario stream")
    p.add_argument("--cell", choices=sorted(FORECAST_CELLS), default="lstm",
                   help="ar: AR(k), fitted by least squares (k = --ar-order), exported as a step model like the rest")
    p.add_argument("--ar-order", type=int, default=0,
                   help="--cell ar only: k, on the levels when the level is read, on the changes otherwise")
    p.add_argument("--context", type=int, default=0,
                   help="--cell transformer only: its attention window W in samples (the step model's ring slots)")
    p.add_argument("--heads", type=int, default=0, help="--cell transformer only: attention heads (0: hidden // 8)")
    p.add_argument("--hidden", type=int, default=ModelConfig.hidden,
                   help="units per layer; d_model for --cell transformer (16 and 32 match LSTM-32 and LSTM-64's "
                        "parameters with 2 layers)")
    p.add_argument("--layers", type=int, default=ModelConfig.layers)
    p.add_argument("--features", nargs="+", choices=FEATURES,
                   help="per-step inputs (default: level and delta; delta only for a non-stationary scenario, "
                   "or a CSV log whose level wanders: see train/wander.py)")
    for name, default in TrainConfig().to_dict().items():
        if name != "split":
            p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    p.add_argument("--name", help="run name (default: <scenario or csv stem>-<cell>)")
    p.add_argument("--out", default="runs", help="folder that receives runs/<name>/")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """train a forecaster on a scenario or CSV log, or (--task autocomplete) a next-letter model"""
    argv = sys.argv[1:] if argv is None else argv
    task = argparse.ArgumentParser(add_help=False)
    task.add_argument("--task", choices=TASKS, default="forecast")
    known, rest = task.parse_known_args(argv)
    if known.task == "autocomplete":
        return autocomplete_main(rest)
    args = parse_args(argv)
    try:
        stream = load_stream(args.scenario, args.csv, args.samples, args.seed, args.columns, args.target)
    except (CsvError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from train.run import train_run  # torch is imported only once the input is known to be good

    train_keys = set(TrainConfig().to_dict()) - {"split"}
    train_config = TrainConfig.from_dict({k: getattr(args, k) for k in train_keys})
    extra = {}
    if args.csv:
        try:
            stream, extra["level_check"] = choose_csv_features(stream, args.features, train_config.split)
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    features = args.features or (FEATURES if stream.stationary else ("delta",))
    # an AR has no hidden layer: --hidden and --layers do not apply to it
    shape = {"hidden": 1, "layers": 1} if args.cell == AR_CELL else {"hidden": args.hidden, "layers": args.layers}
    try:
        model_config = ModelConfig(cell=args.cell, input_size=stream.values.shape[1], target=stream.target,
                                   features=features, ar_order=args.ar_order, context=args.context,
                                   heads=args.heads, **shape)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    suffix = model_config.ar_order if model_config.has_ar else model_config.context or ""
    name = args.name or f"{stream.name}-{args.cell}{suffix}"
    metrics = train_run(stream, model_config, train_config, Path(args.out) / name, progress=not args.quiet,
                        extra_metrics=extra)
    print(json.dumps({"run": str(Path(args.out) / name), **{k: metrics[k] for k in (
        "test_mse", "persistence_mse", "ar_mse", "ar_order", "parameters", "train_seconds")},
        "output_gains": [round(a, 3) for a in metrics["output_gains"].get("alpha", [])]}))
    return 0


def autocomplete_main(argv: list[str]) -> int:
    from train.config import AutocompleteModelConfig
    from train.words import DEBIAN_WORDS, WORD_SETS, load_words

    p = argparse.ArgumentParser(prog="python -m train --task autocomplete",
                                description="Train a next-character model (stacked RNN/GRU/LSTM) on a word list; "
                                "the smoothed character n-gram is trained and scored on the same words.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--words", help=f"one word per line; lowercase a-z words are kept (e.g. {DEBIAN_WORDS})")
    src.add_argument("--scenario", choices=sorted(WORD_SETS), help="built-in word set (the lecture's toy)")
    p.add_argument("--cell", choices=sorted(CELLS), default="lstm")
    p.add_argument("--hidden", type=int, default=AutocompleteModelConfig.hidden)
    p.add_argument("--layers", type=int, default=AutocompleteModelConfig.layers)
    from train.autocomplete_train import SELECT_ON, AutocompleteTrainConfig

    for name, default in AutocompleteTrainConfig().to_dict().items():
        p.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default,
                       **({"choices": SELECT_ON} if name == "select_on" else {}))
    p.add_argument("--no-baseline", action="store_true", help="skip the n-gram baseline")
    p.add_argument("--name", help="run name (default: <word list stem or scenario>-<cell>)")
    p.add_argument("--out", default="runs")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    try:
        splits = load_words(args.words, args.scenario, args.seed)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from train.autocomplete_train import train_autocomplete_run

    model_config = AutocompleteModelConfig(cell=args.cell, hidden=args.hidden, layers=args.layers)
    train_config = AutocompleteTrainConfig.from_dict({k: getattr(args, k) for k in AutocompleteTrainConfig().to_dict()})
    name = args.name or f"{args.scenario or Path(args.words).stem}-{args.cell}"
    metrics = train_autocomplete_run(splits, model_config, train_config, Path(args.out) / name, progress=not args.quiet,
                             baseline=not args.no_baseline)
    ngram = metrics.get("ngram", {})
    print(json.dumps({"run": str(Path(args.out) / name), **{k: metrics[k] for k in (
        "test_top1", "test_top3", "parameters", "train_seconds", "epochs_run")},
        "ngram_top1": ngram.get("top1"), "ngram_ksr": ngram.get("ksr")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
