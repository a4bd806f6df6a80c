"""Checkpoint -> bundle: export the step model, check it, write the bundle atomically.

The bundle is verified with edge_runtime's own reader before it replaces an
older one, so a bundle on disk has always opened and stepped at least once.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from convert.flatbuffer import model_ops
from convert.parity import parity_stream, streaming_parity, streaming_test_mse
from edge_runtime import manifest as schema
from edge_runtime.session import load
from train.checkpoint import load_checkpoint
from train.models import ModelConfig, forecaster_from_weights

# In a process that has TensorFlow loaded, tflite_runtime 2.14 breaks ("vector::reserve"
# while reading signatures); ai_edge_litert does not. The tests run tflite_runtime apart.
CHECK_BACKEND = "ai_edge_litert"
PARITY_STEPS = 2000
PARITY_TOLERANCE = 1e-4  # normalized units; float32 torch vs float32 TFLite, see tests


def tool_versions() -> dict:
    versions = {}
    for package in ("edge-rnn", "torch", "tensorflow-cpu", "numpy", "tflite-runtime", "ai-edge-litert"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def build_manifest(name: str, config: ModelConfig, info: dict, variants: list[dict]) -> dict:
    stream = info["stream"]
    return {
        "schema_version": schema.SCHEMA_VERSION,
        "name": name,
        "task": "forecast",
        "cell": config.cell, "layers": config.layers, "hidden": config.hidden,
        "features": list(config.features),
        # x and y are raw sensor units (normalization is inside the graph); state is normalized
        "io": {"input": {"name": "x", "shape": [1, config.input_size], "dtype": "float32", "units": "raw"},
               "output": {"name": "y", "shape": [1, config.output_size], "dtype": "float32", "units": "raw"}},
        "state": [{"name": n, "shape": list(s), "dtype": "float32"} for n, s in config.state_shapes(1).items()],
        "channels": stream["channels"], "units": stream["units"], "period_s": stream["period_s"],
        "target": list(config.target),
        "normalization": info["normalization"],
        "residual_std": info["metrics"]["val_residual_std"],  # normalized units, from validation
        "variants": variants,
        "training": {k: v for k, v in info["metrics"].items()
                     if k not in ("persistence_mse", "ar_mse", "ar_order", "ar_val_mse_by_order")},
        "baselines": {"persistence_mse": info["metrics"]["persistence_mse"],
                      "ar_mse": info["metrics"]["ar_mse"], "ar_order": info["metrics"]["ar_order"]},
        "data": stream,
        "train_config": info["train"],
        "tool_versions": tool_versions(),
        "created_unix": int(time.time()),
    }


def write_files_atomically(target: Path, files: dict[str, bytes]) -> None:
    """Write a whole bundle folder, then swap it in: readers see the old bundle or the new one."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.staging-"))
    for name, data in files.items():
        (staging / name).write_bytes(data)
    old = target.parent / f".{target.name}.old"
    if old.exists():
        shutil.rmtree(old)
    if target.exists():
        target.rename(old)
    staging.rename(target)
    shutil.rmtree(old, ignore_errors=True)


def variant_entry(name: str, dtype: str, data: bytes) -> dict:
    return {"name": name, "file": f"model.{name}.tflite", "dtype": dtype,
            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data), "ops": model_ops(data)}


def convert_run(run_dir: Path, out_dir: Path, parity_steps: int = PARITY_STEPS) -> dict:
    """runs/<name>/ -> artifacts/<name>/ with a float32 variant; returns the manifest written."""
    from convert.tf_step import StepGraph, export_float32

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    weights, info = load_checkpoint(run_dir / "checkpoint.safetensors")
    config = ModelConfig.from_dict(info["model"])
    splits = np.load(run_dir / "splits.npz")
    with tempfile.TemporaryDirectory() as tmp:
        flatbuffer = export_float32(StepGraph(weights, config, info["normalization"]), str(Path(tmp) / "saved_model"))
        variant = variant_entry("float32", "float32", flatbuffer)
        manifest = build_manifest(out_dir.name, config, info, [variant])
        # Check in a scratch bundle first, with the reader the device uses.
        scratch = Path(tmp) / "bundle"
        write_files_atomically(scratch, {variant["file"]: flatbuffer,
                                         schema.MANIFEST_NAME: json.dumps(manifest).encode()})
        model = load(scratch, backend=CHECK_BACKEND)
        torch_model = forecaster_from_weights(weights, info)
        variant["parity"] = streaming_parity(torch_model, model, parity_stream(splits), info["normalization"],
                                             parity_steps)
        if variant["parity"]["max_abs_error"] > PARITY_TOLERANCE:
            raise RuntimeError(f"{run_dir}: TFLite step model disagrees with torch by "
                               f"{variant['parity']['max_abs_error']:.2e} > {PARITY_TOLERANCE} (normalized units)")
        variant["metrics"] = {"test_mse": streaming_test_mse(model, splits["test"], int(splits["warmup"]),
                                                             info["normalization"])}
    files = {variant["file"]: flatbuffer, schema.MANIFEST_NAME: json.dumps(manifest, indent=1).encode()}
    write_files_atomically(out_dir, files)
    schema.read_manifest(out_dir)  # what we wrote must read back
    return manifest
