"""StreamPool.step_rows (issue 19): the array API for many streams equals one Session per stream bit for bit.

Every comparison here has tolerance 0: outputs and every state tensor are compared as bit patterns
(uint32 views of the float32 values, so NaN == NaN when it is the same NaN). The batched models run
each row alike (the float companion; a core graph's own step model resized: edge_runtime/batched.py),
and the integer variants' state goes through the same Codec encode/decode as Session's.
Each case runs in a fresh process: tflite-runtime cannot share one with TensorFlow.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import IN_PROCESS_BACKEND, copy_bundle, edit_manifest, run_isolated

BACKENDS = ("tflite_runtime", "ai_edge_litert")
VARIANTS = (("lstm", "float32"), ("lstm", "int8-io"), ("lstm", "int16x8"), ("gru", "int16x8"))

# A long run: streams join, leave (and come back as new streams), reset; each step a random subset
# in random order (fancy-index path) or every stream in row order (the contiguous-slice path).
PARITY = """
import json, numpy as np, edge_runtime
from edge_runtime.pool import StreamPool
model = edge_runtime.load(BUNDLE, variant=VARIANT, backend=BACKEND)
m = model.manifest
mean, std = (np.asarray(m.normalization[k], np.float64) for k in ("mean", "std"))
pool = StreamPool(model, max_streams=48, max_batch=32)
sessions, rows, rng = {}, {}, np.random.default_rng(19)
level = {}
bits = lambda a: np.asarray(a, np.float32).view(np.uint32)
mismatch, stepped, paths, next_id = [], 0, {"slice": 0, "fancy": 0}, 0
for t in range(STEPS):
    if len(sessions) < 40 and (t < 5 or rng.random() < 0.3):          # join
        for _ in range(rng.integers(1, 4)):
            sid = f"s{next_id}"; next_id += 1
            sessions[sid] = model.session(); rows[sid] = pool.add(sid)
            level[sid] = mean + std * rng.normal(0, 1, mean.shape)
    if len(sessions) > 8 and rng.random() < 0.1:                      # leave
        gone = rng.choice(sorted(sessions))
        pool.remove(gone); del sessions[gone], rows[gone]
    if sessions and rng.random() < 0.05:                             # reset
        sid = rng.choice(sorted(sessions))
        pool.reset(sid); sessions[sid].reset()
    ids = sorted(sessions, key=rows.get)
    if rng.random() < 0.5:
        ids = list(rng.permutation(ids)[: rng.integers(1, len(ids) + 1)])
    for sid in ids:                                                   # a random walk, sometimes a jump
        level[sid] = level[sid] + std * rng.normal(0, 0.05 if rng.random() < 0.97 else 2.0, mean.shape)
    r = np.asarray([rows[i] for i in ids])
    x = np.asarray([level[i] for i in ids])                           # (B, C) float64 raw units
    contiguous = bool(np.all(np.diff(r) == 1))
    paths["slice" if contiguous else "fancy"] += len(ids) > 1
    y = pool.step_rows(r, x)
    for k, sid in enumerate(ids):
        alone = sessions[sid].step(list(x[k]))
        if not np.array_equal(bits(y[k]), bits(alone)):
            mismatch.append(f"t={t} {sid} y {y[k]} vs {alone}")
        for name, array in pool.state.items():
            if not np.array_equal(bits(array[rows[sid]]), bits(sessions[sid].state[name][0])):
                mismatch.append(f"t={t} {sid} state {name}")
        if pool.steps_of(sid) != sessions[sid].steps:
            mismatch.append(f"t={t} {sid} steps {pool.steps_of(sid)} vs {sessions[sid].steps}")
    stepped += len(ids)
batched = pool.batched
print(json.dumps({"mismatch": mismatch[:5], "stepped": stepped, "paths": paths, "streams": next_id,
                  "source": batched and batched.source, "buckets": sorted(batched._buckets) if batched else None}))
