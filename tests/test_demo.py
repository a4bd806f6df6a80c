"""The demo's promise on a small setting: every model, run on the edge runtime, passes its rules."""
from __future__ import annotations

import pytest

from pipeline.demo import PRESETS, acceptance, run_demo, table, write_report


@pytest.mark.slow
def test_small_demo_every_model_passes_its_acceptance_rules(tmp_path):
    preset = PRESETS["small"]
    rows = run_demo(preset, tmp_path / "runs", tmp_path / "artifacts", progress=False)
    assert len(rows) == len(preset.scenarios) * len(preset.cells) + 1  # + the LSTM-128 flagship
    report = write_report(rows, tmp_path / "reports", "small")
    failures = [f"{r.scenario}-{r.cell}: {r.checks}" for r in rows if not r.passed]
    assert not failures, table(rows)
    for r in rows:
        assert r.backend == "tflite_runtime"  # scored as the device runs it
        assert r.parity_max_abs_error <= 1e-4
        # the edge runtime reproduces the trained model's test score (CSV keeps 6 digits)
        assert r.edge_mse == pytest.approx(r.torch_mse, rel=1e-3)
    assert (report.parent / "demo_mse.png").stat().st_size > 10_000
    assert "| temperature | lstm | 32 |" in report.read_text()
    assert any(r.flagship and r.hidden == 128 for r in rows)
    # every variant of every bundle the demo wrote opens where its manifest says, under both runtimes
    from test_quantization import check_bundles_open_as_their_manifests_say
    check_bundles_open_as_their_manifests_say(sorted((tmp_path / "artifacts").iterdir()))


def test_acceptance_rules_can_fail():
    from pipeline.demo import Row
    nonlinear = Row("s-lstm", "s", "lstm", 8, "clipping", 1, 1, edge_mse=1.1, torch_mse=1.1, persistence_mse=2.0,
                    ar_mse=1.0, ar_order=4, parity_max_abs_error=0, backend="x")
    assert acceptance(nonlinear) == {"below persistence": True, "at most AR": False}
    linear = Row("s-gru", "s", "gru", 8, None, 1, 1, edge_mse=0.94, torch_mse=0.94, persistence_mse=2.0,
                 ar_mse=1.0, ar_order=4, parity_max_abs_error=0, backend="x")
    assert acceptance(linear) == {"below persistence": True, "within 5% of AR": False}
    big = {"bytes": 50, "of_float32": 0.5, "mse_ratio": 1.0, "deployable": True, "opens_in": ["x"]}
    flagship = Row("f", "s", "lstm", 128, "clipping", 1, 1, edge_mse=0.5, torch_mse=0.5, persistence_mse=2.0,
                   ar_mse=1.0, ar_order=4, parity_max_abs_error=0, backend="x", flagship=True,
                   variants={"int8": {**big, "of_float32": 0.3, "mse_ratio": 1.2}, "int16x8": big})
    assert acceptance(flagship)["int8 or int16x8 small and accurate"] is False
