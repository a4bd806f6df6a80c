"""python -m pipeline search: candidates trained, converted and scored as the device runs them, chosen on
validation; one Optuna study shared by several worker processes; resumable; bad input refused in one line."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, python_env, run_cli

pytestmark = pytest.mark.slow

TINY = ["--families", "lstm", "gru", "--hidden", "8", "16", "--layers", "1", "--epochs", "3", "--patience", "3",
        "--device", "cortex-m4", "--rate", "100", "--quiet"]


@pytest.fixture(scope="module")
def sensor_log(tmp_path_factory) -> Path:
    """A 2-channel log: a noisy oscillation and a slower channel that follows it."""
    rng = np.random.default_rng(3)
    t = np.arange(3000)
    a = np.sin(t / 15) + 0.15 * rng.standard_normal(len(t))
    b = np.convolve(a, np.ones(8) / 8, mode="same") + 0.05 * rng.standard_normal(len(t))
    path = tmp_path_factory.mktemp("search") / "plant.csv"
    path.write_text("index,a,b\n" + "\n".join(f"{i},{x:.5f},{y:.5f}" for i, x, y in zip(t, a, b)) + "\n")
    return path


def search_args(log: Path, work: Path, trials: int, *extra: str) -> list[str]:
    return ["pipeline", "search", "--csv", str(log), "--name", "plant", "--trials", str(trials),
            "--out", str(work / "runs"), "--reports", str(work / "reports"), "--artifacts", str(work / "artifacts"),
            *TINY, *extra]


def trials_in(work: Path) -> list[tuple[int, str, str]]:
    """(number, state, worker) of every trial in the study's SQLite file, read without Optuna."""
    with sqlite3.connect(work / "runs" / "plant" / "study.db") as db:
        rows = db.execute("SELECT t.number, t.state, a.value_json FROM trials t LEFT JOIN trial_user_attributes a "
                          "ON a.trial_id = t.trial_id AND a.key = 'worker' ORDER BY t.number").fetchall()
    return [(n, state, json.loads(worker) if worker else "") for n, state, worker in rows]


