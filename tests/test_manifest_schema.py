"""Every manifest value the runtime uses is checked when the bundle is read (issue 14).

A malformed value is a one-line error naming its field, exit 2 from the CLI, never a traceback;
`serve` refuses it at start instead of dying mid-stream.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

import edge_runtime
from conftest import IN_PROCESS_BACKEND, ROOT, copy_bundle, edit_manifest, python_env, run_cli
from edge_runtime import BundleError
from service_helpers import write_config

START_TIMEOUT_S = 60  # a refused bundle exits at once; a running service would hit this


@pytest.fixture
def bundle(tmp_path, fixture_bundles):
    return copy_bundle(fixture_bundles, tmp_path)


def set_in(path: list, value):
    """A change that sets manifest[path[0]][path[1]]... = value."""
    def change(m):
        node = m
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


MALFORMED = [  # (change, what the one-line error must say)
    (set_in(["target"], [0.5]), r"target\[0\]: should be an integer, got 0\.5"),
    (set_in(["target"], [True]), r"target\[0\]: should be an integer, got True"),
    (set_in(["target"], [2]), r"target\[0\]: 2 is outside \[0, 1\]"),
    (set_in(["io", "input", "shape"], [1, 1e400]), r"io\.input\.shape\[1\]: should be an integer, got inf"),
    (set_in(["io", "output", "shape"], [1, 10 ** 9]), r"io\.output\.shape\[1\]: 1000000000 is outside"),
    (set_in(["state", 0, "shape"], [1, -3]), r"state\[0\]\.shape\[1\]: -3 is outside"),
    (set_in(["state", 1, "name"], ["h0"]), r"state\[1\]\.name: \['h0'\] is not a tensor name"),
    (set_in(["layers"], "2"), r"layers: should be an integer, got '2'"),
    (set_in(["name"], "two\nlines"), r"name: 'two\\nlines' should be 1 to 128 printable characters"),
    (set_in(["channels"], [1, 2]), r"channels\[0\]: should be a string, got 1"),
    (set_in(["channels"], ["a", "a"]), r"channels: names are not unique"),
    (set_in(["normalization", "std"], [0.4, float("nan")]), r"normalization\.std\[1\]: nan is not a finite number"),
    (set_in(["normalization", "mean"], [1e308, 3.0]), r"normalization\.mean\[0\]: 1e\+308 is not a finite number"),
    (set_in(["normalization", "delta_std"], [0.1]), r"normalization\.delta_std: has 1 values, needs 2"),
    (set_in(["variants", 0, "bytes"], True), r"variants\[0\]\.bytes: should be an integer, got True"),
    (set_in(["variants", 0, "sha256"], "abc"), r"variants\[0\]\.sha256: should be 64 lowercase hex digits"),
    (set_in(["variants", 0, "metrics", "mse_ratio"], "big"), r"variants\[0\]\.metrics\.mse_ratio: should be a number"),
    (set_in(["variants", 0, "compatibility", "tflite_runtime"], 3), r"compatibility\.'tflite_runtime': should be null"),
    (set_in(["variants", 0, "batched"], []), r"variants\[0\]\.batched: should be an object"),
    (set_in(["variants", 0, "resident", "compatibility"], 1), r"variants\[0\]\.resident\.compatibility: should be an object"),
    (set_in(["variants", 0, "batched_resident", "rows"], 0), r"variants\[0\]\.batched_resident\.rows: 0 is outside"),
    (set_in(["variants", 0, "batched_resident", "compatibility", "ai_edge_litert"], []),
     r"batched_resident\.compatibility\.'ai_edge_litert': should be null or a reason"),
    (set_in(["anomaly", "threshold"], "4"), r"anomaly\.threshold: should be a number, got '4'"),
    (set_in(["anomaly", "residual_std"], [0.1, 0.2]), r"anomaly\.residual_std: has 2 values, needs 1"),
    (set_in(["features"], ["level", "speed"]), r"features\[1\]: 'speed' is not one of delta, level"),
    (set_in(["deployable_rule", "max_mse_ratio"], -1), r"deployable_rule\.max_mse_ratio: should be positive"),
    (set_in(["training"], json.loads("[" * 40 + "]" * 40)), r"nested more than 32 levels deep"),
]


@pytest.mark.parametrize("change, message", MALFORMED, ids=[m for _, m in MALFORMED])
def test_a_malformed_value_is_refused_with_its_field_named(bundle, change, message):
    edit_manifest(bundle, change)
    with pytest.raises(BundleError, match=message) as refused:
        edge_runtime.load(bundle, backend=IN_PROCESS_BACKEND)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("text, message", [
    ("[" * 100_000 + "]" * 100_000, "not valid JSON .nested too deeply."),  # json raises RecursionError
    ('{"schema_version": 1, "layers": ' + "9" * 5000 + "}", "not valid JSON .Exceeds the limit"),
    ('{"schema_version": 1}\xff', "not valid JSON"),
])
def test_unparseable_manifests_are_one_line_errors(bundle, text, message):
    (bundle / "manifest.json").write_bytes(text.encode("utf-8", "surrogateescape") if "\xff" not in text
                                           else text.encode("latin-1"))
    with pytest.raises(BundleError, match=message) as refused:
        edge_runtime.read_manifest(bundle)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize("command", ["run", "info"])
def test_the_cli_refuses_a_malformed_manifest_with_exit_2_and_one_line(bundle, command):
    edit_manifest(bundle, set_in(["io", "input", "shape"], [1, 1e400]))
    args = [command, str(bundle)] + (["--input", "-"] if command == "run" else [])
    done = run_cli("edge_runtime", *args, stdin="index,indoor,outdoor\n0,20,5\n")
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "io.input.shape[1]: should be an integer" in done.stderr


def test_serve_refuses_a_fractional_target_at_start(bundle, tmp_path):
    """Before: target [0.5] passed the reader and killed serve at its second sample, no final snapshot."""
    edit_manifest(bundle, set_in(["target"], [0.5]))
    config = write_config(tmp_path / "svc", bundle, "[sources.stdin]\n", "[sinks.jsonl]\npath = \"out.jsonl\"\n")
    done = subprocess.run([sys.executable, "-m", "edge_runtime", "serve", "--config", str(config)],
                          input='{"id": "a", "t": 1, "values": [20, 5]}\n' * 3, capture_output=True, text=True,
                          timeout=START_TIMEOUT_S, env=python_env(), cwd=ROOT)
    assert done.returncode == 2, done.stderr
    assert "cannot_start" in done.stderr and "target[0]: should be an integer, got 0.5" in done.stderr
    assert "Traceback" not in done.stderr
