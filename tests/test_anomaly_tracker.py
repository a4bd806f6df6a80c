"""The anomaly tracker on Python floats (edge_runtime/anomaly.py) against the numpy form it replaced: the
same scores, events and snapshots, bit for bit, for any residuals (NaN and infinities included)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edge_runtime.anomaly import STILLNESS_CAP, AnomalySpec, AnomalyTracker, TrackerBank, ema_step

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # the numpy reference on NaN and infinities


class NumpyTracker:
    """The tracker as it was before it moved to Python floats (numpy arrays per channel), for reference."""

    def __init__(self, spec: AnomalySpec):
        self.spec = spec
        self._inverse_std = 1.0 / np.asarray(spec.residual_std, np.float64)
        self._still = spec.stillness_floor is not None
        if self._still:
            self._floor = np.asarray(spec.stillness_floor, np.float64)
        channels = len(spec.residual_std)
        self.active, self.quiet_steps, self.primed, self.still_seen = False, 0, False, 0
        self.last_z, self.mean_change = np.zeros(channels), np.zeros(channels)

    def update(self, residual):
        z = np.asarray(residual, np.float64) * self._inverse_std
        score = float(np.abs(z).max())
        if self._still:
            score = max(score, self._stillness(z))
        if not self.active:
            if score > self.spec.threshold:
                self.active, self.quiet_steps = True, 0
                return score, "start"
            return score, None
        self.quiet_steps = self.quiet_steps + 1 if score < self.spec.clear_threshold else 0
        if self.quiet_steps >= self.spec.clear_steps:
            self.active, self.quiet_steps = False, 0
            return score, "end"
        return score, None

    def _stillness(self, z):
        if not self.primed:
            self.last_z, self.primed = z, True
            return 0.0
        self.mean_change, self.still_seen = ema_step(self.mean_change, np.abs(z - self.last_z), self.still_seen,
                                                     self.spec.stillness_window)
        self.last_z = z
        if self.still_seen <= self.spec.stillness_window:
            return 0.0
        mean_change = np.maximum(self.mean_change, self._floor / STILLNESS_CAP)
        return float((self.spec.threshold * self._floor / mean_change).max())

    def to_dict(self):
        d = {"active": self.active, "quiet_steps": self.quiet_steps}
        if self._still:
            d.update(primed=self.primed, last_z=self.last_z.tolist(), mean_change=self.mean_change.tolist(),
                     still_seen=self.still_seen)
        return d


def _bits(value: float) -> bytes:
    return np.float64(value).tobytes()


residual_values = st.one_of(st.floats(-50, 50), st.sampled_from([0.0, -0.0, 0.2, float("nan"), float("inf"),
                                                                   -float("inf"), 1e308]))


@settings(max_examples=150, deadline=None)
@given(channels=st.integers(1, 3), still=st.booleans(), window=st.integers(2, 6), data=st.data())
def test_the_float_tracker_matches_the_numpy_one_bit_for_bit(channels, still, window, data):
    spec = AnomalySpec(tuple(data.draw(st.lists(st.floats(0.05, 5), min_size=channels, max_size=channels))),
                       threshold=4.0, clear_threshold=2.0, clear_steps=2,
                       stillness_floor=tuple([0.3] * channels) if still else None, stillness_window=window)
    rows = data.draw(st.lists(st.lists(residual_values, min_size=channels, max_size=channels), max_size=40))
    new, old = AnomalyTracker(spec), NumpyTracker(spec)
    for row in rows:
        residual = np.asarray(row, np.float64)  # (O,) as the service hands it over
        (score, event), (score_ref, event_ref) = new.update(residual), old.update(residual)
        assert (_bits(score), event) == (_bits(score_ref), event_ref), row
    assert json.dumps(new.to_dict()) == json.dumps(old.to_dict())


def test_a_restored_tracker_goes_on_exactly_as_the_one_it_was_taken_from():
    spec = AnomalySpec((0.5, 1.0), 5.0, 2.0, 3, stillness_floor=(0.2, 0.3), stillness_window=8)
    rng = np.random.default_rng(4)
    residuals = rng.normal(0, 0.5, (300, 2))
    residuals[150:200] = 0.1  # still: the stillness alarm
    first = AnomalyTracker(spec)
    for r in residuals[:170]:
        first.update(r)
    restored = AnomalyTracker(spec)
    restored.load_dict(json.loads(json.dumps(first.to_dict())))
    assert restored.active and restored.primed  # cut inside an alarm, with the stillness history primed
    assert [restored.update(r) for r in residuals[170:]] == [first.update(r) for r in residuals[170:]]


@settings(max_examples=150, deadline=None)
@given(channels=st.integers(1, 3), still=st.booleans(), window=st.integers(2, 6), data=st.data())
def test_the_tracker_bank_matches_one_tracker_per_stream_bit_for_bit(channels, still, window, data):
    """Rounds of any subset of 5 rows (in any order), resets and snapshot reloads between rounds: the bank's
    scores, events and snapshots are the per-stream trackers' ones, bit for bit."""
    spec = AnomalySpec(tuple(data.draw(st.lists(st.floats(0.05, 5), min_size=channels, max_size=channels))),
                       threshold=4.0, clear_threshold=2.0, clear_steps=2,
                       stillness_floor=tuple([0.3] * channels) if still else None, stillness_window=window)
    streams = 5
    bank, trackers = TrackerBank(spec, streams), [AnomalyTracker(spec) for _ in range(streams)]
    for _ in range(data.draw(st.integers(1, 25))):
        action = data.draw(st.sampled_from(["round", "round", "round", "reset", "reload"]))
        if action == "reset":
            row = data.draw(st.integers(0, streams - 1))
            bank.reset(row), trackers[row].reset()
        elif action == "reload":  # a snapshot entry written by a tracker, loaded into the bank
            row = data.draw(st.integers(0, streams - 1))
            bank.load_dict(row, json.loads(json.dumps(trackers[row].to_dict())))
        else:
            rows = data.draw(st.lists(st.integers(0, streams - 1), unique=True, min_size=1, max_size=streams))
            residuals = np.array(data.draw(st.lists(st.lists(residual_values, min_size=channels, max_size=channels),
                                                    min_size=len(rows), max_size=len(rows))), np.float64)
            scores, events = bank.update(np.array(rows), residuals)
            expected = [trackers[r].update(residuals[k]) for k, r in enumerate(rows)]
            assert [(_bits(s), e) for s, e in zip(scores, events)] == [(_bits(s), e) for s, e in expected], rows
    for row in range(streams):
        assert json.dumps(bank.to_dict(row)) == json.dumps(trackers[row].to_dict()), row


def test_a_bank_refuses_a_snapshot_of_another_width_and_keeps_the_row():
    spec = AnomalySpec((0.5, 1.0), 5.0, 2.0, 3, stillness_floor=(0.2, 0.3), stillness_window=8)
    bank = TrackerBank(spec, 2)
    bank.update(np.array([1]), np.array([[3.0, 0.1]]))
    before = bank.to_dict(1)
    with pytest.raises(ValueError, match="last_z has shape \\[3\\], this bundle scores 2 channel"):
        bank.load_dict(1, {"active": True, "quiet_steps": 1, "primed": True, "last_z": [0, 0, 0],
                           "mean_change": [0, 0], "still_seen": 2})
    assert bank.to_dict(1) == before
