"""Structured logs: one JSON object per line on stderr (journald keeps them as they are)."""
from __future__ import annotations

import json
import sys
import threading
import time

_lock = threading.Lock()


def log(level: str, event: str, **fields) -> None:
    record = {"ts": round(time.time(), 3), "level": level, "event": event, **fields}
    line = json.dumps(record, default=str) + "\n"
    with _lock:  # sources log from their own threads; keep lines whole
        try:
            sys.stderr.write(line)
            sys.stderr.flush()
        except (OSError, ValueError):
            pass  # stderr gone (closed pipe): logging must never take the service down