"""


def run_case(script: str, timeout: float = 240, **values) -> dict:
    code = "".join(f"{k} = {v!r}\n" for k, v in values.items()) + script
    done = run_isolated(code, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell,variant", VARIANTS)
def test_step_rows_equals_one_session_per_stream(fixture_bundles, backend, cell, variant):
    r = run_case(PARITY, BUNDLE=str(fixture_bundles[cell][1]), VARIANT=variant, BACKEND=backend, STEPS=500)
    assert r["mismatch"] == []
    # int16x8 has float32 at its signature and quantizes inside the graph: one call per stream
    # (edge_runtime/batched.py says why); its rows go through Session, and still must match
    assert r["source"] == {"float32": "companion", "int8-io": "resized", "int16x8": None}[variant]
    assert r["stepped"] > 5000 and r["streams"] > 48  # rows were reused by new streams
    assert r["paths"]["slice"] > 50 and r["paths"]["fancy"] > 50
    assert r["source"] is None or r["buckets"][-1] == 32  # batches above max_batch were cut


SNAPSHOT = """
import json, hashlib, numpy as np, edge_runtime
from pathlib import Path
from edge_runtime.pool import StreamPool
from edge_runtime.service.snapshot import read_snapshot, write_snapshot
model = edge_runtime.load(BUNDLE, variant=VARIANT, backend=BACKEND)
mean = np.asarray(model.manifest.normalization["mean"], np.float64)
pool, rng = StreamPool(model, max_streams=16), np.random.default_rng(3)
sessions = {f"s{k}": model.session() for k in range(10)}
rows = pool.rows_of(list(sessions), add=True)
for t in range(120):
    x = mean + rng.normal(0, 1, (10, len(mean)))
    pool.step_rows(rows, x)
    for k, s in enumerate(sessions.values()):
        s.step(list(x[k]))
meta = {"streams": [{"id": i, "steps": pool.steps_of(i)} for i in sessions]}
def write(path, arrays):
    write_snapshot(Path(path), meta, arrays)
    return Path(path).read_bytes()
from_pool = write(OUT + "/pool.snap", {f"state.{n}": a[rows] for n, a in pool.state.items()})
from_sessions = write(OUT + "/sessions.snap", {f"state.{n}": np.concatenate([s.state[n] for s in sessions.values()])
                                               for n in pool.state})
_, arrays = read_snapshot(Path(OUT + "/pool.snap"))
restored = StreamPool(model, max_streams=16)
for k, i in enumerate(sessions):
    restored.set_state(i, {n: arrays[f"state.{n}"][k] for n in pool.state}, pool.steps_of(i))
again_rows = restored.rows_of(list(sessions))
again = write(OUT + "/again.snap", {f"state.{n}": a[again_rows] for n, a in restored.state.items()})
x = mean + rng.normal(0, 1, (10, len(mean)))
same_next = np.array_equal(pool.step_rows(rows, x).view(np.uint32), restored.step_rows(again_rows, x).view(np.uint32))
print(json.dumps({"pool_equals_sessions": from_pool == from_sessions, "restore_equals": again == from_pool,
                  "same_next": bool(same_next), "bytes": len(from_pool)}))
