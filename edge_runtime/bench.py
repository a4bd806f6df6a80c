"""Per-step latency of a bundle's variants on this machine, through Session.step.

One thread, warm-up first, then the median and spread of several timed
repeats; raw sensor samples in and out, exactly what a caller pays.
"""
from __future__ import annotations

import time

import numpy as np

from edge_runtime.session import load


def time_per_step(step, samples: np.ndarray, repeats: int) -> list[float]:
    """Microseconds per call of step(sample), one figure per repeat over all samples."""
    for sample in samples[: len(samples) // 10 + 1]:  # warm-up
        step(sample)
    figures = []
    for _ in range(repeats):
        started = time.perf_counter()
        for sample in samples:
            step(sample)
        figures.append((time.perf_counter() - started) / len(samples) * 1e6)
    return figures


def bench_bundle(bundle, variants: list[str] | None = None, backend: str | None = None,
                 steps: int = 2000, repeats: int = 5) -> dict:
    """variant -> {median_us, min_us, max_us}; variants this backend cannot open get {error}."""
    from edge_runtime.manifest import BundleError, read_manifest

    manifest = read_manifest(bundle)
    names = variants or [v.name for v in manifest.variants]
    mean = np.asarray(manifest.normalization["mean"], np.float32)
    std = np.asarray(manifest.normalization["std"], np.float32)
    rng = np.random.default_rng(0)
    samples = (mean + std * rng.standard_normal((steps, len(mean)))).astype(np.float32)  # (T, C)
    results, used = {}, None
    for name in names:
        try:
            model = load(bundle, variant=name, backend=backend)
        except BundleError as e:
            results[name] = {"error": str(e)}
            continue
        used = model.backend
        figures = time_per_step(model.session().step, samples, repeats)
        results[name] = {"median_us": float(np.median(figures)), "min_us": min(figures), "max_us": max(figures)}
    return {"backend": used or backend, "steps": steps, "repeats": repeats, "variants": results}
