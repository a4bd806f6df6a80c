"""Snapshots of every stream's state, written so that a power cut leaves the old one or the new one.

File: `<state_dir>/snapshot.npz`, an uncompressed numpy zip (every member
carries a CRC32, so a damaged file is detected on read) with
  meta        JSON: format, bundle identity (sha256 of manifest.json), bundle
              name, variant, written_unix, and per stream: id, steps, last
              timestamp, samples since reset, anomaly tracker state
  state.<n>   (S, width) float32 per state tensor, rows in the meta's stream order
  forecast    (S, O) float32, each stream's last forecast (NaN: none yet)

Write: temp file in the same folder, fsync, rename over the old one, fsync
the folder (so the rename itself survives a power cut).

Read: the CRCs catch damage, not an edit (or damage before the write) that
still parses. So the service checks every meta field its restore reads
(`check_meta`, after read_snapshot, which other readers share): a field
this runtime could not have written is a SnapshotError naming the file and
the field, never a traceback from the restore or nonsense restored in
silence.
"""
from __future__ import annotations

import contextlib
import io
import json
import math
import os
import zipfile
from pathlib import Path

import numpy as np

from edge_runtime.bundle_files import BundleError, open_regular_file
from edge_runtime.service.lines import STREAM_ID

FORMAT = 1
SNAPSHOT_NAME = "snapshot.npz"
COUNT_LIMIT = 2 ** 62  # steps, since_reset, sequence numbers: int64 rows and sums; more can only be an edit
RECORD_TYPES = ("prediction", "anomaly")


class SnapshotError(ValueError):
    """A snapshot that cannot be used; the message says why."""


