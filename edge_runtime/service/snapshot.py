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
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import numpy as np

FORMAT = 1
SNAPSHOT_NAME = "snapshot.npz"


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


def read_snapshot(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(meta, arrays); SnapshotError naming the file for anything unreadable or inconsistent."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as e:
        raise SnapshotError(f"{path}: unreadable snapshot ({e})") from None
    try:
        meta = json.loads(arrays.pop("meta").tobytes().decode())
    except (KeyError, ValueError, UnicodeDecodeError) as e:
        raise SnapshotError(f"{path}: snapshot has no readable meta ({e!r})") from None
    if meta.get("format") != FORMAT:
        raise SnapshotError(f"{path}: snapshot format {meta.get('format')!r}, this runtime reads {FORMAT}")
    streams = meta.get("streams", [])
    for name, array in arrays.items():
        if array.shape[:1] != (len(streams),):
            raise SnapshotError(f"{path}: {name} has {array.shape[0]} rows for {len(streams)} streams")
    return meta, arrays


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
