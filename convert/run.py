"""A training run -> a bundle: the task of the checkpoint picks its `TaskConversion`, the skeleton does the rest."""
from __future__ import annotations

from pathlib import Path

from convert.autocomplete_bundle import AutocompleteConversion
from convert.bundle import write_bundle
from convert.forecast_bundle import PARITY_STEPS, ForecastConversion
from train.checkpoint import load_checkpoint


def convert_run(run_dir: Path, out_dir: Path, parity_steps: int = PARITY_STEPS,
                variants: tuple[str, ...] | None = None, firmware_variant: str = "int8-io",
                max_mse_ratio: float | None = None, sign_key=None) -> dict:
    """runs/<name>/ -> artifacts/<name>/ with every variant; returns the manifest written."""
    weights, info = load_checkpoint(Path(run_dir) / "checkpoint.safetensors")
    if info.get("task") == "autocomplete":
        task = AutocompleteConversion(run_dir, weights, info)
    else:  # forecast checkpoints written before the task field existed have none
        task = ForecastConversion(run_dir, weights, info, parity_steps,
                                  **({} if max_mse_ratio is None else {"max_mse_ratio": max_mse_ratio}))
    return write_bundle(task, run_dir, out_dir, variants, firmware_variant, sign_key)