"""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["float32", "int8-io"])
def test_snapshot_of_pool_rows_is_the_sessions_snapshot_and_restores_bit_for_bit(fixture_bundles, tmp_path,
                                                                                   backend, variant):
    r = run_case(SNAPSHOT, BUNDLE=str(fixture_bundles["lstm"][1]), VARIANT=variant, BACKEND=backend,
                 OUT=str(tmp_path))
    assert r == {"pool_equals_sessions": True, "restore_equals": True, "same_next": True, "bytes": r["bytes"]}


# -- bad input: one line each, nothing stepped -----------------------------------------------------
@pytest.fixture(scope="module")
def pool_of(fixture_bundles):
    import edge_runtime
    from edge_runtime.pool import StreamPool

    def make(variant: str = "float32", max_streams: int = 8):
        model = edge_runtime.load(fixture_bundles["lstm"][1], variant=variant, backend=IN_PROCESS_BACKEND)
        return StreamPool(model, max_streams=max_streams)
    return make


@pytest.mark.parametrize("variant", ["float32", "int8-io"])
@pytest.mark.parametrize("rows,x,message", [
    ([0, 1], [[20.0, 4.0]], r"samples have shape \[1, 2\], expected \(2, 2\) for 2 rows"),
    ([0, 1], [[20.0, 4.0, 1.0], [20.0, 4.0, 1.0]], r"samples have shape \[2, 3\], expected \(2, 2\)"),
    ([0, 5], [[20.0, 4.0], [20.0, 4.0]], r"row 5 holds no stream \(add it first\)"),
    ([0, 9], [[20.0, 4.0], [20.0, 4.0]], r"row 9 is outside the pool \(rows 0\.\.7\)"),
    ([-1, 0], [[20.0, 4.0], [20.0, 4.0]], r"row -1 is outside the pool"),
    ([1, 0, 1], [[20.0, 4.0]] * 3, r"row 1 appears more than once"),
    ([[0, 1]], [[20.0, 4.0]], r"rows must be a 1-D array of integers, got shape \[1, 2\]"),
    ([0.0, 1.0], [[20.0, 4.0]] * 2, r"rows must be a 1-D array of integers"),
])
def test_bad_rows_or_samples_are_one_line_errors_and_change_nothing(pool_of, variant, rows, x, message):
    pool = pool_of(variant)
    pool.rows_of(["a", "b", "c"], add=True)  # rows 0, 1, 2
    before = {n: a.copy() for n, a in pool.state.items()}, pool.steps.copy()
    with pytest.raises(ValueError, match=message) as caught:
        pool.step_rows(rows, x)
    assert "\n" not in str(caught.value)
    assert all(np.array_equal(before[0][n], a) for n, a in pool.state.items()) and (pool.steps == before[1]).all()


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # int8-io: NaN -> int, as Session
@pytest.mark.parametrize("variant", ["float32", "int8-io"])
def test_a_non_finite_sample_poisons_only_its_own_row_as_in_session(pool_of, fixture_bundles, variant):
    """As today: the pool does not refuse NaN (the service refuses it when it parses a line); the stream's
    output and state become what one Session makes of it, and the other rows are untouched."""
    pool = pool_of(variant)
    rows = pool.rows_of(["a", "b", "c"], add=True)
    model = pool.model
    sessions = [model.session() for _ in rows]
    x = np.array([[20.0, 4.0], [20.5, 4.1], [21.0, 4.2]])
    for t in range(5):
        x_t = x + 0.1 * t
        if t == 3:
            x_t[1, 0] = np.nan
        y = pool.step_rows(rows, x_t)
        for k, s in enumerate(sessions):
            alone = s.step(list(x_t[k]))
            assert np.array_equal(y[k].view(np.uint32), np.asarray(alone, np.float32).view(np.uint32))
    assert np.isfinite(y[[0, 2]]).all()
    if variant == "float32":  # int8-io: the NaN is cast to an integer on the way in, as in Session
        assert np.isnan(y[1]).all()
    assert all(np.isfinite(array[[0, 2]]).all() for array in pool.state.values())


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_step_rows_in_any_order_equals_step_many_of_the_same_samples(pool_of, data):
    """Property: the same samples stepped through step_rows (rows in any order, any subset) and through
    step_many (the dict API) leave the same forecasts and states, bit for bit."""
    variant = data.draw(st.sampled_from(["float32", "int8-io"]))
    a, b = pool_of(variant, 16), pool_of(variant, 16)
    ids = [f"s{k}" for k in range(data.draw(st.integers(2, 16)))]
    rows_a, rows_b = a.rows_of(ids, add=True), b.rows_of(ids, add=True)
    for _ in range(data.draw(st.integers(1, 4))):
        chosen = data.draw(st.lists(st.sampled_from(range(len(ids))), min_size=1, max_size=len(ids), unique=True))
        x = np.asarray(data.draw(st.lists(st.tuples(st.floats(10, 30), st.floats(0, 8)), min_size=len(chosen),
                                          max_size=len(chosen))))
        y_a = a.step_rows(rows_a[chosen], x)
        y_b = b.step_many({ids[k]: list(x[j]) for j, k in enumerate(chosen)})
        assert all(np.array_equal(y_a[j].view(np.uint32), y_b[ids[k]].view(np.uint32)) for j, k in enumerate(chosen))
    for name in a.state:
        assert np.array_equal(a.state[name][rows_a].view(np.uint32), b.state[name][rows_b].view(np.uint32))


# The steady state of a gateway: the same streams, in row order, filling their bucket, call after call. The
# pool then keeps the new state as the interpreter handed it out and feeds it straight back (no scatter);
# every read, reset, join, leave or other call writes it to the rows first. Reads here come between steps;
# each step's mean level moves, so the inputs cover the integer range.
STEADY = """
import json, numpy as np, edge_runtime
from edge_runtime.pool import StreamPool
model = edge_runtime.load(BUNDLE, variant=VARIANT, backend=BACKEND)
mean = np.asarray(model.manifest.normalization["mean"], np.float64)
pool, rng = StreamPool(model, max_streams=12, max_batch=8), np.random.default_rng(5)
ids = [f"s{k}" for k in range(8)]
sessions = {i: model.session() for i in ids}
rows = pool.rows_of(ids, add=True)
bits = lambda a: np.asarray(a, np.float32).view(np.uint32)
bad, kept = [], 0
for t in range(300):
    event = t % 37
    if event == 5:
        pool.reset("s3"); sessions["s3"].reset()
    elif event == 11:                                  # a read of state (a snapshot's) between two steps
        for name, array in pool.state.items():
            for k, i in enumerate(ids):
                bad += [] if np.array_equal(bits(array[rows[k]]), bits(sessions[i].state[name][0])) else [f"t={t} read {name}"]
    elif event == 17:                                  # another set of rows in between
        other = mean + rng.normal(0, 1, (3, len(mean)))
        y = pool.step_rows(rows[2:5], other)
        for k, i in enumerate(ids[2:5]):
            bad += [] if np.array_equal(bits(y[k]), bits(sessions[i].step(list(other[k])))) else [f"t={t} other"]
    elif event == 23:                                  # a stream leaves, another joins on its row
        pool.remove("s6"); sessions.pop("s6")
        assert pool.add("s6") == rows[6]; sessions["s6"] = model.session()
    elif event == 29:                                  # restore a state by hand
        state = {n: a[rows[1]].copy() for n, a in pool.state.items()}
        pool.set_state("s1", state, pool.steps_of("s1"))
    x = mean + rng.normal(0, 1, (8, len(mean)))
    kept += pool._pending is not None
    y = pool.step_rows(rows, x)
    for k, i in enumerate(ids):
        alone = sessions[i].step(list(x[k]))
        if not np.array_equal(bits(y[k]), bits(alone)):
            bad.append(f"t={t} {i} y")
        if t % 7 == 0 and pool.steps_of(i) != sessions[i].steps:
            bad.append(f"t={t} {i} steps")
