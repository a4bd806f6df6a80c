"""The transformer forecaster (train/transformer.py, convert/transformer_step.py): sliding-window attention over
the last W samples, exported as a step model whose KV cache is a ring buffer of named state tensors.

Tolerances, written down:
- torch over the whole sequence vs the float32 step model stepped by each runtime (tflite-runtime 2.14 and
  ai-edge-litert 2.3): 1e-4 in normalized units over 2,000 steps, the recurrent models' bound
  (tests/test_parity.py), with W = 16 and 64 so the ring wraps 30-125 times. Measured (convert's record,
  ai-edge-litert): 1.0e-6 and 2.4e-6.
- torch stepped one sample at a time vs torch over the whole sequence: 1e-5 (float32 rounding of a
  different summation order; measured 2.5e-7).
- the window (ground truth, not implementation vs implementation): two streams that agree on their last
  L (W - 1) + 2 samples (L layers; the delta feature reads one sample more) get bit-identical forecasts from
  the float32 step model, and ones that agree on one sample fewer do not.
- snapshot and restore mid-stream: identical outputs (exact equality).
- the integer variants (int8, int8-io, int16x8: a core graph whose ring bookkeeping is held outside,
  edge_runtime/ring.py): their ages are exact (error 0) at every step up to 4 W + 3 under both runtimes, and
  their forecasts read the same window as float32's, bit for bit; test MSE within 1.05x float32's (int8-io)
  and 1.02x (int16x8) after 2 epochs (measured after 8 epochs, temperature d16 x 2: 0.998-1.003x).

The fast tier checks the config's refusals, the ring's bookkeeping against ground truth and the refusal of a
core with `age` inside (no torch); the rest trains for 2 epochs and converts (slow).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import IN_PROCESS_BACKEND, manifest_of, run_cli, run_isolated

STEPS = 2000
FLOAT_TOLERANCE = 1e-4  # normalized units
TORCH_STEP_TOLERANCE = 1e-5


# ---- fast: the config names the ring's state and refuses what a transformer cannot be ----

def test_the_transformer_config_names_its_ring_and_refuses_what_it_cannot_be():
    from train.config import ModelConfig

    config = ModelConfig(cell="transformer", hidden=16, layers=2, input_size=2, context=64)
    assert config.heads == 2 and config.recurrent_cell is None and not config.has_ar and config.has_head
    assert config.state_shapes() == {"x_prev": (1, 2), "age": (1, 64), "k_cache0": (1, 1024),
                                     "v_cache0": (1, 1024), "k_cache1": (1, 1024), "v_cache1": (1, 1024)}
    assert ModelConfig.from_dict(config.to_dict()) == config
    assert "context" not in ModelConfig().to_dict()  # a recurrent model's config reads as before
    for bad, message in (({"context": 0}, r"a transformer needs --context >= 1 \(its attention window, samples\), "
                                          "got 0"),
                         ({"context": -3}, "needs --context >= 1"),
                         ({"context": 8, "heads": 3}, r"hidden \(d_model\) 16 is not a multiple of heads 3"),
                         ({"context": 8, "heads": -1}, "heads must be positive"),
                         ({"context": 4097}, r"context x hidden = 4097 x 16 = 65552 is wider than a bundle's "
                                             r"state tensor may be \(65536\)")):
        with pytest.raises(ValueError, match=message):
            ModelConfig(cell="transformer", hidden=16, **bad)
    with pytest.raises(ValueError, match=r"context and heads are for the transformer cell only, not 'lstm'"):
        ModelConfig(cell="lstm", context=64)


def true_ages(steps: int, context: int) -> np.ndarray:
    """(W,) ground truth, train/transformer.py ring_ages written out again (that module imports torch)."""
    return np.array([0 if j >= steps else steps - (j + ((steps - 1 - j) // context) * context)
                     for j in range(context)], np.float32)


@pytest.mark.parametrize("context", [1, 3, 16])
def test_the_ring_bookkeeping_outside_the_core_keeps_every_age(context):
    """edge_runtime/ring.py against ground truth for 5 W + 2 steps: the ages, the slot written (the one whose
    sample is the newest), `since` = age' - 1 where written and `empty` where never written."""
    from edge_runtime.ring import ring_step

    age = np.zeros((1, context), np.float32)
    for n in range(1, 5 * context + 3):
        inputs, age = ring_step(age)
        expected = true_ages(n, context)
        np.testing.assert_array_equal(age[0], expected)
        np.testing.assert_array_equal(inputs["ring_write"][0], expected == 1)
        np.testing.assert_array_equal(inputs["ring_empty"][0], expected == 0)
        np.testing.assert_array_equal(inputs["ring_since"][0], np.maximum(expected - 1, 0))
        assert all(v.dtype == np.float32 and v.shape == (1, context) for v in inputs.values())


