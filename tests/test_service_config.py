"""The service's config is checked before anything starts (issue 14): every bad value is a one-line error
naming the key and exit 2, never a traceback, a MemoryError or a service that runs but never snapshots.

On the main branch before this file: `port = -1` raised OverflowError from the socket layer, a huge
`max_streams` tried to allocate its state arrays, `interval_s = nan` was accepted (no snapshot was ever
written again), `host = "0.0.0.0"` was accepted silently, and EDGE_RNN_BACKEND=tensorflow raised
AttributeError (TensorFlow 2.20 has no tf.lite.Interpreter).
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, python_env
from edge_runtime.service.config import ConfigError, parse_config
from service_helpers import ServiceProcess, free_port, wait_for, write_config

HEAD, SINK = 'bundle = "b"\nstate_dir = "s"\n', '[sinks.jsonl]\npath = "out.jsonl"\n'


def _config(text: str):
    return parse_config(text, Path("/srv/edge/edge.toml"))


@pytest.mark.parametrize("text, message", [
    ("[sources.tcp]\nport = -1\n", "[sources.tcp].port: should be between 0 and 65535, got -1"),
    ("[sources.tcp]\nport = 70000\n", "[sources.tcp].port: should be between 0 and 65535, got 70000"),
    ("[sources.tcp]\nport = '7878'\n", "[sources.tcp].port: should be int, got '7878'"),
    ("[sources.tcp]\nport = 7878.0\n", "[sources.tcp].port: should be int, got 7878.0"),
    ("[sources.mqtt]\nport = 0\n", "[sources.mqtt].port: should be between 1 and 65535, got 0"),
    ("[sources.tcp]\n[sinks.mqtt]\nport = 99999\n", "[sinks.mqtt].port: should be between 1 and 65535"),
    ("[sources.tcp]\n[streams]\nmax_streams = 10000000000000\n", "[streams].max_streams: should be between 1 and"),
    ("[sources.tcp]\n[streams]\nmax_streams = 0\n", "[streams].max_streams: should be between 1 and"),
    ("[sources.tcp]\n[snapshot]\ninterval_s = nan\n", "[snapshot].interval_s: should be a finite number, got nan"),
    ("[sources.tcp]\n[snapshot]\ninterval_s = inf\n", "[snapshot].interval_s: should be a finite number, got inf"),
    ("[sources.tcp]\n[snapshot]\ninterval_s = 0\n", "[snapshot].interval_s: should be between"),
    ("[sources.tcp]\n[status]\ninterval_s = -1.0\n", "[status].interval_s: should be between"),
    ("[sources.tcp]\n[input]\nqueue_size = 1e12\n", "[input].queue_size: should be int, got 1000000000000.0"),
    ("[sources.tcp]\n[input]\nfuture_horizon_s = -inf\n", "[input].future_horizon_s: should be a finite number"),
    ("[sources.tcp]\n[streams]\nbatched = 1\n", "[streams].batched: should be bool, got 1"),
    ("backend = 'coral'\n[sources.tcp]\n", "'backend' should be one of tflite_runtime, ai_edge_litert"),
    ("[sources.tcp]\nhost = '0.0.0.0'\n", "[sources.tcp].host: '0.0.0.0' is reachable from other machines"),
    ("[sources.tcp]\nhost = ''\n", "[sources.tcp].host: '' is reachable from other machines"),
    ("[sources.tcp]\nhost = 'edge.local'\n", "set allow_remote = true"),
    ("[sources.tcp]\n[wal]\nfsync = 'sometimes'\n", "[wal].fsync: should be one of batch, interval, off"),
    ("[sources.tcp]\n[wal]\nfsync_interval_s = 0\n", "[wal].fsync_interval_s: should be between"),
    ("[sources.tcp]\n[sinks.mqtt]\nmax_queued = 100000\n", "[sinks.mqtt].max_queued: should be between 1 and 65535"),
])
def test_each_bad_value_names_its_key(text, message):
    with pytest.raises(ConfigError) as e:
        _config(HEAD + text + SINK)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_loopback_hosts_pass_and_a_remote_one_needs_allow_remote():
    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert _config(HEAD + f"[sources.tcp]\nhost = '{host}'\n" + SINK).sources["tcp"].host == host
    allowed = _config(HEAD + "[sources.tcp]\nhost = '0.0.0.0'\nallow_remote = true\n" + SINK)
    assert allowed.sources["tcp"].allow_remote


def _serve_exit(config: Path, **env: str) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "edge_runtime", "serve", "--config", str(config)],
                          capture_output=True, text=True, timeout=120, env=python_env(**env), cwd=ROOT)
    return done.returncode, done.stderr


@pytest.mark.parametrize("extra, message", [
    ("[streams]\nmax_streams = 1000000000000\n", "[streams].max_streams: should be between 1 and 100000"),
    ("[snapshot]\ninterval_s = nan\n", "[snapshot].interval_s: should be a finite number, got nan"),
])
def test_the_service_refuses_a_bad_config_in_one_line(fixture_bundles, tmp_path, extra, message):
    _, bundle = fixture_bundles["gru"]
    config = write_config(tmp_path, bundle, "[sources.tcp]\nport = 0\n", '[sinks.jsonl]\npath = "out.jsonl"\n', extra)
    code, stderr = _serve_exit(config)
    assert code == 2, stderr
    assert message in stderr and "Traceback" not in stderr
    assert stderr.strip().splitlines()[-1].startswith("error: ") and len(stderr.strip().splitlines()) <= 2


def test_a_config_that_is_a_fifo_a_folder_or_not_utf8_is_one_line_not_a_hang(tmp_path):
    """`serve --config` on a FIFO blocked at start forever; bytes that are not UTF-8 were a traceback."""
    fifo, folder, binary = tmp_path / "fifo.toml", tmp_path / "folder.toml", tmp_path / "binary.toml"
    os.mkfifo(fifo)
    folder.mkdir()
    binary.write_bytes(b'bundle = "b"\n\xff\xfe\n')
    for path, message in ((fifo, "config file is a FIFO, not a regular file"),
                          (folder, "config file is a directory, not a regular file"),
                          (binary, "config file is not UTF-8 text (invalid start byte at byte 13)"),
                          (tmp_path / "absent.toml", "config file not found")):
        code, stderr = _serve_exit(path)  # a hang is subprocess's TimeoutExpired: a failure, not a stuck suite
        assert code == 2 and f"error: {path}: {message}" in stderr, stderr
        assert "Traceback" not in stderr


def test_a_negative_port_is_refused_before_anything_opens(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["gru"]
    config = write_config(tmp_path, bundle, "[sources.tcp]\nport = -1\n", '[sinks.jsonl]\npath = "out.jsonl"\n')
    code, stderr = _serve_exit(config)
    assert code == 2 and "[sources.tcp].port: should be between 0 and 65535, got -1" in stderr
    assert "Traceback" not in stderr and not (tmp_path / "out.jsonl").exists()


def test_an_allowed_remote_host_is_served_with_a_warning(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["gru"]
    config = write_config(tmp_path, bundle, f"[sources.tcp]\nhost = '0.0.0.0'\nallow_remote = true\nport = {free_port()}\n",
                          '[sinks.jsonl]\npath = "out.jsonl"\n')
    service = ServiceProcess(config)
    service.wait_running()
    warning = wait_for(lambda: service.log_events("tcp_open_to_network"), 30, what="the warning")[0]
    assert warning["level"] == "warning" and "no authentication" in warning["risk"]
    assert service.stop() == 0


@pytest.mark.slow
def test_a_backend_without_an_interpreter_is_a_one_line_error(fixture_bundles, tmp_path):
    """TensorFlow 2.20's tf.lite has no Interpreter: the backend is refused by name (slow: imports TensorFlow)."""
    _, bundle = fixture_bundles["gru"]
    config = write_config(tmp_path, bundle, "[sources.tcp]\nport = 0\n", '[sinks.jsonl]\npath = "out.jsonl"\n')
    code, stderr = _serve_exit(config, EDGE_RNN_BACKEND="tensorflow")
    assert code == 2 and "Traceback" not in stderr and "AttributeError" not in stderr
    assert "EDGE_RNN_BACKEND=tensorflow: backend 'tensorflow' is not usable" in stderr


def test_an_unknown_backend_in_the_environment_is_named(fixture_bundles, tmp_path):
    _, bundle = fixture_bundles["gru"]
    config = write_config(tmp_path, bundle, "[sources.tcp]\nport = 0\n", '[sinks.jsonl]\npath = "out.jsonl"\n')
    code, stderr = _serve_exit(config, EDGE_RNN_BACKEND="coral")
    assert code == 2 and "EDGE_RNN_BACKEND=coral: unknown backend 'coral'" in stderr and "Traceback" not in stderr
