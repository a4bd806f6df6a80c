"""The core graph of the integer variants (issue 13): change and level in, correction out, persistence
outside; the graph kind in the manifest; the deployable rule; the firmware's integer outer step.

Fast tests use the committed fixture bundles (their int8-io and int16x8 are core graphs);
slow ones train on a drifting CSV log and on a 1-channel stream, convert, and check accuracy
and bit-exactness over 10,000 steps under both runtimes.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

import edge_runtime
from conftest import IN_PROCESS_BACKEND, copy_bundle, edit_manifest, manifest_of, run_cli, run_isolated
from edge_runtime import BundleError

INT8_BUDGET = 1.2  # the issue's budget: int8 / int8-io within 1.2x float32's test MSE
# firmware (int32 counts, fixed-point feature multipliers) vs Session (float64 features): a feature
# rounds differently by one LSB now and then, which moves a forecast by a few hundredths of a
# typical change (measured: 0.024 at most on 3,000 steps of the tiny LSTM; 0.026 before the state carry requantized); the bound leaves room.
FIRMWARE_VS_SESSION = 0.1  # typical one-step changes (delta_std)
# The same with the Session's own features (float64 outer step), so only the kernels (reference vs
# the interpreter's optimized ones) and the state carry differ. Measured on 3,000 steps of the tiny
# LSTM int8-io, whose four states are quantized differently in and out: copying the output bytes
# into the input, max 0.0080 / mean 0.0017 typical changes; requantizing as the Session does, max
# 0.0052 / mean 0.00035. The bounds sit between the two.
CARRY_VS_SESSION_MAX, CARRY_VS_SESSION_MEAN = 0.0065, 0.0008


def variant_entry(manifest: dict, name: str) -> dict:
    return next(v for v in manifest["variants"] if v["name"] == name)


def test_integer_variants_are_core_graphs_and_float_ones_raw(fixture_bundles):
    manifest = manifest_of(fixture_bundles["lstm"][1])
    assert {v["name"]: v["graph"] for v in manifest["variants"]} == {
        "float32": "raw", "int16x8": "core", "int8-io": "core"}
    assert manifest["deployable_rule"] == {"max_mse_ratio": 1.2, "below_persistence": True, "drift_limit": 1.5}
    autocomplete = manifest_of(fixture_bundles["autocomplete"][1])  # no core for autocomplete
    assert {v["graph"] for v in autocomplete["variants"]} == {"raw"}


def test_a_bundle_without_the_graph_field_reads_as_raw_and_an_unknown_kind_is_refused(fixture_bundles, tmp_path):
    bundle = copy_bundle(fixture_bundles, tmp_path)
    edit_manifest(bundle, lambda m: variant_entry(m, "float32").pop("graph"))
    model = edge_runtime.load(bundle, variant="float32", backend=IN_PROCESS_BACKEND)
    assert not model.binding.core and model.session().step([20.0, 5.0]).shape == (1,)
    edit_manifest(bundle, lambda m: variant_entry(m, "int8-io").update(graph="folded"))
    with pytest.raises(BundleError, match=r"variant 'int8-io' has unknown graph 'folded' \(known: raw, core\)"):
        edge_runtime.load(bundle, variant="float32", backend=IN_PROCESS_BACKEND)


@pytest.mark.parametrize("scales", [[-1.0], "wide", None, [float("nan")]])
def test_malformed_cell_scales_are_refused_with_one_line(fixture_bundles, tmp_path, scales):
    bundle = copy_bundle(fixture_bundles, tmp_path)
    width = len(variant_entry(json.loads((bundle / "manifest.json").read_text()), "int8-io")["cell_scales"]["c0"])
    value = scales * width if isinstance(scales, list) else scales
    edit_manifest(bundle, lambda m: variant_entry(m, "int8-io")["cell_scales"].update(c0=value))
    with pytest.raises(BundleError, match=rf"variant int8-io: cell_scales\['c0'\] must be {width} finite "
                                          r"positive numbers$"):
        edge_runtime.load(bundle, variant="int8-io", backend=IN_PROCESS_BACKEND)


def test_a_core_variant_declared_raw_is_refused_by_its_signature(fixture_bundles, tmp_path):
    bundle = copy_bundle(fixture_bundles, tmp_path)
    edit_manifest(bundle, lambda m: variant_entry(m, "int8-io").update(graph="raw"))
    with pytest.raises(BundleError, match=r"signature has no input 'x' \(it has c0, c1, delta, h0, h1, level\)"):
        edge_runtime.load(bundle, variant="int8-io", backend=IN_PROCESS_BACKEND)


def test_the_named_state_is_the_same_for_every_variant_and_restores_exactly(fixture_bundles):
    bundle = fixture_bundles["lstm"][1]
    rows = np.loadtxt(fixture_bundles["lstm"][0] / "test.csv", delimiter=",", skiprows=1)[:200, 1:]  # (200, 2)
    shapes, states = {}, {}
    for variant in ("float32", "int8-io", "int16x8"):
        session = edge_runtime.load(bundle, variant=variant, backend=IN_PROCESS_BACKEND).session()
        for row in rows[:100]:
            session.step(row)
        shapes[variant] = {name: value.shape for name, value in session.state.items()}
        # x_prev is the last reading, normalized, whichever side of the model holds it
        norm = session.model.manifest.normalization
        expected = (rows[99] - np.asarray(norm["mean"])) / np.asarray(norm["std"])
        np.testing.assert_allclose(session.get_state("x_prev")[0], expected, atol=1e-5)
        snapshot = {name: session.get_state(name) for name in session.state}
        states[variant] = snapshot
        ahead = [session.step(row) for row in rows[100:]]
        session.reset()
        for name, value in snapshot.items():
            session.set_state(name, value)
        np.testing.assert_array_equal(ahead, [session.step(row) for row in rows[100:]])
    assert shapes["int8-io"] == shapes["float32"] == shapes["int16x8"]
    # the same units too: the integer core holds its LSTM cell state per unit in its own scale
    # (cell_scales), and the session hands out c in the trained model's units, as float32's
    cell = states["float32"]["c0"]  # (1, H)
    assert "cell_scales" in edge_runtime.load(bundle, variant="int8-io", backend=IN_PROCESS_BACKEND).variant.raw
    for variant in ("int8-io", "int16x8"):
        off = np.max(np.abs(states[variant]["c0"] - cell)) / np.max(np.abs(cell))
        assert off < 0.1, f"{variant}'s c0 is {off:.2f} of float32's range away (rescaled wrongly?)"


def worse_than_persistence(manifest: dict) -> None:
    """The int8-io's recorded test MSE pushed above persistence's, nothing else changed (the manifest
    holds the metrics and is not hashed: the reader must not trust convert's verdict alone)."""
    metrics = variant_entry(manifest, "int8-io")["metrics"]
    metrics["test_mse"] = 1.5 * manifest["baselines"]["persistence_mse"]
    metrics["mse_ratio"] = 1.01  # inside the MSE budget: persistence alone must rule it out


def test_a_variant_worse_than_persistence_is_not_deployable_and_never_picked(fixture_bundles, tmp_path):
    bundle = copy_bundle(fixture_bundles, tmp_path)
    before = edge_runtime.load(bundle, backend=IN_PROCESS_BACKEND, max_mse_ratio=1.2)
    assert before.variant.name == "int8-io"  # the smallest, and deployable as converted
    edit_manifest(bundle, worse_than_persistence)
    for budget in ("1.2", "1e9"):
        done = run_cli("edge_runtime", "run", str(bundle), "--input", "-", "--max-mse-ratio", budget,
                       stdin="i,indoor,outdoor\n0,20.5,3.0\n1,20.6,3.1\n")
        assert done.returncode == 0, done.stderr
        model = edge_runtime.load(bundle, backend=IN_PROCESS_BACKEND, max_mse_ratio=float(budget))
        assert model.variant.name != "int8-io"
    info = run_cli("edge_runtime", "info", str(bundle))
    assert "int8-io" in info.stdout and "NOT deployable (test MSE 1.5x persistence's (not below it))" in info.stdout


def test_firmware_sim_and_deploy_refuse_a_variant_that_is_not_deployable(fixture_bundles, tmp_path):
    from deploy.release import ReleaseError, choose_bundle

    bundle = copy_bundle(fixture_bundles, tmp_path)
    edit_manifest(bundle, worse_than_persistence)
    for command in (["budget"], ["run", "--out", str(tmp_path)], ["sweep", "--out", str(tmp_path)]):
        done = run_cli("firmware_sim", command[0], str(bundle), "--variant", "int8-io", *command[1:])
        if command[0] == "sweep":  # a table row says why, the sweep goes on
            assert "skipped:" in done.stdout and "is not deployable: test MSE 1.5x persistence's" in done.stdout
            continue
        assert done.returncode == 2 and "variant 'int8-io' is not deployable: test MSE 1.5x persistence's" in done.stderr
    allowed = run_cli("firmware_sim", "budget", str(bundle), "--variant", "int8-io", "--allow-not-deployable")
    assert allowed.returncode == 0 and "cortex-m4" in allowed.stdout
    with pytest.raises(ReleaseError, match=r"variant 'int8-io' is not deployable: test MSE 1.5x persistence's"):
        choose_bundle(bundle, "int8-io")
    assert choose_bundle(bundle, "int8-io", allow_not_deployable=True).variant == "int8-io"
    assert choose_bundle(bundle, "float32").variant == "float32"


def test_the_firmware_outer_step_forecasts_what_the_session_does(fixture_bundles):
    """firmware_sim's int8-io step (sensor counts, fixed-point multipliers, int32 persistence) against
    edge_runtime's Session (float64 features and persistence) on the same interpreter-free stream."""
    from firmware_sim.device_model import DeviceModel

    bundle = fixture_bundles["lstm"][1]
    device = DeviceModel.load(str(bundle), "int8-io")
    assert device.outer is not None  # int8 feature tensors: the integer outer step
    gap = firmware_vs_session_gap(device, bundle)
    assert gap.max() <= FIRMWARE_VS_SESSION, gap.max()


def firmware_vs_session_gap(device, bundle) -> np.ndarray:
    """|firmware - Session| forecasts over 3,000 steps of input_stream (jumps past the calibrated range),
    (T, O) in typical one-step changes."""
    from firmware_sim.parity import input_stream

    stream = input_stream(device, 3000)  # (3000, C)
    session = edge_runtime.load(bundle, variant="int8-io", backend=IN_PROCESS_BACKEND).session()
    firmware = np.array([device.step(row) for row in stream])
    runtime = np.array([session.step(row) for row in stream])
    norm, target = device.manifest.normalization, list(device.manifest.target)
    return np.abs(firmware - runtime) / np.asarray(norm["delta_std"])[target]


def test_firmware_sim_carries_state_from_output_to_input_as_the_session_does(fixture_bundles):
    """A state's output tensor and input tensor are quantized differently (calibrated separately): the
    firmware's next input must be the Session's round trip (decode with the output's quantization,
    encode with the input's, edge_runtime's Codec), not the output's bytes reread under the input's scale."""
    from firmware_sim.device_model import DeviceModel
    from firmware_sim.parity import input_stream

    bundle = fixture_bundles["lstm"][1]
    device = DeviceModel.load(str(bundle), "int8-io")
    codecs = edge_runtime.load(bundle, variant="int8-io", backend=IN_PROCESS_BACKEND).codecs
    g, runner = device.graph, device.runner
    differing = [n for n in runner.state_names
                 if codecs[n].describe() != codecs[f"{n}:out"].describe()]
    assert set(differing) == {"h0", "h1", "c0", "c1"}, differing  # the fixture's int8-io: all four
    moved = 0
    for row in input_stream(device, 200):
        device.step(row)
        for n in runner.state_names:
            out = runner.executor.tensor(g.signature_outputs[n])
            expected = codecs[n].encode(codecs[f"{n}:out"].decode(out))  # the Session's float state, re-encoded
            assert np.array_equal(runner.state[n], expected), (n, runner.state[n], expected)
            moved += int(np.count_nonzero(out != expected))
    assert moved > 0  # a plain copy would have carried different codes


def test_the_firmware_forecasts_what_the_session_does_given_the_same_features(fixture_bundles):
    """firmware_sim's kernels and state carry against the Session on the Session's own features."""
    from firmware_sim.device_model import DeviceModel

    bundle = fixture_bundles["lstm"][1]
    device = DeviceModel.load(str(bundle), "int8-io")
    device.outer = None  # the float64 outer step from the shared StepBinding, as a float-I/O core uses
    gap = firmware_vs_session_gap(device, bundle)
    assert gap.max() <= CARRY_VS_SESSION_MAX and gap.mean() <= CARRY_VS_SESSION_MEAN, (gap.max(), gap.mean())


# ---- slow: real training on a drifting log, 10,000 bit-exact steps ----

def drifting_log(path: Path, n: int = 6000, seed: int = 3) -> Path:
    """A barometer-style log: a 1013 hPa level that wanders past its training range (it rises into
    the test split), a daily cycle, and a temperature that follows it; sensor noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    drift = np.cumsum(rng.normal(0, 0.05, n)) + 0.004 * t
    pressure = 1013.0 + drift + 1.5 * np.sin(2 * np.pi * t / 288) + rng.normal(0, 0.05, n)
    temperature = 15.0 + 0.5 * drift + 3 * np.sin(2 * np.pi * (t - 40) / 288) + rng.normal(0, 0.1, n)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["minute", "pressure", "temperature"])
        for i in range(n):
            writer.writerow([i, f"{pressure[i]:.3f}", f"{temperature[i]:.3f}"])
    return path


def train_and_convert(root: Path, name: str, *train_args: str) -> Path:
    done = run_cli("train", *train_args, "--out", str(root / "runs"), "--name", name, "--quiet", timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    done = run_cli("convert", str(root / "runs" / name), "--out", str(root / "artifacts"), timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "artifacts" / name


@pytest.fixture(scope="module")
def drifting_bundle(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("drift")
    log = drifting_log(root / "barometer.csv")
    values = np.loadtxt(log, delimiter=",", skiprows=1)[:, 1]
    assert values[-600:].mean() > values[:4200].max(), "the test split must leave the training range"
    return train_and_convert(root, "barometer", "--csv", str(log), "--hidden", "16", "--epochs", "15",
                             "--patience", "5")


@pytest.fixture(scope="module")
def one_channel_bundle(tmp_path_factory) -> Path:
    return train_and_convert(tmp_path_factory.mktemp("one"), "walk", "--scenario", "random_walk", "--samples",
                             "6000", "--hidden", "16", "--epochs", "6")


@pytest.mark.slow
def test_a_drifting_csv_log_gives_an_int8io_variant_within_budget(drifting_bundle):
    manifest = manifest_of(drifting_bundle)
    variants = {v["name"]: v for v in manifest["variants"]}
    for name in ("int8", "int8-io", "int16x8"):
        assert variants[name]["graph"] == "core"
        assert variants[name]["metrics"]["mse_ratio"] <= INT8_BUDGET, (name, variants[name]["metrics"])
        assert all(why is None for why in variants[name]["compatibility"].values())  # both runtimes, 2 channels
    float32 = variants["float32"]["metrics"]
    if float32["mse_vs_persistence"] < 1.0:  # the float model beats persistence: so must its int8-io form
        assert variants["int8-io"]["metrics"]["deployable"], variants["int8-io"]["metrics"]


BIT_EXACT = """
import json
from firmware_sim.parity import compare
print(json.dumps(compare(BUNDLE, "int8-io", BACKEND, 10000)))
"""


@pytest.mark.slow
@pytest.mark.parametrize("which", ["one_channel_bundle", "drifting_bundle"])
@pytest.mark.parametrize("backend", ["tflite_runtime", "ai_edge_litert"])
def test_firmware_sim_is_bit_exact_on_the_core_int8io_graph(request, which, backend):
    """10,000 steps closed loop: the correction and every state tensor, byte for byte, against each
    runtime's reference kernels (1 channel and 2 channels)."""
    bundle = request.getfixturevalue(which)
    done = run_isolated(BIT_EXACT.replace("BUNDLE", repr(str(bundle))).replace("BACKEND", repr(backend)), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["steps"] == 10_000 and result["identical"], result
    assert set(result["max_lsb"]) >= {"correction", "h0", "c0"} and not any(result["max_lsb"].values()), result


@pytest.mark.slow
def test_an_lstm64_int8io_is_at_most_35_percent_of_float32_and_fits_the_cortex_m4():
    """Bytes do not depend on training: an untrained LSTM-64 through the converter's settings."""
    import tempfile

    from convert.core_step import CoreStepGraph, cell_state_scales, rescale_cell_states
    from convert.quantize import VARIANTS, convert_variant
    from convert.tf_step import StepGraph, save_step_model
    from firmware_sim.graph import read_graph
    from firmware_sim.memory import memory_report
    from firmware_sim.profiles import load_profile
    from train.models import Forecaster, ModelConfig, Scales

    config = ModelConfig(cell="lstm", hidden=64, input_size=1, target=(0,))
    norm = {"mean": [20.0], "std": [1.0], "delta_std": [0.05]}
    weights = {k: v.detach().numpy() for k, v in
               Forecaster(config, Scales.from_normalization(norm, config.target)).state_dict().items()}
    rng = np.random.default_rng(0)
    calibration = [{"delta": rng.normal(size=(1, 1)).astype(np.float32),
                    "level": rng.normal(size=(1, 1)).astype(np.float32),
                    **{n: rng.uniform(-1, 1, (1, 64)).astype(np.float32) for n in ("h0", "c0")}} for _ in range(50)]
    spec = {v.name: v for v in VARIANTS}
    with tempfile.TemporaryDirectory() as tmp:
        raw = save_step_model(StepGraph(weights, config, norm), str(Path(tmp) / "raw"))
        scales = cell_state_scales(calibration, config)  # as the converter does: the cell state per unit
        core = save_step_model(CoreStepGraph(weights, config, cell_scales=scales), str(Path(tmp) / "core"))
        float32 = convert_variant(raw, spec["float32"], [])
        int8_io = convert_variant(core, spec["int8-io"], rescale_cell_states(calibration, scales), core=True)
    assert len(int8_io) <= 0.35 * len(float32), (len(int8_io), len(float32))  # measured: 33.0%
    graph = read_graph(int8_io)
    state = [graph.signature_inputs[n] for n in ("h0", "c0")]
    assert memory_report(graph, load_profile("cortex-m4"), state).fits
