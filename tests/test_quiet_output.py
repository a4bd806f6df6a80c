"""convert.quiet.chatter_to: native and Python chatter go to the log, progress and errors stay on the terminal."""
from __future__ import annotations

import subprocess
import sys
import textwrap

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
