"""A forecaster's part of the bundle skeleton (convert/bundle.py): what it is checked, calibrated and scored on.

- Parity: torch over the validation+test stream at once vs the TFLite step
  model one sample at a time with state fed back (normalized units).
- Extra section: the anomaly thresholds, from the validation split only.
- Calibration: (x, state) pairs of the float32 model run over the training split; for the
  integer variants, (delta, level, state) of the float32 core graph (convert/core_step.py).
- Batched companions for the float variants, checked against one Session per stream.
- Per-variant metrics: test MSE, drift, deployability (within the MSE budget, below
  persistence, drift check passed; every reason recorded).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from convert.anomaly import anomaly_section
from convert.bundle import manifest_head, manifest_provenance
from convert.parity import DRIFT_LIMIT, parity_stream, streaming_parity, variant_metrics
from edge_runtime.manifest import DEFAULT_MAX_MSE_RATIO
from edge_runtime.model import Model
from train.config import TRANSFORMER_CELL
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


def graph_classes(config: ModelConfig) -> tuple[type, type]:
    """(the raw step graph, the core step graph) for a forecaster's cell."""
    if config.cell == TRANSFORMER_CELL:
        from convert.transformer_step import TransformerCoreStepGraph, TransformerStepGraph

        return TransformerStepGraph, TransformerCoreStepGraph
    from convert.core_step import CoreStepGraph
    from convert.tf_step import StepGraph

    return StepGraph, CoreStepGraph


RING_TOLERANCE = 0.5  # steps: every decoded age must round to the true one, or a slot is mis-tracked


def ring_check(model, raw: np.ndarray, context: int) -> dict:
    """A transformer variant's ring bookkeeping against ground truth: its `age` state after 4 W + 3 samples of
    `raw` (T, C) (or all of them), from an empty ring. Integer variants carry the ages through requantized
    tensors; when they lose a step the one-hot write lands in the wrong slot and the cache is no longer the
    last W samples, which the test MSE alone did not show (int8 x1.06 with a broken ring, W = 16)."""
    from train.config import AGE
    from train.transformer import ring_ages

    steps = min(len(raw), 4 * context + 3)
    session = model.session()
    for row in raw[:steps]:
        session.step(row)
    error = np.abs(session.get_state(AGE)[0] - ring_ages(steps, context))
    return {"steps": steps, "max_age_error": float(error.max()), "tolerance": RING_TOLERANCE}


RESIDENT_PARITY_STEPS = 2000


def resident_parity(model, splits) -> dict:
    """The resident companion (state in variables) vs the explicit-state model, one stream, bit for bit.

    The same ops on the same values: every forecast and, every 100 steps and at the end, every state
    tensor must be the same float32 bits. Anything else refuses the bundle (a snapshot from one must
    restore into the other exactly).
    """
    raw = parity_stream(splits)[:RESIDENT_PARITY_STEPS]  # (T, C)
    explicit, resident = model.session(resident=False), model.session(resident=True)
    differing = []
    for t, row in enumerate(raw):
        if explicit.step(row).tobytes() != resident.step(row).tobytes():
            differing.append(f"y at step {t}")
        if t % 100 == 99 or t == len(raw) - 1:
            differing += [f"{n} at step {t}" for n, v in explicit.state.items() if v.tobytes() != resident.state[n].tobytes()]
        if differing:
            raise RuntimeError(f"{model.manifest.path}: resident step model of {model.variant.name} is not "
                               f"bit-identical to the explicit-state one: {differing[0]}")
    return {"steps": len(raw), "identical": True, "backend": model.backend}


BATCHED_RESIDENT_STREAMS = 128  # two blocks of BATCH_ROWS
BATCHED_RESIDENT_STEPS = 300


