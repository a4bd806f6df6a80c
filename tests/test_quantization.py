"""Quantized variants: which runtime opens what, integer I/O, choosing by error budget, C export."""
from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

import edge_runtime
from conftest import IN_PROCESS_BACKEND, manifest_of, run_isolated
from convert.compat import KNOWN_REFUSALS, MAX_OPENED_VERSION, RUNTIMES, TYPE_REFUSALS, compatibility, refusal
from convert.flatbuffer import model_ops, op_input_types
from edge_runtime import BundleError

OPEN_ALL = """
import json, numpy as np
import edge_runtime
from edge_runtime.manifest import BundleError
result = {}
for path in FILES:
    try:
        model = edge_runtime.load(path[0], variant=path[1])
        session = model.session()
        for _ in range(3):
            y = session.step(np.asarray(model.manifest.normalization["mean"], np.float32))
        result[path[1] + "@" + path[0]] = None if np.isfinite(y).all() else "non-finite output"
    except BundleError as e:
        result[path[1] + "@" + path[0]] = str(e)
print(json.dumps(result))
"""

OPEN_RAW = """
import json
import numpy as np
from RUNTIME.interpreter import Interpreter
result = {}
for path in FILES:
    try:
        interpreter = Interpreter(model_path=path)
        interpreter.allocate_tensors()
        interpreter.invoke()
        for key in interpreter.get_signature_list():  # every signature (a resident companion has three)
            runner = interpreter.get_signature_runner(key)
            runner(**{n: np.zeros(d["shape"], d["dtype"]) for n, d in runner.get_input_details().items()})
            del runner
        result[path] = None
    except Exception as e:
        result[path] = str(e).splitlines()[0]
print(json.dumps(result))
"""


