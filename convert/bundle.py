"""The bundle-writing skeleton, the same for every task: export the step model, check it, write atomically.

    float32 step model -> parity against torch (the task's check) -> the task's extra
    sections -> calibration -> every quantized variant (left out, with the op named,
    when no target runtime opens it) -> batched companions (when the task has them)
    -> each variant opened with edge_runtime's reader and scored -> C array -> manifest
    -> the folder swapped in atomically and read back.

What differs per task (what the model is checked, calibrated and scored on)
is a `TaskConversion`: convert/forecast_bundle.py and
convert/autocomplete_bundle.py; convert/run.py picks one by the checkpoint's
task. The bundle is verified with edge_runtime's own reader before it
replaces an older one, so a bundle on disk has always opened and stepped at
least once.
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
from typing import Protocol

from convert.c_array import C_HEADER, C_SOURCE, c_array
from convert.compat import compatibility
from convert.flatbuffer import constant_bytes, model_ops, op_input_types
from edge_runtime import manifest as schema
from edge_runtime.model import Model
from edge_runtime.tasks import load

# In a process that has TensorFlow loaded, tflite_runtime 2.14 breaks ("vector::reserve"
# while reading signatures); ai_edge_litert does not. The tests run tflite_runtime apart.
CHECK_BACKEND = "ai_edge_litert"
# Variants that also get a batched companion (dynamic batch) for the edge service's many-stream
# step; integer variants do not (their activation scales are per tensor, not per row anyway).
BATCHED_VARIANTS = ("float32", "float16")
# Variants that also get a resident companion (state in resource variables, one stream per interpreter:
# convert/resident_step.py). The integer ones do not: their state is requantized from output to input
# outside the model (edge_runtime/quant.py), which a variable could not reproduce bit for bit.
RESIDENT_VARIANTS = ("float32", "float16", "dynamic-int8")


class TaskConversion(Protocol):
    """What one task adds to the skeleton. `parity` returns {max_abs_error, ...}."""

    parity_tolerance: float
    parity_units: str  # named in the error when parity fails
    batched: bool  # whether the float variants get a dynamic-batch companion
    resident: bool  # whether the float variants get a resident (state in variables) companion

    def step_graph(self, batch: int | None = 1): ...  # a convert.tf_step.StepGraph
    def manifest(self, name: str, variants: list[dict]) -> dict: ...
    def parity(self, float_model: Model) -> dict: ...
    def add_sections(self, manifest: dict, float_model: Model) -> None: ...  # e.g. the anomaly thresholds
    def calibration(self, float_model: Model) -> list[dict]: ...
    # optional (a forecaster's): core_model(tmp) -> (SavedModel dir of the core graph the integer variants
    # are converted from, its calibration samples, the variant entry's cell_scales: state -> units);
    # variant_calibration(variant name, samples) -> the samples that variant is calibrated on
    def score(self, model: Model, entry: dict) -> None: ...  # fills entry["metrics"] (and checks)


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


def variant_entry(spec, data: bytes, graph: str = "raw") -> dict:
    ops = model_ops(data)
    return {"name": spec.name, "file": f"model.{spec.name}.tflite", "dtype": spec.dtype, "graph": graph,
            "integer_io": spec.integer_io, "note": spec.note,
            "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
            "constant_bytes": constant_bytes(data),  # weights and other constants; the rest is graph
            "ops": ops, "compatibility": compatibility(ops, op_input_types(data))}  # runtime -> None (opens) or why not


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
                            "ops": ops, "compatibility": compatibility(ops, op_input_types(data))}
        files[entry["batched"]["file"]] = data
    return files


def add_resident_companions(manifest: dict, specs, graph, tmp: Path) -> dict[str, bytes]:
    """Convert the step graph with its state in resource variables for RESIDENT_VARIANTS; record each."""
    from convert.quantize import convert_variant
    from convert.resident_step import SIGNATURES, save_resident_model

    saved_model = save_resident_model(graph, str(tmp / "saved_model_resident"))
    files = {}
    for spec in specs:
        entry = next((e for e in manifest["variants"] if e["name"] == spec.name), None)
        if entry is None or spec.name not in RESIDENT_VARIANTS or entry.get("graph", "raw") != "raw":
            continue
        data = convert_variant(saved_model, spec, [], signatures=SIGNATURES)
        ops = model_ops(data)
        entry["resident"] = {"file": f"model.{spec.name}.resident.tflite", "signatures": list(SIGNATURES),
                             "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                             "ops": ops, "compatibility": compatibility(ops)}
        files[entry["resident"]["file"]] = data
    return files


def add_batched_resident_companions(manifest: dict, specs, batched_graph, tmp: Path) -> dict[str, bytes]:
    """The dynamic-batch step graph with BATCH_ROWS streams' state in resource variables, for the variants
    that have a batched companion (StreamPool's steady state: edge_runtime/pool.py); record each."""
    from convert.quantize import convert_variant
    from convert.resident_step import BATCH_ROWS, SIGNATURES, save_resident_model

    saved_model = save_resident_model(batched_graph, str(tmp / "saved_model_batched_resident"), BATCH_ROWS)
    files = {}
    for spec in specs:
        entry = next((e for e in manifest["variants"] if e["name"] == spec.name), None)
        if entry is None or "batched" not in entry:
            continue
        data = convert_variant(saved_model, spec, [], signatures=SIGNATURES)
        ops = model_ops(data)
        entry["batched_resident"] = {"file": f"model.{spec.name}.batch.resident.tflite", "rows": BATCH_ROWS,
                                     "signatures": list(SIGNATURES), "sha256": hashlib.sha256(data).hexdigest(),
                                     "bytes": len(data), "ops": ops, "compatibility": compatibility(ops)}
        files[entry["batched_resident"]["file"]] = data
    return files


def write_scratch(tmp: Path, manifest: dict, files: dict[str, bytes]) -> Path:
    """A scratch bundle, opened with the reader the device uses before the real one is written."""
    scratch = tmp / "bundle"
    write_files_atomically(scratch, {**files, schema.MANIFEST_NAME: json.dumps(manifest).encode()})
    return scratch


def write_bundle(task: TaskConversion, run_dir: Path, out_dir: Path, variants: tuple[str, ...] | None = None,
                 firmware_variant: str = "int8-io", sign_key=None) -> dict:
    """runs/<name>/ -> artifacts/<name>/ with every variant; returns the manifest written.

    float32 is checked against torch first (parity), then calibrates the
    quantized variants. Each variant is scored; a variant that no target
    runtime can open is left out, with the op and version named.
    """
    from convert.quantize import VARIANTS, convert_variant
    from convert.tf_step import save_step_model

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    specs = [v for v in VARIANTS if variants is None or v.name in variants or v.name == "float32"]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        saved_model = save_step_model(task.step_graph(), str(tmp / "saved_model"))
        float_data = convert_variant(saved_model, specs[0], [])
        float_entry = variant_entry(specs[0], float_data)
        files = {float_entry["file"]: float_data}
        manifest = task.manifest(out_dir.name, [float_entry])
        float_model = load(write_scratch(tmp, manifest, files), variant="float32", backend=CHECK_BACKEND)
        float_entry["parity"] = task.parity(float_model)
        if not float_entry["parity"]["max_abs_error"] <= task.parity_tolerance:  # NaN fails too
            raise RuntimeError(f"{run_dir}: TFLite step model disagrees with torch by "
                               f"{float_entry['parity']['max_abs_error']:.2e} > {task.parity_tolerance} "
                               f"({task.parity_units})")
        task.add_sections(manifest, float_model)
        if hasattr(task, "extra_files"):  # files beside the models (an autocomplete bundle's lexicon)
            files.update(task.extra_files(manifest))
        core = None  # (the core graph's SavedModel, its calibration samples), made when first needed
        raw_calibration: list[dict] | None = None
        for spec in specs[1:]:
            graph = "core" if hasattr(task, "core_model") and spec.core else "raw"
            if graph == "core":
                core = core or task.core_model(tmp)
                samples = task.variant_calibration(spec.name, core[1]) if hasattr(task, "variant_calibration") \
                    else core[1]  # a Transformer core's ring inputs get exact scales (convert/transformer_step.py)
                data = convert_variant(core[0], spec, samples, core=True)
            else:
                if raw_calibration is None and spec.name in ("int8", "int16x8", "int8-io"):
                    raw_calibration = task.calibration(float_model)
                data = convert_variant(saved_model, spec, raw_calibration or [])
            entry = variant_entry(spec, data, graph)
            if graph == "core" and core[2]:
                entry["cell_scales"] = core[2]  # the session's named state stays in the trained units
            if all(entry["compatibility"].values()):
                print(f"warning: {out_dir.name}: variant {spec.name} left out, no target runtime opens it: "
                      + "; ".join(f"{r}" for r in entry["compatibility"].values()), file=sys.stderr)
                manifest.setdefault("left_out_variants", []).append({"name": spec.name, "why": entry["compatibility"]})
                continue
            for runtime, why in entry["compatibility"].items():  # kept, but one runtime will not open it
                if why:
                    print(f"warning: {out_dir.name}: variant {spec.name} does not open in {runtime}: {why}",
                          file=sys.stderr)
            manifest["variants"].append(entry)
            files[entry["file"]] = data
        if task.batched:
            files.update(add_batched_companions(manifest, specs, task.step_graph(batch=None), tmp))
        if getattr(task, "resident", False):
            files.update(add_resident_companions(manifest, specs, task.step_graph(), tmp))
            if task.batched and getattr(task, "batched_resident", True):
                files.update(add_batched_resident_companions(manifest, specs, task.step_graph(batch=None), tmp))
        scratch = write_scratch(tmp, manifest, files)  # once, with every variant
        for entry in manifest["variants"]:
            model = load(scratch, variant=entry["name"], backend=CHECK_BACKEND)
            if model.integer_io:
                entry["io_quantization"] = {name: codec.describe() for name, codec in model.codecs.items()}
            task.score(model, entry)
            flag_not_deployable(out_dir.name, entry)
    if firmware_variant in files_by_name(manifest):
        files.update(firmware_files(manifest, files, firmware_variant))
    files[schema.MANIFEST_NAME] = json.dumps(manifest, indent=1).encode()
    if sign_key is not None:  # an Ed25519 private key (convert/signing.py): the signature lands with the bundle
        from convert.signing import signature_for
        from edge_runtime.signature import SIGNATURE_NAME

        files[SIGNATURE_NAME] = signature_for(files[schema.MANIFEST_NAME], sign_key)
    write_files_atomically(out_dir, files)
    schema.read_manifest(out_dir)  # what we wrote must read back
    return manifest


def flag_not_deployable(bundle: str, entry: dict) -> None:
    """One terminal line for a variant convert flagged, with its figures (sys.stderr is the terminal
    while TensorFlow's own chatter goes to the log, convert/quiet.py)."""
    reasons = entry.get("metrics", {}).get("why_not_deployable_all")
    if reasons:
        print(f"warning: {bundle}: variant {entry['name']} not deployable: {'; '.join(reasons)}", file=sys.stderr)


def files_by_name(manifest: dict) -> dict[str, str]:
    return {v["name"]: v["file"] for v in manifest["variants"]}


def firmware_files(manifest: dict, files: dict[str, bytes], variant: str) -> dict[str, bytes]:
    """model_data.h / model_data.cc for a TFLite Micro build, from one variant."""
    entry = next(v for v in manifest["variants"] if v["name"] == variant)
    header, source = c_array(files[entry["file"]], entry["file"], entry["sha256"])
    manifest["firmware"] = {"variant": variant, "header": C_HEADER, "source": C_SOURCE}
    return {C_HEADER: header.encode(), C_SOURCE: source.encode()}
