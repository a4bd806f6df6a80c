"""Train one forecaster on one stream and write its run folder.

runs/<name>/
  checkpoint.safetensors   weights + config + normalization + metrics (see checkpoint.py)
  splits.npz               the exact train / val / test arrays (raw units) and the warm-up length
  metrics.json             the same metrics, for people and scripts
  test.csv                 the test split as a sensor log (its first `warmup` rows only warm
                           the state up): what `python -m edge_eval eval` scores on a device
  val.csv                  the validation split, the same way (what the model search scores on)
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from train.baselines import mse, persistence, select_ar
from train.checkpoint import save_checkpoint
from train.config import AR_CELL
from train.models import ModelConfig, parameter_count
from train.output_gains import fit_and_fold
from train.scenarios import Stream
from train.trainer import (Splits, TrainConfig, fit_ar_model, normalization, normalize, split_stream, stream_forecast,
                           train_model)


def baseline_metrics(splits: Splits, norm: dict, target: tuple[int, ...]) -> dict:
    """Persistence and the validation-chosen AR(k), scored on the test split (normalized units)."""
    train_n, val_n, test_n = (normalize(a, norm) for a in (splits.train, splits.val, splits.test))
    ar, val_scores = select_ar(train_n, val_n, splits.warmup, target)
    return {
        "persistence_mse": mse(persistence(test_n, target), test_n, target, splits.warmup),
        "ar_mse": mse(ar.predict(test_n), test_n, target, splits.warmup),
        "ar_order": ar.order,
        "ar_val_mse_by_order": {str(k): v for k, v in val_scores.items()},
    }


def stream_info(stream: Stream) -> dict:
    return {"name": stream.name, "channels": list(stream.channels), "units": list(stream.units),
            "period_s": stream.period_s, "samples": len(stream.values), "nonlinear": stream.nonlinear,
            "stationary": stream.stationary, "description": stream.description}


def write_csv(path: Path, values: np.ndarray, channels: tuple[str, ...], first_index: int) -> None:
    lines = ["index," + ",".join(channels)]
    lines += [f"{first_index + i}," + ",".join(f"{v:.6g}" for v in row) for i, row in enumerate(values)]
    path.write_text("\n".join(lines) + "\n")


def train_run(stream: Stream, model_config: ModelConfig, train_config: TrainConfig, out_dir: Path,
              progress: bool = True, extra_metrics: dict | None = None, on_epoch=None) -> dict:
    """Train, evaluate against the baselines on the test split, write the run folder.

    extra_metrics: recorded in metrics.json as given (e.g. the CSV path's level check).
    on_epoch: see train_model."""
    torch.set_num_threads(1)  # small models: one thread is fastest and keeps runs repeatable
    out_dir = Path(out_dir)
    splits = split_stream(stream.values, train_config)
    norm = normalization(splits.train)
    started = time.perf_counter()
    if model_config.cell == AR_CELL:  # least squares, no epochs (nothing for a pruner to see)
        model, history = fit_ar_model(model_config, train_config, splits, norm, progress, label=out_dir.name)
    else:
        model, history = train_model(model_config, train_config, splits, norm, progress, label=out_dir.name,
                                     on_epoch=on_epoch)
    seconds = time.perf_counter() - started
    val_n, test_n = normalize(splits.val, norm), normalize(splits.test, norm)
    target = model_config.target
    # scored before the gains only to report what they did; nothing is chosen on it
    test_mse_as_trained = mse(stream_forecast(model, test_n), test_n, target, splits.warmup)
    gains = fit_and_fold(model, val_n, splits.warmup, train_config.gain_margin)  # validation only
    val_residual = val_n[splits.warmup + 1:, list(target)] - stream_forecast(model, val_n)[splits.warmup:-1]
    metrics = {
        "test_mse": mse(stream_forecast(model, test_n), test_n, target, splits.warmup),
        "test_mse_as_trained": test_mse_as_trained,
        "output_gains": gains,
        **baseline_metrics(splits, norm, target),
        "val_residual_std": val_residual.std(axis=0).tolist(),  # normalized units, per target
        "parameters": parameter_count(model),
        "train_seconds": round(seconds, 2),
        "best_epoch": history["best_epoch"], "epochs_run": history["epochs_run"],
        "units": "mean squared error of the next-sample forecast on the test split, normalized units",
        **(extra_metrics or {}),
    }
    info = {"model": model_config.to_dict(), "train": train_config.to_dict(), "normalization": norm,
            "stream": stream_info(stream), "metrics": metrics}
    out_dir.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    save_checkpoint(out_dir / "checkpoint.safetensors", weights, info)
    np.savez(out_dir / "splits.npz", train=splits.train, val=splits.val, test=splits.test,
             warmup=np.int64(splits.warmup))
    write_csv(out_dir / "test.csv", splits.test, stream.channels, len(stream.values) - len(splits.test))
    write_csv(out_dir / "val.csv", splits.val, stream.channels, len(splits.train) - splits.warmup)
    (out_dir / "metrics.json").write_text(json.dumps({**metrics, "history": history["history"]}, indent=1))
    return metrics
