"""`compact_json(value)`: json.dumps(value, separators=(",", ":")), made for the service's hot path; and
`record_lines`, the sinks' texts of a round's records.

`json.JSONEncoder(...).encode` looks like one encoder made once, but each call builds a new C encoder
inside `iterencode`; for a forecast record that was half of its encoding (8.0 -> 4.1 µs per record,
measured on this project's records). Here the same C encoder, with the same settings that `encode`
passes it, is made once. The output is json.dumps's byte for byte (NaN and Infinity included); a
Python without the `_json` accelerator gets `encode` itself.
"""
from __future__ import annotations

import json
from json import encoder as _encoder

_plain = json.JSONEncoder(separators=(",", ":"), check_circular=False)


def _make():
    if _encoder.c_make_encoder is None:
        return _plain.encode
    # (markers, default, string encoder, indent, key separator, item separator, sort_keys, skipkeys, allow_nan)
    chunks = _encoder.c_make_encoder(None, _plain.default, _encoder.encode_basestring_ascii, None, ":", ",",
                                     False, False, True)
    return lambda value: "".join(chunks(value, 0))


compact_json = _make()

try:
    from orjson import dumps as _orjson_dumps
except ImportError:  # an optional accelerator (the `edge` extra): without it every record goes through compact_json
    _orjson_dumps = None


def record_lines(records: list[dict], finite: bool) -> list[bytes]:
    """Each record's JSON text (no newline), for the sinks. `finite`: the caller knows no number in them is NaN
    or infinite. Those records go through orjson when it is installed: printing floats was most of the service's
    encoding (float.__repr__ is ~0.6-1.2 us a number here; a forecast record took 4.6-6 us through the C
    encoder, 0.6 through orjson). Its numbers are the same shortest round-trip digits; only an exponent is
    spelled "1e-6" where json writes "1e-06". JSON has no NaN or Infinity: orjson would write null, so records
    with one keep compact_json's NaN/Infinity, as every record did before."""
    if finite and _orjson_dumps is not None:
        return [_orjson_dumps(record) for record in records]
    return [compact_json(record).encode() for record in records]
