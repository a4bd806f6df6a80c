"""Forecast error of a bundle on a labelled CSV log, streamed one sample at a time as a device would."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np

from edge_runtime.csvrows import CsvError, CsvRows
from edge_runtime.session import Session


def evaluate_csv(session: Session, lines: Iterable[str], source: str, warmup: int = 0,
                 errors_to: str | None = None) -> dict:
    """Stream a labelled log and score the next-sample forecasts made after `warmup` rows.

    Returns MSE in normalized units (comparable across sensors: 1.0 is the
    variance of the training data) and RMSE per target channel in sensor units.
    errors_to: also write each scored step's normalized squared error, the mean over targets ((N,)
    float64 .npy), so that two models scored on the same log can be compared step by step.
    """
    manifest = session.model.manifest
    rows = CsvRows(lines, source, list(manifest.channels))
    target = list(manifest.target)
    std = np.asarray(manifest.normalization["std"])[target]
    squared, previous, count = [], None, 0
    for row in rows:
        if isinstance(row, CsvError):
            raise row
        actual = np.asarray(row.values, np.float64)[target]
        if previous is not None and count > warmup:
            squared.append((actual - previous) ** 2)
        previous = session.step(row.values)
        count += 1
    if not squared:
        raise CsvError(f"{source}: {count} rows, none left to score after a warm-up of {warmup}")
    squared = np.asarray(squared)  # (N, O)
    if errors_to is not None:
        write_npy(errors_to, np.mean(squared / std ** 2, axis=1))
    return {"rows": count, "scored": len(squared), "warmup": warmup,
            "mse": float(np.mean(squared / std ** 2)),
            "rmse": {manifest.channels[i]: float(np.sqrt(squared[:, k].mean())) for k, i in enumerate(target)},
            "backend": session.model.backend, "variant": session.model.variant.name}


def write_npy(path: str, values: np.ndarray) -> None:
    """Whole or not at all: written beside the target, then renamed over it."""
    target = Path(path)
    partial = target.with_name(target.name + ".partial")
    with open(partial, "wb") as f:
        np.save(f, values)
    os.replace(partial, target)
