"""`compact_json(value)`: json.dumps(value, separators=(",", ":")), made for the service's hot path; and
`forecast_lines`, the same bytes for a whole round of forecast records.

`json.JSONEncoder(...).encode` looks like one encoder made once, but each call builds a new C encoder
inside `iterencode`; for a forecast record that was half of its encoding (8.0 -> 4.1 µs per record,
measured on this project's records). Here the same C encoder, with the same settings that `encode`
passes it, is made once. The output is json.dumps's byte for byte (NaN and Infinity included); a
Python without the `_json` accelerator gets `encode` itself.
"""
from __future__ import annotations

import json
from json import encoder as _encoder

import numpy as np

_plain = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def _make():
    if _encoder.c_make_encoder is None:
        return _plain.encode
    # (markers, default, string encoder, indent, key separator, item separator, sort_keys, skipkeys, allow_nan)
    chunks = _encoder.c_make_encoder(None, _plain.default, _encoder.encode_basestring_ascii, None, ":", ",",
                                     False, False, True)
    return lambda value: "".join(chunks(value, 0))


compact_json = _make()

_string = _encoder.encode_basestring_ascii  # what compact_json writes for a str
_forecast_formats: dict[int, str] = {}  # outputs -> format of a warm, scored forecast record


def _forecast_format(outputs: int) -> str:
    numbers = ",".join(["%r"] * outputs)
    return ('{"type":"prediction","id":%s,"t":%r,"step":%d,"prediction":[' + numbers + '],"residual":[' + numbers
            + '],"score":%r,"warm":true}')


def forecast_lines(ids: list, times: list, steps: list, predictions, residuals, scores: list) -> list[str] | None:
    """compact_json of each record of a round whose streams all had a forecast to compare, are warm and were
    scored (every round once the streams are past their warm-up), filled into one format: the C encoder
    walks each record key by key, which took more than the numbers' own printing. None when a number is not
    finite (JSON spells those NaN and Infinity, `%r` does not): the caller encodes those records one by one.

    ids, times (float), steps (int), scores (float): (B,) lists; predictions (B, O) float32, residuals
    (B, O) float64 arrays. `%r` is float.__repr__, as in json.dumps; a float32 prints as its float64 widening,
    as .tolist() gives it."""
    total = sum(times) + sum(scores)
    if total - total != 0.0 or not (np.isfinite(predictions).all() and np.isfinite(residuals).all()):
        return None
    outputs = predictions.shape[1]
    form = _forecast_formats.get(outputs)
    if form is None:
        form = _forecast_formats[outputs] = _forecast_format(outputs)
    return [form % row for row in zip(map(_string, ids), times, steps, *predictions.T.tolist(),
                                      *residuals.T.tolist(), scores)]
