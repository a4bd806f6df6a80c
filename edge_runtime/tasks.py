"""The one place that knows the tasks: manifest.task -> the `Model` class that opens its sessions.

    forecast      ForecastModel: session() -> Session (raw sensor units in and out)
    autocomplete  AutocompleteModel: session() -> Autocomplete (letters in, words out)
"""
from __future__ import annotations

from pathlib import Path

from edge_runtime.autocomplete import AutocompleteModel
from edge_runtime.manifest import TASKS, BundleError, Manifest, read_manifest
from edge_runtime.model import Model
from edge_runtime.session import ForecastModel

MODELS: dict[str, type[Model]] = {"forecast": ForecastModel, "autocomplete": AutocompleteModel}
assert set(MODELS) == set(TASKS)


def load(bundle_dir: str | Path, variant: str | None = None, backend: str | None = None,
         num_threads: int = 1, max_mse_ratio: float | None = None, trusted_key: str | Path | None = None) -> Model:
    """Read and verify a bundle, open one variant with one interpreter backend.

    variant: a name from the manifest; or None with max_mse_ratio: the smallest
    deployable variant whose recorded test MSE is within that multiple of the
    float32 model's and which this backend can open; or None: the first (float32).
    The model's class follows the manifest's task, so `model.session()` is a
    forecast `Session` or an `Autocomplete` typing session.
    trusted_key: a PEM Ed25519 public key; the bundle must then be signed with its private key.
    """
    manifest = read_manifest(bundle_dir, trusted_key)
    return MODELS[manifest.task](manifest, variant, backend, num_threads, max_mse_ratio)


# what each task's commands take and the other task's commands to use instead
COMMANDS_FOR = {"forecast": "run, eval, bench, anomalies, serve",
                "autocomplete": "complete, eval-complete, bench-complete"}


def require_task(bundle: str | Path, task: str, command: str) -> Manifest:
    """The bundle's manifest, or a one-line BundleError naming its task when `command` needs another."""
    manifest = read_manifest(bundle)
    if manifest.task != task:
        article = "an" if manifest.task[0] in "aeiou" else "a"
        if task == "autocomplete":
            raise BundleError(f"{bundle}: {article} {manifest.task} bundle; this command needs an autocomplete bundle")
        what = ("runs the edge service over sensor streams of" if command == "serve"
                else "streams sensor samples through")
        raise BundleError(f"{bundle}: {article} {manifest.task} bundle; '{command}' {what} a {task} bundle "
                          f"(for {manifest.task}: {COMMANDS_FOR[manifest.task]})")
    return manifest
