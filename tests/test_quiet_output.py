"""convert.quiet.chatter_to: native and Python chatter go to the log, progress and errors stay on the terminal;
edge_runtime.backends.allocate: the interpreters' banner stays out of what the device's commands print."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from conftest import ROOT

SCRIPT = textwrap.dedent("""
    import os, sys, warnings
    from pathlib import Path
    from absl import logging as absl_logging
    from convert.quiet import chatter_to

    with chatter_to(Path(sys.argv[1])):
        os.write(2, b"fully_quantize: 0, inference_type: 6\\n")  # as the converter's C++ does
        warnings.warn("tf.lite.Interpreter is deprecated")
        absl_logging.warning("absl chatter")
        subprocess_line = "child stderr"
        import subprocess
        subprocess.run([sys.executable, "-c", f"import sys; print({subprocess_line!r}, file=sys.stderr)"], check=True)
        print("progress 50%", file=sys.stderr)  # tqdm writes to sys.stderr
    print("after: terminal again", file=sys.stderr)
    os.write(2, b"native after\\n")
    raise SystemExit("error: a one-line failure")
""")


def test_chatter_goes_to_the_log_and_progress_and_errors_to_the_terminal(tmp_path):
    log = tmp_path / "reports" / "demo.log"
    done = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], capture_output=True, text=True, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=60)
    terminal = done.stderr.splitlines()
    assert terminal == ["progress 50%", "after: terminal again", "native after", "error: a one-line failure"], terminal
    logged = log.read_text()
    for chatter in ("fully_quantize: 0, inference_type: 6", "tf.lite.Interpreter is deprecated", "absl chatter",
                    "child stderr"):
        assert chatter in logged, (chatter, logged)
    assert "progress" not in logged


# edge_runtime.backends.allocate: the interpreters' one-time XNNPACK banner, printed from C++ to fd 2 at a
# process's first allocate_tensors(), is kept out of what the device's commands print; nothing else is.
BANNER = "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."


@pytest.mark.parametrize("backend", ["tflite_runtime", "ai_edge_litert"])
def test_the_services_log_on_stderr_is_json_lines_only(backend, fixture_bundles, tmp_path):
    bundle = fixture_bundles["lstm"][1]
    config = tmp_path / "edge.toml"
    config.write_text(f'bundle = "{bundle}"\nstate_dir = "{tmp_path / "state"}"\nbackend = "{backend}"\n'
                      f'[sources.stdin]\n[sinks.jsonl]\npath = "{tmp_path / "out.jsonl"}"\n')
    done = subprocess.run([sys.executable, "-m", "edge_runtime", "serve", "--config", str(config)],
                          input="a,1,20.0,0.1\na,2,20.1,0.1\nnot a sample\n", capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.splitlines()
    not_json = [line for line in lines if not _is_json_object(line)]
    assert not not_json, not_json  # before: the banner was the first line
    events = [json.loads(line)["event"] for line in lines]
    assert "started" in events and "rejected" in events, events  # the log itself still gets through
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2


@pytest.mark.parametrize("backend", ["tflite_runtime", "ai_edge_litert"])
def test_run_prints_only_its_own_line_on_stderr(backend, fixture_bundles):
    run, bundle = fixture_bundles["lstm"]
    done = subprocess.run([sys.executable, "-m", "edge_runtime", "run", str(bundle), "--input", str(run / "test.csv"),
                           "--backend", backend], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [f"running float32 (11552 bytes) on {backend}"], done.stderr


ALLOCATE_SCRIPT = textwrap.dedent(f"""
    import os
    from edge_runtime.backends import allocate

    class Interpreter:  # what the runtime's allocate_tensors() writes to fd 2, from C
        def __init__(self, fails):
            self.fails = fails
        def allocate_tensors(self):
            os.write(2, b"{BANNER}\\n")
            os.write(2, b"ERROR: Didn't find op for builtin opcode 'MUL' version '3'\\n")
            if self.fails:
                raise RuntimeError("Encountered unresolved custom op")

    try:
        allocate(Interpreter(fails=True))
    except RuntimeError as e:
        os.write(2, f"raised: {{e}}\\n".encode())
    allocate(Interpreter(fails=False))  # only the first allocation of a process is captured
""")


def test_only_the_banner_is_kept_back_and_only_at_the_first_allocation():
    done = subprocess.run([sys.executable, "-c", ALLOCATE_SCRIPT], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines() == [
        "ERROR: Didn't find op for builtin opcode 'MUL' version '3'",  # passed on, in order, before the raise
        "raised: Encountered unresolved custom op",
        BANNER, "ERROR: Didn't find op for builtin opcode 'MUL' version '3'"], done.stderr


def _is_json_object(line: str) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False
