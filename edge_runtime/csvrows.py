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
from typing import Iterable, Iterator, TextIO

MAX_LINE_CHARS = 1 << 20  # a sensor row is tens of characters: a longer "line" is not a row, and is never held whole


class CsvError(ValueError):
    """A CSV problem, with the file, line number (1 = the header) and column in the message."""


def open_csv(path: str) -> TextIO:
    """A CSV log opened for reading, or CsvError naming the path. Bytes that are not UTF-8 are kept (as
    surrogates) so that CsvRows reports their row instead of the whole run ending in a decode error."""
    try:
        return open(path, encoding="utf-8", errors="surrogateescape", newline="")
    except FileNotFoundError:
        raise CsvError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise CsvError(f"{path}: is a folder, not a CSV file") from None
    except OSError as e:
        raise CsvError(f"{path}: cannot be opened ({e.strerror or e})") from None


def _not_utf8(cells: list[str]) -> bytes | None:
    """The first bytes in a row that were not UTF-8 (open_csv keeps them as surrogates), or None."""
    text = ",".join(cells)
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return text[e.start:e.end].encode("utf-8", "surrogateescape")
    return None


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line number in the file (the header is line 1)
    key: str  # the index/timestamp cell, as written
    values: tuple[float, ...]  # the selected channels, in the order asked for


class CsvRows:
    """Iterate rows of a CSV stream, selecting value columns by name."""

    def __init__(self, lines: Iterable[str], source: str, columns: list[str] | None = None):
        self.source = source
        self._overlong: set[int] = set()  # numbers of the lines _bounded dropped for their length
        self._reader = csv.reader(self._bounded(lines))
        header = self._header()
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

    def _bounded(self, lines: Iterable[str]) -> Iterator[str]:
        """The lines, each at most MAX_LINE_CHARS: a longer one is read in pieces (from a file) and replaced by
        an empty line, its number noted so that its row is reported. Lines are counted as csv.reader counts
        them (line_num), one per item."""
        readline = getattr(lines, "readline", None)
        if readline is None:
            for number, line in enumerate(lines, 1):
                if len(line) > MAX_LINE_CHARS:
                    self._overlong.add(number)
                    line = ""
                yield line
            return
        number = 0
        while line := readline(MAX_LINE_CHARS + 1):
            number += 1
            if len(line) > MAX_LINE_CHARS:
                while line and line[-1] not in "\r\n":  # the rest of it, a piece at a time
                    line = readline(MAX_LINE_CHARS + 1)
                self._overlong.add(number)
                line = ""
            yield line

    def _rows(self) -> Iterator[tuple[int, list[str] | CsvError]]:
        """(line number, cells or the CsvError of a line that is too long, not UTF-8, or not CSV)."""
        while True:
            try:
                cells = next(self._reader)
            except StopIteration:
                return
            except csv.Error as e:  # e.g. a field over csv's field_size_limit; the reader goes on at the next line
                yield self._reader.line_num, CsvError(f"{self.source}: line {self._reader.line_num}: {e}")
                continue
            line = self._reader.line_num
            if line in self._overlong:
                yield line, CsvError(f"{self.source}: line {line}: longer than {MAX_LINE_CHARS:,} characters "
                                     "(not a row of a sensor log)")
            elif (raw := _not_utf8(cells)) is not None:
                yield line, CsvError(f"{self.source}: line {line}: {raw!r} is not UTF-8 text")
            else:
                yield line, cells

    def _header(self) -> list[str] | None:
        """The first line that is not blank, or None if there is none; a header that cannot be read is an error
        (without it no row can be read)."""
        for _, cells in self._rows():
            if isinstance(cells, CsvError):
                raise cells
            if any(cell.strip() for cell in cells):  # tolerate leading blank lines
                return cells
        return None

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
        for line, cells in self._rows():
            if isinstance(cells, CsvError):
                yield cells
                continue
            if not any(cell.strip() for cell in cells):
                continue  # blank line
            try:
                yield self.parse(cells, line)
            except CsvError as e:
                yield e