def batched_resident_parity(model, splits) -> dict:
    """The batched resident companion (64 streams' state in variables) vs the explicit-state batched
    companion, 128 streams (two interpreters of each) x 300 steps at different offsets, bit for bit.

    The same ops on the same values: every forecast and, every 50 steps and at the end, every state
    tensor must be the same float32 bits, or the bundle is refused (StreamPool moves a stream's state
    between the two whenever its row set changes, and its snapshots must not depend on which held it).
    """
    from edge_runtime.batched import BatchedStep, ResidentBlocks

    blocks = ResidentBlocks.open(model, BATCHED_RESIDENT_STREAMS)
    if isinstance(blocks, str):
        raise RuntimeError(f"{model.manifest.path}: batched resident model of {model.variant.name}: {blocks}")
    rows = blocks.rows
    raw = parity_stream(splits)  # (T, C)
    streams, steps = BATCHED_RESIDENT_STREAMS, min(BATCHED_RESIDENT_STEPS, len(raw) // 2)
    offsets = [k * (len(raw) - steps) // streams for k in range(streams)]
    explicit = BatchedStep(model, max_batch=rows)
    engines = [blocks.block(k) for k in range(streams // rows)]
    state = {s.name: np.zeros((streams, s.shape[1]), np.float32) for s in model.manifest.state}  # (N, n)
    primes = model.binding.primes_x_prev
    first = np.stack([raw[o] for o in offsets]).astype(np.float32)  # (N, C)
    if primes:  # both start primed as a Session's first step is (x_prev written in, the change reads 0)
        state["x_prev"] = np.ascontiguousarray(model.binding.x_prev_from(first), np.float32)
    for k, engine in enumerate(engines):
        engine.write({n: np.ascontiguousarray(v[k * rows:(k + 1) * rows]) for n, v in state.items()})
    for t in range(steps):
        x = np.stack([raw[o + t] for o in offsets]).astype(np.float32)  # (N, C)
        for k, engine in enumerate(engines):
            part = slice(k * rows, (k + 1) * rows)
            y, new = explicit.step(x[part], {n: v[part] for n, v in state.items()})
            for n, v in new.items():
                state[n][part] = v
            differing = []
            if y.tobytes() != blocks.step(engine, np.ascontiguousarray(x[part])).tobytes():
                differing.append(f"y at step {t}")
            if t % 50 == 49 or t == steps - 1:
                held = engine.read()
                differing += [f"{n} at step {t}" for n in state if held[n].tobytes() != state[n][part].tobytes()]
            if differing:
                raise RuntimeError(f"{model.manifest.path}: batched resident step model of {model.variant.name} "
                                   f"is not bit-identical to the explicit-state batched one: {differing[0]} "
                                   f"(block {k})")
    return {"streams": streams, "steps": steps, "identical": True, "backend": model.backend}


class ForecastConversion:
    parity_tolerance = PARITY_TOLERANCE
    parity_units = "normalized units"
    batched = True
    resident = True

    def __init__(self, run_dir: Path, weights: dict, info: dict, parity_steps: int = PARITY_STEPS,
                 max_mse_ratio: float = DEFAULT_MAX_MSE_RATIO):
        self.weights, self.info, self.parity_steps = weights, info, parity_steps
        self.max_mse_ratio = max_mse_ratio
        self.config, self.norm = ModelConfig.from_dict(info["model"]), info["normalization"]
        # a transformer's key/value cache rows would make the 64 rows' explicit zeros megabytes of constants
        self.batched_resident = self.config.cell != TRANSFORMER_CELL
        self.splits = np.load(Path(run_dir) / "splits.npz")
        self.torch_model = forecaster_from_weights(weights, info)

    def step_graph(self, batch: int | None = 1):
        return graph_classes(self.config)[0](self.weights, self.config, self.norm, batch=batch)

    def core_model(self, tmp: Path) -> tuple[str, list[dict], dict]:
        """The core graph the integer variants convert from (an LSTM's cell state per unit in its own
        scale, convert/core_step.py), its calibration samples (the float32 core over the training split),
        and the manifest's record of the cell scales ({} for none)."""
        from convert.core_step import cell_state_scales, rescale_cell_states
        from convert.ar_step import share_change_range  # an AR term's lags: one scale for every change
        from convert.quantize import VARIANTS, convert_variant
        from convert.tf_step import save_step_model

        core_graph = graph_classes(self.config)[1]
        plain = save_step_model(core_graph(self.weights, self.config), str(tmp / "saved_model_core_plain"))
        samples = self.core_calibration(convert_variant(plain, VARIANTS[0], [], core=True))
        scales = cell_state_scales(samples, self.config)
        if not scales:
            return plain, share_change_range(samples), {}
        scaled = core_graph(self.weights, self.config, cell_scales=scales)
        record = {f"c{k}": [float(v) for v in scale] for k, scale in scales.items()}  # float32 values, exact in JSON
        return (save_step_model(scaled, str(tmp / "saved_model_core")),
                share_change_range(rescale_cell_states(samples, scales)), record)

    def variant_calibration(self, variant: str, samples: list[dict]) -> list[dict]:
        """The core's calibration samples for one integer variant: a Transformer's ring inputs widened to
        ranges whose scales keep them exact (convert/transformer_step.py); anything else unchanged."""
        if self.config.cell != TRANSFORMER_CELL:
            return samples
        from convert.transformer_step import exact_ring_calibration

        return exact_ring_calibration(samples, variant)

    def manifest(self, name: str, variants: list[dict]) -> dict:
        manifest = build_manifest(name, self.config, self.info, variants)
        if self.config.has_ar:
            manifest["ar_order"] = self.config.ar_order  # the state: x_prev and lags, the samples AR(k) reads
        manifest["deployable_rule"] = {"max_mse_ratio": self.max_mse_ratio, "below_persistence": True,
                                       "drift_limit": DRIFT_LIMIT}
        return manifest

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

    def core_calibration(self, float_core: bytes) -> list[dict]:
        from functools import partial

        from convert.quantize import core_calibration_samples
        from edge_runtime.binding import StepBinding
        from edge_runtime.manifest import Variant

        manifest = _ManifestView(self.config, self.info)
        core = Variant("float32-core", "", "float32", "", 0, {"graph": "core"})
        binding_for = partial(StepBinding, manifest, variant=core)
        return core_calibration_samples(float_core, binding_for, self.splits["train"])

    def score(self, model: Model, entry: dict) -> None:
        if "batched" in entry:
            entry["batched"]["parity"] = batched_parity(model, self.splits)
        if "resident" in entry:
            entry["resident"]["parity"] = resident_parity(model, self.splits)
        if "batched_resident" in entry:
            entry["batched_resident"]["parity"] = batched_resident_parity(model, self.splits)
        metrics = variant_metrics(self.torch_model, model, self.splits, self.norm, self.info["metrics"]["test_mse"])
        metrics["drift"]["limit"] = DRIFT_LIMIT
        if self.config.cell == TRANSFORMER_CELL:
            metrics["ring"] = ring_check(model, parity_stream(self.splits), self.config.context)
        persistence = self.info["metrics"]["persistence_mse"]
        metrics["mse_vs_persistence"] = metrics["test_mse"] / persistence
        reasons = deployable_reasons(metrics, self.max_mse_ratio)
        metrics["deployable"] = not reasons
        if reasons:
            metrics["why_not_deployable"] = "; ".join(reasons)
            metrics["why_not_deployable_all"] = reasons
        entry["metrics"] = metrics


def deployable_reasons(metrics: dict, max_mse_ratio: float) -> list[str]:
    """Every reason a variant is not deployable: over the MSE budget, not below persistence, drifting."""
    reasons = []
    if not metrics["mse_ratio"] <= max_mse_ratio:  # NaN fails too
        reasons.append(f"test MSE {metrics['mse_ratio']:.3g}x float32's > {max_mse_ratio:g}")
    if not metrics["mse_vs_persistence"] < 1.0:
        reasons.append(f"test MSE {metrics['mse_vs_persistence']:.3g}x persistence's (not below it)")
    if not metrics["drift"]["ratio"] <= DRIFT_LIMIT:
        reasons.append(f"drift ratio {metrics['drift']['ratio']:.2f} > {DRIFT_LIMIT}")
    ring = metrics.get("ring")
    if ring is not None and not ring["max_age_error"] <= ring["tolerance"]:
        reasons.append(f"its KV ring loses track of its slots (ages off by up to {ring['max_age_error']:.3g} after "
                       f"{ring['steps']} steps): not the sliding-window model")
    return reasons


class _ManifestView:
    """What StepBinding reads of a manifest, before the manifest exists (for the core's calibration)."""

    def __init__(self, config: ModelConfig, info: dict):
        from edge_runtime.manifest import TensorSpec

        self.raw = {"features": list(config.features)}
        self.normalization, self.target = info["normalization"], tuple(config.target)
        self.input = TensorSpec("x", (1, config.input_size), "float32")
        self.output = TensorSpec("y", (1, config.output_size), "float32")
        self.state = tuple(TensorSpec(n, tuple(s), "float32") for n, s in config.state_shapes(1).items())
