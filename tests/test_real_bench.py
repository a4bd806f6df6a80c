"""The real-data benchmark: the series loader, the CSV path's level check, and bench-real end to end.

The level check and the loader need no torch (fast tier). The loader fetches its wheel through the same
hash-checked path the benchmark uses (pip, the pins and hashes of requirements/real-series.txt) into the
user cache, so on a fresh machine it downloads once (pmdarima: 0.7 MB) instead of skipping.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, python_env
from pipeline.real_series import PMDARIMA, SERIES, SERIES_BY_NAME, WHEELS, fetch, find_wheel, pinned_hashes
from train.data import load_csv
from train.wander import SHIFT_LIMIT, TREND_LIMIT, check_level

SPLIT = (0.70, 0.15)  # the trainer's default


def write_log(path, values: np.ndarray) -> None:
    """(T, C) -> a CSV sensor log as users give it: index column, then one column per channel."""
    lines = ["index," + ",".join(f"ch{c}" for c in range(values.shape[1]))]
    lines += [f"{i}," + ",".join(f"{v:.6g}" for v in row) for i, row in enumerate(values)]
    path.write_text("\n".join(lines) + "\n")


def trending(n: int = 3000, seed: int = 0) -> np.ndarray:
    """A daily-cycle sensor on a slow rise: the level leaves the training range."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return (np.sin(2 * np.pi * t / 100) + 0.002 * t + 0.1 * rng.standard_normal(n))[:, None]


def stationary(n: int = 3000, seed: int = 0) -> np.ndarray:
    """Two channels: a cycle with noise and an AR(1) around a fixed mean."""
    rng = np.random.default_rng(seed)
    ar = np.zeros(n)
    for i in range(1, n):
        ar[i] = 0.9 * ar[i - 1] + rng.standard_normal()
    return np.stack([np.sin(2 * np.pi * np.arange(n) / 100) + 0.1 * rng.standard_normal(n), 5 + ar], axis=1)


def test_a_trending_log_wanders_and_a_stationary_one_does_not(tmp_path):
    write_log(tmp_path / "trend.csv", trending())
    write_log(tmp_path / "steady.csv", stationary())
    trend = check_level(load_csv(tmp_path / "trend.csv").values, SPLIT)
    steady = check_level(load_csv(tmp_path / "steady.csv").values, SPLIT)
    assert trend.wanders and trend.train_trend > TREND_LIMIT and trend.val_shift > SHIFT_LIMIT
    # well inside the limits, not just under them: 0.5 leaves room for another seed
    assert not steady.wanders and steady.val_shift < 0.5 and steady.train_trend < 0.5
    assert "training std" in trend.figures() and trend.to_dict()["wanders"] is True


def test_the_level_check_never_reads_the_test_split():
    values = stationary()
    changed = values.copy()
    changed[int(0.85 * len(values)):] += 100.0  # only the test split moves
    assert check_level(changed, SPLIT) == check_level(values, SPLIT)


def test_a_log_too_short_to_check_is_a_clear_error():
    with pytest.raises(ValueError, match="too few to check the level"):
        check_level(np.zeros((5, 1)), SPLIT)


def test_the_pins_in_the_code_are_the_hash_checked_ones():
    pins = pinned_hashes()
    assert {w.package: w.version for w in WHEELS} == {p: v for p, (v, _) in pins.items()}
    assert all(re.fullmatch(r"[0-9a-f]{64}", h) for _, h in pins.values())
    assert {s.wheel for s in SERIES} == set(WHEELS)


def test_the_loader_reads_a_series_out_of_its_hash_checked_wheel(tmp_path):
    cache = fetch(wheels=(PMDARIMA,))  # the user cache; pip downloads the 0.7 MB wheel only when it is missing
    table = SERIES_BY_NAME["electricity-demand"].load(cache)
    assert table.channels == ("demand_mw",) and table.values.shape == (4032, 1)
    # half-hourly demand in England and Wales, in MW: tens of thousands, never negative
    assert np.isfinite(table.values).all() and 15_000 < table.values.mean() < 45_000
    tampered = tmp_path / find_wheel(cache, PMDARIMA).name
    tampered.write_bytes(find_wheel(cache, PMDARIMA).read_bytes() + b"\0")
    with pytest.raises(Exception, match="is not the pinned"):
        find_wheel(tmp_path, PMDARIMA)


