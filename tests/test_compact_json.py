"""compact_json (edge_runtime/service/compact.py), the sinks' and the write-ahead log's encoder, is
json.dumps(separators=(",", ":")) byte for byte on any JSON value, NaN and infinities included."""
from __future__ import annotations

import json
import math

from hypothesis import given, settings, strategies as st

from edge_runtime.service.compact import compact_json

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
