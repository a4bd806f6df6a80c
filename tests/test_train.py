"""Data, baselines, models and checkpoints of train/."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from train.baselines import fit_ar, mse, persistence, select_ar
from train.checkpoint import load_checkpoint, save_checkpoint
from train.models import Forecaster, ModelConfig, Scales
from train.scenarios import SCENARIOS, make_stream
from train.trainer import TrainConfig, normalization, split_stream

pytestmark = pytest.mark.slow  # torch: the full tier only (the fast tier does not even import this file)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenarios_are_seeded_and_finite(name):
    a, b, c = make_stream(name, 3000, 7), make_stream(name, 3000, 7), make_stream(name, 3000, 8)
    assert a.values.shape == (3000, len(a.channels)) and a.values.dtype == np.float32
    assert np.isfinite(a.values).all()
    np.testing.assert_array_equal(a.values, b.values)
    assert not np.array_equal(a.values, c.values)


def test_vibration_is_clipped_at_the_sensor_range():
    values = make_stream("vibration", 20000, 0).values
    assert values.max() == pytest.approx(2.0) and values.min() == pytest.approx(-2.0)
    assert (np.abs(values) >= 2.0).mean() > 0.01  # clipping happens, it is not a corner case


def test_number_sequence_is_the_lecture_exercise():
    values = make_stream("number_sequence", 64, 0).values[:, 0]
    runs = values.reshape(8, 8)
    steps = np.diff(runs, axis=1)
    assert (steps == steps[:, :1]).all() and (steps >= 1).all()  # arithmetic progressions of 8


def test_unknown_scenario_names_the_choices():
    with pytest.raises(ValueError, match="unknown scenario 'sunspots'; choose one of temperature"):
        make_stream("sunspots", 100, 0)


def test_ar_fit_recovers_known_coefficients():
    """Ground truth: x[t+1] = 0.2 + 1.5 x[t] - 0.7 x[t-1] + noise."""
    rng = np.random.default_rng(0)
    x = np.zeros(20000)
    for t in range(2, len(x)):
        x[t] = 0.2 + 1.5 * x[t - 1] - 0.7 * x[t - 2] + rng.normal(0, 0.1)
    model = fit_ar(x[:, None], (0,), 2)
    np.testing.assert_allclose(model.coef[:, 0], [1.5, -0.7, 0.2], atol=0.02)
    # and the fitted model's one-step error is the noise variance
    assert mse(model.predict(x[:, None]), x[:, None], (0,), 100) == pytest.approx(0.01, rel=0.05)


def test_ar_order_is_chosen_on_validation():
    rng = np.random.default_rng(1)
    x = np.cumsum(rng.normal(size=6000))[:, None]  # a pure random walk: AR(1) with coefficient 1
    model, scores = select_ar(x[:4000], x[4000:], 0, (0,))
    assert model.order == min(scores, key=scores.get)
    assert model.coef[0, 0] == pytest.approx(1.0, abs=0.02) if model.order == 1 else True


def test_persistence_is_the_previous_sample():
    x = np.arange(10.0)[:, None]
    assert mse(persistence(x, (0,)), x, (0,), 0) == 1.0


def test_splits_are_chronological_and_normalization_sees_train_only():
    values = np.arange(1000, dtype=np.float32)[:, None]
    config = TrainConfig(warmup=50)
    splits = split_stream(values, config)
    assert splits.train[-1, 0] == 699 and splits.val[50, 0] == 700 and splits.test[50, 0] == 850
    assert splits.val[0, 0] == 650  # warm-up history comes from before the split
    changed = values.copy()
    changed[800:] = 1e6
    assert normalization(split_stream(changed, config).train) == normalization(splits.train)


def test_model_config_rejects_unknown_keys_and_bad_values():
    with pytest.raises(ValueError, match=r"unknown model config keys: \['dropout'\]"):
        ModelConfig.from_dict({"cell": "gru", "dropout": 0.1})
    with pytest.raises(ValueError, match="unknown cell 'mamba'"):  # (a transformer is a cell now: issue 18)
        ModelConfig(cell="mamba")
    with pytest.raises(ValueError, match=r"target channels \(3,\) out of range for 2 inputs"):
        ModelConfig(input_size=2, target=(3,))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_stepping_with_carried_state_equals_the_whole_sequence(cell):
    """The kws_streaming test in torch: chunks with state carried == one pass."""
    torch.manual_seed(0)
    config = ModelConfig(cell=cell, hidden=6, layers=2, input_size=2, target=(1,))
    norm = {"mean": [0.0, 0.0], "std": [1.0, 2.0], "delta_std": [0.5, 0.25]}
    model = Forecaster(config, Scales.from_normalization(norm, config.target)).eval()
    x = torch.randn(1, 300, 2)  # (B, T, C)
    with torch.no_grad():
        whole, _ = model(x, model.initial_state(x[:, 0]))
        state, pieces = model.initial_state(x[:, 0]), []
        for start in range(0, 300, 37):
            y, state = model(x[:, start:start + 37], state)
            pieces.append(y)
    torch.testing.assert_close(torch.cat(pieces, dim=1), whole, rtol=0, atol=1e-5)
    assert set(state) == set(config.state_names())


def test_checkpoint_round_trip_and_refusal(tmp_path):
    weights = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    info = {"model": {"cell": "gru"}, "normalization": {"mean": [1.0]}}
    save_checkpoint(tmp_path / "c.safetensors", weights, info)
    loaded, loaded_info = load_checkpoint(tmp_path / "c.safetensors")
    np.testing.assert_array_equal(loaded["w"], weights["w"])
    assert loaded_info == info
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temp file left behind
    from safetensors.numpy import save_file
    save_file(weights, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not an edge-rnn checkpoint"):
        load_checkpoint(tmp_path / "other.safetensors")


def test_a_checkpoint_loads_with_torch_weights_only_semantics(tiny_bundles):
    """Nothing pickled: the file is plain safetensors that torch can read too."""
    from safetensors.torch import load_file
    run_dir, _ = tiny_bundles["lstm"]
    tensors = load_file(str(run_dir / "checkpoint.safetensors"))
    assert "rnn.weight_ih_l0" in tensors and "head.weight" in tensors
