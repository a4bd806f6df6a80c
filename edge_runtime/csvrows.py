"""Sensor CSV logs, read one row at a time with errors that name row and column.

Format: a header row; the first column is an index or timestamp (kept as
text, echoed back); the other columns are numeric sensor channels. Lives in
edge_runtime because the device streams these rows; train/ reuses it to load
whole logs so both sides agree on what a valid row is.
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from typing import Iterable, Iterator


class CsvError(ValueError):
    """A CSV problem, with the file, line number (1 = the header) and column in the message."""


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line number in the file (the header is line 1)
    key: str  # the index/timestamp cell, as written
    values: tuple[float, ...]  # the selected channels, in the order asked for


class CsvRows:
    """Iterate rows of a CSV stream, selecting value columns by name."""

    def __init__(self, lines: Iterable[str], source: str, columns: list[str] | None = None):
        self.source = source
        self._reader = csv.reader(lines)
        header = next(self._reader, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(self._reader, None)  # tolerate leading blank lines
        if header is None:
            raise CsvError(f"{source}: empty file, expected a header row "
                           "(an index or timestamp column, then one column per channel)")
        self.header = [h.strip() for h in header]
        if len(self.header) < 2:
            raise CsvError(f"{source}: header {self.header} has no value columns "
                           "(expected an index or timestamp column, then one column per channel)")
        available = self.header[1:]
        self.columns = list(columns) if columns else available
        missing = [c for c in self.columns if c not in available]
        if missing:
            raise CsvError(f"{source}: missing column(s) {missing}; the header has {available}")
        self._positions = [self.header.index(c) for c in self.columns]

    def parse(self, cells: list[str], line: int) -> Row:
        if len(cells) != len(self.header):
            raise CsvError(f"{self.source}: line {line} has {len(cells)} cells, the header has {len(self.header)}")
        values = []
        for column, pos in zip(self.columns, self._positions):
            text = cells[pos].strip()
            if not text:
                raise CsvError(f"{self.source}: line {line}, column {column!r}: empty cell (a gap in the log)")
            try:
                value = float(text)
            except ValueError:
                raise CsvError(f"{self.source}: line {line}, column {column!r}: {text!r} is not a number") from None
            if not math.isfinite(value):
                raise CsvError(f"{self.source}: line {line}, column {column!r}: {text!r} is not a finite number")
            values.append(value)
        return Row(line, cells[0].strip(), tuple(values))

    def __iter__(self) -> Iterator[Row | CsvError]:
        """Yield a Row per data line, or the CsvError for a bad one (the caller decides)."""
        for cells in self._reader:
            line = self._reader.line_num
            if not any(cell.strip() for cell in cells):
                continue  # blank line
            try:
                yield self.parse(cells, line)
            except CsvError as e:
                yield e
