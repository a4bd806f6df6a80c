"""Checkpoint -> bundle: export the step model, check it, write the bundle atomically.

The bundle is verified with edge_runtime's own reader before it replaces an
older one, so a bundle on disk has always opened and stepped at least once.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

from convert.anomaly import anomaly_section
from convert.c_array import C_HEADER, C_SOURCE, c_array
from convert.compat import compatibility
from convert.flatbuffer import constant_bytes, model_ops
from convert.parity import DRIFT_LIMIT, parity_stream, streaming_parity, variant_metrics
from edge_runtime import manifest as schema
from edge_runtime.tasks import load
from train.checkpoint import load_checkpoint
from train.models import ModelConfig, forecaster_from_weights

# In a process that has TensorFlow loaded, tflite_runtime 2.14 breaks ("vector::reserve"
# while reading signatures); ai_edge_litert does not. The tests run tflite_runtime apart.
CHECK_BACKEND = "ai_edge_litert"
PARITY_STEPS = 2000
PARITY_TOLERANCE = 1e-4  # normalized units; float32 torch vs float32 TFLite, see tests
# Variants that also get a batched companion (dynamic batch) for the edge service's many-stream
# step; integer variants do not (their activation scales are per tensor, not per row anyway).
BATCHED_VARIANTS = ("float32", "float16")


def tool_versions() -> dict:
    versions = {}
    for package in ("edge-rnn", "torch", "tensorflow-cpu", "numpy", "tflite-runtime", "ai-edge-litert"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def manifest_head(name: str, task: str, config) -> dict:
    """The fields every bundle's manifest starts with, whatever its task: schema, architecture, named state."""
    return {"schema_version": schema.SCHEMA_VERSION, "name": name, "task": task,
            "cell": config.cell, "layers": config.layers, "hidden": config.hidden,
            "state": [{"name": n, "shape": list(s), "dtype": "float32"} for n, s in config.state_shapes(1).items()]}


def manifest_provenance(info: dict) -> dict:
    """How the bundle was made: the training config, tool versions, when."""
    return {"train_config": info["train"], "tool_versions": tool_versions(), "created_unix": int(time.time())}


