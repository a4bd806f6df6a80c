"""The queue between the sources and the model: chunks of items in, bounded by items, not by chunks.

A source hands over everything one read gave it (the lines of one TCP recv, one MQTT message) as one
chunk: one lock round trip per read instead of one per line (queue.Queue's put and get per sample were
16% of the service's CPU at its ceiling, pipeline/ceiling.py). The bound stays what `queue_size` says,
items waiting for the model, exactly as with one item per put: `put` queues as much of a chunk as there
is room for and waits for room for the rest, so the queue never holds more than `maxsize` items and
fills up to it.
"""
from __future__ import annotations

import threading
from collections import deque


class Intake:
    def __init__(self, maxsize: int):
        self.maxsize = maxsize
        self._chunks: deque[list] = deque()
        self._count = 0  # items in _chunks
        self._lock = threading.Lock()
        self._not_full, self._not_empty = threading.Condition(self._lock), threading.Condition(self._lock)

    def put(self, items: list, timeout: float) -> list:
        """Queue as many of the items as fit, in order, waiting up to `timeout` seconds for room; returns the
        ones not queued ([] when all were). The queue never holds more than `maxsize` items."""
        with self._not_full:
            while items:
                if not self._not_full.wait_for(lambda: self._count < self.maxsize, timeout):
                    return items
                room = self.maxsize - self._count
                chunk, items = (items, []) if len(items) <= room else (items[:room], items[room:])
                self._chunks.append(chunk)
                self._count += len(chunk)
                self._not_empty.notify()
            return items

    def take(self, timeout: float, most: int) -> list:
        """Whole chunks in arrival order, at least one item's worth and (beyond the first chunk) at most `most`
        items; [] if nothing came within `timeout` seconds."""
        with self._not_empty:
            if not self._not_empty.wait_for(lambda: self._count > 0, timeout):
                return []
            items = self._chunks.popleft()  # the source's list: it keeps no reference once it is queued
            while self._chunks and len(items) + len(self._chunks[0]) <= most:
                items.extend(self._chunks.popleft())
            self._count -= len(items)
            self._not_full.notify_all()
            return items

    def qsize(self) -> int:
        return self._count

    def empty(self) -> bool:
        return self._count == 0