for name, array in pool.state.items():
    for k, i in enumerate(ids):
        bad += [] if np.array_equal(bits(array[rows[k]]), bits(sessions[i].state[name][0])) else [f"end {name} {i}"]
print(json.dumps({"bad": bad[:5], "kept": kept}))
"""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("variant", ["float32", "int8-io"])
def test_the_steady_state_feeds_the_state_back_and_every_read_sees_it(fixture_bundles, backend, variant):
    """int8-io: the pending outputs are integers, requantized and decoded through tables (every read
    decodes them); float32: the arrays the interpreter handed out."""
    r = run_case(STEADY, BUNDLE=str(fixture_bundles["lstm"][1]), BACKEND=backend, VARIANT=variant)
    assert r["bad"] == []
    assert r["kept"] > 150  # most calls took the feed-back path


# -- the steady state inside the batched resident companion (64 streams' state in variables per interpreter) --
# 128 streams in two blocks step together call after call; in between: reads of state and steps (steps_of must
# leave the state in the blocks), a snapshot written and compared byte for byte with the sessions', a reset, a
# stream leaving and another joining on its row, a hand restore, one block's rows stepped alone, a few rows
# stepped apart, and a second pool restored from the snapshot going on in its own steady state.
RESIDENT_STEADY = """
import json, numpy as np, edge_runtime
from pathlib import Path
from edge_runtime.pool import StreamPool
from edge_runtime.service.snapshot import write_snapshot
model = edge_runtime.load(BUNDLE, variant=VARIANT, backend=BACKEND)
mean, std = (np.asarray(model.manifest.normalization[k], np.float64) for k in ("mean", "std"))
pool, rng = StreamPool(model, max_streams=160, max_batch=64), np.random.default_rng(7)
ids = [f"s{k}" for k in range(128)]
sessions = {i: model.session() for i in ids}
rows = pool.rows_of(ids, add=True)
level = mean + std * rng.normal(0, 1, (128, len(mean)))
bits = lambda a: np.asarray(a, np.float32).view(np.uint32)
bad, held, kept_by_steps_of, snapshots = [], 0, 0, {}
def compare_state(tag):
    return [f"{tag} {name} {i}" for name, array in pool.state.items() for k, i in enumerate(ids)
            if not np.array_equal(bits(array[rows[k]]), bits(sessions[i].state[name][0]))]
