"""Keep TensorFlow's chatter off the terminal and in a log file.

The converter prints from C++ straight to file descriptor 2 (`fully_quantize: 0, inference_type: 6, ...`,
`Created TensorFlow Lite XNNPACK delegate`), which no Python setting reaches, and TensorFlow warns in Python
(`tf.lite.Interpreter is deprecated ...`). Inside `chatter_to(log)`:
  - file descriptor 2 is the log: C++ output and child processes' stderr land there;
  - Python warnings and logging records (TensorFlow's, absl's) go to the log too;
  - sys.stderr is the terminal: progress bars, error messages and tracebacks stay visible.
"""
from __future__ import annotations

import io
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def chatter_to(log_path: Path) -> Iterator[Path]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stderr.flush()
    terminal_fd = os.dup(2)
    with open(log_path, "w", buffering=1) as log:
        os.dup2(log.fileno(), 2)
        absl_stream = _point_absl_at(log)
        records = logging.StreamHandler(log)  # on the root logger, so no logging call installs a stderr one
        logging.getLogger().addHandler(records)
        terminal = io.TextIOWrapper(os.fdopen(terminal_fd, "wb", buffering=0), line_buffering=True,
                                    encoding=sys.stderr.encoding, errors="backslashreplace")
        saved_stderr, saved_showwarning = sys.stderr, warnings.showwarning
        sys.stderr = terminal
        warnings.showwarning = lambda message, category, filename, lineno, file=None, line=None: log.write(
            warnings.formatwarning(message, category, filename, lineno, line))
        try:
            yield log_path
        finally:
            sys.stderr, warnings.showwarning = saved_stderr, saved_showwarning
            _point_absl_at(absl_stream)
            logging.getLogger().removeHandler(records)
            terminal.flush()
            log.flush()
            os.dup2(terminal_fd, 2)  # fd 2 is the terminal again; closing `terminal` closes only the copy
            terminal.close()


def _point_absl_at(stream):
    """absl's handler keeps the stream it was given (sys.stderr at its import): set it, return the old one."""
    try:
        from absl import logging as absl_logging
    except ImportError:
        return None
    handler = absl_logging.get_absl_handler().python_handler
    old, handler.stream = handler.stream, stream
    return old
