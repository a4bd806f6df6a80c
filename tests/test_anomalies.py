"""Anomaly detection: labelled injected anomalies, validation-calibrated thresholds, hysteresis,
tracker snapshots, and the detector's scores per kind on a real bundle run as the device runs it."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import IN_PROCESS_BACKEND, manifest_of, run_cli, run_isolated
from edge_runtime.anomaly import AnomalySpec, AnomalyTracker
from edge_eval.anomalies import match, summarize
from train.anomalies import DROPOUT_READING, GAP, KINDS, inject, labelled_streams

F1_REQUIRED = {"spike": 0.8, "level_shift": 0.8}  # the bar; the other kinds are reported, not required


def smooth_stream(n: int = 3000, seed: int = 0) -> np.ndarray:
    """(n, 2) a slow sine with noise on channel 0, a constant-ish channel 1."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return np.stack([20 + np.sin(2 * np.pi * t / 500) + rng.normal(0, 0.01, n), 5 + rng.normal(0, 0.05, n)],
                    axis=1).astype(np.float32)


# ---- the generator -------------------------------------------------------------------------

def test_injected_anomalies_follow_their_definitions_and_labels_mark_exactly_their_rows():
    clean = smooth_stream()
    sigma = clean[256:, 0].std()
    for kind in KINDS:
        s = inject(clean, (kind,), scored_from=256, target=(0,), seed=3)
        assert s.anomalies and all(a.kind == kind and a.channel == 0 for a in s.anomalies)
        assert np.array_equal(s.values[:, 1], clean[:, 1])  # only the target channel is touched
        assert np.array_equal(s.values[:256 + GAP], clean[:256 + GAP])  # warm-up and the first gap stay clean
        labels = s.labels()
        changed = np.flatnonzero(s.values[:, 0] != clean[:, 0])
        assert set(changed) <= set(np.flatnonzero(labels == kind))  # nothing changes outside a label
        for a in s.anomalies:
            got, was = s.values[a.start:a.end, 0], clean[a.start:a.end, 0]
            if kind == "spike":
                assert a.end - a.start == 1 and 3 * sigma <= abs(got[0] - was[0]) <= 6 * sigma + 1e-4
            elif kind == "level_shift":
                assert np.allclose(got - was, a.size, atol=1e-4) and sigma <= abs(a.size) <= 2 * sigma
            elif kind == "stuck":
                assert np.all(got == clean[a.start - 1, 0])
            elif kind == "dropout":
                assert np.all(got == DROPOUT_READING)
            elif kind == "drift":
                offset = got - was
                assert np.abs(np.diff(offset)).max() < 2 * abs(a.size) / (a.end - a.start) + 1e-4  # no step
                assert abs(offset).max() == pytest.approx(abs(a.size), rel=0.05)
        starts = [a.start for a in s.anomalies]
        ends = [a.end for a in s.anomalies]
        assert all(nxt - end >= GAP for end, nxt in zip(ends, starts[1:]))  # events apart, attributable


def test_labelled_streams_are_seeded_and_cover_every_kind():
    clean = smooth_stream()
    a = labelled_streams(clean, 256, (0,), seed=5, repeats=2)
    b = labelled_streams(clean, 256, (0,), seed=5, repeats=2)
    assert set(a) == {f"{k}-{r}" for k in KINDS for r in range(2)} | {"mixed", "clean"}
    assert all(np.array_equal(a[n].values, b[n].values) and a[n].anomalies == b[n].anomalies for n in a)
    assert a["spike-0"].anomalies != a["spike-1"].anomalies  # repeats are different placements
    assert {x.kind for x in a["mixed"].anomalies} == set(KINDS)
    assert a["clean"].anomalies == [] and np.array_equal(a["clean"].values, clean)
    with pytest.raises(ValueError, match="unknown anomaly kind"):
        inject(clean, ("glitch",), 256, (0,), 0)


# ---- the tracker -----------------------------------------------------------------------------

SPEC = AnomalySpec(residual_std=(0.5,), threshold=5.0, clear_threshold=2.0, clear_steps=3,
                   stillness_floor=(0.3,), stillness_window=8)