def test_two_workers_share_one_study_and_the_choice_fits_and_keeps_up(sensor_log, tmp_path):
    workers = [subprocess.Popen([sys.executable, "-m", *search_args(sensor_log, tmp_path, 4, "--seed", str(i))],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=python_env(), cwd=ROOT)
               for i in range(2)]
    for w in workers:
        out, err = w.communicate(timeout=900)
        assert w.returncode == 0, err[-2000:]
    trials = trials_in(tmp_path)
    # one study: the two workers together ran the 4 trials asked for (a 5th may start in the race at the end);
    # a proposal that repeats a finished or running candidate is pruned, not trained again
    assert 4 <= len(trials) <= 5 and {state for _, state, _ in trials} <= {"COMPLETE", "PRUNED"}, trials
    complete = [n for n, state, _ in trials if state == "COMPLETE"]
    assert len(complete) >= 2 and len({w for _, s, w in trials if s == "COMPLETE"}) == 2, trials
    assert [n for n, _, _ in trials] == list(range(len(trials)))

    done = run_cli(*search_args(sensor_log, tmp_path, 4, "--report-only"), timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["candidates"] == len(trials) and summary["feasible"] == len(complete)
    chosen = summary["chosen"]
    assert set(summary["families"]) == {"lstm", "gru"}  # each family's best is in the table
    report = (tmp_path / "reports" / "search-plant.md").read_text()
    assert report.count("| chosen: ") == 1 and "Best of each family" in report
    assert (report.count("| worse: validation MSE") + report.count("| as good within one standard error")
            == len(complete) - 1)
    # the report's own firmware_sim run: the chosen variant fits and keeps up, deployable or not, and the
    # report says which (convert's flag, from the test split)
    check = chosen["firmware"]
    assert check["ok"] and check["ticks"] > 0, check
    assert check["deployable"] == (not check["why_not_deployable"]), check
    assert ("**Not deployable**" in report) == (not check["deployable"]), report
    # a pruned trial is a repeat (pruned before it trained, so no worker took it) or one the median pruner
    # stopped once both families' seeds had finished (CI run of session 11: trials 3 and 4 repeats, 2 stopped)
    repeats = [n for n, state, worker in trials if state == "PRUNED" and not worker]
    assert report.count("the same candidate as trial") == len(repeats), report
    assert report.count("| pruned at epoch ") == len(trials) - len(complete) - len(repeats), report
    assert (tmp_path / "reports" / "search-plant.png").stat().st_size > 10_000
    # the test split read once, for the chosen model, against the run's own baselines
    assert chosen["test_mse"] > 0 and chosen["of_ar"] == pytest.approx(chosen["test_mse"] / chosen["ar_mse"])

    # firmware_sim on the chosen bundle confirms both: it fits the profile and misses no deadline at 100 Hz
    sim = run_cli("firmware_sim", "run", chosen["bundle"] if Path(chosen["bundle"]).is_absolute()
                  else str(ROOT / chosen["bundle"]), "--device", "cortex-m4", "--variant", chosen["variant"],
                  "--rate", "100", "--seconds", "20", "--no-plot", "--allow-not-deployable", "--out", str(tmp_path),
                  timeout=300)
    assert sim.returncode == 0, sim.stderr
    result = json.loads(next(tmp_path.glob(f"sim-*-{chosen['variant']}-cortex-m4.json")).read_text())
    assert result["memory"]["fits"] is True
    assert result["timing"]["deadline_misses"] == 0 and result["timing"]["rate_hz"] == 100


def test_the_search_resumes_and_a_device_that_is_too_small_leaves_nothing_chosen(sensor_log, tmp_path):
    first = run_cli(*search_args(sensor_log, tmp_path, 1), timeout=600)
    assert first.returncode == 0, first.stderr
    again = run_cli(*search_args(sensor_log, tmp_path, 2), timeout=600)  # one more, not two
    assert again.returncode == 0, again.stderr
    assert [(n, s) for n, s, _ in trials_in(tmp_path)] == [(0, "COMPLETE"), (1, "COMPLETE")]

    # at 1 MHz no variant of any candidate keeps up on a Cortex-M4: every candidate says why, none is chosen
    slow = run_cli(*search_args(sensor_log, tmp_path / "fast", 1, "--rate", "1000000"), timeout=600)
    assert slow.returncode == 1, slow.stderr
    assert json.loads(slow.stdout.strip().splitlines()[-1])["chosen"] is None
    report = (tmp_path / "fast" / "reports" / "search-plant.md").read_text()
    assert "No candidate fits the device and keeps up" in report and "misses the deadline" in report


@pytest.mark.parametrize("extra, message", [
    (["--device", "cortex-m0"], "unknown device profile 'cortex-m0'"),
    (["--rate", "0"], "--rate and --trials must be positive"),
    (["--csv", "/nonexistent/log.csv"], "/nonexistent/log.csv: no such file"),
    (["--columns", "nope"], "nope"),
])
def test_bad_input_is_one_line(sensor_log, tmp_path, extra, message):
    done = run_cli(*search_args(sensor_log, tmp_path, 1), *extra, timeout=120)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], done.stderr


