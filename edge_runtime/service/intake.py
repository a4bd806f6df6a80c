"""The queue between the sources and the model: chunks of items in, bounded by items, not by chunks.

A source hands over everything one read gave it (the lines of one TCP recv, one MQTT message) as one
chunk: one lock round trip per read instead of one per line (queue.Queue's put and get per sample were
16% of the service's CPU at its ceiling, pipeline/ceiling.py). The bound stays what `queue_size` says,
items waiting for the model, exactly as with one item per put: `put` queues as much of a chunk as there
is room for and waits for room for the rest, so the queue never holds more than `maxsize` items and
fills up to it.

A line source queues a read's raw lines (`Lines`), and `take` parses them in the consumer's thread, outside
the lock: a bytes object is invisible to the cyclic garbage collector, a parsed sample is not, and at the
ceiling a full queue of parsed samples made the collector's share 12% with pauses of 20 ms (half of each,
measured, with raw lines queued: docs/DESIGN-NOTES.md). On one core the parse costs the same in either thread.
"""
from __future__ import annotations

import threading
from collections import deque


class Lines(list):
    """One read's raw lines, queued as they came; `parse(lines) -> items` turns a run of them into items when
    taken (it is called once per run, in order, so a source may count what it parses)."""

    __slots__ = ("parse",)

    def __init__(self, lines, parse):
        super().__init__(lines)
        self.parse = parse

    def part(self, start: int, stop: int | None = None) -> Lines:
        return Lines(self[start:stop], self.parse)


def _split(chunk: list, at: int) -> tuple[list, list]:
    if type(chunk) is Lines:
        return chunk.part(0, at), chunk.part(at)
    return chunk[:at], chunk[at:]


class Intake:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._chunks: deque[list] = deque()
        self._count = 0  # items in _chunks
        self._lock = threading.Lock()
        self._not_full, self._not_empty = threading.Condition(self._lock), threading.Condition(self._lock)

    def put(self, items: list, timeout: float) -> list:
        """Queue as many of the items as fit, in order, waiting up to `timeout` seconds for room; returns the
        ones not queued ([] when all were). The queue never holds more than `maxsize` items (a `Lines` chunk
        counts its lines)."""
        with self._not_full:
            while items:
                if not self._not_full.wait_for(lambda: self._count < self.maxsize, timeout):
                    return items
                room = self.maxsize - self._count
                chunk, items = (items, []) if len(items) <= room else _split(items, room)
                self._chunks.append(chunk)
                self._count += len(chunk)
                self._not_empty.notify()
            return items

    def take(self, timeout: float, most: int) -> list:
        """The items of whole chunks in arrival order (raw lines parsed here), at least one chunk and (beyond the
        first) at most `most` items or lines; [] if nothing came within `timeout` seconds."""
        with self._not_empty:
            if not self._not_empty.wait_for(lambda: self._count > 0, timeout):
                return []
            chunks = [self._chunks.popleft()]
            count = len(chunks[0])
            while self._chunks and count + len(self._chunks[0]) <= most:
                chunks.append(self._chunks.popleft())
                count += len(chunks[-1])
            self._count -= count
            self._not_full.notify_all()
        items = []
        for chunk in chunks:
            items += chunk.parse(chunk) if type(chunk) is Lines else chunk
        return items

    def qsize(self) -> int:
        return self._count

    def empty(self) -> bool:
        return self._count == 0
