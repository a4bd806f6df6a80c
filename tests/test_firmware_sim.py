"""firmware_sim: integer kernels bit-exact with TFLite, memory and flash budgets, deadlines, faults, resets.

The bit-exact runs happen in fresh processes where torch and TensorFlow
cannot be imported (conftest.run_isolated): tflite-runtime 2.14 must not
share a process with TensorFlow, and firmware_sim must not need either.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

from conftest import run_cli, run_isolated
from firmware_sim import firmware
from firmware_sim.fixedpoint import (multiply_by_quantized_multiplier, quantize_multiplier,
                                     rounding_divide_by_pot, saturating_rounding_doubling_high_mul)
from firmware_sim.graph import GraphError, read_graph
from firmware_sim.kernels import prepare
from firmware_sim.memory import DoesNotFit, check_fits, greedy_plan, lifetimes, memory_report
from firmware_sim.profiles import available, load_profile
from firmware_sim.timing import schedule, step_cost

BIT_EXACT_STEPS = 10_000

# One line per (bundle, variant, runtime). The interpreter runs its reference kernels
# (OpResolverType.BUILTIN_REF); "internal" also compares every intermediate tensor each
# step (ai-edge-litert only: tflite-runtime 2.14's preserve_all_tensors reads back reused
# buffers). "autocomplete" is the lecture's 10-word stacked LSTM (one-hot letters in).
BIT_EXACT = [
    ("lstm", "int8-io", "tflite_runtime", BIT_EXACT_STEPS, False),
    ("lstm", "int8-io", "ai_edge_litert", BIT_EXACT_STEPS, True),
    ("lstm", "int16x8", "tflite_runtime", BIT_EXACT_STEPS, False),
    ("lstm", "int16x8", "ai_edge_litert", BIT_EXACT_STEPS, True),
    ("gru", "int8-io", "tflite_runtime", 2_000, False),
    ("rnn", "int16x8", "ai_edge_litert", 2_000, True),
    ("autocomplete", "int8-io", "tflite_runtime", BIT_EXACT_STEPS, False),
    ("autocomplete", "int16x8", "ai_edge_litert", BIT_EXACT_STEPS, True),
]

COMPARE = """
import json
from firmware_sim.parity import compare
print(json.dumps(compare(BUNDLE, VARIANT, BACKEND, STEPS, RESOLVER, internal=INTERNAL)))
"""


@pytest.fixture(scope="module")
def toy_autocomplete_bundle(tmp_path_factory) -> Path:
    """The lecture's ten words on a 2-layer LSTM, with the integer variants the firmware runs."""
    from test_autocomplete import TOY_TRAIN, train_and_convert
    from train.words import load_words

    _, bundle, _ = train_and_convert(tmp_path_factory.mktemp("fw-toy"), "lecture4-lstm",
                                     load_words(word_set="lecture4"), **{**TOY_TRAIN, "variants": ("int8-io", "int16x8")})
    return bundle


