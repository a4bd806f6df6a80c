"""The service's intake queue (edge_runtime/service/intake.py): chunks in, the bound in items, order kept; raw
lines parsed when taken."""
from __future__ import annotations

import threading

from hypothesis import given, settings, strategies as st

from edge_runtime.service.intake import Intake, Lines


def test_a_chunk_larger_than_the_room_fills_the_queue_exactly_and_waits_for_the_rest():
    q = Intake(100)
    left = q.put(list(range(250)), timeout=0.05)
    assert q.qsize() == 100 and left == list(range(100, 250))
    assert q.take(0.05, most=4096) == list(range(100))
    assert q.put(left, timeout=0.05) == list(range(200, 250)) and q.qsize() == 100


def test_take_returns_whole_chunks_in_order_up_to_most_and_nothing_when_empty():
    q = Intake(1000)
    for chunk in ([1, 2], [3], [4, 5, 6], [7]):
        assert q.put(chunk, timeout=0) == []
    assert q.take(0, most=4) == [1, 2, 3]  # [4, 5, 6] would go past 4
    assert q.take(0, most=1) == [4, 5, 6]  # the first chunk always comes whole
    assert q.take(0, most=10) == [7] and q.empty()
    assert q.take(0.01, most=10) == []


def test_raw_lines_are_parsed_when_taken_each_part_once_in_order_and_counted_as_lines():
    runs = []

    def parse(run):  # as a source's parse: a blank line gives no item
        runs.append(list(run))
        return [line.decode() for line in run if line.strip()]

    q = Intake(4)
    left = q.put(Lines([b"a", b"", b"b", b"c", b"d", b"e"], parse), timeout=0.05)
    assert runs == [] and q.qsize() == 4 and type(left) is Lines and left == [b"d", b"e"]
    assert q.take(0, most=100) == ["a", "b", "c"] and runs == [[b"a", b"", b"b", b"c"]]
    assert q.put(left, timeout=0) == [] and q.put([7], timeout=0) == []
    assert q.take(0, most=100) == ["d", "e", 7] and runs[1:] == [[b"d", b"e"]] and q.empty()


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 50), st.lists(st.integers(0, 80), max_size=40), st.integers(1, 200))
def test_a_producer_and_a_consumer_see_every_item_once_in_order_and_the_bound_holds(maxsize, sizes, most):
    q = Intake(maxsize)
    chunks, start = [], 0
    for n in sizes:  # every other chunk raw, "parsed" when taken
        numbers = list(range(start, start + n))
        chunks.append(Lines(numbers, list) if len(chunks) % 2 else numbers)
        start += n
    seen, peak = [], [0]

    def produce():
        for chunk in chunks:
            while chunk := q.put(chunk, timeout=1.0):
                pass

    producer = threading.Thread(target=produce)
    producer.start()
    while len(seen) < start:
        peak[0] = max(peak[0], q.qsize())
        seen += q.take(1.0, most)
    producer.join(10)
    assert seen == list(range(start)) and peak[0] <= maxsize and q.empty()