def test_an_integer_core_with_the_ring_ages_inside_is_refused_with_one_line(fixture_bundles):
    """A bundle converted before the ring moved out (its int8-io core takes and returns `age`, whose
    requantized ages drift) is refused by name; its float32 variant still opens."""
    import edge_runtime
    from conftest import FIXTURE_BUNDLES
    from edge_runtime.manifest import BundleError

    bundle = FIXTURE_BUNDLES / "legacy-transformer-age-core"
    with pytest.raises(BundleError) as caught:
        edge_runtime.load(bundle, variant="int8-io", backend=IN_PROCESS_BACKEND)
    message = str(caught.value)
    assert message == (f"{bundle}: variant int8-io is an integer Transformer core that keeps its KV ring's ages "
                       "inside the quantized graph, where they drift (written by an older convert): reconvert the "
                       "bundle")
    assert "\n" not in message
    session = edge_runtime.load(bundle, variant="float32", backend=IN_PROCESS_BACKEND).session()
    assert np.isfinite(session.step([20.0, 3.0])).all()


# ---- slow: torch alone ----

@pytest.mark.slow
@pytest.mark.parametrize("context", [1, 3, 16])
def test_torch_stepped_one_sample_at_a_time_is_the_whole_sequence(context):
    """The ring (one sample per call, only the cache read) against the windowed attention over a whole
    sequence (blocks of 256 with the cache carried), 600 steps, 2 streams, W from 1 up."""
    import torch

    from train.config import ModelConfig
    from train.models import Scales, make_forecaster

    torch.manual_seed(0)
    config = ModelConfig(cell="transformer", hidden=16, layers=2, input_size=2, context=context)
    model = make_forecaster(config, Scales([2.0, 2.0], [0.5])).eval()
    x = torch.randn(2, 600, 2)
    with torch.no_grad():
        whole, end = model(x, model.initial_state(x[:, 0]))
        state, steps = model.initial_state(x[:, 0]), []
        for t in range(x.shape[1]):
            y, state = model(x[:, t:t + 1], state)
            steps.append(y)
    assert (torch.cat(steps, 1) - whole).abs().max() <= TORCH_STEP_TOLERANCE
    assert torch.equal(end["age"], state["age"])
    assert sorted(end["age"][0].tolist()) == list(range(1, context + 1))  # full: ages 1..W, each once


# ---- slow: real bundles ----

# name -> (scenario, features, hidden, layers, W): 2 layers d 16 on a 2-channel stream (LSTM-32's size class,
# W = 16: the ring wraps 125 times in 2,000 steps), 1 layer d 8 on a random walk's changes (W = 64, one head)
TRANSFORMERS = {"temp-tf16": ("temperature", ("level", "delta"), 16, 2, 16),
                "walk-tf64": ("random_walk", ("delta",), 8, 1, 64)}


@pytest.fixture(scope="module")
def transformer_bundles(tmp_path_factory) -> dict:
    """name -> (run folder, bundle folder): 2 epochs, converted with every variant."""
    from convert.run import convert_run
    from train.config import ModelConfig
    from train.run import train_run
    from train.scenarios import make_stream
    from train.trainer import TrainConfig

    root = tmp_path_factory.mktemp("transformer")
    out = {}
    for name, (scenario, features, hidden, layers, context) in TRANSFORMERS.items():
        stream = make_stream(scenario, 8000, seed=1)  # val + test: 2,656 steps of parity stream
        config = ModelConfig(cell="transformer", hidden=hidden, layers=layers, input_size=stream.values.shape[1],
                             target=stream.target, features=features, context=context)
        train_run(stream, config, TrainConfig(epochs=2, lanes=8), root / "runs" / name, progress=False)
        convert_run(root / "runs" / name, root / "artifacts" / name)
        out[name] = root / "runs" / name, root / "artifacts" / name
    return out


