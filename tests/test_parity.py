"""Parity at the torch -> TFLite boundary, and between the two device runtimes.

Tolerances:
- torch vs TFLite float32, 1e-4 in normalized units over 2,000 steps: both are
  float32 with different op orders and fused kernels (XNNPACK); rounding of
  ~1e-7 per op is carried by the recurrence, and 1e-4 is still 100x below the
  smallest forecast error any model here reaches (~1e-2 RMS).
- tflite-runtime 2.14 vs ai-edge-litert 2.3, 1e-5: the same flatbuffer on two
  builds of the same kernels; only instruction selection may differ.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import IN_PROCESS_BACKEND, TINY_CELLS, make_tiny_bundle, run_isolated

pytestmark = pytest.mark.slow  # compares with torch on freshly converted bundles: the full tier only

TORCH_TFLITE_TOLERANCE = 1e-4
RUNTIME_TOLERANCE = 1e-5
STEPS = 2000


def torch_vs_tflite(run_dir, bundle_dir) -> dict:
    import edge_runtime
    from convert.parity import parity_stream, streaming_parity
    from train.checkpoint import load_checkpoint
    from train.models import forecaster_from_weights

    weights, info = load_checkpoint(run_dir / "checkpoint.safetensors")
    model = edge_runtime.load(bundle_dir, backend=IN_PROCESS_BACKEND)
    stream = parity_stream(np.load(run_dir / "splits.npz"))
    return streaming_parity(forecaster_from_weights(weights, info), model, stream, info["normalization"], STEPS)


@pytest.mark.parametrize("cell", TINY_CELLS)
def test_streaming_parity_torch_sequence_vs_tflite_steps(tiny_bundles, cell):
    report = torch_vs_tflite(*tiny_bundles[cell])
    assert report["steps"] == STEPS
    assert report["max_abs_error"] <= TORCH_TFLITE_TOLERANCE, report


def test_parity_holds_for_a_delta_only_single_layer_model(tmp_path):
    run_dir, bundle_dir = make_tiny_bundle(tmp_path, "lstm", features=("delta",), layers=1)
    assert torch_vs_tflite(run_dir, bundle_dir)["max_abs_error"] <= TORCH_TFLITE_TOLERANCE


def test_convert_records_parity_in_the_manifest(tiny_bundles):
    from conftest import manifest_of

    for cell in TINY_CELLS:
        variant = manifest_of(tiny_bundles[cell][1])["variants"][0]
        assert variant["parity"]["steps"] == STEPS
        assert variant["parity"]["max_abs_error"] <= TORCH_TFLITE_TOLERANCE


STEP_ALL = """
import json, numpy as np
import edge_runtime
out = {}
for cell, run_dir, bundle in JOBS:
    model = edge_runtime.load(bundle)
    session = model.session()
    splits = np.load(run_dir + "/splits.npz")
    raw = np.concatenate([splits["val"], splits["test"][int(splits["warmup"]):]])[:%d]
    std = model.manifest.normalization["std"][model.manifest.target[0]]
    out[cell] = [float(session.step(row)[0]) / std for row in raw]  # normalized units
print(json.dumps({"backend": model.backend, "y": out}))
""" % STEPS


def outputs_under(backend: str, tiny_bundles) -> dict:
    jobs = json.dumps([[c, str(r), str(b)] for c, (r, b) in tiny_bundles.items()])
    done = run_isolated(f"JOBS = {jobs}\n" + STEP_ALL, EDGE_RNN_BACKEND=backend)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    return result["y"]


def test_same_bundle_same_outputs_under_tflite_runtime_and_ai_edge_litert(tiny_bundles):
    old, new = outputs_under("tflite_runtime", tiny_bundles), outputs_under("ai_edge_litert", tiny_bundles)
    for cell in TINY_CELLS:
        a, b = np.asarray(old[cell]), np.asarray(new[cell])
        assert a.shape == b.shape == (STEPS,)
        assert np.abs(a - b).max() <= RUNTIME_TOLERANCE, cell


def test_zero_head_model_is_exactly_persistence(tmp_path, tiny_bundles):
    """Ground truth, not implementation vs implementation: with the head zeroed the
    forecast is the current sample, so every output must equal its input in raw units."""
    import edge_runtime
    from convert.run import convert_run
    from train.checkpoint import load_checkpoint, save_checkpoint

    run_dir, _ = tiny_bundles["gru"]
    weights, info = load_checkpoint(run_dir / "checkpoint.safetensors")
    weights["head.weight"][:] = 0
    weights["head.bias"][:] = 0
    zero_run = tmp_path / "zero-head"
    zero_run.mkdir()
    save_checkpoint(zero_run / "checkpoint.safetensors", weights, info)
    (zero_run / "splits.npz").write_bytes((run_dir / "splits.npz").read_bytes())
    convert_run(zero_run, tmp_path / "bundle", parity_steps=100)
    session = edge_runtime.load(tmp_path / "bundle", backend=IN_PROCESS_BACKEND).session()
    samples = np.array([[19.7, 3.2], [20.4, -1.0], [21.05, 7.5]], np.float32)
    for sample in samples:
        np.testing.assert_allclose(session.step(sample), sample[:1], rtol=0, atol=1e-4)
