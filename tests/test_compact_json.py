"""compact_json (edge_runtime/service/compact.py), the sinks' and the write-ahead log's encoder, is
json.dumps(separators=(",", ":")) byte for byte on any JSON value, NaN and infinities included."""
from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import given, settings, strategies as st

from edge_runtime.service.compact import compact_json, record_lines

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**30, 10**30), st.floats(allow_nan=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=4)),
                      max_leaves=20)


@settings(max_examples=1000, deadline=None)
@given(value=values)
def test_compact_json_is_json_dumps_byte_for_byte(value):
    assert compact_json(value) == json.dumps(value, separators=(",", ":"))


def test_a_forecast_record_and_its_special_floats():
    record = {"type": "prediction", "id": "s1", "t": 1700000000.02, "step": 3, "prediction": [20.125],
              "residual": [math.nan], "score": math.inf, "warm": True}
    assert compact_json(record) == ('{"type":"prediction","id":"s1","t":1700000000.02,"step":3,'
                                    '"prediction":[20.125],"residual":[NaN],"score":Infinity,"warm":true}')


# -- the sinks' texts of a round's records (issue 19: orjson when every number is finite) ---------------------
ids = st.text(min_size=1, max_size=8)
finite = st.floats(allow_nan=False, allow_infinity=False)
forecast = st.fixed_dictionaries({
    "type": st.just("prediction"), "id": ids, "t": finite, "step": st.integers(1, 2**62),
    "prediction": st.lists(finite.map(lambda x: float(np.float32(x)) if abs(x) < 3e38 else 1.0), min_size=1,
                           max_size=3),
    "residual": st.one_of(st.none(), st.lists(finite, min_size=1, max_size=3)),
    "score": st.one_of(st.none(), finite), "warm": st.booleans()})
anomaly = st.fixed_dictionaries({"type": st.just("anomaly"), "id": ids, "t": finite,
                                 "event": st.sampled_from(["start", "end"]), "score": finite})


@settings(max_examples=1000, deadline=None)
@given(records=st.lists(st.one_of(forecast, anomaly), max_size=6))
def test_record_lines_read_back_as_the_records_bit_for_bit(records):
    """Whichever encoder writes them (orjson for a finite round, compact_json otherwise), every line reads back
    as its record, every float to the bit, in the same key order."""
    for finite_round in (True, False):
        lines = record_lines(records, finite_round)
        assert all(type(line) is bytes and b"\n" not in line for line in lines)
        back = [json.loads(line) for line in lines]
        assert [list(r) for r in back] == [list(r) for r in records]
        assert repr(back) == repr(records)  # repr: the floats' shortest digits, so any bit that differs shows
    assert record_lines(records, False) == [compact_json(r).encode() for r in records]


def test_a_round_with_nan_or_infinity_keeps_json_s_spelling():
    record = {"type": "prediction", "id": "s1", "t": 5.0, "step": 3, "prediction": [math.nan], "residual": None,
              "score": math.inf, "warm": True}
    assert record_lines([record], False) == [b'{"type":"prediction","id":"s1","t":5.0,"step":3,"prediction":[NaN],'
                                             b'"residual":null,"score":Infinity,"warm":true}']


def test_orjson_is_installed_where_the_service_runs():
    """The `edge` extra pins it (and a release ships it): without it record_lines falls back, ~7x slower."""
    from edge_runtime.service import compact
    assert compact._orjson_dumps is not None