def stream_of(run_dir) -> np.ndarray:
    from convert.parity import parity_stream

    return parity_stream(np.load(run_dir / "splits.npz"))  # validation then test, (T, C) raw


def torch_reference(run_dir, raw: np.ndarray) -> np.ndarray:
    """The trained model over the whole sequence at once: (T, O) normalized."""
    from train.checkpoint import load_checkpoint
    from train.models import forecaster_from_weights
    from train.trainer import normalize, stream_forecast

    weights, info = load_checkpoint(run_dir / "checkpoint.safetensors")
    return stream_forecast(forecaster_from_weights(weights, info), normalize(raw, info["normalization"]))


STEP_UNDER = """
import json, numpy as np
import edge_runtime
model = edge_runtime.load(BUNDLE, variant="float32")
session = model.session()
norm, target = model.manifest.normalization, list(model.manifest.target)
raw = np.load(RAW)
y = np.array([session.step(row) for row in raw])
y = (y - np.asarray(norm["mean"])[target]) / np.asarray(norm["std"])[target]
print(json.dumps({"backend": model.backend, "y": y.tolist()}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tflite_runtime", "ai_edge_litert"])
@pytest.mark.parametrize("name", sorted(TRANSFORMERS))
def test_the_step_model_streams_what_torch_computes_on_the_whole_sequence(transformer_bundles, name, backend,
                                                                          tmp_path):
    """kws_streaming's test: torch over 2,000 samples at once, the float32 step model one sample at a time with
    its KV cache fed back as named state, in a process with neither torch nor TensorFlow, under each runtime."""
    run_dir, bundle = transformer_bundles[name]
    raw = stream_of(run_dir)[:STEPS]
    assert len(raw) == STEPS > 30 * TRANSFORMERS[name][4]  # the ring wraps many times
    np.save(tmp_path / "raw.npy", raw)
    code = STEP_UNDER.replace("BUNDLE", repr(str(bundle))).replace("RAW", repr(str(tmp_path / "raw.npy")))
    done = run_isolated(code, timeout=300, EDGE_RNN_BACKEND=backend)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    error = np.abs(np.asarray(result["y"]) - torch_reference(run_dir, raw))
    assert error.shape == (STEPS, 1) and error.max() <= FLOAT_TOLERANCE, (name, backend, error.max())
    parity = manifest_of(bundle)["variants"][0]["parity"]  # convert's own check, recorded in the manifest
    assert parity["steps"] == STEPS and parity["max_abs_error"] <= FLOAT_TOLERANCE


@pytest.mark.slow
def test_every_variant_converts_and_opens_where_its_manifest_says(transformer_bundles):
    """All six variants are written (integer ones from the core graph, the ring's inputs in place of `age`);
    int16x8 is refused by tflite-runtime 2.14 for its int16 RSQRT (the layer norm), by name; each opens, or
    fails, as recorded, under each runtime; every variant's ring is exact and every one is deployable, the
    integer ones within INTEGER_MSE_LIMITS of float32's test MSE."""
    from test_quantization import check_bundles_open_as_their_manifests_say

    for name, (_, bundle) in transformer_bundles.items():
        manifest = manifest_of(bundle)
        assert manifest["cell"] == "transformer" and manifest["hidden"] == TRANSFORMERS[name][2]
        variants = {v["name"]: v for v in manifest["variants"]}
        assert list(variants) == ["float32", "float16", "dynamic-int8", "int8", "int16x8", "int8-io"], name
        assert [variants[v]["graph"] for v in ("int8", "int16x8", "int8-io")] == ["core"] * 3
        assert variants["int16x8"]["compatibility"] == {
            "tflite_runtime": "RSQRT on INT16 does not open in tflite-runtime 2.14.0 "
                              "(Type INT16 is unsupported by op Rsqrt)", "ai_edge_litert": None}
        for v in variants.values():
            if v["name"] != "int16x8":
                assert all(why is None for why in v["compatibility"].values()), (name, v["name"])
        assert variants["float32"]["batched"]["parity"]["max_rel_error"] <= 1e-5
        for v in variants.values():  # convert's ring check: every variant keeps every age exact (the integer
            ring = v["metrics"]["ring"]  # ones hold them outside the core) and is deployable
            assert ring["steps"] == 4 * TRANSFORMERS[name][4] + 3
            assert ring["max_age_error"] == 0 and v["metrics"]["deployable"], (name, v["name"], v["metrics"])
        for variant, limit in INTEGER_MSE_LIMITS.items():
            assert variants[variant]["metrics"]["mse_ratio"] <= limit, (name, variant, variants[variant]["metrics"])
        core_inputs = {n for n, q in variants["int8-io"]["io_quantization"].items() if not n.endswith(":out")}
        assert {"ring_write", "ring_since", "ring_empty"} <= core_inputs and "age" not in core_inputs
    check_bundles_open_as_their_manifests_say([b for _, b in transformer_bundles.values()])


INTEGER_MSE_LIMITS = {"int8": 1.05, "int8-io": 1.05, "int16x8": 1.02}  # test MSE over float32's, 2 epochs

AGES_AND_WINDOW_UNDER = """
import json, numpy as np
import edge_runtime
model = edge_runtime.load(BUNDLE, variant=VARIANT)
raw = np.load(RAW)
session = model.session()
ages = []
for row in raw[:STEPS]:
    session.step(row)
    ages.append(session.get_state("age")[0].tolist())
changed = raw.copy()
changed[:CUT] += np.array([0.7, -1.5], np.float32)
a, b = model.session(), model.session()
same = [bool(np.array_equal(a.step(x), b.step(y))) for x, y in zip(raw, changed)]
print(json.dumps({"backend": model.backend, "ages": ages, "same": same}))
"""


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tflite_runtime", "ai_edge_litert"])
@pytest.mark.parametrize("variant", ["int8", "int8-io", "int16x8"])
def test_the_integer_variants_keep_every_age_and_read_the_window(transformer_bundles, variant, backend, tmp_path):
    """Ground truth for the integer cores, in a process with neither torch nor TensorFlow, under each runtime:
    the ages after every step up to 4 W + 3 are exact (error 0), and two streams equal on their last
    L (W - 1) + 2 samples forecast bit-identically, so each sample's key and value went to the slot the ages
    say; with fewer samples in common they differ (not always at one fewer: the int8 output can round the
    oldest sample's share away). (int16x8 opens in ai-edge-litert only.)"""
    if variant == "int16x8" and backend == "tflite_runtime":
        pytest.skip("tflite-runtime 2.14 has no int16 RSQRT (the manifest records it)")
    run_dir, bundle = transformer_bundles["temp-tf16"]
    _, _, _, layers, context = TRANSFORMERS["temp-tf16"]
    steps, reach, cut = 4 * context + 3, layers * (context - 1) + 2, 300
    raw = stream_of(run_dir)[:600]
    np.save(tmp_path / "raw.npy", raw)
    code = (AGES_AND_WINDOW_UNDER.replace("BUNDLE", repr(str(bundle))).replace("VARIANT", repr(variant))
            .replace("RAW", repr(str(tmp_path / "raw.npy"))).replace("STEPS", str(steps)).replace("CUT", str(cut)))
    done = run_isolated(code, timeout=300, EDGE_RNN_BACKEND=backend)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == backend
    error = np.abs(np.asarray(result["ages"]) - [true_ages(n, context) for n in range(1, steps + 1)])
    assert error.shape == (steps, context) and error.max() == 0, (variant, backend, error.max())
    assert all(result["same"][cut + reach - 1:])  # nothing older than the window reaches the forecast
    assert not all(result["same"][cut:cut + reach - 1])  # and what is in it does (int8 may round the oldest away)


@pytest.mark.slow
def test_the_pool_steps_an_integer_transformer_per_stream_as_its_sessions(transformer_bundles):
    """Its ring is held outside the core, per stream: the pool has no batched model for it and steps each
    stream through a Session, equal to one Session per stream bit for bit (forecasts and every state)."""
    import edge_runtime
    from edge_runtime.pool import StreamPool

    run_dir, bundle = transformer_bundles["temp-tf16"]
    raw = stream_of(run_dir)[:120]
    model = edge_runtime.load(bundle, variant="int8-io", backend=IN_PROCESS_BACKEND)
    pool = StreamPool(model, max_streams=4)
    assert pool.batched is None
    offsets = {"a": 0, "b": 7, "c": 40}
    sessions = {k: model.session() for k in offsets}
    for t in range(80):
        together = pool.step_many({k: raw[o + t] for k, o in offsets.items()})
        for k, o in offsets.items():
            np.testing.assert_array_equal(together[k], sessions[k].step(raw[o + t]))
    rows = pool.rows_of(list(offsets))
    for k, row in zip(offsets, rows):
        for name, value in sessions[k].state.items():
            np.testing.assert_array_equal(pool.state[name][row], value[0])


@pytest.mark.slow
def test_the_ring_holds_every_slots_age(transformer_bundles):
    """Ground truth: after n samples, slot j holds the last sample t < n with t = j mod W, written n - t steps
    ago (0 = never written): the named state `age`, partly filled and after many wraps."""
    import edge_runtime
    from train.transformer import ring_ages

    run_dir, bundle = transformer_bundles["temp-tf16"]
    context = TRANSFORMERS["temp-tf16"][4]
    raw = stream_of(run_dir)
    session = edge_runtime.load(bundle, backend=IN_PROCESS_BACKEND).session()
    done = 0
    for n, first_ages in ((5, [5, 4, 3, 2, 1, 0]), (16, [16, 15]), (17, [1, 16, 15]), (1001, [9, 8])):
        for row in raw[done:n]:
            session.step(row)
        done = n
        expected = [0 if j >= n else n - (j + ((n - 1 - j) // context) * context) for j in range(context)]
        assert expected[:len(first_ages)] == first_ages  # the formula, checked by hand
        np.testing.assert_array_equal(session.get_state("age")[0], expected)
        np.testing.assert_array_equal(ring_ages(n, context), expected)  # what convert's ring check compares with


@pytest.mark.slow
def test_the_forecast_reads_the_last_window_and_nothing_older(transformer_bundles):
    """Ground truth for the window: L layers of W-sample attention read the last L (W - 1) + 1 samples, and the
    delta feature one more. Two streams equal on exactly that many last samples forecast bit-identically; with
    one sample fewer in common they differ."""
    import edge_runtime

    run_dir, bundle = transformer_bundles["temp-tf16"]
    _, _, _, layers, context = TRANSFORMERS["temp-tf16"]
    reach = layers * (context - 1) + 2
    raw = stream_of(run_dir)[:600]
    changed = raw.copy()
    cut = 300
    changed[:cut] += np.array([0.7, -1.5], np.float32)  # an offset on every sample before the cut
    model = edge_runtime.load(bundle, backend=IN_PROCESS_BACKEND)
    a, b = model.session(), model.session()
    same = [np.array_equal(a.step(x), b.step(y)) for x, y in zip(raw, changed)]  # step t forecasts from 0..t
    assert all(same[cut + reach - 1:])
    assert not same[cut + reach - 2]


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["float32", "int8-io"])
def test_a_snapshot_taken_mid_stream_restores_identical_forecasts(transformer_bundles, variant):
    from test_ar import assert_snapshot_restores

    assert_snapshot_restores(*transformer_bundles["temp-tf16"], variant,
                             {"x_prev", "age", "k_cache0", "v_cache0", "k_cache1", "v_cache1"})


@pytest.mark.slow  # python -m train imports torch before it reads the arguments
@pytest.mark.parametrize("args,message", [
    (["--cell", "transformer"], "error: a transformer needs --context >= 1 (its attention window, samples), got 0"),
    (["--cell", "transformer", "--context", "8", "--hidden", "12", "--heads", "5"],
     "error: hidden (d_model) 12 is not a multiple of heads 5"),
    (["--cell", "gru", "--context", "8"], "error: context and heads are for the transformer cell only, not 'gru'"),
])
def test_the_cli_refuses_a_bad_transformer_config_with_one_line(tmp_path, args, message):
    done = run_cli("train", "--scenario", "temperature", "--samples", "2000", *args, "--out", str(tmp_path))
    assert done.returncode == 2 and done.stderr.strip().splitlines()[-1] == message, done.stderr
    assert not any(tmp_path.iterdir())


@pytest.mark.slow
def test_python_m_train_trains_a_transformer_and_python_m_convert_bundles_it(tmp_path):
    done = run_cli("train", "--scenario", "random_walk", "--samples", "3000", "--cell", "transformer", "--context",
                   "8", "--hidden", "8", "--layers", "1", "--epochs", "1", "--out", str(tmp_path / "runs"), "--quiet",
                   timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["run"].endswith("random_walk-transformer8")
    # embed 8 + 8, one layer: 2 norms 32, qkv 216, proj 72, MLP 144 + 136, 1 slope; final norm 16, head 9
    assert result["parameters"] == 16 + 32 + 216 + 72 + 280 + 1 + 16 + 9
    done = run_cli("convert", result["run"], "--out", str(tmp_path / "artifacts"), "--variants", "int8-io",
                   "int16x8", timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = manifest_of(tmp_path / "artifacts" / "random_walk-transformer8")
    assert [(s["name"], s["shape"]) for s in manifest["state"]] == [
        ("x_prev", [1, 1]), ("age", [1, 8]), ("k_cache0", [1, 64]), ("v_cache0", [1, 64])]
    assert [v["name"] for v in manifest["variants"]] == ["float32", "int16x8", "int8-io"]
    # the variant one runtime cannot open is kept for the other, and convert says so in one line
    assert ("warning: random_walk-transformer8: variant int16x8 does not open in tflite_runtime: RSQRT on INT16 "
            "does not open in tflite-runtime 2.14.0 (Type INT16 is unsupported by op Rsqrt)") in done.stderr.splitlines()


@pytest.mark.slow
def test_firmware_sim_holds_the_ring_ages_and_writes_the_session_s_codes(transformer_bundles):
    """firmware_sim's DeviceModel keeps the ages outside the graph (firmware_sim/ring.py): its ring inputs'
    codes, from tables, equal the Session's Codec encoding of edge_runtime/ring.py's values at every step up
    to 4 W + 3; the budget counts the held ages (2 bytes a slot) in the state's RAM and runs on the core."""
    import edge_runtime
    from edge_runtime.ring import RING_INPUTS, ring_step
    from firmware_sim.budget import budget, variant_graph
    from firmware_sim.device_model import encode
    from firmware_sim.graph import read_graph
    from firmware_sim.memory import memory_report
    from firmware_sim.profiles import load_profile
    from firmware_sim.ring import DeviceRing

    _, bundle = transformer_bundles["temp-tf16"]
    context = TRANSFORMERS["temp-tf16"][4]
    model = edge_runtime.load(bundle, variant="int8-io", backend=IN_PROCESS_BACKEND)
    graph = read_graph((bundle / model.variant.file).read_bytes())
    ring = DeviceRing({n: graph.tensors[graph.signature_inputs[n]] for n in RING_INPUTS}, context, encode)
    age = np.zeros((1, context), np.float32)
    for _ in range(4 * context + 3):
        values, age = ring_step(age)
        codes = ring.inputs()
        for name in RING_INPUTS:
            np.testing.assert_array_equal(codes[name], model.codecs[name].encode(values[name]))
        np.testing.assert_array_equal(ring.age, age)
    cost = budget(str(bundle), "int8-io", "cortex-m4")
    assert cost["fits"] and cost["us_per_step"] > 0 and cost["float_op"] is None
    without_ages = memory_report(graph, load_profile("cortex-m4"), variant_graph(str(bundle), "int8-io")[2])
    assert cost["ram_used"] - without_ages.ram_used == 2 * context  # uint16 ages, W = 16: 32 bytes, aligned
