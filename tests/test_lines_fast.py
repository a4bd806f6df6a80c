"""The service's fast CSV path (edge_runtime/service/lines.py `_from_csv_fast`) gives what the full parser
gives, or steps aside: for any line, parse() with it equals parse() without it, rejections included."""
from __future__ import annotations

from hypothesis import given, settings, strategies as st

from edge_runtime.service import lines
from edge_runtime.service.lines import Sample, parse

BOUNDS = ((-1000.0, 1000.0), (0.0, 5.0))

cell = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-10**6, 10**6).map(str),
    st.sampled_from(["", " ", "nan", "inf", "-inf", "1e400", "1_000", " 2.5 ", "2.5\r", "abc", "0x10", "1e308",
                     "9" * 401, "+3", "-0", ".5", "5.", "NaN", "Infinity"]),
)
stream_id = st.one_of(st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True),
                      st.sampled_from(["", " s1 ", "s 1", "a" * 65, "é", "s1\t", "-"]))


def _both(text: str, stream, bounds):
    data = text.encode()
    fast = parse(data, 2, "test", 1.0, stream=stream, bounds=bounds)
    saved = lines._from_csv_fast
    lines._from_csv_fast = lambda *a: None  # the full parser alone
    try:
        full = parse(data, 2, "test", 1.0, stream=stream, bounds=bounds)
    finally:
        lines._from_csv_fast = saved
    return fast, full


@settings(max_examples=600, deadline=None)
@given(ident=stream_id, cells=st.lists(cell, min_size=0, max_size=5), topic=st.booleans(),
       bounded=st.booleans())
def test_the_fast_path_equals_the_full_parser_on_any_csv_line(ident, cells, topic, bounded):
    text = ",".join(cells) if topic else ",".join([ident, *cells])
    fast, full = _both(text, ident if topic else None, BOUNDS if bounded else None)
    assert repr(fast) == repr(full), text


def test_a_well_formed_line_takes_the_fast_path_and_keeps_every_digit():
    assert lines._from_csv_fast("s1, 1700000000.02 ,20.125,3", None, 2, BOUNDS) == ("s1", 1700000000.02, (20.125, 3.0))
    item = parse(b"s1,1700000000.02,20.125,3\n", 2, "test", 1.0, bounds=BOUNDS)
    assert isinstance(item, Sample) and item.values == (20.125, 3.0)
    assert lines._from_csv_fast("s1,1,nan,3", None, 2, BOUNDS) is None  # the full parser names it non_finite
    assert parse(b"s1,1,nan,3", 2, "test", 1.0, bounds=BOUNDS).reason == "non_finite"


# -- a whole read at once (issue 19: the parse was the service's largest stage) -----------------------------
line_text = st.one_of(
    st.lists(cell, min_size=0, max_size=5).map(lambda cells: ",".join(["s1", *cells])),
    st.builds(lambda ident, cells: ",".join([ident, *cells]), stream_id, st.lists(cell, max_size=4)),
    st.sampled_from(['{"id": "s2", "t": 5, "values": [1.5, 2]}', '{"id": "s2", "reset": true}', "{bad json",
                     "", "   ", "\u2003", "s1,1,2\x07,3", "s1,1,2\x7f,3", "s1,1,2\x0c,3", "s1,1\x1f,2,3", "s\u00e91,1,2,3", "s1,1,2,3\r"]),
)
line_bytes = st.one_of(line_text.map(str.encode), st.binary(max_size=30).filter(lambda b: b"\n" not in b))


@settings(max_examples=600, deadline=None)
@given(read=st.lists(line_bytes, min_size=0, max_size=12), bounded=st.booleans())
def test_a_read_parsed_at_once_gives_what_its_lines_give_one_by_one(read, bounded):
    bounds = BOUNDS if bounded else None
    one_by_one = [item for line in read if (item := parse(line, 2, "test", 1.0, bounds=bounds)) is not None]
    assert repr(lines.parse_many(read, 2, "test", 1.0, bounds=bounds)) == repr(one_by_one), read


# A sensor's steady traffic: every line `id,t,v1,v2` with a valid id, so the read is parsed as one block
# (_csv_block); the numbers include what a check must refuse (NaN, infinities, out of bounds), and now and
# then one line is something else, so that the read goes one by one.
number = st.one_of(st.floats(-2000, 2000), st.floats(allow_nan=True, allow_infinity=True),
                   st.sampled_from(["nan", "-inf", "1e400", " 2.5", "3\r", "1_0", "-0", "abc", ""]))
