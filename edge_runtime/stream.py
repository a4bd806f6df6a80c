"""Streaming a whole series or a CSV through a Session, one sample at a time."""
from __future__ import annotations

import json
import math
from typing import Iterable, TextIO

import numpy as np

from edge_runtime.bounds import out_of_range, value_bounds
from edge_runtime.csvrows import CsvError, CsvRows
from edge_runtime.session import Session


def forecast_stream(session: Session, raw: np.ndarray) -> np.ndarray:
    """raw: (T, C) sensor units -> (T, O) forecasts; row t forecasts sample t+1. State is never reset."""
    return np.stack([session.step(row) for row in raw])


def _rounded(values) -> list[float]:
    return [round(float(v), 6) for v in values]


def run_csv(session: Session, lines: Iterable[str], source: str, out: TextIO, err: TextIO,
            skip_bad_rows: bool = False) -> int:
    """Stream CSV rows through `session`, printing one JSON line per row.

    Each line: the row's index/timestamp, its input, the forecast of the next
    sample, and the residual (this sample minus the forecast made one row
    earlier; null on the first row). Returns the number of rows predicted.
    A bad row stops the run with CsvError, or with skip_bad_rows is reported
    on `err` and left out, the state untouched. A value outside the channel's
    plausible range (edge_runtime/bounds.py) is a bad row: it would turn the
    state to NaN. The output is strict JSON (never NaN or Infinity).
    """
    manifest = session.model.manifest
    rows = CsvRows(lines, source, list(manifest.channels))
    target = list(manifest.target)
    bounds = value_bounds(manifest.normalization)
    previous, count = None, 0
    for row in rows:
        if not isinstance(row, CsvError):
            reason = out_of_range(row.values, bounds)
            if reason:
                row = CsvError(f"{source}: line {row.line}: {reason}")
        if isinstance(row, CsvError):
            if not skip_bad_rows:
                raise row
            print(f"skipped: {row}", file=err, flush=True)
            continue
        actual = np.asarray(row.values, np.float32)[target]
        residual = None if previous is None else _rounded(actual - previous)
        prediction = session.step(row.values)
        if not all(math.isfinite(v) for v in prediction.tolist()):
            # a last line of defence (the range check should make it unreachable): the state is lost, so stop
            raise CsvError(f"{source}: line {row.line}: the forecast is not finite (the model's state overflowed)")
        out.write(json.dumps({"index": row.key, "input": list(row.values), "prediction": _rounded(prediction),
                              "residual": residual}, allow_nan=False) + "\n")
        out.flush()
        previous, count = prediction, count + 1
    return count