def noisy_residuals(n: int = 600, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(0, 0.5, (n, 1))  # z ~ N(0, 1)


def test_hysteresis_gives_one_start_and_one_end_per_spike():
    residuals = np.clip(noisy_residuals(), -0.9, 0.9)  # |z| <= 1.8: calm, always below the clear threshold
    spikes = [100, 250, 400]
    for t in spikes:
        residuals[t] = 20.0  # the spiked sample: z = 40
        residuals[t + 1] = -12.0  # the forecast made from it is off too: z = -24
        residuals[t + 2] = 3.0  # and the state takes a step to settle: z = 6, still above the threshold
    tracker = AnomalyTracker(SPEC)
    events = [(t, e) for t, r in enumerate(residuals) if (e := tracker.update(r)[1])]
    assert [e for _, e in events] == ["start", "end"] * len(spikes)
    assert [t for t, e in events if e == "start"] == spikes
    # each alarm ends after clear_steps calm samples following the last loud one
    assert [t for t, e in events if e == "end"] == [t + 2 + SPEC.clear_steps for t in spikes]


def test_a_frozen_reading_raises_the_stillness_score_and_one_alarm():
    residuals = noisy_residuals()
    residuals = np.clip(residuals, -1.0, 1.0)
    residuals[300:400] = 0.2  # stuck sensor: the residual stops moving
    tracker = AnomalyTracker(SPEC)
    out = [tracker.update(r) for r in residuals]
    starts = [t for t, (_, e) in enumerate(out) if e == "start"]
    assert len(starts) == 1 and 300 < starts[0] <= 300 + 2 * SPEC.stillness_window
    assert max(s for s, _ in out) <= 10 * SPEC.threshold  # capped, not unbounded
    off = AnomalyTracker(AnomalySpec((0.5,), 5.0, 2.0, 3))  # without a floor the check is off
    assert not any(off.update(r)[1] for r in residuals)


def test_tracker_state_round_trips_through_to_dict_and_load_dict():
    residuals = noisy_residuals(800, seed=2)
    residuals[200] = 30.0
    residuals[500:560] = 0.1
    for cut in (50, 201, 530):  # calm, inside a spike's alarm, inside a stillness alarm
        reference = AnomalyTracker(SPEC)
        expected = [reference.update(r) for r in residuals]
        first = AnomalyTracker(SPEC)
        for r in residuals[:cut]:
            first.update(r)
        snapshot = json.loads(json.dumps(first.to_dict()))  # what a snapshot file holds
        restored = AnomalyTracker(SPEC)
        restored.load_dict(snapshot)
        assert [restored.update(r) for r in residuals[cut:]] == expected[cut:]
    plain = AnomalyTracker(SPEC)
    plain.load_dict({"active": True, "quiet_steps": 1})  # a snapshot from before the stillness check
    assert plain.active and plain.quiet_steps == 1
    with pytest.raises(ValueError, match="last_z has shape"):
        plain.load_dict({**snapshot, "last_z": [0.0, 0.0]})


def test_event_matching_counts_detections_false_alarms_and_delays():
    anomalies = [{"kind": "spike", "start": 100, "end": 101}, {"kind": "spike", "start": 300, "end": 301},
                 {"kind": "drift", "start": 500, "end": 700}]
    alarms = [(100, 104), (105, 120), (205, 210), (690, 720), (900, 905)]
    counts = match(anomalies, alarms, tolerance=10)
    assert counts["per_kind"]["spike"] == {"events": 2, "detected": 1, "delays": [0]}
    assert counts["per_kind"]["drift"] == {"events": 1, "detected": 1, "delays": [190]}
    assert counts["false_alarms"] == 2  # (205, 210) and (900, 905); (105, 120) overlaps the spike's tolerance
    s = summarize(3, 2, 2, [0, 190])
    assert (s["precision"], s["recall"], s["delay_median"], s["delay_max"]) == (0.5, 2 / 3, 95.0, 190)
    assert s["f1"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))


def test_calibration_rule_on_known_residuals():
    from convert.anomaly import THRESHOLD_FLOOR, calibrate

    rng = np.random.default_rng(0)
    residuals = rng.normal(0, 0.02, (20000, 1))  # Gaussian: q99.9 of |z| is 3.29
    section = calibrate(residuals, period_s=60.0)
    assert section["residual_std"][0] == pytest.approx(0.02, rel=0.02)
    assert section["threshold"] == pytest.approx(1.5 * 3.29, rel=0.05)
    assert section["clear_threshold"] == pytest.approx(1.96, rel=0.05)
    assert section["clear_steps"] == 3  # white noise forgets at once; the floor of the range
    assert section["stillness_floor"] is not None
    assert section["calibration"]["validation_alarms"] <= 1
    bounded = calibrate(rng.uniform(-1, 1, (5000, 1)), 60.0)  # no tail: 1.5 x q99.9 is 2.6, the floor applies
    assert bounded["threshold"] == THRESHOLD_FLOOR
    exact = np.zeros((2000, 1))
    exact[::50] = 1.0  # exactly predictable for long stretches: a still residual is normal here
    assert calibrate(exact, 1.0)["stillness_floor"] is None
    with pytest.raises(ValueError, match="at least"):
        calibrate(residuals[:10], 1.0)


def test_a_malformed_anomaly_section_is_refused_with_its_field_named(fixture_bundles, tmp_path):
    import shutil

    from edge_runtime.manifest import BundleError, read_manifest

    _, bundle = fixture_bundles["gru"]
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    manifest = manifest_of(copy)
    assert AnomalySpec.from_manifest(read_manifest(copy)) is not None  # every new bundle has one
    manifest["anomaly"]["stillness_floor"] = [0.1, 0.2]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="stillness_floor needs one positive value per output channel"):
        AnomalySpec.from_manifest(read_manifest(copy))


# ---- a real bundle, run as the device runs it ----------------------------------------------------