good_id = st.from_regex(r"[A-Za-z0-9_.:-]{1,64}", fullmatch=True)
sample_line = st.builds(lambda ident, t, v1, v2: f"{ident},{t},{v1},{v2}".encode(), good_id, number, number, number)
odd_line = st.sampled_from([b"", b"s1,1,2", b"s1,1,2,3,4", b'{"id": "s2", "t": 5, "values": [1.5, 2]}',
                            b"s 1,1,2,3", b"\xff,1,2,3", b"s1,1,2\x07,3"])


@settings(max_examples=600, deadline=None)
@given(read=st.lists(sample_line, min_size=1, max_size=40), odd=st.lists(odd_line, max_size=1),
       at=st.integers(0, 40), bounded=st.booleans())
def test_a_read_of_sample_lines_parsed_as_one_block_gives_what_its_lines_give_one_by_one(read, odd, at, bounded):
    read = read[:at] + odd + read[at:]
    bounds = BOUNDS if bounded else None
    one_by_one = [item for line in read if (item := parse(line, 2, "test", 1.0, bounds=bounds)) is not None]
    assert repr(lines.parse_many(read, 2, "test", 1.0, bounds=bounds)) == repr(one_by_one), read


@settings(max_examples=600, deadline=None)
@given(read=st.lists(st.one_of(sample_line, line_bytes), min_size=1, max_size=20), bounded=st.booleans())
def test_a_sample_s_logged_line_reads_back_as_the_same_sample(read, bounded):
    """The write-ahead log keeps a CSV sample as its line (["c", line]) and a replay parses it again, without
    the bounds: that must give the stream, t and values that the live parse gave, to the bit."""
    samples = [item for item in lines.parse_many(read, 2, "test", 1.0, bounds=BOUNDS if bounded else None)
               if isinstance(item, Sample)]
    for sample in samples:
        if sample.line is None:
            continue
        again = parse(sample.line.encode(), 2, "wal", 2.0)
        assert isinstance(again, Sample) and again.line == sample.line, sample
        assert (again.stream, repr(again.t), repr(again.values)) == (sample.stream, repr(sample.t), repr(sample.values))
    assert all(sample.line is not None for sample in samples if b"{" not in b"".join(read)), read


def test_only_a_whole_csv_line_is_kept_as_the_sample_s_line():
    assert parse(b"  s1,5,20.125,3\r", 2, "test", 1.0).line == "s1,5,20.125,3"  # stripped, as it is parsed
    assert parse(b'{"id": "s2", "t": 5, "values": [1.5, 2]}', 2, "test", 1.0).line is None  # JSON: the numbers
    assert parse(b"5,20.125,3", 2, "mqtt", 1.0, stream="s1").line is None  # the id is in the topic, not the line


def test_steady_sample_lines_are_parsed_as_one_block():
    texts = [f"s{k % 3},{100 + k / 50},{20 + k / 10},{k % 5}" for k in range(64)]
    ids, ts, values, passed = lines._csv_block(texts, 2, BOUNDS)
    assert ids[:3] == ["s0", "s1", "s2"] and ts[1] == 100.02 and values[1] == [20.1, 1.0] and passed.all()
    texts[5] = "s5,1,2000,3"  # out of bounds: refused by the block's check, so parse() names it
    assert lines._csv_block(texts, 2, BOUNDS)[3].tolist() == [k != 5 for k in range(64)]
    assert lines._csv_block(texts + ["s1,1,2"], 2, BOUNDS) is None  # a line with other fields: one by one


def _split_line_by_line(chunks: list[bytes], max_bytes: int) -> list:
    """The splitter as it was, a find per line: the reference for the one-split version."""
    out, buffer, discarding = [], bytearray(), False
    for data in chunks:
        buffer += data
        start = 0
        while (end := buffer.find(b"\n", start)) >= 0:
            if discarding:
                discarding = False
            elif end - start > max_bytes:
                out.append(None)
            else:
                out.append(bytes(buffer[start:end]))
            start = end + 1
        del buffer[:start]
        if len(buffer) > max_bytes:
            if not discarding:
                out.append(None)
                discarding = True
            buffer.clear()
    return out


@settings(max_examples=400, deadline=None)
@given(stream=st.lists(st.sampled_from([b"a", b"bc", b"\n", b"xxxxxxx", b"\n\n", b"12345678901234567890"]),
                       max_size=40),
       cuts=st.lists(st.integers(0, 400), max_size=8), max_bytes=st.integers(1, 24))
def test_the_line_splitter_gives_the_same_lines_however_the_bytes_are_cut(stream, cuts, max_bytes):
    data = b"".join(stream)
    points = sorted({min(c, len(data)) for c in cuts})
    chunks = [data[a:b] for a, b in zip([0, *points], [*points, len(data)])]
    splitter = lines.LineSplitter(max_bytes)
    got = [line for chunk in chunks for line in splitter.feed(chunk)]
    assert got == _split_line_by_line(chunks, max_bytes)
    assert len(splitter._buffer) <= max_bytes
