"""AR(k) as a step model (train/ar.py, convert/ar_step.py): a least-squares fit exported as a bundle with
named state (x_prev and the lag register `lags`), run by edge_runtime's Session unchanged and by
firmware_sim bit for bit.

Tolerances, written down:
- float32 bundle vs the numpy AR prediction (train/baselines.py's ARModel, float64), 1e-4 in normalized
  units over >= 2,000 steps: the same tolerance as torch vs TFLite (tests/test_parity.py); the AR graph is
  one matmul deep, measured 1.1e-6 to 2.4e-6.
- integer variants vs the numpy AR prediction, in typical one-step changes (delta_std): int8 / int8-io
  within INT8_TYPICAL_CHANGES, int16x8 within INT16_TYPICAL_CHANGES (measured below, see the constants);
  test MSE within INT8_MSE_RATIO / INT16_MSE_RATIO of float32's (as recorded by convert).
- firmware_sim vs each runtime's reference kernels: 0 differing bytes (correction and lags), both runtimes.
- snapshot and restore mid-stream: identical outputs (exact equality), every variant.

The fast tier checks the config's refusals (no torch); the rest fits and converts (slow).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import IN_PROCESS_BACKEND, manifest_of, run_cli, run_isolated

STEPS = 2000
FLOAT_TOLERANCE = 1e-4  # normalized units
# Measured on the four bundles below (2,652-2,656 steps each): largest |error| 0.014-0.045 typical changes
# for int8 / int8-io (an int8 correction's step is ~0.035 typical changes, its inputs' ~0.04: about one
# LSB), 0.00006-0.0097 for int16x8 (its weights are int8 too, so the weights' rounding dominates);
# test MSE over float32's 1.0001-1.0016 (int8) and 0.9999-1.0002 (int16x8).
INT8_TYPICAL_CHANGES = 0.1
INT16_TYPICAL_CHANGES = 0.02
INT8_MSE_RATIO = 1.01
INT16_MSE_RATIO = 1.002
BIT_EXACT_STEPS = 10_000


# ---- fast: the config and the CLI refuse what an AR cannot be ----

def test_the_ar_config_names_its_state_and_refuses_what_it_cannot_be():
    from train.config import ModelConfig

    two = dict(cell="ar", hidden=1, layers=1, input_size=2, target=(0,))
    level = ModelConfig(**two, ar_order=8)  # level + change: AR(8) on the levels reads 7 changes
    assert level.ar_changes == 7 and level.state_shapes() == {"x_prev": (1, 2), "lags": (1, 14)}
    change = ModelConfig(**two, features=("delta",), ar_order=1)  # AR(1) on the changes: x_prev only
    assert change.ar_changes == 1 and change.state_names() == ["x_prev"]
    assert "ar_order" not in ModelConfig().to_dict()  # a recurrent model's config reads as before
    hybrid = ModelConfig(cell="lstm+ar", hidden=8, layers=2, input_size=2, ar_order=4)  # the cell beside an AR(4)
    assert hybrid.recurrent_cell == "lstm" and hybrid.has_ar and level.recurrent_cell is None
    assert hybrid.state_shapes() == {"x_prev": (1, 2), "h0": (1, 8), "h1": (1, 8), "c0": (1, 8), "c1": (1, 8),
                                     "lags": (1, 6)}
    assert ModelConfig.from_dict(hybrid.to_dict()) == hybrid
    assert ModelConfig.from_dict(level.to_dict()) == level
    for bad, message in (({"ar_order": 1}, r"needs --ar-order >= 2 with features level\+delta, got 1"),
                         ({"ar_order": 4, "features": ("level",)}, "features must include delta"),
                         ({"ar_order": 4, "hidden": 32}, "no hidden layer")):
        with pytest.raises(ValueError, match=message):
            ModelConfig(**{**two, **bad})
    with pytest.raises(ValueError, match=r"ar_order is for the ar and \*\+ar cells only, not 'lstm'"):
        ModelConfig(cell="lstm", ar_order=4)


@pytest.mark.slow  # python -m train imports torch (train/trainer.py) before it reads the arguments
@pytest.mark.parametrize("args,message", [
    (["--cell", "ar"], "error: an AR term needs --ar-order >= 2 with features level+delta, got 0"),
    (["--cell", "gru", "--ar-order", "3"], "error: ar_order is for the ar and *+ar cells only, not 'gru'"),
])
def test_the_cli_refuses_a_bad_ar_order_with_one_line(tmp_path, args, message):
    done = run_cli("train", "--scenario", "temperature", "--samples", "2000", *args, "--out", str(tmp_path))
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == message, done.stderr
    assert not any(tmp_path.iterdir())


# ---- slow: real fits, real bundles ----

# name -> (scenario, features, k): AR(8) and AR(3) on the levels of a 2-channel stream (7 and 2 changes
# held), AR(1) and AR(4) on the changes of a random walk (no lags at all, and 4 held)
AR_RUNS = {"temp-ar8": ("temperature", ("level", "delta"), 8), "temp-ar3": ("temperature", ("level", "delta"), 3),
           "walk-ar1": ("random_walk", ("delta",), 1), "walk-ar4": ("random_walk", ("delta",), 4)}


@pytest.fixture(scope="module")
def ar_bundles(tmp_path_factory) -> dict:
    """name -> (run folder, bundle folder), fitted and converted with every variant."""
    from convert.run import convert_run
    from train.config import ModelConfig
    from train.run import train_run
    from train.scenarios import make_stream
    from train.trainer import TrainConfig

    root = tmp_path_factory.mktemp("ar")
    out = {}
    for name, (scenario, features, k) in AR_RUNS.items():
        stream = make_stream(scenario, 8000, seed=1)  # val + test: 2,656 steps of parity stream
        config = ModelConfig(cell="ar", hidden=1, layers=1, input_size=stream.values.shape[1], target=stream.target,
                             features=features, ar_order=k)
        train_run(stream, config, TrainConfig(), root / "runs" / name, progress=False)
        convert_run(root / "runs" / name, root / "artifacts" / name)
        out[name] = root / "runs" / name, root / "artifacts" / name
    return out


def reference(run_dir, raw: np.ndarray) -> tuple[np.ndarray, int]:
    """The numpy AR prediction from train/baselines.py's own code, (T, O) normalized, and the first step
    it is defined the device's way: AR(k) on the levels from the start (its lag buffer is primed with the
    first sample, as the device's); AR(k) on the changes from step k (the baseline primes the changes
    with the first change, the device with 0)."""
    from train.baselines import fit_ar
    from train.checkpoint import load_checkpoint
    from train.config import ModelConfig
    from train.trainer import normalize

    _, info = load_checkpoint(run_dir / "checkpoint.safetensors")
    config, norm = ModelConfig.from_dict(info["model"]), info["normalization"]
    train = normalize(np.load(run_dir / "splits.npz")["train"], norm)
    x = normalize(raw, norm).astype(np.float64)
    target, k = config.target, config.ar_order
    if "level" in config.features:
        return fit_ar(train, target, k).predict(x), 0
    changes = fit_ar(np.diff(train, axis=0), target, k).predict(np.diff(x, axis=0))  # row j forecasts x[j+2]-x[j+1]
    y = np.full((len(x), len(target)), np.nan)
    y[1:] = x[1:, list(target)] + changes
    return y, k


def stream_of(run_dir) -> np.ndarray:
    from convert.parity import parity_stream

    return parity_stream(np.load(run_dir / "splits.npz"))  # validation then test, (T, C) raw


def session_normalized(bundle, variant: str, raw: np.ndarray) -> np.ndarray:
    import edge_runtime
    from edge_runtime.stream import forecast_stream

    model = edge_runtime.load(bundle, variant=variant, backend=IN_PROCESS_BACKEND)
    target = list(model.manifest.target)
    norm = model.manifest.normalization
    return (forecast_stream(model.session(), raw) - np.asarray(norm["mean"])[target]) / np.asarray(norm["std"])[target]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(AR_RUNS))
def test_the_float32_step_bundle_streams_the_numpy_ar_prediction(ar_bundles, name):
    run_dir, bundle = ar_bundles[name]
    raw = stream_of(run_dir)
    assert len(raw) >= STEPS
    expected, start = reference(run_dir, raw)
    got = session_normalized(bundle, "float32", raw)
    error = np.abs(got - expected)[start:]
    assert error.max() <= FLOAT_TOLERANCE, (name, error.max(), int(error.argmax()))
    manifest = manifest_of(bundle)
    assert manifest["cell"] == "ar" and manifest["ar_order"] == AR_RUNS[name][2]
    parity = manifest["variants"][0]["parity"]  # convert's own check, torch vs the TFLite step model
    assert parity["steps"] == STEPS and parity["max_abs_error"] <= FLOAT_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(AR_RUNS))
def test_the_integer_variants_stay_within_their_stated_tolerance(ar_bundles, name):
    run_dir, bundle = ar_bundles[name]
    raw = stream_of(run_dir)
    expected, start = reference(run_dir, raw)
    manifest = manifest_of(bundle)
    norm, target = manifest["normalization"], manifest["target"]
    typical = (np.asarray(norm["delta_std"]) / np.asarray(norm["std"]))[target]  # a typical change, normalized
    variants = {v["name"]: v for v in manifest["variants"]}
    for variant, within, ratio in (("int8", INT8_TYPICAL_CHANGES, INT8_MSE_RATIO),
                                   ("int8-io", INT8_TYPICAL_CHANGES, INT8_MSE_RATIO),
                                   ("int16x8", INT16_TYPICAL_CHANGES, INT16_MSE_RATIO)):
        entry = variants[variant]
        assert entry["graph"] == "core" and all(why is None for why in entry["compatibility"].values())
        assert entry["metrics"]["mse_ratio"] <= ratio and entry["metrics"]["deployable"], (variant, entry["metrics"])
        error = (np.abs(session_normalized(bundle, variant, raw) - expected) / typical)[start:]
        assert error.max() <= within, (name, variant, error.max())


@pytest.mark.slow
def test_the_int8io_core_is_integer_only_and_its_shift_register_keeps_one_scale(ar_bundles):
    from firmware_sim.graph import read_graph

    for name, (_, bundle) in ar_bundles.items():
        graph = read_graph((bundle / "model.int8-io.tflite").read_bytes())
        assert {op.op for op in graph.operators} <= {"FULLY_CONNECTED", "CONCATENATION", "SPLIT", "ADD"}, name
        # the quantizer names each SPLIT output after all of them ("split;split1;..."): k squared bytes
        # (560 KB of an AR(256)'s 587 KB) until convert shortens the names
        fused = [t.name for t in graph.tensors if ";" in t.name]
        assert not fused, (name, fused[:2])
        if "lags" in graph.signature_inputs:  # delta, lags in and lags out: the same scale and zero point
            tensors = [graph.tensors[i] for i in (graph.signature_inputs["delta"], graph.signature_inputs["lags"],
                                                  graph.signature_outputs["lags"])]
            assert len({(float(t.scale[0]), int(t.zero_point[0])) for t in tensors}) == 1, name


@pytest.mark.slow
def test_the_named_state_holds_the_last_samples(ar_bundles):
    """Ground truth: after a stream's rows 0..n-1, x_prev is row n-1 normalized and lags are its last m
    changes in typical changes, newest first (the last k samples for AR(k) on the levels)."""
    import edge_runtime

    run_dir, bundle = ar_bundles["temp-ar8"]
    rows = np.load(run_dir / "splits.npz")["train"][1000:1300]  # (300, 2), inside the calibrated range
    for variant, atol in (("float32", 1e-5), ("int8-io", None)):
        model = edge_runtime.load(bundle, variant=variant, backend=IN_PROCESS_BACKEND)
        session = model.session()
        for row in rows:
            session.step(row)
        norm = model.manifest.normalization
        level = (rows - np.asarray(norm["mean"])) / np.asarray(norm["std"])  # (300, 2)
        changes = np.diff(rows, axis=0) / np.asarray(norm["delta_std"])  # (299, 2) typical changes
        newest_first = changes[::-1][:7].reshape(-1)  # m = 7 changes, each (C,)
        assert session.get_state("lags").shape == (1, 14)
        lsb = float(model.codecs["lags:out"].describe()["scale"]) if variant == "int8-io" else 0.0
        np.testing.assert_allclose(session.get_state("lags")[0], newest_first, atol=atol or lsb / 2 + 1e-6)
        np.testing.assert_allclose(session.get_state("x_prev")[0], level[-1], atol=1e-5)


def assert_snapshot_restores(run_dir, bundle, variant: str, state_names: set[str]) -> None:
    """Step 1,000 samples, snapshot the named state, step on; a fresh stream restored from the snapshot, and the
    same stream reset and restored, give identical forecasts."""
    import edge_runtime

    raw = stream_of(run_dir)[:1500]
    model = edge_runtime.load(bundle, variant=variant, backend=IN_PROCESS_BACKEND)
    session = model.session()
    for row in raw[:1000]:
        session.step(row)
    snapshot = {name: session.get_state(name) for name in session.state}
    assert set(snapshot) == state_names
    ahead = np.array([session.step(row) for row in raw[1000:]])
    fresh = model.session()  # another stream of the same model, restored from the snapshot
    for name, value in snapshot.items():
        fresh.set_state(name, value)
    np.testing.assert_array_equal(ahead, [fresh.step(row) for row in raw[1000:]])
    session.reset()
    for name, value in snapshot.items():
        session.set_state(name, value)
    np.testing.assert_array_equal(ahead, [session.step(row) for row in raw[1000:]])


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["float32", "int8-io", "int16x8"])
def test_a_snapshot_taken_mid_stream_restores_identical_forecasts(ar_bundles, variant):
    assert_snapshot_restores(*ar_bundles["temp-ar8"], variant, {"x_prev", "lags"})


BIT_EXACT = [  # (bundle, variant, runtime, steps, every intermediate tensor too)
    ("temp-ar8", "int8-io", "tflite_runtime", BIT_EXACT_STEPS, False),
    ("temp-ar8", "int8-io", "ai_edge_litert", BIT_EXACT_STEPS, True),
    ("temp-ar8", "int16x8", "tflite_runtime", BIT_EXACT_STEPS, False),
    ("temp-ar8", "int16x8", "ai_edge_litert", BIT_EXACT_STEPS, True),
    ("temp-ar3", "int8-io", "tflite_runtime", 3_000, False),
    ("walk-ar1", "int8-io", "ai_edge_litert", 3_000, True),
    ("walk-ar4", "int8-io", "tflite_runtime", 3_000, False),
    ("walk-ar4", "int8-io", "ai_edge_litert", 3_000, True),
]

COMPARE = """
import json
from firmware_sim.parity import compare
result = compare(BUNDLE, VARIANT, BACKEND, STEPS, internal=INTERNAL)
result.pop("internal_examples")
print(json.dumps(result))
"""


@pytest.mark.slow
@pytest.mark.parametrize("name,variant,backend,steps,internal", BIT_EXACT,
                         ids=[f"{n}-{v}-{b}-{s}" for n, v, b, s, _ in BIT_EXACT])
def test_firmware_sim_is_bit_exact_on_the_ar_step_bundle(ar_bundles, name, variant, backend, steps, internal):
    """Closed loop, each side carrying its own state: the correction and the lags, byte for byte, every step,
    against the runtime's reference kernels (in a process without torch or TensorFlow)."""
    code = (COMPARE.replace("BUNDLE", repr(str(ar_bundles[name][1]))).replace("VARIANT", repr(variant))
            .replace("BACKEND", repr(backend)).replace("STEPS", str(steps)).replace("INTERNAL", str(internal)))
    done = run_isolated(code, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["steps"] == steps and result["identical"] and result["differing_steps"] == 0, result
    assert "correction" in result["max_lsb"] and not any(result["max_lsb"].values()), result
    assert ("lags" in result["max_lsb"]) == (name != "walk-ar1")
    if internal:
        assert result["internal_tensor_checks"] > steps and result["internal_tensor_differences"] == 0, result


@pytest.mark.slow
def test_the_firmware_outer_step_forecasts_what_the_session_does(ar_bundles):
    """firmware_sim's int8-io step (sensor counts, fixed-point features, int32 persistence) against the
    Session (float64 features): within 0.1 typical changes, as for the recurrent cores (test_core_graph.py)."""
    import edge_runtime
    from firmware_sim.device_model import DeviceModel
    from firmware_sim.parity import input_stream

    bundle = ar_bundles["temp-ar8"][1]
    device = DeviceModel.load(str(bundle), "int8-io")
    stream = input_stream(device, 3000)
    session = edge_runtime.load(bundle, variant="int8-io", backend=IN_PROCESS_BACKEND).session()
    firmware = np.array([device.step(row) for row in stream])
    runtime = np.array([session.step(row) for row in stream])
    norm, target = device.manifest.normalization, list(device.manifest.target)
    gap = np.abs(firmware - runtime) / np.asarray(norm["delta_std"])[target]
    assert gap.max() <= 0.1, gap.max()


@pytest.mark.slow
def test_python_m_train_fits_an_ar_and_python_m_convert_bundles_it(tmp_path):
    done = run_cli("train", "--scenario", "random_walk", "--samples", "4000", "--cell", "ar", "--ar-order", "3",
                   "--out", str(tmp_path / "runs"), "--quiet", timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["run"].endswith("random_walk-ar3") and result["parameters"] == 4  # 3 change weights + bias
    done = run_cli("convert", result["run"], "--out", str(tmp_path / "artifacts"), "--variants", "int8-io",
                   timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = manifest_of(tmp_path / "artifacts" / "random_walk-ar3")
    assert [s["name"] for s in manifest["state"]] == ["x_prev", "lags"] and manifest["state"][1]["shape"] == [1, 3]
    assert [v["name"] for v in manifest["variants"]] == ["float32", "int8-io"]


# ---- slow: a recurrent cell with the AR term beside it (LSTNet's linear highway: rnn+ar, gru+ar, lstm+ar) ----

HYBRIDS = {"temp-lstm+ar8": ("temperature", "lstm", ("level", "delta"), 8),
           "walk-gru+ar3": ("random_walk", "gru", ("delta",), 3)}


@pytest.fixture(scope="module")
def hybrid_bundles(tmp_path_factory) -> dict:
    """name -> (run folder, bundle folder): hidden 8, 2 epochs, converted with the firmware variants."""
    from convert.run import convert_run
    from train.config import ModelConfig
    from train.run import train_run
    from train.scenarios import make_stream
    from train.trainer import TrainConfig

    root = tmp_path_factory.mktemp("hybrid")
    out = {}
    for name, (scenario, cell, features, k) in HYBRIDS.items():
        stream = make_stream(scenario, 8000, seed=1)
        config = ModelConfig(cell=f"{cell}+ar", hidden=8, input_size=stream.values.shape[1], target=stream.target,
                             features=features, ar_order=k)
        train_run(stream, config, TrainConfig(epochs=2, lanes=8), root / "runs" / name, progress=False)
        convert_run(root / "runs" / name, root / "artifacts" / name, variants=("int8-io", "int16x8"))
        out[name] = root / "runs" / name, root / "artifacts" / name
    return out


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HYBRIDS))
def test_the_hybrid_streams_what_torch_computes_on_the_whole_sequence(hybrid_bundles, name):
    import edge_runtime
    from convert.parity import streaming_parity
    from train.checkpoint import load_checkpoint
    from train.models import forecaster_from_weights

    run_dir, bundle = hybrid_bundles[name]
    weights, info = load_checkpoint(run_dir / "checkpoint.safetensors")
    model = edge_runtime.load(bundle, backend=IN_PROCESS_BACKEND)
    report = streaming_parity(forecaster_from_weights(weights, info), model, stream_of(run_dir),
                              info["normalization"], STEPS)
    assert report["steps"] == STEPS and report["max_abs_error"] <= FLOAT_TOLERANCE, report
    manifest = manifest_of(bundle)
    cell, k = HYBRIDS[name][1], HYBRIDS[name][3]
    assert manifest["cell"] == f"{cell}+ar" and manifest["ar_order"] == k
    recurrent = ["h0", "c0"] if cell == "lstm" else ["h0"]
    assert [s["name"] for s in manifest["state"]] == ["x_prev", *recurrent, "lags"]
    for variant in manifest["variants"][1:]:  # int8-io, int16x8: within the project's budget, both runtimes
        assert variant["metrics"]["mse_ratio"] <= 1.2 and variant["metrics"]["deployable"], variant["metrics"]
        assert all(why is None for why in variant["compatibility"].values())


@pytest.mark.slow
def test_a_hybrid_with_its_cell_silenced_is_exactly_its_ar_term(hybrid_bundles, tmp_path):
    """Ground truth for the wiring: with the head zeroed the recurrent part adds nothing, so the float32
    bundle must forecast what the numpy AR does with the hybrid's (trained) AR weights."""
    from convert.run import convert_run
    from train.ar import predict_normalized
    from train.checkpoint import load_checkpoint, save_checkpoint
    from train.config import ModelConfig
    from train.trainer import normalize

    run_dir, _ = hybrid_bundles["temp-lstm+ar8"]
    weights, info = load_checkpoint(run_dir / "checkpoint.safetensors")
    weights["head.weight"][:] = 0
    weights["head.bias"][:] = 0
    silenced = tmp_path / "silenced"
    silenced.mkdir()
    save_checkpoint(silenced / "checkpoint.safetensors", weights, info)
    (silenced / "splits.npz").write_bytes((run_dir / "splits.npz").read_bytes())
    convert_run(silenced, tmp_path / "bundle", variants=("float32",))
    raw = stream_of(run_dir)
    expected = predict_normalized(weights, ModelConfig.from_dict(info["model"]), normalize(raw, info["normalization"]))
    assert np.abs(weights["ar.weight_delta"]).max() > 0  # the AR term is really there
    got = session_normalized(tmp_path / "bundle", "float32", raw)
    assert np.abs(got - expected).max() <= FLOAT_TOLERANCE


@pytest.mark.slow
@pytest.mark.parametrize("backend,internal", [("tflite_runtime", False), ("ai_edge_litert", True)])
@pytest.mark.parametrize("name", sorted(HYBRIDS))
def test_firmware_sim_is_bit_exact_on_the_hybrid(hybrid_bundles, name, backend, internal):
    code = (COMPARE.replace("BUNDLE", repr(str(hybrid_bundles[name][1]))).replace("VARIANT", repr("int8-io"))
            .replace("BACKEND", repr(backend)).replace("STEPS", "3000").replace("INTERNAL", str(internal)))
    done = run_isolated(code, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["identical"] and not any(result["max_lsb"].values()), result
    assert {"correction", "h0", "lags"} <= set(result["max_lsb"])
    if internal:
        assert result["internal_tensor_differences"] == 0 < result["internal_tensor_checks"], result


# firmware_sim against the Session on a hybrid's int8-io, both given the Session's features (float64 outer
# step), so only the kernels and the state carry differ; 3,000 steps, typical changes. h0 and c0 are quantized
# differently in and out (lags share one scale). Measured copying the output bytes into the input: mean 0.066
# (lstm+ar8) / 0.014 (gru+ar3), max 0.14 / 0.038; requantizing as the Session does: mean 0.00037 / 0.00024,
# max 0.035 / 0.038 (the optimized kernels against the reference ones, where the stream jumps past its range).
HYBRID_CARRY_MEAN, HYBRID_CARRY_MAX = 0.002, 0.1


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(HYBRIDS))
def test_the_hybrid_firmware_carries_state_as_the_session_does(hybrid_bundles, name):
    import edge_runtime
    from firmware_sim.device_model import DeviceModel
    from firmware_sim.parity import input_stream

    bundle = hybrid_bundles[name][1]
    device = DeviceModel.load(str(bundle), "int8-io")
    g = device.graph
    quantization = {n: [(g.tensors[side[n]].scale[0], g.tensors[side[n]].zero_point[0])
                        for side in (g.signature_inputs, g.signature_outputs)] for n in ("h0", "lags")}
    assert quantization["h0"][0] != quantization["h0"][1] and quantization["lags"][0] == quantization["lags"][1]
    device.outer = None  # the float64 outer step from the shared StepBinding, as a float-I/O core uses
    stream = input_stream(device, 3000)
    session = edge_runtime.load(bundle, variant="int8-io", backend=IN_PROCESS_BACKEND).session()
    firmware = np.array([device.step(row) for row in stream])
    runtime = np.array([session.step(row) for row in stream])
    norm, target = device.manifest.normalization, list(device.manifest.target)
    gap = np.abs(firmware - runtime) / np.asarray(norm["delta_std"])[target]  # (T, O) typical changes
    assert gap.mean() <= HYBRID_CARRY_MEAN and gap.max() <= HYBRID_CARRY_MAX, (gap.mean(), gap.max())


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["float32", "int8-io"])
def test_a_hybrid_snapshot_restores_identical_forecasts(hybrid_bundles, variant):
    assert_snapshot_restores(*hybrid_bundles["temp-lstm+ar8"], variant, {"x_prev", "h0", "c0", "lags"})