@pytest.fixture(scope="module")
def detector_bundle(tmp_path_factory) -> tuple[Path, Path]:
    """A temperature LSTM (hidden 16) trained to convergence on a short stream: ~10 s to train and convert."""
    from convert.run import convert_run
    from train.models import ModelConfig
    from train.run import train_run
    from train.scenarios import make_stream
    from train.trainer import TrainConfig

    root = tmp_path_factory.mktemp("anomaly")
    stream = make_stream("temperature", 8000, seed=1)
    config = ModelConfig(cell="lstm", hidden=16, layers=1, input_size=2, target=(0,), features=("level", "delta"))
    train_run(stream, config, TrainConfig(epochs=30, lanes=8), root / "runs" / "det", progress=False)
    convert_run(root / "runs" / "det", root / "artifacts" / "det", variants=("float32",))
    return root / "runs" / "det", root / "artifacts" / "det"


@pytest.mark.slow
def test_thresholds_are_calibrated_on_validation_not_test(detector_bundle, capsys):
    from convert.anomaly import anomaly_section, calibrate, validation_residuals
    from edge_runtime.tasks import load

    run_dir, bundle = detector_bundle
    section = manifest_of(bundle)["anomaly"]
    splits = np.load(run_dir / "splits.npz")
    warmup = int(splits["warmup"])
    model = load(bundle, backend=IN_PROCESS_BACKEND)
    from_val = calibrate(validation_residuals(model, splits["val"], warmup), 60.0)
    from_test = calibrate(validation_residuals(model, splits["test"], warmup), 60.0)
    for key in ("residual_std", "threshold", "clear_threshold", "clear_steps", "stillness_floor"):
        assert section[key] == pytest.approx(from_val[key], rel=1e-9), key
    assert section["threshold"] != pytest.approx(from_test["threshold"], rel=1e-3)
    assert section["calibration"]["samples"] == len(splits["val"]) - warmup - 1
    # training measured the validation residuals in normalized units with torch; same spread in sensor units
    manifest = manifest_of(bundle)
    torch_val_std = manifest["residual_std"][0] * manifest["normalization"]["std"][0]
    assert section["residual_std"][0] == pytest.approx(torch_val_std, rel=1e-3)  # float32 torch vs TFLite
    # too short a validation split: the bundle gets no section (and says so) rather than a guessed one
    assert anomaly_section(model, splits["val"][:warmup + 40], warmup, 60.0) is None
    assert "39 validation residuals after the warm-up, 64 needed" in capsys.readouterr().err


@pytest.mark.slow
def test_detector_finds_spikes_and_level_shifts_on_the_device_runtime(detector_bundle, tmp_path):
    from pipeline.anomalies import per_kind, table
    from train.anomalies import write_run_streams

    run_dir, bundle = detector_bundle
    streams = write_run_streams(run_dir, tmp_path / "streams", seed=0)
    args = ["anomalies", str(bundle), *(str(csv) for csv, _ in streams.values())]
    # as on a device: torch, TensorFlow, train and convert cannot be imported in that process
    done = run_isolated(f"""
        import sys
        from edge_eval.cli import main
        code = main({args!r})
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow", "train", "convert"))
        assert code == 0 and not heavy, (code, heavy)
    """)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "tflite_runtime"  # scored as the device runs it
    kinds = per_kind(result)
    level_only = run_cli("edge_eval", *args, "--residual-only")
    assert level_only.returncode == 0, level_only.stderr
    level_kinds = per_kind(json.loads(level_only.stdout.strip().splitlines()[-1]))
    print("\n" + table([{"name": "temperature-lstm16", "kinds": kinds, "residual_only": level_kinds}]))
    assert set(kinds) == set(KINDS) | {"clean"}
    for kind in KINDS:  # every kind is reported with its figures
        assert kinds[kind]["events"] >= 5 and kinds[kind]["recall"] is not None, kind
    for kind, bar in F1_REQUIRED.items():
        assert kinds[kind]["f1"] >= bar, (kind, kinds[kind])
    spike_files = [f for f in result["files"] if f["kind"] == "spike"]
    for f in spike_files:  # hysteresis: no spike raised more than one alarm
        assert f["alarms"] == f["detected"] + f["false_alarms"], f
    assert kinds["clean"]["false_alarms"] <= 1  # 1,200 clean test samples


@pytest.mark.slow
def test_pipeline_anomalies_writes_the_report_and_timeline(detector_bundle, tmp_path):
    run_dir, bundle = detector_bundle
    done = run_cli("pipeline", "anomalies", "det", "--runs", str(run_dir.parent), "--artifacts",
                   str(bundle.parent), "--reports", str(tmp_path / "reports"), timeout=300)
    assert done.returncode == 0, done.stderr
    report = (tmp_path / "reports" / "anomalies.md").read_text()
    for kind in KINDS:
        assert f"| det | {kind} |" in report
    assert (tmp_path / "reports" / "anomalies_det.png").stat().st_size > 20_000
    bad = run_cli("pipeline", "anomalies", "nope", "--runs", str(run_dir.parent), "--artifacts", str(bundle.parent))
    assert bad.returncode == 2 and "no bundle+run pair for ['nope']" in bad.stderr