def snapshot(path, arrays):
    write_snapshot(Path(path), {"streams": [{"id": i, "steps": pool.steps_of(i)} for i in ids]}, arrays)
    return Path(path).read_bytes()
for t in range(STEPS):
    event = t % 41
    if event == 5:
        pool.reset("s3"); sessions["s3"].reset()
    elif event == 9:                                  # steps only: the state stays in the blocks
        before = pool._held
        bad += [f"t={t} steps {i}" for i in ids[::9] if pool.steps_of(i) != sessions[i].steps]
        bad += [] if (pool.steps[rows] == [sessions[i].steps for i in ids]).all() else [f"t={t} steps array"]
        kept_by_steps_of += before is not None and pool._held is before
    elif event == 13:                                 # a read of state between two steps
        bad += compare_state(f"t={t} read")
    elif event == 17:                                 # a snapshot, byte for byte the sessions' one
        from_pool = snapshot(OUT + "/pool.snap", {f"state.{n}": a[rows] for n, a in pool.state.items()})
        from_sessions = snapshot(OUT + "/sessions.snap", {f"state.{n}": np.concatenate(
            [sessions[i].state[n] for i in ids]) for n in pool.state})
        bad += [] if from_pool == from_sessions else [f"t={t} snapshot bytes"]
        snapshots = {"t": t, "state": {n: a[rows].copy() for n, a in pool.state.items()},
                     "steps": [pool.steps_of(i) for i in ids]}
    elif event == 23:                                 # a stream leaves, another joins on its row
        pool.remove("s70"); sessions.pop("s70")
        assert pool.add("s70") == rows[70]; sessions["s70"] = model.session()
    elif event == 29:                                 # restore a state by hand
        state = {n: a[rows[1]].copy() for n, a in pool.state.items()}
        pool.set_state("s1", state, pool.steps_of("s1"))
    elif event in (31, 37):                           # one block alone (a different held slice), or a few rows
        part = slice(64, 128) if event == 31 else slice(2, 5)
        other = level[part] + std * rng.normal(0, 0.05, level[part].shape)
        y = pool.step_rows(rows[part], other.astype(np.float32))
        for k, i in enumerate(ids[part]):
            bad += [] if np.array_equal(bits(y[k]), bits(sessions[i].step(list(other[k])))) else [f"t={t} other {i}"]
    level = level + std * rng.normal(0, 0.05, level.shape)
    x = level.astype(np.float32)
    held += pool._held is not None
    y = pool.step_rows(rows, x)
    for k, i in enumerate(ids):
        if not np.array_equal(bits(y[k]), bits(sessions[i].step(list(x[k])))):
            bad.append(f"t={t} {i} y")