def write_snapshot(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> int:
    """Write atomically; returns the bytes written."""
    buffer = io.BytesIO()
    payload = {"meta": np.frombuffer(json.dumps({"format": FORMAT, **meta}).encode(), np.uint8), **arrays}
    np.savez(buffer, **payload)
    data = buffer.getvalue()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)
    return len(data)


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_snapshot(path) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays) of the snapshot at `path`, or of an open binary file that the caller has checked is a
    regular one (deploy's park script opens it relative to the state folder); SnapshotError naming the file
    for anything unreadable or inconsistent."""
    try:
        with (contextlib.nullcontext(path) if hasattr(path, "read") else open_regular_file(path, "snapshot")) as f, \
                np.load(f, allow_pickle=False) as npz:  # opened without blocking: a FIFO here must not hang
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise
    except BundleError as e:
        raise SnapshotError(str(e)) from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise SnapshotError(f"{path}: unreadable snapshot ({e})") from None
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (KeyError, ValueError, UnicodeDecodeError) as e:
        raise SnapshotError(f"{path}: snapshot has no readable meta ({e!r})") from None
    if type(meta) is not dict:
        raise SnapshotError(f"{path}: snapshot meta is {type(meta).__name__}, not an object")
    if meta.get("format") != FORMAT:
        raise SnapshotError(f"{path}: snapshot format {_show(meta.get('format'))}, this runtime reads {FORMAT}")
    streams = meta.get("streams", [])
    if type(streams) is not list:
        raise SnapshotError(f"{path}: streams {_show(streams)} is not a list")
    for name, array in arrays.items():
        if array.dtype.kind not in "fiu":
            raise SnapshotError(f"{path}: {name} holds {array.dtype}, not numbers")
        if array.shape[:1] != (len(streams),):
            raise SnapshotError(f"{path}: {name} has {array.shape[0] if array.ndim else 0} rows for "
                                f"{len(streams)} streams")
    return meta, arrays


def check_meta(path: Path, meta: dict) -> None:
    """The service's snapshot meta (read_snapshot's): SnapshotError naming the file and the field for the first
    field this runtime could not have written. JSON numbers are taken as this runtime writes them: a count is an integer (1.0 and true are
    not), a time is an integer or float that fits a float. Tolerated, as before: no last_seen_unix or
    written_unix (older snapshots), a last_t that is not finite (the restore's heal forgets it), non-finite
    anomaly z values (a non-finite forecast can leave them)."""
    streams = meta.get("streams")
    if type(streams) is not list:
        raise SnapshotError(f"{path}: streams {_show(streams)} is not a list")
    seen: set[str] = set()
    for k, entry in enumerate(streams):
        if type(entry) is not dict:
            raise SnapshotError(f"{path}: stream {k} {_show(entry)} is not an object")
        stream_id = entry.get("id")
        where = f"{path}: stream {k} ({_show(stream_id)})"
        if type(stream_id) is not str or not STREAM_ID.match(stream_id):  # the live input's own test
            raise SnapshotError(f"{where}: id is not a stream id (1 to 64 of A-Z a-z 0-9 _ . : -)")
        if stream_id in seen:
            raise SnapshotError(f"{where}: a second stream with this id")
        seen.add(stream_id)
        for key in ("steps", "since_reset"):
            if not is_count(entry.get(key)):
                raise SnapshotError(f"{where}: {key} {_show(entry.get(key))} is not a count")
        last_t = entry.get("last_t")
        if not (last_t is None or type(last_t) is float or (type(last_t) is int and is_finite(last_t))):
            raise SnapshotError(f"{where}: last_t {_show(last_t)} is not a number or null")
        if "last_seen_unix" in entry and not is_finite(entry["last_seen_unix"]):
            raise SnapshotError(f"{where}: last_seen_unix {_show(entry['last_seen_unix'])} is not a finite number")
        problem = _tracker_problem(entry.get("anomaly"))
        if problem:
            raise SnapshotError(f"{where}: anomaly {problem}")
    _check_log_fields(path, meta)


def _tracker_problem(state) -> str | None:
    """What is wrong with an anomaly tracker's to_dict() (None or absent: none kept); the shapes of last_z
    and mean_change are AnomalyTracker.load_dict's to check (it knows the bundle's channels)."""
    if state is None:
        return None
    if type(state) is not dict:
        return f"{_show(state)} is not an object"
    fields = {"active": bool, "quiet_steps": int}
    if "mean_change" in state:  # the stillness check's part (AnomalyTracker.to_dict)
        fields.update(primed=bool, still_seen=int, last_z=list, mean_change=list)
    for key, kind in fields.items():
        value = state.get(key)
        if kind is int and not is_count(value):
            return f"{key} {_show(value)} is not a count"
        if type(value) is not kind:
            return f"{key} {_show(value)} is not {'true or false' if kind is bool else 'a list'}"
        if kind is list and not all(type(v) is float or (type(v) is int and is_finite(v)) for v in value):
            return f"{key} {_show(value)} is not a list of numbers"
    return None


def _check_log_fields(path: Path, meta: dict) -> None:
    """wal_seq, sunk, sink_positions, unsettled: written with [wal] on; absent, the log starts from nothing."""
    for key in ("wal_seq", "sunk"):
        if key in meta and not is_count(meta[key]):
            raise SnapshotError(f"{path}: {key} {_show(meta[key])} is not a count")
    positions = meta.get("sink_positions", {})
    if type(positions) is not dict or not all(
            p is None or (type(p) is list and len(p) == 2 and all(map(is_count, p))) for p in positions.values()):
        raise SnapshotError(f"{path}: sink_positions {_show(positions)} is not sink name -> [inode, offset]")
    unsettled = meta.get("unsettled", [])
    if type(unsettled) is not list:
        raise SnapshotError(f"{path}: unsettled {_show(unsettled)} is not a list")
    for k, batch in enumerate(unsettled):
        if type(batch) is not dict or not is_count(batch.get("seq")) or type(batch.get("records")) is not list:
            raise SnapshotError(f"{path}: unsettled {k} {_show(batch)} is not a batch (seq, records)")
        for record in batch["records"]:
            if not _is_record(record):
                raise SnapshotError(f"{path}: unsettled {k} (seq {batch['seq']}): {_show(record)} is not a "
                                    "forecast or anomaly record")


def _is_record(record) -> bool:
    """What the sinks need of a record they are sent again: its key (sinks.record_key) and an id that is safe
    in an MQTT topic."""
    return (type(record) is dict and record.get("type") in RECORD_TYPES and type(record.get("id")) is str
            and STREAM_ID.match(record["id"]) is not None and type(record.get("t")) in (int, float)
            and record.get("event") in (None, "start", "end"))


def is_count(value) -> bool:
    """An integer in [0, COUNT_LIMIT] (a bool is not one, nor 1.0)."""
    return type(value) is int and 0 <= value <= COUNT_LIMIT


def is_finite(value) -> bool:
    """An integer or float (not a bool) that is a finite float."""
    try:
        return type(value) in (int, float) and math.isfinite(value)
    except OverflowError:  # an integer beyond float's range
        return False


def _show(value) -> str:
    """A value for a one-line message: repr, cut at 60 characters."""
    try:
        text = repr(value)
    except ValueError:  # an integer past Python's 4,300-digit limit
        return f"<an integer of {value.bit_length()} bits>"
    return text if len(text) <= 60 else text[:57] + "..."


def remove_stale_temps(folder: Path) -> None:
    """Temp files a killed writer left behind (never read: the rename is what publishes)."""
    for tmp in folder.glob(f".{SNAPSHOT_NAME}.*.tmp"):
        try:
            tmp.unlink()
        except OSError:
            pass


def write_json_atomically(path: Path, value: dict) -> None:
    """status.json: replaced whole by rename (no fsync: it is rewritten every second anyway)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(tmp, path)
