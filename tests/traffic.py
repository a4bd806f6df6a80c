"""Sensor traffic for the service tests: valid samples mixed with every kind of bad input, with the
exact count of each rejection reason the service must report."""
from __future__ import annotations

import json
import math
import random
from collections import Counter
from dataclasses import dataclass, field


def sensor_value(stream: int, k: int) -> list[float]:
    """A temperature-like pair (room degC, outdoor degC) per stream; smooth, never NaN."""
    return [round(20.0 + stream * 0.3 + 0.5 * math.sin(k / 40 + stream), 4),
            round(4.0 + stream * 0.1 + 0.3 * math.cos(k / 55), 4)]


@dataclass
class Traffic:
    messages: list = field(default_factory=list)  # (stream id, payload bytes); id None for line transports
    valid: set = field(default_factory=set)  # (stream id, t) that must each give exactly one forecast
    expected: Counter = field(default_factory=Counter)  # rejection reason -> count


def mixed_traffic(streams: int = 10, per_stream: int = 300, bad: int = 10500, seed: int = 0,
                  topic_ids: bool = False) -> Traffic:
    """Valid samples of `streams` streams (ids s0..), interleaved with `bad` malformed messages.

    topic_ids: MQTT form (the id travels in the topic, the payload is "t,v1,v2" or JSON
    {"t", "values"}); otherwise a line carries the id too. Ids x0, x1, ... are over the
    service's stream limit (set it to `streams`).
    """
    rng = random.Random(seed)
    traffic = Traffic()
    last_t: dict[str, float] = {}
    valid_schedule = [(s, k) for k in range(per_stream) for s in range(streams)]
    bad_every = len(valid_schedule) / bad
    kinds = ["oversized", "binary", "malformed", "bad_timestamp", "wrong_channels", "non_numeric", "non_finite",
             "duplicate", "out_of_order", "stream_limit", "bad_id"]
    budget = bad
    owed = 0.0

    def line(stream_id: str, t, values, as_json: bool) -> bytes:
        if topic_ids:
            body = json.dumps({"t": t, "values": values}) if as_json else ",".join(str(v) for v in [t, *values])
        else:
            body = (json.dumps({"id": stream_id, "t": t, "values": values}) if as_json
                    else ",".join(str(v) for v in [stream_id, t, *values]))
        return body.encode()

    def emit(stream_id: str, payload: bytes) -> None:
        traffic.messages.append((stream_id, payload))

    def bad_message(kind: str) -> None:
        s = rng.randrange(streams)
        sid = f"s{s}"
        t = last_t.get(sid, 1000.0) + 0.001
        as_json = rng.random() < 0.5
        if kind in ("duplicate", "out_of_order") and sid not in last_t:
            kind = "non_numeric"
        if kind == "stream_limit" and len(last_t) < streams:
            kind = "non_numeric"  # only once every valid stream holds its place under the limit
        if kind == "oversized":
            payload = line(sid, t, [1.0, 2.0], False) + b"9" * 5000
        elif kind == "binary":
            payload = bytes(rng.randrange(256) for _ in range(rng.randrange(4, 60))).replace(b"\n", b"\xff") + b"\xff"
        elif kind == "malformed":
            payload = rng.choice([b"{not json", b'{"values": [1, 2]}' if topic_ids else b'{"id": "s1"}', b"[1,2]",
                                  b"42"]) if not topic_ids else rng.choice([b"{not json", b'{"values": [1, 2]}', b"42",
                                                                            b'"text"'])
        elif kind == "bad_timestamp":
            payload = line(sid, "noon", [1.0, 2.0], as_json)
        elif kind == "wrong_channels":
            payload = line(sid, t, [1.0, 2.0, 3.0][: rng.choice([1, 3])], as_json)
        elif kind == "non_numeric":
            payload = line(sid, t, ["warm", 2.0], True) if as_json else line(sid, t, ["warm", 2.0], False)
        elif kind == "non_finite":
            payload = (f'{{"t": {t}, "values": [NaN, 2.0]}}' if topic_ids else
                       f'{{"id": "{sid}", "t": {t}, "values": [NaN, 2.0]}}').encode() if as_json \
                else line(sid, t, ["inf", 2.0], False)
        elif kind == "duplicate":
            k = round((last_t[sid] - 1000.0) / 0.02)
            payload = line(sid, last_t[sid], sensor_value(s, k), as_json)
        elif kind == "out_of_order":
            payload = line(sid, last_t[sid] - 0.005, [1.0, 2.0], as_json)
        elif kind == "stream_limit":
            sid = f"x{rng.randrange(50)}"
            payload = line(sid, 1000.0 + rng.random(), [1.0, 2.0], as_json)
        else:  # bad_id
            sid = "bad$id" if topic_ids else "bad id!"
            payload = line(sid, t, [1.0, 2.0], as_json)
        emit(sid, payload)
        traffic.expected[kind] += 1

    for s, k in valid_schedule:
        sid = f"s{s}"
        t = round(1000.0 + k * 0.02, 3)
        emit(sid, line(sid, t, sensor_value(s, k), rng.random() < 0.5))
        traffic.valid.add((sid, t))
        last_t[sid] = t
        owed += 1 / bad_every
        while owed >= 1 and budget > 0:
            bad_message(rng.choice(kinds))
            owed -= 1
            budget -= 1
    while budget > 0:
        bad_message(rng.choice(kinds))
        budget -= 1
    return traffic
