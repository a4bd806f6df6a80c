"""edge_runtime ships to devices: it must import and run where torch and TensorFlow cannot."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from conftest import ROOT, python_env, run_isolated


def test_the_blocker_really_blocks():
    done = run_isolated("import torch")
    assert done.returncode != 0 and "torch is blocked" in done.stderr


LEAKS = {
    "in_the_test": "def test_leak():\n    import tensorflow\n",
    "in_a_subprocess": textwrap.dedent("""
        import subprocess, sys
        from conftest import python_env
        def test_leak():
            done = subprocess.run([sys.executable, "-c", "import torch"], env=python_env(), capture_output=True, text=True)
            assert done.returncode == 0, done.stderr
    """),
    # loaded as a plugin before the fast tier's blocker is in place: the check at the session's end catches it
    "before_the_blocker": "def test_nothing():\n    pass\n",
}


@pytest.mark.parametrize("where", sorted(LEAKS))
def test_the_fast_tier_fails_a_run_that_imports_torch_or_tensorflow(tmp_path, where):
    """The fast tier's guard (conftest.py) run on a test file that leaks a heavy import: the run must fail."""
    leak = tmp_path / "test_leak.py"
    leak.write_text(LEAKS[where])
    early = ["-p", "torch"] if where == "before_the_blocker" else []
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *early, "-p", "conftest",
                           "-m", "not slow", str(leak)], capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env=python_env(PYTHONPATH=f"{ROOT / 'tests'}:{ROOT}"))
    assert done.returncode != 0, done.stdout
    caught = {"in_the_test": ["tensorflow is blocked in the fast test tier"],
              "in_a_subprocess": ["torch is blocked in the fast test tier"],
              # blocked at start-up when this run is the fast tier itself, else caught at the end
              "before_the_blocker": ["is blocked in the fast test tier", "the fast tier imported torch"]}[where]
    assert any(message in done.stdout + done.stderr for message in caught), done.stdout + done.stderr


def test_runtime_loads_steps_and_serves_the_cli_without_torch_or_tensorflow(fixture_bundles):
    run_dir, bundle = fixture_bundles["lstm"]
    done = run_isolated(f"""
        import io, json, sys
        import numpy as np
        import edge_runtime
        from edge_runtime.cli import main
        model = edge_runtime.load({str(bundle)!r})
        session = model.session()
        y = session.step([20.0, 4.0])
        h0 = session.get_state("h0")
        sys.stdout = io.StringIO()
        code = main(["run", {str(bundle)!r}, "--input", {str(run_dir / "test.csv")!r}])
        lines = sys.stdout.getvalue().splitlines()
        sys.stdout = sys.__stdout__
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "tensorflow", "train", "convert"))
        print(json.dumps({{"backend": model.backend, "y": y.tolist(), "h0": h0.shape, "code": code,
                          "lines": len(lines), "heavy": heavy}}))
    """)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["backend"] == "tflite_runtime"  # the first choice when installed
    assert result["heavy"] == [] and result["code"] == 0
    assert result["h0"] == [1, 8] and len(result["y"]) == 1
    assert result["lines"] == len((run_dir / "test.csv").read_text().splitlines()) - 1


def test_state_is_readable_writable_and_resettable(fixture_bundles):
    _, bundle = fixture_bundles["gru"]
    done = run_isolated(f"""
        import json, numpy as np, edge_runtime
        session = edge_runtime.load({str(bundle)!r}).session()
        samples = [[20.0 + 0.1 * i, 4.0] for i in range(50)]
        first = [session.step(s)[0] for s in samples]
        saved = {{n: session.get_state(n) for n in session.state}}
        after = [session.step(s)[0] for s in samples[:5]]
        for name, value in saved.items():
            session.set_state(name, value)        # restore a snapshot by name ...
        again = [session.step(s)[0] for s in samples[:5]]
        session.reset()
        fresh = [session.step(s)[0] for s in samples]
        try:
            session.set_state("h0", np.zeros((1, 3)))
            shape_error = ""
        except ValueError as e:
            shape_error = str(e)
        print(json.dumps({{"restored_equal": after == again, "reset_equal": first == fresh,
                          "names": sorted(saved), "shape_error": shape_error}}))
    """)
    assert done.returncode == 0, done.stderr
    r = json.loads(done.stdout.strip().splitlines()[-1])
    assert r["names"] == ["h0", "h1", "x_prev"]
    assert r["restored_equal"] and r["reset_equal"]
    assert "state 'h0' has shape [1, 8], got [1, 3]" in r["shape_error"]


def test_unknown_backend_is_an_error_naming_the_choices():
    done = run_isolated("""
        import edge_runtime.backends as b
        try:
            b.interpreter_class("coral")
        except b.BackendError as e:
            print(e)
    """)
    assert "unknown backend 'coral'; choose one of tflite_runtime, ai_edge_litert, tensorflow" in done.stdout