def open_everywhere(code: str, files: list, runtime: str) -> dict:
    done = run_isolated(f"FILES = {json.dumps(files)}\n" + code.replace("RUNTIME", runtime),
                        EDGE_RNN_BACKEND=runtime, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def check_bundles_open_as_their_manifests_say(bundles: list[Path]) -> None:
    """Every variant opens and steps under each runtime its manifest says, and fails where it says not."""
    files = [[str(b), v["name"]] for b in bundles for v in manifest_of(b)["variants"]]
    for runtime in RUNTIMES:
        outcome = open_everywhere(OPEN_ALL, files, runtime)
        for bundle, variant in files:
            expected = next(v for v in manifest_of(Path(bundle))["variants"] if v["name"] == variant)
            opened = outcome[f"{variant}@{bundle}"] is None
            assert opened == (expected["compatibility"][runtime] is None), (runtime, bundle, variant, outcome)


@pytest.mark.slow
def test_every_variant_of_the_tiny_bundles_opens_where_the_manifest_says(tiny_bundles):
    names = [v["name"] for v in manifest_of(tiny_bundles["lstm"][1])["variants"]]
    assert names == ["float32", "float16", "dynamic-int8", "int8", "int16x8", "int8-io"]
    check_bundles_open_as_their_manifests_say([b for _, b in tiny_bundles.values()])


@pytest.fixture(scope="module")
def big_models() -> dict[str, bytes]:
    """An untrained LSTM at hidden 64 in every shipped mode, plus per-channel dynamic range
    (which we do not ship: it emits FULLY_CONNECTED v12). The converter leaves weight tensors
    under 1,024 elements in float, so the tiny test models do not show every op version."""
    import tensorflow as tf

    from convert.quantize import VARIANTS, convert_variant
    from convert.tf_step import StepGraph, save_step_model
    from train.models import Forecaster, ModelConfig, Scales

    config = ModelConfig(cell="lstm", hidden=64, input_size=2, target=(0,))
    norm = {"mean": [20.0, 5.0], "std": [1.0, 4.0], "delta_std": [0.05, 0.1]}
    model = Forecaster(config, Scales.from_normalization(norm, config.target))
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    calibration = [{"x": (np.asarray(norm["mean"]) + rng.normal(size=(1, 2))).astype(np.float32),
                    **{n: rng.uniform(-1, 1, s).astype(np.float32) for n, s in config.state_shapes(1).items()}}
                   for _ in range(50)]
    with tempfile.TemporaryDirectory() as tmp:
        saved = save_step_model(StepGraph(weights, config, norm), str(Path(tmp) / "sm"))
        models = {spec.name: convert_variant(saved, spec, calibration) for spec in VARIANTS}
        converter = tf.lite.TFLiteConverter.from_saved_model(saved, signature_keys=["step"])
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        models["per-channel-dynamic"] = converter.convert()
    return models


@pytest.fixture(scope="module")
def per_channel_dynamic_model(big_models) -> bytes:
    return big_models["per-channel-dynamic"]


@pytest.mark.slow
def test_checker_refuses_an_op_version_beyond_tflite_runtime_2_14(per_channel_dynamic_model):
    ops = model_ops(per_channel_dynamic_model)
    assert {"op": "FULLY_CONNECTED", "version": 12} in ops
    assert refusal(ops, "tflite_runtime") == (
        "FULLY_CONNECTED version 12 is beyond tflite-runtime 2.14.0 (highest version that opens: 9)")
    assert compatibility(ops)["ai_edge_litert"] is None


def test_checker_refuses_an_op_it_has_never_seen_open():
    assert refusal([{"op": "UNIDIRECTIONAL_SEQUENCE_LSTM", "version": 1}], "tflite_runtime") == (
        "UNIDIRECTIONAL_SEQUENCE_LSTM (version 1) has not been verified to open in tflite-runtime 2.14.0")


@pytest.mark.slow
def test_the_table_is_what_the_runtimes_do(tmp_path, tiny_bundles, tiny_transformer, big_models):
    # The slow demo test also opens every variant of every bundle the demo writes (test_demo.py).
    """Re-derive the table: open every variant we emit and its resident companion (the transformer's too, whose
    int16x8 tflite-runtime refuses by type), plus the per-channel model, under each runtime; the highest version
    of each op that opened must be the table's entry, and the refusals must match."""
    bundles = [b for _, b in tiny_bundles.values()] + [tiny_transformer[1]]
    files = [str(b / entry["file"]) for b in bundles for v in manifest_of(b)["variants"]
             for entry in (v, *(v[k] for k in ("resident", "batched_resident") if k in v))]  # and its resident companions
    for name, data in big_models.items():
        (tmp_path / f"{name}.tflite").write_bytes(data)
        files.append(str(tmp_path / f"{name}.tflite"))
    for runtime in RUNTIMES:
        outcome = open_everywhere(OPEN_RAW, files, runtime)
        derived: dict[str, int] = {}
        for path, error in outcome.items():
            ops = model_ops(Path(path).read_bytes())
            if error is None:
                for o in ops:
                    derived[o["op"]] = max(derived.get(o["op"], 0), o["version"])
            else:
                known = [KNOWN_REFUSALS.get((runtime, o["op"], o["version"]), "~") for o in ops]
                known += [TYPE_REFUSALS.get((runtime, *pair), "~") for pair in op_input_types(Path(path).read_bytes())]
                assert any(words in error for words in known), error
        assert derived == MAX_OPENED_VERSION[runtime], runtime


def test_integer_io_is_transparent_and_exactly_what_the_manifest_scales_say(fixture_bundles):
    """Session over the core int8-io takes and returns floats; it equals computing the features
    by hand (float64), quantizing them with the manifest's scales and zero points, driving the raw
    interpreter, and adding persistence: y = x[target] + correction * delta_std[target]."""
    _, bundle = fixture_bundles["lstm"]
    manifest = manifest_of(bundle)
    entry = next(v for v in manifest["variants"] if v["name"] == "int8-io")
    assert entry["graph"] == "core"
    q = entry["io_quantization"]
    assert {q[n]["dtype"] for n in ("delta", "level", "correction:out", "h0")} == {"int8"}
    assert "x" not in q and "x_prev" not in q  # the level and x_prev stay outside the quantized core

    model = edge_runtime.load(bundle, variant="int8-io", backend=IN_PROCESS_BACKEND)
    session = model.session()
    rng = np.random.default_rng(0)
    samples = (np.asarray(manifest["normalization"]["mean"]) + rng.normal(0, 0.5, (40, 2))).astype(np.float32)
    through_session = np.array([session.step(s) for s in samples])
    assert through_session.dtype == np.float32 and session.state["h0"].dtype == np.float32
    assert sorted(session.state) == sorted(s["name"] for s in manifest["state"])  # x_prev included

    def quantize(values, p):
        scaled = np.asarray(values, np.float32) / p["scale"]
        return np.clip(np.trunc(scaled + np.copysign(0.5, scaled)) + p["zero_point"], -128, 127).astype(np.int8)

    def dequantize(values, p):
        return (values.astype(np.float32) - p["zero_point"]) * p["scale"]

    interp, ins, outs = model.interpreter, model.signature_inputs, model.signature_outputs
    norm = {k: np.asarray(v, np.float64) for k, v in manifest["normalization"].items()}
    target = manifest["target"]
    state = {s["name"]: np.zeros(s["shape"], np.float32) for s in manifest["state"] if s["name"] != "x_prev"}
    previous = samples[0].astype(np.float64)
    by_hand = []
    for sample in samples.astype(np.float64):
        features = {"delta": (sample - previous) / norm["delta_std"], "level": (sample - norm["mean"]) / norm["std"]}
        for name, value in features.items():
            interp.set_tensor(ins[name]["index"], quantize(value[None], q[name]))
        for name in state:
            interp.set_tensor(ins[name]["index"], quantize(state[name], q[name]))
        interp.invoke()
        state = {name: dequantize(interp.get_tensor(outs[name]["index"]), q[f"{name}:out"]) for name in state}
        correction = dequantize(interp.get_tensor(outs["correction"]["index"]), q["correction:out"])[0]
        by_hand.append(sample[target] + correction * norm["delta_std"][target])
        previous = sample
    # float64 vs float32 rounding of the features may move a quantized input by one LSB on a tie:
    # within a hundredth of a typical change (measured: 0 on this stream)
    gap = np.abs(through_session - np.array(by_hand)) / norm["delta_std"][target]
    assert gap.max() <= 0.01, gap.max()


def test_variant_choice_by_error_budget(tmp_path, fixture_bundles):
    bundle = tmp_path / "b"
    shutil.copytree(fixture_bundles["lstm"][1], bundle)
    manifest = manifest_of(bundle)
    usable = [v for v in manifest["variants"] if v["metrics"]["deployable"]]
    loose = edge_runtime.load(bundle, backend=IN_PROCESS_BACKEND, max_mse_ratio=1e9)
    assert loose.variant.bytes == min(v["bytes"] for v in usable)
    exact = edge_runtime.load(bundle, backend=IN_PROCESS_BACKEND, max_mse_ratio=1.0)
    assert exact.variant.raw["metrics"]["mse_ratio"] <= 1.0
    # float32's ratio is 1 up to float rounding (1.0000x or 0.9999x)
    with pytest.raises(BundleError, match=r"no variant within an MSE ratio of 0.5 opens in ai_edge_litert: "
                                          r"float32: not deployable \(test MSE (1|0\.9999)x float32's > 0\.5\)"):
        edge_runtime.load(bundle, backend=IN_PROCESS_BACKEND, max_mse_ratio=0.5)
    # a variant the manifest says this runtime cannot open is never chosen
    for v in manifest["variants"]:
        if v["bytes"] == loose.variant.bytes:
            v["compatibility"]["ai_edge_litert"] = "FULLY_CONNECTED version 12 is beyond ..."
    (bundle / "manifest.json").write_text(json.dumps(manifest))
    assert edge_runtime.load(bundle, backend=IN_PROCESS_BACKEND, max_mse_ratio=1e9).variant.bytes > loose.variant.bytes


@pytest.mark.slow
def test_every_variant_records_its_streaming_error_and_drift(tiny_bundles):
    for _, bundle in tiny_bundles.values():
        variants = manifest_of(bundle)["variants"]
        assert variants[0]["metrics"]["mse_ratio"] == pytest.approx(1.0, abs=1e-4)
        for v in variants:
            m = v["metrics"]
            assert m["drift"]["steps"] >= 2000 and m["drift"]["ratio"] > 0
            reasons = (m["mse_ratio"] > 1.2) + (m["mse_vs_persistence"] >= 1.0) + (m["drift"]["ratio"] > 1.5)
            assert m["deployable"] == (reasons == 0) and len(m.get("why_not_deployable_all", [])) == reasons
            assert 0 < v["constant_bytes"] < v["bytes"]


class _LeakySession:
    """A real session whose output picks up a bias that grows with every step it has run:
    error accumulating in a long-running state, which the drift check exists to catch."""

    def __init__(self, session, per_step: float):
        self.session, self.per_step, self.steps = session, per_step, 0

    def step(self, x):
        self.steps += 1
        return self.session.step(x) + self.per_step * self.steps


class _LeakyModel:
    def __init__(self, model, per_step: float):
        self.model, self.per_step, self.manifest = model, per_step, model.manifest

    def session(self):
        return _LeakySession(self.model.session(), self.per_step)


@pytest.mark.slow
def test_drift_check_catches_error_that_builds_up_and_passes_a_model_that_forgets(tiny_bundles):
    from convert.parity import DRIFT_LIMIT, drift_check, whole_stream
    from train.checkpoint import load_checkpoint
    from train.models import forecaster_from_weights

    run_dir, bundle = tiny_bundles["lstm"]
    weights, info = load_checkpoint(run_dir / "checkpoint.safetensors")
    torch_model, norm = forecaster_from_weights(weights, info), info["normalization"]
    stream = whole_stream(np.load(run_dir / "splits.npz"))[:3000]  # (3000, C) raw
    for variant in ("float32", "int8"):  # int8 (core graph): close to float32 (x1.00 here), and no build-up
        model = edge_runtime.load(bundle, variant=variant, backend=IN_PROCESS_BACKEND)
        steady = drift_check(torch_model, model, stream, norm)
        assert steady["ratio"] == pytest.approx(1.0, abs=0.05), (variant, steady)  # forgets its start
    # a bias of 1e-4 sensor units per step: RMS ~0.285 over steps 2700-3000 of the long run,
    # ~0.042 over the fresh run's steps 256-556 on the same samples: ratio ~6.8
    float_model = edge_runtime.load(bundle, variant="float32", backend=IN_PROCESS_BACKEND)
    leaky = drift_check(torch_model, _LeakyModel(float_model, 1e-4), stream, norm)
    assert leaky["ratio"] > 3 * DRIFT_LIMIT, leaky


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("g++") is None, reason="no C/C++ compiler")
def test_generated_c_array_compiles_and_holds_the_tflite_bytes(tmp_path, tiny_bundles):
    _, bundle = tiny_bundles["rnn"]
    manifest = manifest_of(bundle)
    assert manifest["firmware"] == {"variant": "int8-io", "header": "model_data.h", "source": "model_data.cc"}
    source = (bundle / "model_data.cc").read_text()
    assert source.startswith("// GENERATED by `python -m convert` from model.int8-io.tflite")
    assert "alignas(16)" in source
    main = tmp_path / "main.c"
    main.write_text("""
        #include <stdio.h>
        #include <stdint.h>
        #include "model_data.h"
        int main(void) {
            if (((uintptr_t)g_model_data) % 16 != 0) return 3;
            fwrite(g_model_data, 1, g_model_data_len, stdout);
            return 0;
        }
    """)
    exe = tmp_path / "dump"
    for cmd in (["gcc", "-c", "-I", str(bundle), str(main), "-o", str(tmp_path / "main.o")],
                ["g++", "-c", "-I", str(bundle), str(bundle / "model_data.cc"), "-o", str(tmp_path / "data.o")],
                ["g++", str(tmp_path / "main.o"), str(tmp_path / "data.o"), "-o", str(exe)]):
        subprocess.run(cmd, check=True, capture_output=True)
    dumped = subprocess.run([str(exe)], capture_output=True, check=True).stdout
    assert dumped == (bundle / "model.int8-io.tflite").read_bytes()
