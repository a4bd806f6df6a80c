"""compact_json (edge_runtime/service/compact.py), the sinks' and the write-ahead log's encoder, is
json.dumps(separators=(",", ":")) byte for byte on any JSON value, NaN and infinities included."""
from __future__ import annotations

import json
import math

import numpy as np
from hypothesis import given, settings, strategies as st

from edge_runtime.service.compact import compact_json, forecast_lines

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


# -- a steady round's forecast records, filled into one format (issue 19) ------------------------------------
def _round(draw_ids, times, steps, predictions, residuals, scores):
    return [{"type": "prediction", "id": i, "t": t, "step": n, "prediction": p, "residual": r, "score": z, "warm": True}
            for i, t, n, p, r, z in zip(draw_ids, times, steps, predictions.tolist(), residuals.tolist(), scores)]


any_float = st.floats(allow_nan=True, allow_infinity=True)
finite = st.floats(allow_nan=False, allow_infinity=False)


@settings(max_examples=500, deadline=None)
@given(data=st.data(), streams=st.integers(1, 6), outputs=st.integers(1, 3), special=st.booleans())
def test_forecast_lines_are_compact_json_of_each_record(data, streams, outputs, special):
    """Byte for byte what compact_json gives each record, for any ids, times, float32 forecasts and float64
    residuals and scores; None (the caller encodes one by one) exactly when a number is not finite."""
    number = any_float if special else finite
    ids = data.draw(st.lists(st.text(min_size=1, max_size=8), min_size=streams, max_size=streams))
    times = data.draw(st.lists(number, min_size=streams, max_size=streams))
    steps = data.draw(st.lists(st.integers(1, 2**62), min_size=streams, max_size=streams))
    with np.errstate(over="ignore"):  # a float64 beyond float32's range becomes an infinity, as in a model
        predictions = np.array(data.draw(st.lists(number, min_size=streams * outputs, max_size=streams * outputs)),
                               np.float64).astype(np.float32).reshape(streams, outputs)
    residuals = np.array(data.draw(st.lists(number, min_size=streams * outputs, max_size=streams * outputs)),
                         np.float64).reshape(streams, outputs)
    scores = data.draw(st.lists(number, min_size=streams, max_size=streams))
    records = _round(ids, times, steps, predictions, residuals, scores)
    lines = forecast_lines(ids, times, steps, predictions, residuals, scores)
    every_number = [*times, *scores, *predictions.ravel().tolist(), *residuals.ravel().tolist()]
    if lines is None:
        assert not all(map(math.isfinite, every_number)) or not math.isfinite(sum(times) + sum(scores))
    else:
        assert lines == [compact_json(record) for record in records]


def test_a_round_with_a_nan_forecast_is_left_to_compact_json():
    one = np.ones((1, 1))
    assert forecast_lines(["s1"], [5.0], [3], one.astype(np.float32), one, [0.5]) == [
        '{"type":"prediction","id":"s1","t":5.0,"step":3,"prediction":[1.0],"residual":[1.0],"score":0.5,"warm":true}']
    assert forecast_lines(["s1"], [5.0], [3], np.full((1, 1), np.nan, np.float32), one, [0.5]) is None
    assert forecast_lines(["s1"], [5.0], [3], one.astype(np.float32), one, [math.inf]) is None
