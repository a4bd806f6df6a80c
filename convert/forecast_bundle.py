"""A forecaster's part of the bundle skeleton (convert/bundle.py): what it is checked, calibrated and scored on.

- Parity: torch over the validation+test stream at once vs the TFLite step
  model one sample at a time with state fed back (normalized units).
- Extra section: the anomaly thresholds, from the validation split only.
- Calibration: (x, state) pairs of the float32 model run over the training split.
- Batched companions for the float variants, checked against one Session per stream.
- Per-variant metrics: test MSE, drift, deployability.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from convert.anomaly import anomaly_section
from convert.bundle import manifest_head, manifest_provenance
from convert.parity import DRIFT_LIMIT, parity_stream, streaming_parity, variant_metrics
from edge_runtime.model import Model
from train.models import ModelConfig, forecaster_from_weights

PARITY_STEPS = 2000
PARITY_TOLERANCE = 1e-4  # normalized units; float32 torch vs float32 TFLite, see tests


def build_manifest(name: str, config: ModelConfig, info: dict, variants: list[dict]) -> dict:
    stream = info["stream"]
    return {
        **manifest_head(name, "forecast", config),
        "features": list(config.features),
        # x and y are raw sensor units (normalization is inside the graph); state is normalized
        "io": {"input": {"name": "x", "shape": [1, config.input_size], "dtype": "float32", "units": "raw"},
               "output": {"name": "y", "shape": [1, config.output_size], "dtype": "float32", "units": "raw"}},
        "channels": stream["channels"], "units": stream["units"], "period_s": stream["period_s"],
        "target": list(config.target),
        "normalization": info["normalization"],
        "residual_std": info["metrics"]["val_residual_std"],  # normalized units, from validation
        "variants": variants,
        "training": {k: v for k, v in info["metrics"].items()
                     if k not in ("persistence_mse", "ar_mse", "ar_order", "ar_val_mse_by_order")},
        "baselines": {"persistence_mse": info["metrics"]["persistence_mse"],
                      "ar_mse": info["metrics"]["ar_mse"], "ar_order": info["metrics"]["ar_order"]},
        "data": stream,
        **manifest_provenance(info),
    }


BATCHED_PARITY_STREAMS = 8
BATCHED_PARITY_STEPS = 200
BATCHED_PARITY_TOLERANCE = 1e-5  # relative to the forecast's magnitude; see batched_parity


def batched_parity(model, splits) -> dict:
    """Batched companion vs one Session per stream, 8 streams x 200 steps at different offsets.

    Same float kernels on the same rows, so the two agree to float32 rounding
    (measured: 0 to a few ulp); a larger gap means the companion is not the
    same graph and the bundle is refused.
    """
    from edge_runtime.pool import StreamPool

    raw = parity_stream(splits)  # (T, C)
    offsets = [k * (len(raw) - BATCHED_PARITY_STEPS) // BATCHED_PARITY_STREAMS for k in range(BATCHED_PARITY_STREAMS)]
    pool = StreamPool(model, max_streams=BATCHED_PARITY_STREAMS, batched=True)
    sessions = [model.session() for _ in offsets]
    worst = 0.0
    for t in range(BATCHED_PARITY_STEPS):
        together = pool.step_many({str(k): raw[o + t] for k, o in enumerate(offsets)})
        for k, (o, session) in enumerate(zip(offsets, sessions)):
            alone = session.step(raw[o + t])
            worst = max(worst, float(np.max(np.abs(together[str(k)] - alone) / (1.0 + np.abs(alone)))))
    if worst > BATCHED_PARITY_TOLERANCE:
        raise RuntimeError(f"{model.manifest.path}: batched step model of {model.variant.name} disagrees with "
                           f"the (1, n) model by {worst:.2e} (relative) > {BATCHED_PARITY_TOLERANCE}")
    return {"streams": BATCHED_PARITY_STREAMS, "steps": BATCHED_PARITY_STEPS, "max_rel_error": worst,
            "backend": model.backend}


class ForecastConversion:
    parity_tolerance = PARITY_TOLERANCE
    parity_units = "normalized units"
    batched = True

    def __init__(self, run_dir: Path, weights: dict, info: dict, parity_steps: int = PARITY_STEPS):
        self.weights, self.info, self.parity_steps = weights, info, parity_steps
        self.config, self.norm = ModelConfig.from_dict(info["model"]), info["normalization"]
        self.splits = np.load(Path(run_dir) / "splits.npz")
        self.torch_model = forecaster_from_weights(weights, info)

    def step_graph(self, batch: int | None = 1):
        from convert.tf_step import StepGraph

        return StepGraph(self.weights, self.config, self.norm, batch=batch)

    def manifest(self, name: str, variants: list[dict]) -> dict:
        return build_manifest(name, self.config, self.info, variants)

    def parity(self, float_model: Model) -> dict:
        return streaming_parity(self.torch_model, float_model, parity_stream(self.splits), self.norm,
                                self.parity_steps)

    def add_sections(self, manifest: dict, float_model: Model) -> None:
        # residual spread and alarm thresholds from the validation split only (test stays held out)
        manifest["anomaly"] = anomaly_section(float_model, self.splits["val"], int(self.splits["warmup"]),
                                              self.info["stream"]["period_s"])

    def calibration(self, float_model: Model) -> list[dict]:
        from convert.quantize import calibration_samples

        return calibration_samples(float_model, self.splits["train"])

    def score(self, model: Model, entry: dict) -> None:
        if "batched" in entry:
            entry["batched"]["parity"] = batched_parity(model, self.splits)
        entry["metrics"] = variant_metrics(self.torch_model, model, self.splits, self.norm,
                                           self.info["metrics"]["test_mse"])
        drift = entry["metrics"]["drift"]["ratio"]
        entry["metrics"]["deployable"] = drift <= DRIFT_LIMIT
        if drift > DRIFT_LIMIT:
            entry["metrics"]["why_not_deployable"] = f"drift ratio {drift:.2f} > {DRIFT_LIMIT}"
