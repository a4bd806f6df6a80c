"""The per-channel gain on the correction (train/output_gains.py): fitted on validation, folded into the head.

Tolerances:
- a correction that is pure noise: the fitted gain is the noise's regression coefficient on the change,
  about N(0, 1/sqrt(n)), clipped at 0; with n = 5,000 that is <= 0.05 at 3.5 sigma, and the shrunk
  forecast's MSE is then within alpha^2 <= 0.25% of persistence's (1% written down);
- folded vs scaled: the same float32 function with one row of the head scaled, so torch agrees to 1e-6;
  through TFLite float32 the converter's own parity tolerance (1e-4 normalized, tests/test_parity.py).
"""
from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import IN_PROCESS_BACKEND

pytestmark = pytest.mark.slow  # torch


def test_a_pure_noise_correction_gets_gain_zero_and_persistence_results():
    """Ground truth: on a random walk the next change is independent of anything the model saw, so the
    best shrinkage of any correction is 0 and the shrunk forecast is persistence."""
    from train.output_gains import fit_gains

    rng = np.random.default_rng(0)
    change = rng.standard_normal((5000, 2))  # (T, O) a random walk's next changes
    correction = 0.8 * rng.standard_normal((5000, 2))  # independent of the change: noise
    gains = fit_gains(change, correction)
    assert np.all(np.asarray(gains["alpha"]) <= 0.05) and gains["kept"] == [True, True]
    persistence = np.mean(change ** 2, axis=0)
    np.testing.assert_allclose(gains["val_mse_after"], persistence, rtol=0.01)
    # the model as trained paid for its noise: 1 + 0.8^2 of persistence's MSE
    np.testing.assert_allclose(gains["val_mse_before"], 1.64 * persistence, rtol=0.05)


def test_an_overshooting_correction_is_halved_and_a_good_one_is_left_alone():
    """change = 0.5 * previous change + noise. A correction of 1.0 * previous change overshoots by 2x:
    its gain is 0.5. The exact correction's gain is ~1, and the margin rule keeps the head as trained."""
    from train.output_gains import fit_gains

    rng = np.random.default_rng(1)
    noise = rng.standard_normal(20001)
    change = np.zeros(20001)
    for t in range(1, len(change)):
        change[t] = 0.5 * change[t - 1] + noise[t]
    previous, nxt = change[:-1, None], change[1:, None]  # (T, 1)
    over = fit_gains(nxt, 1.0 * previous)
    assert over["alpha"][0] == pytest.approx(0.5, abs=0.02) and over["kept"] == [True]
    good = fit_gains(nxt, 0.5 * previous)
    assert good["fitted"][0] == pytest.approx(1.0, abs=0.03)
    assert good["alpha"] == [1.0] and good["kept"] == [False]  # a fitted 0.98 is not a 2% win
    assert good["val_mse_after"] == good["val_mse_before"]
    off = fit_gains(nxt, 1.0 * previous, margin=1.0)  # margin >= 1: no gains at all
    assert off["alpha"] == [1.0] and off["kept"] == [False]


def test_folding_scales_the_correction_and_nothing_else():
    """A Forecaster with random weights: folding alpha into the head gives y = x + alpha * (y_before - x)
    at every step, per channel; alpha = 0 is persistence exactly."""
    import torch

    from train.models import Forecaster, ModelConfig, Scales
    from train.output_gains import fold_gains
    from train.trainer import stream_forecast

    torch.manual_seed(0)
    config = ModelConfig(cell="lstm", hidden=8, input_size=3, target=(0, 2))
    norm = {"mean": [0.0] * 3, "std": [1.0, 2.0, 0.5], "delta_std": [0.1, 0.3, 0.2]}
    model = Forecaster(config, Scales.from_normalization(norm, config.target)).eval()
    x = np.random.default_rng(2).standard_normal((500, 3)).astype(np.float32)
    before = stream_forecast(model, x)  # (T, 2)
    fold_gains(model, [0.25, 0.0])
    after = stream_forecast(model, x)
    now = x[:, [0, 2]]
    np.testing.assert_allclose(after[:, 0] - now[:, 0], 0.25 * (before[:, 0] - now[:, 0]), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(after[:, 1], now[:, 1])


def test_a_run_records_its_gains_and_the_bundle_matches_the_folded_head(tmp_path):
    """Through train_run and convert_run: a 2-epoch model on the noisy random walk has learnt next to nothing,
    its correction is mostly noise (as trained: 1.08x persistence's test MSE, seed 3). The gain fitted on
    validation shrinks it to ~0 (measured 0.012; < 0.2 asserted), so the test MSE is persistence's within
    2%; the gains are recorded in metrics.json and the manifest, and the converted float32 model reproduces
    the folded torch model within the converter's parity tolerance."""
    import edge_runtime
    from convert.run import convert_run
    from train.baselines import mse
    from train.checkpoint import load_checkpoint
    from train.models import ModelConfig, forecaster_from_weights
    from train.run import train_run
    from train.scenarios import make_stream
    from train.trainer import TrainConfig, normalize, stream_forecast

    stream = make_stream("random_walk", 6000, seed=3)
    config = ModelConfig(cell="gru", hidden=8, input_size=1, target=(0,), features=("delta",))
    run = tmp_path / "runs" / "walk"
    metrics = train_run(stream, config, TrainConfig(epochs=2, lanes=8), run, progress=False)
    gains = metrics["output_gains"]
    assert set(gains) == {"alpha", "fitted", "val_mse_before", "val_mse_after", "kept", "margin"}
    assert gains["kept"] == [True] and 0.0 <= gains["alpha"][0] < 0.2
    assert gains["val_mse_after"][0] < 0.98 * gains["val_mse_before"][0]
    assert json.loads((run / "metrics.json").read_text())["output_gains"] == gains
    assert metrics["test_mse"] == pytest.approx(metrics["persistence_mse"], rel=0.02)
    assert metrics["test_mse"] < metrics["test_mse_as_trained"]

    # the checkpoint holds the folded head: its validation MSE is the recorded one
    weights, info = load_checkpoint(run / "checkpoint.safetensors")
    model = forecaster_from_weights(weights, info)
    splits = np.load(run / "splits.npz")
    warmup = int(splits["warmup"])
    val = normalize(splits["val"], info["normalization"])
    assert mse(stream_forecast(model, val), val, (0,), warmup) == pytest.approx(gains["val_mse_after"][0], rel=1e-4)

    convert_run(run, tmp_path / "bundle", parity_steps=500)
    manifest = json.loads((tmp_path / "bundle" / "manifest.json").read_text())
    assert manifest["training"]["output_gains"] == gains
    float32 = manifest["variants"][0]
    assert float32["parity"]["max_abs_error"] <= 1e-4
    session = edge_runtime.load(tmp_path / "bundle", backend=IN_PROCESS_BACKEND).session()
    test = splits["test"]
    reference = stream_forecast(model, normalize(test, info["normalization"]))[:300, 0]  # normalized
    mean, std = info["normalization"]["mean"][0], info["normalization"]["std"][0]
    device = np.array([(float(session.step(row)[0]) - mean) / std for row in test[:300]])
    np.testing.assert_allclose(device, reference, rtol=0, atol=1e-4)
