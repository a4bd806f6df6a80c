"""Fuzzing the manifest reader with hypothesis (issue 14).

Property: any mutation of a real fixture manifest (values replaced by arbitrary JSON, keys
deleted or added, bytes flipped, inserted or cut) either reads, or is refused with a one-line
BundleError; never another exception. A manifest that reads must also survive what the
runtime does with it without opening a model (`info`, the deployable rule, the anomaly spec,
the input bounds), and, in the smaller second test, opening the model and stepping it.
10,000 examples in the full tier (make test), a few hundred in the fast tier.
"""
from __future__ import annotations

import contextlib
import io
import json
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import edge_runtime
from conftest import FIXTURE_BUNDLES, IN_PROCESS_BACKEND
from edge_runtime import BundleError
from edge_runtime.anomaly import AnomalySpec
from edge_runtime.bounds import value_bounds
from edge_runtime.cli import main as cli_main
from edge_runtime.manifest import parse_manifest, why_not_deployable

FULL_TIER_EXAMPLES = 10_000
FAST_TIER_EXAMPLES = 300
LOAD_EXAMPLES = 150  # each one opens an interpreter: fewer
FIXTURES = ("tiny-lstm-level-delta", "tiny-gru-level-delta", "lecture4-lstm")
ORIGINALS = {name: json.loads((FIXTURE_BUNDLES / name / "manifest.json").read_text()) for name in FIXTURES}


def paths_of(value, prefix=()) -> list[tuple]:
    """Every path (tuple of keys and indices) into a JSON document, the root included."""
    found = [prefix]
    if isinstance(value, dict):
        for key, child in value.items():
            found += paths_of(child, prefix + (key,))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            found += paths_of(child, prefix + (index,))
    return found


PATHS = {name: paths_of(doc)[1:] for name, doc in ORIGINALS.items()}  # not the root itself

json_scalars = (st.none() | st.booleans() | st.integers(min_value=-(10 ** 30), max_value=10 ** 30)
                | st.sampled_from([0, 1, -1, 2, 10 ** 400, 2 ** 63]) | st.floats()
                | st.text(max_size=12) | st.sampled_from(["", "../x", "/dev/zero", "float32", "x", "a\nb"]))
json_values = st.recursive(json_scalars, lambda kids: st.lists(kids, max_size=4)
                           | st.dictionaries(st.text(max_size=8), kids, max_size=4), max_leaves=8)


def get(doc, path):
    for key in path:
        doc = doc[key]
    return doc


@st.composite
def mutated_documents(draw) -> tuple[str, bytes]:
    """(fixture name, manifest bytes): the fixture with 1-3 structural mutations, then maybe byte edits."""
    name = draw(st.sampled_from(FIXTURES))
    doc = json.loads(json.dumps(ORIGINALS[name]))
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS[name]))
        try:
            parent = get(doc, path[:-1])
            parent[path[-1]]  # noqa: B018 (an earlier mutation may have removed it)
        except (KeyError, IndexError, TypeError):
            continue
        if not isinstance(parent, (dict, list)):  # an earlier replace left a string where a list was: "ab"[0] reads
            continue
        action = draw(st.sampled_from(["replace", "replace", "delete", "add_key"]))
        if action == "replace":
            parent[path[-1]] = draw(json_values)
        elif action == "delete":
            del parent[path[-1]]
        elif isinstance(parent, dict):
            parent[draw(st.text(max_size=8))] = draw(json_values)
    data = bytearray(json.dumps(doc).encode())  # json.dumps writes NaN/Infinity as Python's json reads them
    for _ in range(draw(st.integers(0, 2))):
        at = draw(st.integers(0, len(data)))
        edit = draw(st.sampled_from(["flip", "insert", "cut"]))
        if edit == "flip" and at < len(data):
            data[at] ^= draw(st.integers(1, 255))
        elif edit == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=4))
        else:
            del data[at:at + draw(st.integers(1, 16))]
    return name, bytes(data)


@pytest.fixture(scope="module")
def scratch():
    """One folder per fixture (the model files copied once); each example rewrites its manifest."""
    with tempfile.TemporaryDirectory() as tmp:
        folders = {}
        for name in FIXTURES:
            folders[name] = Path(tmp) / name
            shutil.copytree(FIXTURE_BUNDLES / name, folders[name])
        yield folders


def assert_reads_or_refuses_cleanly(folder: Path, data: bytes) -> None:
    (folder / "manifest.json").write_bytes(data)
    try:
        manifest = parse_manifest(data, folder)
    except BundleError as e:
        assert "\n" not in str(e) and len(str(e)) < 2000, str(e)
        manifest = None
    if manifest is not None:  # what the runtime does with a manifest before opening a model
        for variant in manifest.variants:
            why_not_deployable(manifest, variant)
        if manifest.task == "forecast":
            value_bounds(manifest.normalization)
            try:
                AnomalySpec.from_manifest(manifest)
            except BundleError as e:
                assert "\n" not in str(e)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()) as err:
        code = cli_main(["info", str(folder)])
    assert code == (0 if manifest is not None else 2), err.getvalue()


def check(scratch, case) -> None:
    name, data = case
    assert_reads_or_refuses_cleanly(scratch[name], data)


SETTINGS = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow])


@settings(max_examples=FAST_TIER_EXAMPLES, **SETTINGS)
@given(case=mutated_documents())
def test_a_mutated_manifest_reads_or_is_refused_in_one_line(scratch, case):
    check(scratch, case)


@pytest.mark.slow
@settings(max_examples=FULL_TIER_EXAMPLES, **SETTINGS)
@given(case=mutated_documents())
def test_ten_thousand_mutated_manifests_read_or_are_refused_in_one_line(scratch, case):
    check(scratch, case)


@settings(max_examples=LOAD_EXAMPLES, **SETTINGS)
@given(case=mutated_documents())
def test_a_mutated_manifest_that_reads_also_opens_and_steps_or_is_refused(scratch, case):
    """The model files are the real ones: whatever the manifest says, load + two steps end in a result or
    a BundleError (before: a `target` of [0.5] passed and failed at the step)."""
    name, data = case
    folder = scratch[name]
    (folder / "manifest.json").write_bytes(data)
    try:
        model = edge_runtime.load(folder, backend=IN_PROCESS_BACKEND)
    except BundleError as e:
        assert "\n" not in str(e)
        return
    session = model.session()
    if model.manifest.task == "forecast":
        for _ in range(2):
            session.step([float(m) for m in model.manifest.normalization["mean"]])
    else:
        session.feed(model.manifest.vocabulary.letters[0])
        session.suggest(3)
