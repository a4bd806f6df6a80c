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