bad += compare_state("end")
restored = StreamPool(model, max_streams=160)       # from the last snapshot, on through a steady state of its own
again = restored.rows_of(ids, add=True)
for k, i in enumerate(ids):
    restored.set_state(i, {n: a[k] for n, a in snapshots["state"].items()}, snapshots["steps"][k])
fresh_pool = StreamPool(model, max_streams=160)       # and the same restore through the explicit path
fresh_pool._blocks = None
again_explicit = fresh_pool.rows_of(ids, add=True)
for k, i in enumerate(ids):
    fresh_pool.set_state(i, {n: a[k] for n, a in snapshots["state"].items()}, snapshots["steps"][k])
for t in range(30):
    x = (mean + std * rng.normal(0, 1, (128, len(mean)))).astype(np.float32)
    if not np.array_equal(bits(restored.step_rows(again, x)), bits(fresh_pool.step_rows(again_explicit, x))):
        bad.append(f"restored t={t}")
bad += [f"restored {n}" for n in restored.state if not np.array_equal(bits(restored.state[n]), bits(fresh_pool.state[n]))]
print(json.dumps({"bad": bad[:5], "held": held, "kept_by_steps_of": kept_by_steps_of,
                  "why_not": pool.resident_why_not, "blocks": len(pool._blocks._engines)}))