def build_manifest(name: str, config: ModelConfig, info: dict, variants: list[dict]) -> dict:
    stream = info["stream"]
    return {
        **manifest_head(name, "forecast", config),
        "features": list(config.features),
        # x and y are raw sensor units (normalization is inside the graph); state is normalized
        "io": {"input": {"name": "x", "shape": [1, config.input_size], "dtype": "float32", "units": "raw"},
               "output": {"name": "y", "shape": [1, config.output_size], "dtype": "float32", "units": "raw"}},
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
        **manifest_provenance(info),
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


def variant_entry(spec, data: bytes) -> dict:
    ops = model_ops(data)
    return {"name": spec.name, "file": f"model.{spec.name}.tflite", "dtype": spec.dtype,
            "integer_io": spec.integer_io, "note": spec.note,
            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "constant_bytes": constant_bytes(data),  # weights and other constants; the rest is graph
            "ops": ops, "compatibility": compatibility(ops)}  # runtime -> None (opens) or why not


def add_batched_companions(manifest: dict, specs, batched_graph, tmp: Path) -> dict[str, bytes]:
    """Convert the dynamic-batch step graph for BATCHED_VARIANTS; record each in its variant's entry."""
    from convert.quantize import convert_variant
    from convert.tf_step import save_step_model

    saved_model = save_step_model(batched_graph, str(tmp / "saved_model_batched"))
    files = {}
    for spec in specs:
        entry = next((e for e in manifest["variants"] if e["name"] == spec.name), None)
        if entry is None or spec.name not in BATCHED_VARIANTS:
            continue
        data = convert_variant(saved_model, spec, [])
        ops = model_ops(data)
        entry["batched"] = {"file": f"model.{spec.name}.batch.tflite", "batch": "dynamic",
                            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                            "ops": ops, "compatibility": compatibility(ops)}
        files[entry["batched"]["file"]] = data
    return files


BATCHED_PARITY_STREAMS = 8
BATCHED_PARITY_STEPS = 200
BATCHED_PARITY_TOLERANCE = 1e-5  # relative to the forecast's magnitude; see batched_parity


def batched_parity(model, splits) -> dict:
    """Batched companion vs one Session per stream, 8 streams x 200 steps at different offsets.

    Same float kernels on the same rows, so the two agree to float32 rounding
    (measured: 0 to a few ulp); a larger gap means the companion is not the
    same graph and the bundle is refused.
    """
    from edge_runtime.pool import StreamPool

    raw = parity_stream(splits)  # (T, C)
    offsets = [k * (len(raw) - BATCHED_PARITY_STEPS) // BATCHED_PARITY_STREAMS for k in range(BATCHED_PARITY_STREAMS)]
    pool = StreamPool(model, max_streams=BATCHED_PARITY_STREAMS, batched=True)
    sessions = [model.session() for _ in offsets]
    worst = 0.0
    for t in range(BATCHED_PARITY_STEPS):
        together = pool.step_many({str(k): raw[o + t] for k, o in enumerate(offsets)})
        for k, (o, session) in enumerate(zip(offsets, sessions)):
            alone = session.step(raw[o + t])
            worst = max(worst, float(np.max(np.abs(together[str(k)] - alone) / (1.0 + np.abs(alone)))))
    if worst > BATCHED_PARITY_TOLERANCE:
        raise RuntimeError(f"{model.manifest.path}: batched step model of {model.variant.name} disagrees with "
                           f"the (1, n) model by {worst:.2e} (relative) > {BATCHED_PARITY_TOLERANCE}")
    return {"streams": BATCHED_PARITY_STREAMS, "steps": BATCHED_PARITY_STEPS, "max_rel_error": worst,
            "backend": model.backend}


def write_scratch(tmp: Path, manifest: dict, files: dict[str, bytes]) -> Path:
    """A scratch bundle, opened with the reader the device uses before the real one is written."""
    scratch = tmp / "bundle"
    write_files_atomically(scratch, {**files, schema.MANIFEST_NAME: json.dumps(manifest).encode()})
    return scratch


def convert_run(run_dir: Path, out_dir: Path, parity_steps: int = PARITY_STEPS,
                variants: tuple[str, ...] | None = None, firmware_variant: str = "int8-io") -> dict:
    """runs/<name>/ -> artifacts/<name>/ with every variant; returns the manifest written.

    float32 is checked against torch first (parity), then calibrates the
    quantized variants. Each variant is scored on the stream; a variant that
    no target runtime can open is left out, with the op and version named.
    """
    from convert.quantize import VARIANTS, calibration_samples, convert_variant
    from convert.tf_step import StepGraph, save_step_model

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    weights, info = load_checkpoint(run_dir / "checkpoint.safetensors")
    if info.get("task") == "autocomplete":
        from convert.autocomplete_bundle import convert_autocomplete_run

        return convert_autocomplete_run(run_dir, out_dir, weights, info, variants, firmware_variant)
    config, norm = ModelConfig.from_dict(info["model"]), info["normalization"]
    splits = np.load(run_dir / "splits.npz")
    specs = [v for v in VARIANTS if variants is None or v.name in variants or v.name == "float32"]
    torch_model = forecaster_from_weights(weights, info)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        saved_model = save_step_model(StepGraph(weights, config, norm), str(tmp / "saved_model"))
        float_data = convert_variant(saved_model, specs[0], [])
        float_entry = variant_entry(specs[0], float_data)
        files = {float_entry["file"]: float_data}
        manifest = build_manifest(out_dir.name, config, info, [float_entry])
        float_model = load(write_scratch(tmp, manifest, files), variant="float32", backend=CHECK_BACKEND)
        float_entry["parity"] = streaming_parity(torch_model, float_model, parity_stream(splits), norm, parity_steps)
        if not float_entry["parity"]["max_abs_error"] <= PARITY_TOLERANCE:  # NaN fails too
            raise RuntimeError(f"{run_dir}: TFLite step model disagrees with torch by "
                               f"{float_entry['parity']['max_abs_error']:.2e} > {PARITY_TOLERANCE} (normalized units)")
        # residual spread and alarm thresholds from the validation split only (test stays held out)
        manifest["anomaly"] = anomaly_section(float_model, splits["val"], int(splits["warmup"]),
                                              info["stream"]["period_s"])
        calibration = calibration_samples(float_model, splits["train"])
        for spec in specs[1:]:
            data = convert_variant(saved_model, spec, calibration)
            entry = variant_entry(spec, data)
            if all(entry["compatibility"].values()):
                reasons = "; ".join(f"{r}" for r in entry["compatibility"].values())
                print(f"warning: {out_dir.name}: variant {spec.name} left out, no target runtime opens it: "
                      f"{reasons}", file=sys.stderr)
                manifest.setdefault("left_out_variants", []).append({"name": spec.name, "why": entry["compatibility"]})
                continue
            manifest["variants"].append(entry)
            files[entry["file"]] = data
        files.update(add_batched_companions(manifest, specs, StepGraph(weights, config, norm, batch=None), tmp))
        scratch = write_scratch(tmp, manifest, files)  # once, with every variant
        for entry in manifest["variants"]:
            model = load(scratch, variant=entry["name"], backend=CHECK_BACKEND)
            if "batched" in entry:
                entry["batched"]["parity"] = batched_parity(model, splits)
            if model.integer_io:
                entry["io_quantization"] = {name: codec.describe() for name, codec in model.codecs.items()}
            entry["metrics"] = variant_metrics(torch_model, model, splits, norm, info["metrics"]["test_mse"])
            drift = entry["metrics"]["drift"]["ratio"]
            entry["metrics"]["deployable"] = drift <= DRIFT_LIMIT
            if drift > DRIFT_LIMIT:
                entry["metrics"]["why_not_deployable"] = f"drift ratio {drift:.2f} > {DRIFT_LIMIT}"
    if firmware_variant in files_by_name(manifest):
        files.update(firmware_files(manifest, files, firmware_variant))
    files[schema.MANIFEST_NAME] = json.dumps(manifest, indent=1).encode()
    write_files_atomically(out_dir, files)
    schema.read_manifest(out_dir)  # what we wrote must read back
    return manifest


def files_by_name(manifest: dict) -> dict[str, str]:
    return {v["name"]: v["file"] for v in manifest["variants"]}


def firmware_files(manifest: dict, files: dict[str, bytes], variant: str) -> dict[str, bytes]:
    """model_data.h / model_data.cc for a TFLite Micro build, from one variant."""
    entry = next(v for v in manifest["variants"] if v["name"] == variant)
    header, source = c_array(files[entry["file"]], entry["file"], entry["sha256"])
    manifest["firmware"] = {"variant": variant, "header": C_HEADER, "source": C_SOURCE}
    return {C_HEADER: header.encode(), C_SOURCE: source.encode()}
