"""Structured logs: one JSON object per line on stderr (journald keeps them as they are).

Rate-limited per (event, reason): at most `max_per_s` lines of one kind per second (a sensor spewing
garbage, a flood of connections or a source failing in a loop must not fill the SD card); the rest are
counted and reported in one `<event>_suppressed` line {"reason", "count"} when that kind logs again in a
later second, or at the next `flush_suppressed()` (the service calls it with every status write).
"""
from __future__ import annotations

import json
import sys
import threading
import time

DEFAULT_PER_S = 20
MAX_KINDS = 4096  # bounded memory even if a field feeding the key were unbounded

_lock = threading.Lock()
_limits = {"default": DEFAULT_PER_S}  # event -> lines per second ("default" for the rest)
_budgets: dict[tuple, list] = {}  # (event, reason) -> [second, logged, suppressed, level]


def set_rate_limit(per_s: int, event: str = "default") -> None:
    _limits[event] = per_s


def log(level: str, event: str, **fields) -> None:
    key = (event, fields.get("reason"))
    second = int(time.monotonic())
    with _lock:  # sources log from their own threads; keep lines whole and the budgets consistent
        budget = _budgets.get(key)
        if budget is None:
            if len(_budgets) >= MAX_KINDS:
                _flush_locked(None)
                _budgets.clear()
            budget = _budgets[key] = [second, 0, 0, level]
        if budget[0] != second:
            _report(key, budget)
            budget[:] = [second, 0, 0, level]
        if budget[1] >= _limits.get(event, _limits["default"]):
            budget[2] += 1
            return
        budget[1] += 1
        _write({"ts": round(time.time(), 3), "level": level, "event": event, **fields})


def flush_suppressed() -> None:
    """Report the kinds whose second is over and that suppressed lines (called about once a second)."""
    with _lock:
        _flush_locked(int(time.monotonic()))


def _flush_locked(second: int | None) -> None:
    for key, budget in _budgets.items():
        if budget[2] and (second is None or budget[0] != second):
            _report(key, budget)
            budget[2] = 0


def _report(key: tuple, budget: list) -> None:
    if budget[2]:
        event, reason = key
        _write({"ts": round(time.time(), 3), "level": budget[3], "event": f"{event}_suppressed", "reason": reason,
                "count": budget[2]})


def _write(record: dict) -> None:
    line = json.dumps(record, default=str) + "\n"
    try:
        sys.stderr.write(line)
        sys.stderr.flush()
    except (OSError, ValueError):
        pass  # stderr gone (closed pipe): logging must never take the service down