"""


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_the_steady_state_inside_the_batched_resident_companion_equals_one_session_per_stream(
        fixture_bundles, tmp_path, cell, backend):
    r = run_case(RESIDENT_STEADY, BUNDLE=str(fixture_bundles[cell][1]), BACKEND=backend, VARIANT="float32",
                 OUT=str(tmp_path), STEPS=300)
    assert r["bad"] == []
    assert r["why_not"] is None and r["blocks"] == 2  # one interpreter per 64-row block
    assert r["held"] > 200  # most calls stepped with the state in the variables
    assert r["kept_by_steps_of"] >= 5  # reading step counts did not pull the state out


def without_batched_resident(bundle: Path) -> Path:
    """The bundle as convert wrote it before the batched resident companion (entry and file gone)."""
    def drop(manifest):
        for variant in manifest["variants"]:
            variant.pop("batched_resident", None)
    edit_manifest(bundle, drop)
    for file in bundle.glob("*.batch.resident.tflite"):
        file.unlink()
    return bundle


def test_a_bundle_without_the_batched_resident_companion_steps_with_explicit_state(fixture_bundles, tmp_path):
    """Older bundles (and a transformer's) have none: the pool feeds the state in and out, and says why."""
    import edge_runtime
    from edge_runtime.pool import StreamPool

    bundle = without_batched_resident(copy_bundle(fixture_bundles, tmp_path))
    model = edge_runtime.load(bundle, variant="float32", backend=IN_PROCESS_BACKEND)
    pool, sessions = StreamPool(model, max_streams=64), [model.session() for _ in range(64)]
    rows = pool.rows_of([f"s{k}" for k in range(64)], add=True)
    assert pool.resident_why_not == "variant float32 has no batched resident step model"
    mean = np.asarray(model.manifest.normalization["mean"], np.float32)
    for t in range(20):
        x = mean + np.float32(0.1 * t) * np.ones((64, len(mean)), np.float32)
        y = pool.step_rows(rows, x)
        assert all(np.array_equal(y[k].view(np.uint32), s.step(x[k]).view(np.uint32)) for k, s in enumerate(sessions))
    assert pool._held is None and pool._pending is not None  # the explicit steady state


def replace_batched_resident(bundle: Path, content: bytes, rehash: bool = True, **entry) -> None:
    """Write `content` as the float32 variant's batched resident file; rehash: the manifest's size and sha256
    follow it (an edited file passed off as the real one), else they stay (a file damaged on the way)."""
    import hashlib

    file = bundle / "model.float32.batch.resident.tflite"
    file.write_bytes(content)

    def change(manifest):
        record = next(v for v in manifest["variants"] if v["name"] == "float32")["batched_resident"]
        if rehash:
            record.update(sha256=hashlib.sha256(content).hexdigest(), bytes=len(content))
        record.update(entry)
    edit_manifest(bundle, change)


@pytest.mark.parametrize("damage,message", [
    # the bytes changed, the manifest not: the hash check names the file
    (lambda b: replace_batched_resident(b, b"\0" + (b / "model.float32.batch.resident.tflite").read_bytes()[1:],
                                        rehash=False), r"model\.float32\.batch\.resident\.tflite: sha256 mismatch"),
    # the explicit batched model passed off as the resident one: no get/set_state signatures
    (lambda b: replace_batched_resident(b, (b / "model.float32.batch.tflite").read_bytes()),
     r"model\.float32\.batch\.resident\.tflite: no signature get_state, set_state"),
    # the one-stream resident companion passed off as the 64-row one: shapes
    (lambda b: replace_batched_resident(b, (b / "model.float32.resident.tflite").read_bytes()),
     r"model\.float32\.batch\.resident\.tflite: signature 'step' has inputs \(x \[1, 2\] float32\) where the "
     r"manifest says \(x \[64, 2\] float32\)"),
    # listed, but not there
    (lambda b: (b / "model.float32.batch.resident.tflite").unlink(), r"model\.float32\.batch\.resident\.tflite"),
])
def test_a_damaged_batched_resident_companion_is_refused_naming_its_file(fixture_bundles, tmp_path, damage, message):
    """Listed in the manifest, it must be what convert wrote (it was checked bit for bit against the explicit
    batched model): anything else refuses the pool at start with the file named, not a silent fallback."""
    import edge_runtime
    from edge_runtime.manifest import BundleError
    from edge_runtime.pool import StreamPool

    bundle = copy_bundle(fixture_bundles, tmp_path)
    damage(bundle)
    model = edge_runtime.load(bundle, variant="float32", backend=IN_PROCESS_BACKEND)
    with pytest.raises(BundleError, match=message) as caught:
        StreamPool(model, max_streams=64)
    assert "\n" not in str(caught.value)
    assert StreamPool(model, max_streams=64, batched=False).resident_why_not  # batched = false still opens
    # a pool smaller than a block never uses the file (nor reads it: no cost at start for a small gateway)
    assert StreamPool(model, max_streams=63).resident_why_not == "max_streams 63 < a block of 64 streams"


@pytest.mark.parametrize("rows,message", [(1, r"batched_resident\.rows: 1 is outside \[2, 4096\]"),
                                          ("64", r"batched_resident\.rows: should be an integer"),
                                          (None, r"batched_resident: missing required field 'rows'")])
def test_the_batched_resident_rows_are_checked_when_the_manifest_is_read(fixture_bundles, tmp_path, rows, message):
    from edge_runtime.manifest import BundleError, read_manifest

    bundle = copy_bundle(fixture_bundles, tmp_path)

    def change(manifest):
        record = next(v for v in manifest["variants"] if v["name"] == "float32")["batched_resident"]
        record.pop("rows") if rows is None else record.update(rows=rows)
    edit_manifest(bundle, change)
    with pytest.raises(BundleError, match=message):
        read_manifest(bundle)
