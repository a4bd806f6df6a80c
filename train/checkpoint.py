"""Checkpoints: weights + everything needed to use them, in one safetensors file.

No pickled code: tensors are safetensors, the rest (model config,
normalization, data description, metrics) is JSON in the file's metadata.
Reading needs only numpy and safetensors, so convert/ never loads torch just
to read weights.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

FORMAT = "edge-rnn-checkpoint"
VERSION = 1


def save_checkpoint(path: Path, weights: dict[str, np.ndarray], info: dict) -> None:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {"format": FORMAT, "version": str(VERSION), "info": json.dumps(info)}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        save_file({k: np.ascontiguousarray(v) for k, v in weights.items()}, tmp, metadata=meta)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load_checkpoint(path: Path) -> tuple[dict[str, np.ndarray], dict]:
    """Return (weights by name, info dict). Refuses files that are not our checkpoints."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: checkpoint not found")
    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata() or {}
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not an edge-rnn checkpoint (metadata format={meta.get('format')!r})")
    if meta.get("version") != str(VERSION):
        raise ValueError(f"{path}: checkpoint version {meta.get('version')!r}, this code reads {VERSION}")
    return load_file(str(path)), json.loads(meta["info"])
