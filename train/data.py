"""Where training streams come from: built-in scenarios or real CSV sensor logs."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edge_runtime.csvrows import CsvError, CsvRows, open_csv
from train.scenarios import Stream, make_stream

MAX_REPORTED_PROBLEMS = 10


def load_csv(path: str | Path, columns: list[str] | None = None, target: list[str] | None = None,
             period_s: float = 1.0) -> Stream:
    """Load a whole sensor log. Gaps and non-numeric cells are reported, never filled in.

    `columns` picks the input channels (default: all value columns); `target`
    the ones to forecast (default: all inputs).
    """
    path = Path(path)
    values, problems = [], []
    with open_csv(str(path)) as f:
        rows = CsvRows(f, str(path), columns)
        for row in rows:
            if isinstance(row, CsvError):
                problems.append(str(row))
            else:
                values.append(row.values)
    if problems:
        shown = "\n  ".join(problems[:MAX_REPORTED_PROBLEMS])
        more = len(problems) - MAX_REPORTED_PROBLEMS
        raise CsvError(f"{path}: {len(problems)} bad row(s), nothing was filled in:\n  {shown}"
                       + (f"\n  ... and {more} more" if more > 0 else ""))
    if not values:
        raise CsvError(f"{path}: header only, no data rows")
    target_names = target or rows.columns
    unknown = [t for t in target_names if t not in rows.columns]
    if unknown:
        raise CsvError(f"{path}: target column(s) {unknown} are not among the input columns {rows.columns}")
    return Stream(
        name=path.stem, values=np.asarray(values, np.float32), channels=tuple(rows.columns),
        units=("",) * len(rows.columns), period_s=period_s,
        target=tuple(rows.columns.index(t) for t in target_names), stationary=True, nonlinear=None,
        description=f"sensor log {path.name}",
    )


def load_stream(scenario: str | None, csv_path: str | None, samples: int, seed: int,
                columns: list[str] | None = None, target: list[str] | None = None) -> Stream:
    if (scenario is None) == (csv_path is None):
        raise ValueError("give exactly one of a scenario name or a CSV file")
    if csv_path is not None:
        return load_csv(csv_path, columns, target)
    return make_stream(scenario, samples, seed)
