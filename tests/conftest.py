"""Shared fixtures: tiny real bundles (trained and converted here), and a way to run
code in a fresh process where torch and TensorFlow cannot be imported.

Why subprocesses: tflite_runtime 2.14 misreads signatures in a process that
has TensorFlow loaded ("vector::reserve"), and the device never has torch or
TensorFlow anyway. In this (TensorFlow-loaded) test process, bundles are
opened with ai_edge_litert.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
IN_PROCESS_BACKEND = "ai_edge_litert"
TINY_CELLS = ("rnn", "gru", "lstm")

# Prepended to isolated snippets: any import of these packages fails as it would on a device.
BLOCK_HEAVY_IMPORTS = textwrap.dedent("""
    import sys
    class _BlockHeavy:
        blocked = {"torch", "tensorflow", "keras", "train", "convert"}
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in self.blocked:
                raise ImportError(f"{name} is blocked: edge_runtime must not need it")
            return None
    sys.meta_path.insert(0, _BlockHeavy())
""")


def run_isolated(code: str, timeout: float = 120, **env: str) -> subprocess.CompletedProcess:
    """Run `code` in a fresh interpreter with torch/tensorflow/train/convert unimportable."""
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", **env}
    return subprocess.run([sys.executable, "-c", BLOCK_HEAVY_IMPORTS + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=timeout, env=environment, cwd=ROOT)


def run_cli(*args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    environment = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, env=environment, cwd=ROOT)


def make_tiny_bundle(root: Path, cell: str, features=("level", "delta"), layers: int = 2) -> tuple[Path, Path]:
    """Train a tiny model for 2 epochs on the 2-channel temperature stream, convert it."""
    from convert.run import convert_run
    from train.models import ModelConfig
    from train.run import train_run
    from train.scenarios import make_stream
    from train.trainer import TrainConfig

    stream = make_stream("temperature", 8000, seed=1)  # val + test cover the 2,000 parity steps
    name = f"tiny-{cell}-{'-'.join(features)}"
    config = ModelConfig(cell=cell, hidden=8, layers=layers, input_size=2, target=(0,), features=features)
    train_run(stream, config, TrainConfig(epochs=2, lanes=8), root / "runs" / name, progress=False)
    convert_run(root / "runs" / name, root / "artifacts" / name)
    return root / "runs" / name, root / "artifacts" / name


@pytest.fixture(scope="session")
def tiny_bundles(tmp_path_factory) -> dict[str, tuple[Path, Path]]:
    """cell -> (run folder, bundle folder); 2 layers, hidden 8, both level and delta features."""
    root = tmp_path_factory.mktemp("tiny")
    return {cell: make_tiny_bundle(root, cell) for cell in TINY_CELLS}


def manifest_of(bundle: Path) -> dict:
    return json.loads((bundle / "manifest.json").read_text())