def compare_isolated(bundle: Path, variant: str, backend: str, steps: int, resolver: str = "reference",
                     internal: bool = False) -> dict:
    code = COMPARE.replace("BUNDLE", repr(str(bundle))).replace("VARIANT", repr(variant)).replace(
        "BACKEND", repr(backend)).replace("STEPS", str(steps)).replace("RESOLVER", repr(resolver)).replace(
        "INTERNAL", str(internal))
    done = run_isolated(code, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("cell,variant,backend,steps,internal", BIT_EXACT,
                         ids=[f"{c}-{v}-{b}-{s}" for c, v, b, s, _ in BIT_EXACT])
def test_integer_kernels_are_bit_exact_with_the_reference_interpreter(request, cell, variant, backend,
                                                                      steps, internal):
    bundle = (request.getfixturevalue("toy_autocomplete_bundle") if cell == "autocomplete"
              else request.getfixturevalue("tiny_bundles")[cell][1])
    check_bit_exact(bundle, variant, backend, steps, internal)


# The fast tier's share: the committed bundles, fewer steps (the full tier runs up to 10,000 on fresh ones).
FIXTURE_BIT_EXACT = [  # lstm/gru int8-io and int16x8 are core graphs (delta and level in, correction out)
    ("lstm", "int8-io", "tflite_runtime", 500, False),
    ("lstm", "int8-io", "ai_edge_litert", 500, True),
    ("lstm", "int16x8", "tflite_runtime", 500, False),  # its bias-less 16x8 matmul: tflite-2.14's int32 path
    ("lstm", "int16x8", "ai_edge_litert", 500, True),
    ("gru", "int16x8", "ai_edge_litert", 500, True),
    ("autocomplete", "int16x8", "ai_edge_litert", 500, True),
]


@pytest.mark.parametrize("cell,variant,backend,steps,internal", FIXTURE_BIT_EXACT,
                         ids=[f"{c}-{v}-{b}-{s}" for c, v, b, s, _ in FIXTURE_BIT_EXACT])
def test_integer_kernels_are_bit_exact_on_the_committed_bundles(fixture_bundles, cell, variant, backend, steps,
                                                                internal):
    check_bit_exact(fixture_bundles[cell][1], variant, backend, steps, internal)


def check_bit_exact(bundle: Path, variant: str, backend: str, steps: int, internal: bool) -> None:
    result = compare_isolated(bundle, variant, backend, steps, internal=internal)
    assert result["steps"] == steps
    assert result["identical"], result  # outputs and every state tensor, byte for byte, every step
    assert all(v == 0 for v in result["max_lsb"].values()), result
    if internal:
        assert result["internal_tensor_checks"] > steps * 10 and result["internal_tensor_differences"] == 0, result


# ---- fixed point against exact integer definitions (Python big ints) ----

def _srdhm_exact(a: int, b: int) -> int:
    product = a * b
    nudge = (1 << 30) if product >= 0 else 1 - (1 << 30)
    total = product + nudge
    return int(total / (1 << 31)) if abs(total) < (1 << 52) else (abs(total) >> 31) * (1 if total >= 0 else -1)


def _rdbpot_exact(x: int, e: int) -> int:
    """Round x / 2^e to nearest, ties away from zero."""
    if e == 0:
        return x
    q, r = divmod(abs(x), 1 << e)
    q += r * 2 >= (1 << e)
    return q if x >= 0 else -q


def test_fixed_point_helpers_match_their_exact_definitions():
    rng = np.random.default_rng(0)
    a = rng.integers(-(1 << 31), 1 << 31, 5000)
    b = int(rng.integers(1 << 30, (1 << 31) - 1))
    expected = np.array([_srdhm_exact(int(v), b) for v in a])
    assert np.array_equal(saturating_rounding_doubling_high_mul(a, b), expected)
    x = np.concatenate([rng.integers(-(1 << 20), 1 << 20, 3000), [-12, -10, -6, 6, 10, 12]])  # ties included
    for e in (1, 2, 5, 13):
        assert np.array_equal(rounding_divide_by_pot(x, e), [_rdbpot_exact(int(v), e) for v in x]), e
    # ground truth: multiplier 0.5 is 2^30 at shift 0; 0.75 * 8 = 6 exactly
    assert quantize_multiplier(0.5) == (1 << 30, 0)
    m, s = quantize_multiplier(6.0)
    assert int(multiply_by_quantized_multiplier(np.array([100]), m, s)[0]) == 600
    m, s = quantize_multiplier(0.1)
    assert multiply_by_quantized_multiplier(np.array([15, -15, 25]), m, s).tolist() == [2, -2, 3]  # 1.5 -> 2, 2.5 -> 3


def test_an_op_without_a_kernel_is_refused_by_name(fixture_bundles):
    graph = read_graph((fixture_bundles["lstm"][1] / "model.int8-io.tflite").read_bytes())
    op = graph.operators[0]
    op.op = "BATCH_MATMUL"
    with pytest.raises(GraphError, match=r"op #0 BATCH_MATMUL .* has no integer kernel"):
        prepare(op, graph)
    float_graph = read_graph((fixture_bundles["lstm"][1] / "model.float32.tflite").read_bytes())
    fc = next(o for o in float_graph.operators if o.op == "FULLY_CONNECTED")
    with pytest.raises(GraphError, match="integer-only graphs"):
        prepare(fc, float_graph)


# ---- memory ----

def test_the_arena_plan_never_overlaps_two_live_tensors_and_beats_one_buffer_each(fixture_bundles):
    for cell in ("lstm", "gru"):
        graph = read_graph((fixture_bundles[cell][1] / "model.int16x8.tflite").read_bytes())
        buffers = lifetimes(graph)
        arena = greedy_plan(buffers)
        for i, a in enumerate(buffers):
            for b in buffers[i + 1:]:
                live_together = a.first <= b.last and b.first <= a.last
                if live_together:
                    assert a.offset + a.size <= b.offset or b.offset + b.size <= a.offset, (cell, a, b)
        assert arena < sum(b.size for b in buffers)
        assert arena >= max(b.size for b in buffers)


@pytest.fixture(scope="module")
def too_big_bundle(tmp_path_factory) -> Path:
    """An untrained LSTM with hidden 512 as an int8-io bundle: 4*512*512 int8 recurrent weights
    alone are 1 MiB, the Cortex-M4 profile's whole flash."""
    from convert.bundle import write_files_atomically
    from convert.quantize import VARIANTS, convert_variant
    from convert.tf_step import StepGraph, save_step_model
    from edge_runtime.manifest import SCHEMA_VERSION
    from train.models import Forecaster, ModelConfig, Scales
    import hashlib

    config = ModelConfig(cell="lstm", hidden=512, layers=1, input_size=2, target=(0,), features=("level", "delta"))
    norm = {"mean": [20.0, 5.0], "std": [1.0, 4.0], "delta_std": [0.05, 0.1]}
    model = Forecaster(config, Scales.from_normalization(norm, config.target))
    weights = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    rng = np.random.default_rng(0)
    calibration = [{"x": (np.asarray(norm["mean"]) + rng.normal(size=(1, 2))).astype(np.float32),
                    **{n: rng.uniform(-1, 1, s).astype(np.float32) for n, s in config.state_shapes(1).items()}}
                   for _ in range(20)]
    spec = next(v for v in VARIANTS if v.name == "int8-io")
    with tempfile.TemporaryDirectory() as tmp:
        saved = save_step_model(StepGraph(weights, config, norm), str(Path(tmp) / "sm"))
        data = convert_variant(saved, spec, calibration)
    manifest = {
        "schema_version": SCHEMA_VERSION, "name": "lstm512", "task": "forecast", "cell": "lstm", "layers": 1,
        "hidden": 512, "io": {"input": {"name": "x", "shape": [1, 2]}, "output": {"name": "y", "shape": [1, 1]}},
        "state": [{"name": n, "shape": list(s)} for n, s in config.state_shapes(1).items()],
        "channels": ["temp", "humidity"], "target": [0], "normalization": norm, "residual_std": [0.1],
        "variants": [{"name": "int8-io", "file": "model.int8-io.tflite", "dtype": "int8",
                      "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}]}
    out = tmp_path_factory.mktemp("big") / "lstm512"
    write_files_atomically(out, {"model.int8-io.tflite": data, "manifest.json": json.dumps(manifest).encode()})
    return out


@pytest.mark.slow
def test_a_model_too_big_for_the_cortex_m4_is_reported_with_the_overflow_in_bytes(too_big_bundle, tmp_path):
    from firmware_sim.device_model import DeviceModel

    model = DeviceModel.load(str(too_big_bundle), "int8-io")
    m4 = load_profile("cortex-m4")
    report = memory_report(model.graph, m4, model.state_inputs)
    overflow = model.graph.model_bytes + m4.runtime_flash_bytes + report.snapshot_flash_bytes - m4.flash_bytes
    assert overflow > 0 and not report.fits
    with pytest.raises(DoesNotFit, match=rf"flash: needs .* over by {overflow:,} bytes .*largest constants: "
                                         r"\S+ \(1,048,576 B\)"):
        check_fits(report)
    assert memory_report(model.graph, load_profile("cortex-m7"), model.state_inputs).fits  # 2 MB flash holds it
    done = run_cli("firmware_sim", "run", str(too_big_bundle), "--device", "cortex-m4", "--out", str(tmp_path))
    assert done.returncode == 3, done.stderr
    assert f"over by {overflow:,} bytes" in done.stdout
    written = json.loads((tmp_path / "sim-lstm512-int8-io-cortex-m4.json").read_text())
    assert written["memory"]["fits"] is False and written["memory"]["flash_used"] - m4.flash_bytes == overflow


# ---- time ----

def test_a_rate_above_the_sustainable_rate_misses_deadlines_and_one_below_does_not(fixture_bundles):
    graph = read_graph((fixture_bundles["lstm"][1] / "model.int8-io.tflite").read_bytes())
    for device in ("cortex-m4", "esp32-s3"):
        cost = step_cost(graph, load_profile(device))
        above = schedule(cost, 1.2 * cost.max_rate_hz, 5000, seed=1)
        below = schedule(cost, 0.8 * cost.max_rate_hz, 5000, seed=1)
        assert above.misses > 0 and below.misses == 0, device
        assert 0.6 < below.load < 0.85  # ~0.8 of the period busy, within the jitter
        assert above.load > 0.99  # saturated: the backlog keeps the CPU busy


def test_every_profile_cites_a_source_for_every_figure():
    assert {"cortex-m4", "cortex-m7", "esp32-s3", "pi-zero-2w", "pi-4"} <= set(available())
    for name in available():
        p = load_profile(name)
        assert all(len(p.sources[k]) > 10 for k in p.cycles), name


# ---- sensor faults and a watchdog reset, through the CLI ----

@pytest.mark.slow
def test_every_spike_and_stuck_run_is_flagged_and_a_reset_restores_the_last_snapshot(tiny_bundles, tmp_path):
    bundle = tiny_bundles["lstm"][1]
    done = run_cli("firmware_sim", "run", str(bundle), "--device", "cortex-m4", "--rate", "50", "--seconds", "60",
                   "--faults", "spike,stuck", "--reset-at", "31.3", "--out", str(tmp_path), timeout=600)
    assert done.returncode == 0, done.stderr
    assert "fits: YES" in done.stdout and "ESTIMATES" in done.stdout
    stem = tmp_path / f"sim-{bundle.name}-int8-io-cortex-m4"
    report = json.loads(stem.with_suffix(".json").read_text())
    assert stem.with_suffix(".png").stat().st_size > 10_000
    detections = report["faults"]["detections"]
    assert {d["kind"] for d in detections} == {"spike", "stuck"} and len(detections) >= 6
    for d in detections:
        # stated delays: a spike on the tick it happens, a stuck channel within STUCK_RUN ticks
        limit = 0 if d["kind"] == "spike" else firmware.STUCK_RUN
        assert d["flagged"] and d["delay_ticks"] <= limit, d
    assert report["faults"]["false_flags"] == 0
    assert report["timing"]["deadline_misses"] == 0 and report["timing"]["estimate"] is True
    reset = report["reset"]
    assert reset["reset_at"] == round(31.3 * 50)
    # the last 1-second snapshot before tick 1565 is tick 1550, unless a fault kept that tick out of the model
    assert reset["restored_snapshot_tick"] % 50 == 0 and 15 <= reset["stale_ticks"] <= 15 + 50
    assert reset["boot_ticks"] == 1  # 20 ms boot at 50 Hz


def test_firmware_sim_imports_without_torch_or_tensorflow():
    done = run_isolated("""
        import firmware_sim.cli, firmware_sim.simulate, firmware_sim.report, firmware_sim.parity
        from firmware_sim.profiles import available
        print(len(available()))
    """)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.strip()) >= 5