def train_csv(path, out, *extra):
    return subprocess.run([sys.executable, "-m", "train", "--csv", str(path), "--epochs", "1", "--hidden", "8",
                           "--out", str(out), "--quiet", *extra], capture_output=True, text=True,
                          env=python_env(), cwd=ROOT, timeout=600)


@pytest.mark.slow
def test_train_csv_picks_delta_for_a_wandering_log_and_says_so(tmp_path):
    write_log(tmp_path / "trend.csv", trending())
    write_log(tmp_path / "steady.csv", stationary())
    runs = {}
    for name, extra in [("trend", ()), ("steady", ()), ("trend-forced", ("--features", "level", "delta"))]:
        source = tmp_path / f"{name.split('-')[0]}.csv"
        done = train_csv(source, tmp_path / "runs", "--name", name, *extra)
        assert done.returncode == 0, done.stderr
        lines = [line for line in done.stderr.splitlines() if line.startswith("level check:")]
        assert len(lines) == 1, done.stderr
        runs[name] = (lines[0], json.loads((tmp_path / "runs" / name / "metrics.json").read_text())["level_check"])
    assert runs["trend"][0].endswith("-> features: delta (the level wanders)")
    assert runs["trend"][1]["features"] == ["delta"] and runs["trend"][1]["wanders"]
    assert runs["steady"][0].endswith("-> features: level + delta (the level is steady)")
    assert runs["steady"][1]["features"] == ["level", "delta"]
    assert runs["trend-forced"][1]["features"] == ["level", "delta"] and runs["trend-forced"][1]["features_given"]


@pytest.mark.slow
def test_bench_real_quick_reports_every_variant_of_every_series(tmp_path):
    """Two series (1 channel steady, 4 channels wandering) through CSV -> train -> convert -> edge_eval."""
    import matplotlib.image

    series = ["electricity-demand", "cycling-ride"]
    done = subprocess.run([sys.executable, "-m", "pipeline", "bench-real", "--quick", "--work", str(tmp_path / "work"),
                           "--reports", str(tmp_path / "reports"), *[a for s in series for a in ("--series", s)]],
                          capture_output=True, text=True, env=python_env(), cwd=ROOT, timeout=1800)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "== real series" in done.stdout and "report:" in done.stdout
    report = (tmp_path / "reports" / "bench-real.md").read_text()
    rows = {r["name"]: r for r in json.loads((tmp_path / "reports" / "bench-real.json").read_text())}
    for name in series:
        manifest = json.loads((tmp_path / "work" / "artifacts" / name / "manifest.json").read_text())
        expected = [v["name"] for v in manifest["variants"]] + [v["name"] for v in manifest.get("left_out_variants", [])]
        assert [v["variant"] for v in rows[name]["variants"]] == expected
        section = report[report.index(f"### {name}"):]
        for variant in expected:
            assert re.search(rf"^\| {re.escape(variant)} \| ", section, re.M), (name, variant)
        # the summary row: one cell per variant besides float32, each a ratio or '-'
        summary_section = report[report.index("## Summary"):report.index("## Per series")]
        summary = re.search(rf"^\| {name} \| .*$", summary_section, re.M).group(0)
        assert summary.count("|") == 1 + 5 + len(expected) - 1
        scored = [v for v in rows[name]["variants"] if v["mse"] is not None]
        assert scored and all(np.isfinite(v["mse"]) and v["mse"] > 0 for v in scored)
        f32 = next(v for v in scored if v["variant"] == "float32")
        # the device runtime's float32 score matches the converter's in-memory one (CSV keeps 6 digits)
        assert f32["mse"] == pytest.approx(manifest["variants"][0]["metrics"]["test_mse"], rel=1e-3)
        # the output gains fitted on validation: one per target channel, as the manifest records them, in the report
        gains = manifest["training"]["output_gains"]["alpha"]
        assert rows[name]["output_gains"] == gains and len(gains) == len(rows[name]["info"]["channels"])
        assert "output gains (fitted on validation" in section.split("| variant |")[0]
    assert rows["cycling-ride"]["features"] == ["delta"]  # its altitude climbs: the level check says wanders
    assert rows["electricity-demand"]["features"] == ["level", "delta"]
    for png in ("bench-real_ratios.png", "bench-real_bytes.png"):
        image = matplotlib.image.imread(tmp_path / "reports" / png)
        assert image.ndim == 3 and image.shape[0] > 200 and image.shape[1] > 300
