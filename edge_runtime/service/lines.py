"""What arrives from a source, parsed into a sample, a control message or a counted rejection.

Line formats (stdin, files, TCP, serial), one sample per line:

    {"id": "s1", "t": 1700000000.02, "values": [20.1, 3.0]}      JSON
    s1,1700000000.02,20.1,3.0                                    CSV: id, timestamp, values...
    {"id": "s1", "reset": true}                                  reset that stream's state

MQTT carries the stream id in the topic, so its payload is only the rest:
{"t": ..., "values": [...]} or "t,v1,v2". Timestamps are seconds (any
epoch, but one per stream; a gap or an order is judged on them).

Checks, in this order, each with its reason: oversized (by the reader),
binary (not UTF-8, or control characters), malformed (neither form, or a
field missing), bad_id, bad_timestamp, wrong_channels, non_numeric,
non_finite, out_of_range (outside the channel's plausible range, see
edge_runtime/bounds.py). The first that fails names the rejection.
`parse` never raises: any bytes give a sample, a reset, a rejection or None.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from itertools import repeat
from typing import Callable

import numpy as np

from edge_runtime.bounds import out_of_range

REASONS = ("oversized", "binary", "malformed", "bad_id", "bad_timestamp", "wrong_channels", "non_numeric",
           "non_finite", "out_of_range", "stream_limit", "duplicate", "out_of_order", "future_timestamp")
# safe inside an MQTT topic and a file name; \Z, not $: "$" also matches before a final newline ("a\n")
STREAM_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}\Z")
_STREAM_IDS = re.compile(r"(?:[A-Za-z0-9_.:-]{1,64}\n)*")  # STREAM_ID for many, each followed by "\n"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


@dataclass(slots=True)
class Sample:
    stream: str
    t: float
    values: tuple[float, ...]  # (C,) raw sensor units
    source: str
    received: float  # time.perf_counter() when read, for sample-to-prediction latency
    ack: Callable[[], None] | None = None  # MQTT: acknowledge once processed
    line: str | None = None  # a CSV sample: the line as read, which the write-ahead log keeps instead of the numbers


@dataclass(slots=True)
class Reset:
    stream: str
    source: str
    ack: Callable[[], None] | None = None


@dataclass(slots=True)
class Rejection:
    reason: str  # one of REASONS
    detail: str
    source: str
    ack: Callable[[], None] | None = None


class _Bad(Exception):
    def __init__(self, reason: str, detail: str):
        self.reason, self.detail = reason, detail


def _text(data: bytes) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise _Bad("binary", f"not UTF-8: {data[:32]!r}") from None
    if _CONTROL.search(text):
        raise _Bad("binary", f"control characters: {data[:32]!r}")
    return text.strip()


def _stream_id(value) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _Bad("bad_id", f"stream id {value!r} is not a string")
    value = str(value)
    if not STREAM_ID.match(value):
        raise _Bad("bad_id", f"stream id {value[:80]!r} (allowed: 1-64 of A-Z a-z 0-9 _ . : -)")
    return value


def _timestamp(value) -> float:
    if isinstance(value, bool):
        raise _Bad("bad_timestamp", f"timestamp {value!r}")
    try:
        t = float(value)
    except (TypeError, ValueError, OverflowError):  # OverflowError: a 401-digit integer
        raise _Bad("bad_timestamp", f"timestamp {str(value)[:40]!r} is not a number") from None
    if not math.isfinite(t):
        raise _Bad("bad_timestamp", f"timestamp {value!r} is not finite")
    return t


def _values(raw: list, channels: int, from_json: bool, bounds) -> tuple[float, ...]:
    if len(raw) != channels:
        raise _Bad("wrong_channels", f"{len(raw)} values, the model takes {channels}")
    out = []
    for k, v in enumerate(raw):
        if from_json and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise _Bad("non_numeric", f"value {k}: {str(v)[:40]!r} is not a number")
        try:
            number = float(v)
        except (TypeError, ValueError, OverflowError):
            raise _Bad("non_numeric", f"value {k}: {str(v)[:40]!r} is not a number") from None
        if not math.isfinite(number):
            raise _Bad("non_finite", f"value {k}: {v!r}")
        out.append(number)
    if bounds is not None:
        reason = out_of_range(out, bounds)
        if reason:
            raise _Bad("out_of_range", reason)
    return tuple(out)


def _from_json(text: str, stream: str | None, channels: int, bounds):
    try:
        d = json.loads(text)
    except (ValueError, RecursionError):  # ValueError: also an integer beyond Python's digit limit
        raise _Bad("malformed", f"not valid JSON: {text[:60]!r}") from None
    if not isinstance(d, dict):
        raise _Bad("malformed", f"JSON {type(d).__name__}, expected an object")
    if stream is None:
        if "id" not in d:
            raise _Bad("malformed", "no 'id'")
        stream = _stream_id(d["id"])
    if d.get("reset") is True:
        return stream, None, None
    if "t" not in d or "values" not in d:
        raise _Bad("malformed", f"needs 't' and 'values', has {sorted(d)[:8]}")
    if not isinstance(d["values"], list):
        raise _Bad("malformed", f"'values' should be a list, got {str(d['values'])[:40]!r}")
    return stream, _timestamp(d["t"]), _values(d["values"], channels, True, bounds)


def _from_csv(text: str, stream: str | None, channels: int, bounds):
    cells = [c.strip() for c in text.split(",")]
    if stream is None:
        if len(cells) < 3:
            raise _Bad("malformed", f"{len(cells)} fields; expected id, timestamp, values: {text[:60]!r}")
        stream, cells = _stream_id(cells[0]), cells[1:]
    elif len(cells) < 2:
        raise _Bad("malformed", f"{len(cells)} fields; expected timestamp, values: {text[:60]!r}")
    return stream, _timestamp(cells[0]), _values(cells[1:], channels, False, bounds)


def _from_csv_fast(text: str, stream: str | None, channels: int, bounds):
    """The common case of _from_csv, a well-formed line inside the bounds, in a few C calls; None for
    anything else, which _from_csv then parses, so every rejection keeps its reason and detail."""
    cells = text.split(",")
    if stream is None:
        if len(cells) != channels + 2:
            return None
        stream = cells[0].strip()
        if not STREAM_ID.match(stream):
            return None
        del cells[0]
    elif len(cells) != channels + 1:
        return None
    try:
        t, *values = map(float, cells)  # float() strips blanks itself, as _from_csv's strip() did
    except ValueError:
        return None
    if not math.isfinite(t):
        return None
    if bounds is None:
        if not all(map(math.isfinite, values)):
            return None
    elif not all(low <= v <= high for v, (low, high) in zip(values, bounds)):  # False for NaN; bounds finite
        return None
    return stream, t, tuple(values)


def parse(data: bytes, channels: int, source: str, received: float, stream: str | None = None,
          ack=None, bounds=None) -> Sample | Reset | Rejection | None:
    """One line (or MQTT payload, with the topic's stream id) -> what it is. None for a blank line.

    bounds: ((low, high), ...) per channel (edge_runtime.bounds.value_bounds), or None for no range check.
    Never raises: an input that trips an unforeseen error is a `malformed` rejection naming the error.
    """
    try:
        text = _text(data)
        if not text:
            return None
        if text.startswith("{"):
            stream_id, t, values = _from_json(text, stream, channels, bounds)
        else:
            stream_id, t, values = _from_csv_fast(text, stream, channels, bounds) or \
                _from_csv(text, stream, channels, bounds)
    except _Bad as bad:
        return Rejection(bad.reason, bad.detail, source, ack)
    except Exception as e:  # a parser bug must cost one line, never the reader thread
        return Rejection("malformed", f"unparsable ({type(e).__name__}): {data[:40]!r}", source, ack)
    if t is None:
        return Reset(stream_id, source, ack)
    whole_line = text if stream is None and not text.startswith("{") else None  # what parse() reads back alike
    return Sample(stream_id, t, values, source, received, ack, whole_line)


class LineSplitter:
    """Bytes from a stream socket or serial port -> whole lines; None marks an oversized line.

    A line longer than max_bytes is reported once and its bytes discarded up
    to the next newline, so a flood without newlines never grows the buffer.
    """

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._discarding = False

    def feed(self, data: bytes) -> list[bytes | None]:
        self._buffer += data
        out: list[bytes | None] = []
        end = self._buffer.rfind(b"\n")
        if end >= 0:  # the read's whole lines in one split, not a find per line
            out = bytes(self._buffer[:end]).split(b"\n")
            del self._buffer[:end + 1]
            if self._discarding:
                self._discarding = False  # the first newline ends the oversized line already reported
                del out[0]
            if out and max(map(len, out)) > self.max_bytes:
                out = [None if len(line) > self.max_bytes else line for line in out]
        if len(self._buffer) > self.max_bytes:
            if not self._discarding:
                out.append(None)
                self._discarding = True
            self._buffer.clear()
        return out

    def flush(self) -> list[bytes | None]:
        """At end of input: the last line if it had no newline."""
        rest, self._buffer = bytes(self._buffer), bytearray()
        if self._discarding or not rest:
            return []
        return [rest] if len(rest) <= self.max_bytes else [None]


def _csv_block(texts: list[str], channels: int, bounds) -> tuple[list, list, list, np.ndarray] | None:
    """A read's lines when every one has the fields of `id,t,v1..vC` and a valid id: (ids, ts, rows of
    values, and which lines passed _from_csv_fast's number checks); None otherwise. The numbers are
    parsed by float() as in _from_csv_fast, into one (N, 1 + C) array, and checked as arrays."""
    width = channels + 2
    if set(map(str.count, texts, repeat(","))) != {width - 1}:
        return None
    cells = ",".join(texts).split(",")
    ids = [cell.strip() for cell in cells[0::width]]
    if not _STREAM_IDS.fullmatch("\n".join(ids) + "\n"):
        return None
    del cells[0::width]
    try:
        numbers = np.fromiter(map(float, cells), np.float64, len(cells)).reshape(len(texts), width - 1)  # (N, 1+C)
    except ValueError:
        return None
    values = numbers[:, 1:]  # (N, C)
    with np.errstate(invalid="ignore"):
        if bounds is None:
            passed = np.isfinite(numbers).all(axis=1)
        else:
            low, high = np.array(bounds, np.float64).T  # (C,) each; NaN compares False, as in the fast path
            passed = np.isfinite(numbers[:, 0]) & ((values >= low) & (values <= high)).all(axis=1)
    return ids, numbers[:, 0].tolist(), values.tolist(), passed


def parse_many(lines: list[bytes], channels: int, source: str, received: float, bounds=None) -> list:
    """[parse(line) for each line], blank lines left out: the same items in the same order. A read of clean
    UTF-8 is decoded and searched for control characters once, not line by line. If all its lines are CSV
    samples with the right fields and valid ids (a sensor's steady traffic), their numbers are parsed and
    checked as one array (_csv_block); otherwise its well-formed CSV lines take _from_csv_fast one by one.
    Any line that fails a check goes through parse() and keeps its reason."""
    try:
        whole = b"\n".join(lines).decode("utf-8")  # valid as a whole, so is every line: "\n" never sits inside a character
    except UnicodeDecodeError:
        whole = None
    if whole is None or _CONTROL.search(whole):
        return [item for line in lines if (item := parse(line, channels, source, received, bounds=bounds)) is not None]
    texts = whole.split("\n")  # one text per line: no line holds a "\n"
    try:
        block = None if "{" in whole else _csv_block(texts, channels, bounds)
    except Exception:  # never raises today; should it ever, the lines below are parsed one by one
        block = None
    if block is not None:
        ids, ts, values, passed = block
        if passed.all():
            return [Sample(i, t, tuple(v), source, received, None, text.strip())
                    for i, t, v, text in zip(ids, ts, values, texts)]
        return [Sample(i, t, tuple(v), source, received, None, text.strip()) if ok
                else parse(data, channels, source, received, bounds=bounds)  # a failed check: its reason
                for i, t, v, ok, data, text in zip(ids, ts, values, passed.tolist(), lines, texts)]
    items = []
    for data, text in zip(lines, texts):
        text = text.strip()
        if not text:
            continue
        fast = None
        if text[0] != "{":
            try:
                fast = _from_csv_fast(text, None, channels, bounds)
            except Exception:  # never raises today; should it ever, parse() below turns the line into a rejection
                pass
        if fast is not None:
            items.append(Sample(fast[0], fast[1], fast[2], source, received, None, text))
        else:
            item = parse(data, channels, source, received, bounds=bounds)
            if item is not None:
                items.append(item)
    return items
