"""One stream with its state inside the interpreter (issue 19): the same bits as the explicit-state model.

The resident companion (convert/resident_step.py) keeps the named state in
resource variables; a Session steps it with set x, invoke, get y and reads or
writes the state only when asked. Nothing a caller can see may change: every
forecast and every state tensor is compared bit for bit with the explicit
model, under both runtimes, and a snapshot taken from a resident session
restores into a fresh process exactly. Tolerance everywhere: zero (same float32
bytes), because the two models run the same ops on the same values.
"""
from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import pytest

from conftest import edit_manifest, manifest_of, run_isolated

RUNTIMES = ("tflite_runtime", "ai_edge_litert")
STEPS = 2500  # >= 2,000, as the issue asks; past the point where a fresh start is forgotten
RESIDENT_VARIANTS = ("float32", "float16", "dynamic-int8")


def stream_of(run_dir) -> np.ndarray:
    """(STEPS, C) raw samples: the run's train, validation and test splits in a row, as a device sees them."""
    splits = np.load(run_dir / "splits.npz")
    return np.concatenate([splits["train"], splits["val"], splits["test"]])[:STEPS].astype(np.float32)


# Both sessions step the same stream; every step compares y, every 97 steps the whole state (which also
# reads it out of the resident one, so the next step writes it back in). Midway: a reset, and a restore of a
# state read earlier, through set_state by name.
SIDE_BY_SIDE = """
    import json, numpy as np, edge_runtime
    bundle, backend, stream = {bundle!r}, {backend!r}, np.load({stream!r})
    report = {{}}
    for variant in {variants!r}:
        model = edge_runtime.load(bundle, variant=variant, backend=backend)
        explicit, resident = model.session(resident=False), model.session()
        differing, compared, saved = [], 0, None
        for t, x in enumerate(stream):
            if t == 1200:
                explicit.reset(); resident.reset()
            if t == 1800:
                for name, value in saved.items():
                    explicit.set_state(name, value); resident.set_state(name, value)
            a, b = explicit.step(x), resident.step(x)
            compared += 1
            if a.tobytes() != b.tobytes():
                differing.append(f"y at {{t}}")
            if t % 97 == 0 or t == len(stream) - 1:
                for name in explicit.state:
                    if explicit.get_state(name).tobytes() != resident.get_state(name).tobytes():
                        differing.append(f"{{name}} at {{t}}")
                compared += len(explicit.state)
            if t == 1000:
                saved = {{n: resident.get_state(n) for n in resident.state}}
        report[variant] = {{"resident": resident.resident, "explicit": explicit.resident, "steps": len(stream),
                           "compared": compared, "differing": differing[:5], "why_not": model.resident_why_not,
                           "state_steps": [explicit.steps, resident.steps]}}
    print(json.dumps(report))
"""


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_resident_session_matches_explicit_state_bit_for_bit(tiny_bundles, tmp_path, cell, runtime):
    run_dir, bundle = tiny_bundles[cell]
    np.save(tmp_path / "stream.npy", stream_of(run_dir))
    variants = [v["name"] for v in manifest_of(bundle)["variants"] if "resident" in v]
    assert variants == list(RESIDENT_VARIANTS)  # convert writes one for each float variant, none for integer ones
    done = run_isolated(SIDE_BY_SIDE.format(bundle=str(bundle), backend=runtime, stream=str(tmp_path / "stream.npy"),
                                            variants=variants), timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    for variant, r in report.items():
        assert r["resident"] is True and r["explicit"] is False, (variant, r["why_not"])
        assert r["steps"] == STEPS and r["state_steps"][0] == r["state_steps"][1]
        assert r["differing"] == [], (variant, r)


# A stream stepped by a resident session to SNAP, snapshotted with the service's atomic snapshot writer;
# then (a second process) restored into a fresh session and stepped on to the end. The explicit-state
# model does the same in a third way: uninterrupted. Everything is hashed, so bits are compared.
SNAPSHOT_RUN = """
    import hashlib, json, numpy as np, edge_runtime
    from pathlib import Path
    from edge_runtime.service.snapshot import read_snapshot, write_snapshot
    bundle, backend, variant, stream, snap, mode = {args!r}
    stream = np.load(stream)
    model = edge_runtime.load(bundle, variant=variant, backend=backend)
    SNAP = {snap_at}
    out = {{"resident": None}}
    if mode == "take":  # resident: run to SNAP, write the snapshot
        session = model.session()
        for x in stream[:SNAP]:
            session.step(x)
        state = {{n: session.get_state(n) for n in session.state}}
        write_snapshot(Path(snap), {{"bundle_sha256": model.manifest.sha256, "steps": session.steps, "streams": ["s"]}},
                       {{f"state.{{n}}": v for n, v in state.items()}})
        out["resident"] = session.resident
        out["state"] = {{n: hashlib.sha256(v.tobytes()).hexdigest() for n, v in state.items()}}
    elif mode == "restore":  # a fresh process: restore the snapshot into a resident session, go on
        meta, arrays = read_snapshot(Path(snap))
        assert meta["bundle_sha256"] == model.manifest.sha256
        session = model.session()
        for key, value in arrays.items():
            session.set_state(key.removeprefix("state."), value)
        session.steps = meta["steps"]
        ys = [session.step(x) for x in stream[SNAP:]]
        out["resident"] = session.resident
        out["ys"] = hashlib.sha256(np.stack(ys).tobytes()).hexdigest()
        out["end"] = {{n: hashlib.sha256(v.tobytes()).hexdigest() for n, v in session.state.items()}}
    else:  # "explicit": today's session, uninterrupted, its state at SNAP and its forecasts after
        session = model.session(resident=False)
        for x in stream[:SNAP]:
            session.step(x)
        out["resident"] = session.resident
        out["state"] = {{n: hashlib.sha256(v.tobytes()).hexdigest() for n, v in session.state.items()}}
        ys = [session.step(x) for x in stream[SNAP:]]
        out["ys"] = hashlib.sha256(np.stack(ys).tobytes()).hexdigest()
        out["end"] = {{n: hashlib.sha256(v.tobytes()).hexdigest() for n, v in session.state.items()}}
    print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_snapshot_restores_into_a_fresh_process_bit_for_bit(tiny_bundles, tmp_path, runtime):
    run_dir, bundle = tiny_bundles["lstm"]
    np.save(tmp_path / "stream.npy", stream_of(run_dir))

    def run(mode: str) -> dict:
        args = (str(bundle), runtime, "float32", str(tmp_path / "stream.npy"), str(tmp_path / "state.npz"), mode)
        done = run_isolated(SNAPSHOT_RUN.format(args=args, snap_at=1500), timeout=300)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    taken, restored, today = run("take"), run("restore"), run("explicit")
    assert taken["resident"] and restored["resident"] and today["resident"] is False
    assert taken["state"] == today["state"]  # the snapshot is today's, bit for bit
    assert restored["ys"] == today["ys"] and restored["end"] == today["end"]  # and restores to the same stream


# -- the companion is a file of the bundle like any other: checked before it is used ---------------------------

def with_resident(fixture_bundles, tmp_path, content: bytes, **entry) -> tuple:
    """A copy of the lstm fixture whose float32 variant lists `content` as its resident companion."""
    bundle = tmp_path / "bundle"
    shutil.copytree(fixture_bundles["lstm"][1], bundle)
    (bundle / "model.float32.resident.tflite").write_bytes(content)
    record = {"file": "model.float32.resident.tflite", "sha256": hashlib.sha256(content).hexdigest(),
              "bytes": len(content), "compatibility": {r: None for r in RUNTIMES}, **entry}
    edit_manifest(bundle, lambda m: m["variants"][0].__setitem__("resident", record))
    return bundle


LOAD = """
    import json, edge_runtime
    from edge_runtime.manifest import BundleError
    try:
        model = edge_runtime.load({bundle!r}, variant="float32", backend={backend!r})
        session = model.session()
        print(json.dumps({{"resident": model.resident, "why_not": model.resident_why_not,
                          "session": session.resident, "y": float(session.step([20.0, 4.0])[0])}}))
    except BundleError as e:
        print(json.dumps({{"error": str(e)}}))
"""


def load_report(bundle, backend="ai_edge_litert") -> dict:
    done = run_isolated(LOAD.format(bundle=str(bundle), backend=backend))
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_a_changed_resident_file_refuses_the_bundle(fixture_bundles, tmp_path):
    bundle = with_resident(fixture_bundles, tmp_path, b"not a model" * 10)
    (bundle / "model.float32.resident.tflite").write_bytes(b"NOT a model" * 10)  # after the sha256 was recorded
    assert "model.float32.resident.tflite: sha256 mismatch" in load_report(bundle)["error"]


def test_a_resident_file_without_the_state_signatures_refuses_the_bundle(fixture_bundles, tmp_path):
    """The explicit-state model listed as the resident one: hashed and opening, but no get_state/set_state."""
    explicit = (fixture_bundles["lstm"][1] / "model.float32.tflite").read_bytes()
    error = load_report(with_resident(fixture_bundles, tmp_path, explicit))["error"]
    assert "model.float32.resident.tflite: no signature get_state, set_state" in error


def test_a_runtime_the_companion_does_not_open_in_steps_with_explicit_state(fixture_bundles, tmp_path):
    explicit = (fixture_bundles["lstm"][1] / "model.float32.tflite").read_bytes()
    refused = {"ai_edge_litert": "VAR_HANDLE (version 1) has not been verified", "tflite_runtime": None}
    report = load_report(with_resident(fixture_bundles, tmp_path, explicit, compatibility=refused))
    assert report["resident"] is False and report["session"] is False and np.isfinite(report["y"])
    assert "ai_edge_litert cannot open model.float32.resident.tflite: VAR_HANDLE" in report["why_not"]


def test_a_resident_file_outside_the_folder_is_refused(fixture_bundles, tmp_path):
    bundle = with_resident(fixture_bundles, tmp_path, b"x" * 64, file="../model.float32.tflite")
    assert "resident file: file name" in load_report(bundle)["error"]


def test_a_variant_without_a_companion_steps_as_before(fixture_bundles, tmp_path):
    bundle = tmp_path / "bundle"  # as convert wrote bundles before the resident companion
    shutil.copytree(fixture_bundles["lstm"][1], bundle)
    edit_manifest(bundle, lambda m: m["variants"][0].pop("resident"))
    (bundle / "model.float32.resident.tflite").unlink()
    report = load_report(bundle)
    assert report["resident"] is False and report["session"] is False
    assert report["why_not"] == "variant float32 has no resident step model"
