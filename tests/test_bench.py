"""The benchmark runs on a tiny setting and writes its report; its peers compute what our model computes.

No timing is asserted here: this machine is shared and noisy, and `make bench`
reports ratios measured in one run instead.
"""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.bench import BENCH_PRESETS, claims, macs, run_bench, write_bench_report
from pipeline.peers import BUILDERS
from train.checkpoint import load_checkpoint

PEER_TOLERANCE = 1e-4  # float32 with different op orders (Keras and ONNX Runtime fuse differently)


@pytest.mark.slow
@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_every_peer_computes_the_same_forecasts_from_the_same_weights(tiny_bundles, cell):
    """The comparison is only fair if the peers run the same model: same outputs, step after step."""
    from train.models import ModelConfig  # imports torch

    run_dir, _ = tiny_bundles[cell]
    weights, info = load_checkpoint(run_dir / "checkpoint.safetensors")
    config = ModelConfig.from_dict(info["model"])
    features = np.random.default_rng(0).standard_normal((50, 1, 4)).astype(np.float32)  # level + delta, 2 channels
    outputs = {}
    for system, build in BUILDERS.items():
        step = build(weights, config)
        outputs[system] = np.array([np.asarray(step(f)).reshape(-1) for f in features])
    for system, values in outputs.items():
        np.testing.assert_allclose(values, outputs["torch"], rtol=0, atol=PEER_TOLERANCE, err_msg=system)


BATCH_TOLERANCE = 1e-6  # the same float32 equations; a (B, H) matmul may sum in another order than (1, H)


@pytest.mark.slow
def test_the_numpy_batched_peer_steps_each_row_as_the_single_stream_peer(tiny_bundles):
    """The many-streams reference (issue 19) runs the same model on every row."""
    from train.config import ModelConfig

    run_dir, _ = tiny_bundles["lstm"]
    weights, info = load_checkpoint(run_dir / "checkpoint.safetensors")
    config = ModelConfig.from_dict(info["model"])
    assert numpy_batched_matches(weights, config) <= BATCH_TOLERANCE


def numpy_batched_matches(weights, config, streams: int = 5, steps: int = 40) -> float:
    """Largest difference between a batched numpy step's rows and one single-stream numpy step per row."""
    features = np.random.default_rng(1).standard_normal((steps, streams, 1, 4)).astype(np.float32)  # (T, B, 1, F)
    batched, single = BUILDERS["numpy"](weights, config, streams), [BUILDERS["numpy"](weights, config)
                                                                    for _ in range(streams)]
    worst = 0.0
    for t in range(steps):
        together = batched(features[t, :, 0])  # (B, O)
        for b in range(streams):
            worst = max(worst, float(np.max(np.abs(together[b] - single[b](features[t, b])[0]))))
    return worst


def test_macs_count_the_gates():
    assert macs("lstm", 32, 1) == 4 * 32 * (4 + 32) + 32
    assert macs("gru", 16, 2) == 3 * 16 * (4 + 16) + 3 * 16 * (16 + 16) + 16


def test_a_service_minutes_behind_its_sensors_does_not_keep_up_though_the_broker_drained():
    """Session 21's bench: 1,000,000 of 1,000,000 forecast and nothing left at the broker, but p50 139 s behind
    with the publisher at 3,334 of 5,000/s. That claim read PASS; keeping up is a bounded delay at the rate."""
    from pipeline.loadgen import keeps_up, load_table

    def load(p99_ms, offered, backlog=0):
        return {"sensors": 100, "rate_hz": 50.0, "duration_s": 200.0, "sent": 1_000_000, "acknowledged": 1_000_000,
                "forecasts": 1_000_000 - backlog, "taken_in": 1_000_000 - backlog, "lost": 0,
                "backlog_at_end": backlog, "publish_rate_per_s": offered,
                "latency_ms": {"p50": p99_ms / 2, "p99": p99_ms, "max": p99_ms}, "service_cpu_s": 306.3,
                "rss_kb_at_samples": {}, "service": {"latency_us": {"p50": 493.2, "p99": 10976.6}}}

    behind = load(186_565.18, 3334.1)
    held, figure = keeps_up(behind)
    assert not held
    assert figure == ("sample-to-forecast p50 / p99 93.28 / 186.57 s (under 1 s to keep up); 1,000,000 of "
                      "1,000,000 forecast, 0 left at the broker; the publisher offered 3,334 of 5,000 samples/s; "
                      "the service's CPU 306 us a sample (one core: 3,265/s)")
    assert "| keeps up: p99 sample-to-forecast under 1 s, the rate offered, nothing left | FAIL |" in load_table(behind)
    assert "| service CPU a sample (user + system, every thread) | 306 us |" in load_table(behind)
    assert keeps_up(load(120.0, 4990.0))[0]
    assert not keeps_up(load(120.0, 4700.0))[0]  # the rate was not offered: not tested, so not held
    assert not keeps_up(load(120.0, 4990.0, backlog=1))[0]
    assert not keeps_up(load(1_000.0, 4990.0))[0]


@pytest.mark.slow
def test_tiny_bench_runs_and_writes_its_report(tmp_path):
    results = run_bench(BENCH_PRESETS["tiny"], tmp_path / "work", progress=False)
    report = write_bench_report(results, tmp_path / "reports")
    text = report.read_text()
    assert "CPU:" in text.splitlines()[2]
    for claim, _, _ in claims(results):
        assert claim in text
    assert "| Session.step int8-io (tflite_runtime) |" in text and "| raw interpreter loop float32" in text
    assert [s["hidden"] for s in results["scaling"]] == [8, 16]
    assert sorted((t["streams"], t["batched"]) for t in results["throughput"]) == [
        (1, False), (1, True), (8, False), (8, True)]
    assert all(t["samples_per_s"] > 0 for t in results["throughput"]) and "## Throughput over many streams" in text
    many = results["many_streams"]  # issue 19: step_rows next to the raw batched call and numpy, per runtime
    assert sorted(many) == sorted(["tflite_runtime", "ai_edge_litert"]) and "## Many streams: 64 streams" in text
    assert all(many[rt]["variants"]["float32"][k]["steps_per_s"] > 0 for rt in many
               for k in ("step_rows", "step_many", "raw_batched", "raw_resident_batched", "numpy_batched"))
    # at 64 streams the pool's steady state is the batched resident companion, under both runtimes
    assert all(many[rt]["variants"]["float32"]["resident_blocks"] for rt in many)
    assert "state in variables (tflite_runtime, float32)" in text and "state in variables (ai_edge_litert" in text
    keys = results["autocomplete"]
    assert keys["k"] == 3 and keys["bundle_bytes"] > 0 and keys["variants"]["float32"]["keystrokes"] > 10
    assert "| float32 |" in text.split("## Autocomplete")[1]
    litert = results["autocomplete_litert"]  # the same keystrokes under the other runtime (int8's cost differs)
    assert litert["backend"] == "ai_edge_litert" and text.count("## Autocomplete") == 2
    assert all(v["steps_per_keystroke"] >= 1 and v["step_us"] > 0 for v in keys["variants"].values() if "error" not in v)
    for png in ("bench_latency.png", "bench_scaling.png", "bench_throughput.png"):
        assert (tmp_path / "reports" / png).stat().st_size > 5_000
    f32 = results["edge"]["tflite_runtime"]["variants"]["float32"]
    assert 0 < f32["p50_call_us"] <= f32["p99_call_us"] and "| p99 per call |" in text
    edge = results["edge_process"]["tflite_runtime"]
    assert 0 < edge["peak_rss_mb"] < results["peers"]["torch"]["peak_rss_mb"]
