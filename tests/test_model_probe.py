"""A model that crashes the interpreter cannot take the caller down (issue 14).

The crashing model is built here from a fixture: operator 0's offset to its inputs vector gets
0xF0 as its high byte, so it points about 4 GB past the buffer. tflite-runtime 2.14 does not
verify the flatbuffer and dies with SIGSEGV reading it; ai-edge-litert's verifier refuses it.
The manifest's sha256 is updated to match: the bundle is self-consistent, only the probe stops it.
"""
from __future__ import annotations

import signal
import subprocess
import sys

import pytest

import edge_runtime
from conftest import IN_PROCESS_BACKEND, ROOT, python_env, run_cli
from edge_runtime import BundleError
from edge_runtime.probe import load_probed
from model_bytes import make_crashing_bundle
from service_helpers import write_config

MODEL = "model.float32.tflite"
CSV = "index,indoor,outdoor\n0,20,5\n1,20.1,5\n"


@pytest.fixture
def crashing(tmp_path, fixture_bundles):
    return make_crashing_bundle(fixture_bundles["lstm"][1], tmp_path / "crashing")


def test_the_mutated_model_really_segfaults_tflite_runtime(crashing):
    """The premise: opened in a process of its own, tflite-runtime dies by SIGSEGV."""
    code = ("import sys; from tflite_runtime.interpreter import Interpreter; "
            "i = Interpreter(model_content=open(sys.argv[1], 'rb').read()); i.allocate_tensors(); i.invoke()")
    done = subprocess.run([sys.executable, "-c", code, str(crashing / MODEL)], capture_output=True, timeout=60,
                          env=python_env(), cwd=ROOT)
    assert done.returncode == -signal.SIGSEGV


def test_run_refuses_a_model_that_segfaults_the_interpreter_and_names_the_signal(crashing):
    done = run_cli("edge_runtime", "run", str(crashing), "--input", "-", "--backend", "tflite_runtime", stdin=CSV)
    assert done.returncode == 2, (done.returncode, done.stderr)  # before: -11, the process itself was killed
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "crashed the tflite_runtime interpreter" in lines[0] and "SIGSEGV" in lines[0]


def test_serve_refuses_it_at_start_with_the_signal_named_and_exits_cleanly(crashing, tmp_path):
    config = write_config(tmp_path / "svc", crashing, "[sources.stdin]\n", '[sinks.jsonl]\npath = "out.jsonl"\n',
                          extra='backend = "tflite_runtime"')
    done = subprocess.run([sys.executable, "-m", "edge_runtime", "serve", "--config", str(config)],
                          input="", capture_output=True, text=True, timeout=120, env=python_env(), cwd=ROOT)
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert "cannot_start" in done.stderr and "killed by SIGSEGV" in done.stderr


def test_the_parent_survives_in_process(crashing):
    with pytest.raises(BundleError, match=r"crashed the tflite_runtime interpreter .*killed by SIGSEGV"):
        load_probed(crashing, backend="tflite_runtime")


def test_a_verifying_interpreter_refuses_it_cleanly_and_the_probe_passes_its_message_on(crashing):
    with pytest.raises(BundleError, match=r"ai_edge_litert interpreter cannot open it .*not a valid Flatbuffer"):
        load_probed(crashing, backend="ai_edge_litert")


def test_a_good_bundle_is_probed_then_loaded(fixture_bundles):
    bundle = fixture_bundles["lstm"][1]
    model = load_probed(bundle, backend=IN_PROCESS_BACKEND, batched=None)
    assert model.manifest.sha256 == edge_runtime.read_manifest(bundle).sha256
    assert model.session().step([20.0, 5.0]).shape == (1,)


def test_a_probe_that_does_not_finish_in_time_refuses_the_bundle(fixture_bundles):
    with pytest.raises(BundleError, match=r"did not finish within 0\.001 s"):
        load_probed(fixture_bundles["lstm"][1], backend=IN_PROCESS_BACKEND, timeout_s=0.001)
