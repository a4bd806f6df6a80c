"""The service's latency ring (edge_runtime/service/service.py `Percentiles`): add_many writes a whole round
as at most two slices, and must leave the ring exactly as add() one value at a time would."""
from __future__ import annotations

import numpy as np
from hypothesis import given, settings, strategies as st

from edge_runtime.service.service import Percentiles

# latencies in microseconds: finite and far from float64's limits, where np.percentile's interpolation of
# -1.7e308 and 1.7e308 gives inf * 0 = NaN, and NaN != NaN made this test fail once in CI (not the ring's doing)
rounds = st.lists(st.lists(st.floats(min_value=-1e12, max_value=1e12), max_size=40), max_size=8)


@settings(max_examples=500, deadline=None)
@given(size=st.integers(1, 16), batches=rounds)
def test_add_many_leaves_the_ring_as_add_one_by_one(size, batches):
    many, one = Percentiles(size), Percentiles(size)
    for batch in batches:
        many.add_many(np.array(batch, np.float64))
        for value in batch:
            one.add(value)
        assert many.count == one.count
        assert np.array_equal(many.values, one.values)
    assert many.summary() == one.summary()