def test_search_real_writes_one_line_per_series(tmp_path):
    """The search on a real series of the benchmark (the pinned wheels, fetched once): one line in
    reports/search-real.md with the chosen model against the best AR(k) and persistence."""
    done = run_cli("pipeline", "search-real", "--series", "electricity-demand", "--trials", "1", "--families", "gru",
                   "--hidden", "8", "--layers", "1", "--epochs", "2", "--patience", "2", "--max-samples", "2000",
                   "--work", str(tmp_path / "work"), "--reports", str(tmp_path / "reports"),
                   "--artifacts", str(tmp_path / "artifacts"), timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = json.loads((tmp_path / "reports" / "search-real.json").read_text())
    assert [r["series"] for r in rows] == ["electricity-demand"]
    chosen = rows[0]["chosen"]
    assert chosen["candidate"] == "gru-8x1" and chosen["of_ar"] == pytest.approx(chosen["test_mse"] / chosen["ar_mse"])
    assert rows[0]["rate_hz"] == pytest.approx(1 / 1800)  # half-hourly: the series' own rate is the deadline
    table = (tmp_path / "reports" / "search-real.md").read_text()
    assert "| [electricity-demand](search-real-electricity-demand.md) |" in table and "of 1 series" in table
    assert (tmp_path / "reports" / "search-real-electricity-demand.md").is_file()
    check = chosen["firmware"]  # simulated whatever convert's flag says; the table gives the flag beside it
    assert check["ok"] and ("**not deployable**" in table) == (not check["deployable"]), (check, table)


def test_the_report_says_a_chosen_model_that_fits_is_not_deployable_and_why():
    """The search chooses on validation; convert's flag comes from the test split. A choice that fits and keeps
    up but came out at persistence on test (cycling-ride, 1.005x) is reported as both, with the reason."""
    from pipeline.search import SearchJob, firmware_line
    from pipeline.search_real import firmware_cell

    job = SearchJob(name="x", csv="", columns=None, target=None, device="cortex-m4", rate_hz=1.0)
    check = {"ok": True, "fits": True, "ticks": 2000, "deadline_misses": 0, "cpu_load": 0.01, "ram_used": 20_000,
             "flash_used": 100_000, "deployable": False,
             "why_not_deployable": ["test MSE 1.01x persistence's (not below it)"]}
    line = firmware_line(check, job)
    assert "confirms it fits and keeps up" in line
    assert "**Not deployable** as convert judged it on the test split (test MSE 1.01x persistence's" in line
    assert firmware_cell(check) == "fits, 0 misses; **not deployable**: test MSE 1.01x persistence's (not below it)"
    deployable = {**check, "deployable": True, "why_not_deployable": []}
    assert "deployable" not in firmware_line(deployable, job).lower() and firmware_cell(deployable) == "fits, 0 misses"


def test_ar_and_the_hybrid_are_candidates_and_a_repeated_candidate_is_not_run_twice(sensor_log, tmp_path):
    """AR(k) as a step model (k chosen on validation, as the run's own baseline chooses it) and a GRU with the
    linear AR highway, each converted and scored like the recurrent ones; a third proposal repeats one of them."""
    args = search_args(sensor_log, tmp_path, 3, "--families", "ar", "gru+ar", "--hidden", "8")
    done = run_cli(*args, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert set(summary["families"]) == {"ar", "gru+ar"}
    report = (tmp_path / "reports" / "search-plant.md").read_text()
    ar_row = next(line for line in report.splitlines() if line.startswith("| ") and "| ar(" in line)
    k = int(ar_row.split("| ar(")[1].split(")")[0])
    ar_run = next((tmp_path / "runs" / "plant").glob("trial-*/metrics.json"))
    assert k == max(2, json.loads(ar_run.read_text())["ar_order"])  # the baseline's own validation choice
    assert f"| gru+ar-8x1({k}) |" in report
    duplicates = [line for line in report.splitlines() if "the same candidate as trial" in line]
    assert len(duplicates) == len(trials_in(tmp_path)) - 2


def candidate(number: int, parameters: int, errors: np.ndarray):
    from pipeline.search import Candidate

    return Candidate(number=number, state="COMPLETE", family="lstm", hidden=8, layers=1, val_mse=float(errors.mean()),
                     variant="int8-io", bytes=parameters, feasible=True, parameters=parameters)


def test_the_choice_takes_the_fewest_parameters_within_one_standard_error_of_the_best():
    from pipeline.search import choose

    rng = np.random.default_rng(0)
    common = rng.gamma(2.0, 1.0, 2000)  # (N,) the error all models share (the series' own surprises)
    noise = rng.normal(0.0, 0.05, 2000)
    errors = {0: common - 1e-4,  # the best on validation (by a hair), 50,000 parameters
              1: common + noise - noise.mean(),  # steps better and worse, the same on average: a tie
              2: common + 0.3}  # 15% worse at every step: real
    rows = [candidate(0, 50_000, errors[0]), candidate(1, 1_000, errors[1]), candidate(2, 500, errors[2])]
    chosen = choose(rows, lambda c: errors[c.number])
    assert chosen is rows[1] and rows[1].why.startswith("chosen: within one standard error"), rows[1].why
    assert rows[0].why.startswith("as good within one standard error") and rows[2].why.startswith("worse:")
    assert choose([rows[0], rows[2]], lambda c: errors[c.number]) is rows[0]  # no small twin: the best


def test_batch_means_widens_the_standard_error_of_a_correlated_series():
    from pipeline.search import batch_means_se

    rng = np.random.default_rng(1)
    white = rng.normal(0.0, 1.0, 4000)
    assert batch_means_se(white) == pytest.approx(1 / np.sqrt(4000), rel=0.35)  # i.i.d.: the usual sigma/sqrt(n)
    slow = np.convolve(rng.normal(0.0, 1.0, 4100), np.ones(100) / 10, mode="valid")[:4000]  # correlated over 100 steps
    naive = slow.std() / np.sqrt(len(slow))
    assert batch_means_se(slow) > 3 * naive  # the i.i.d. formula would call a 3x smaller difference real
