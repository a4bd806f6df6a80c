"""python -m pipeline search: the best model that fits the device and keeps up with the sensor, chosen on
validation.

A user asks "which model should run on my device for this sensor?". Each candidate (a cell family, hidden
size and depth) goes the way a user's model goes, and is scored as the device runs it:

  1. trained on the CSV log the way `python -m train --csv` trains it (the same level check and features),
     in this process so that Optuna's pruner can stop a poor learning curve early;
  2. converted by `python -m convert` (its own process: every variant);
  3. every variant costed on the device profile by firmware_sim (flash, arena RAM, cycles per step against
     the sensor's period), and every variant that fits and keeps up scored on the VALIDATION split through
     the device runtime, step by step (`python -m edge_eval eval` on the run's val.csv);
  4. the candidate's score is its best such variant's validation MSE. A candidate with no variant that fits
     and keeps up is infeasible (Optuna's constraint), with the reason kept.

The best feasible candidate is chosen on validation alone; its test MSE is read once, after the choice,
against persistence and the best AR(k<=256) (itself chosen on validation, metrics.json of the run).
The manifest's `deployable` flag is shown but not used to choose: convert sets it from the test split.

The study is an Optuna study in an RDB: SQLite by default (runs/search/<name>/study.db), or any URL
(--storage postgresql://...), so several processes or machines can work on one study (Optuna's own
distributed mode). Re-running the same command resumes it: finished trials count towards --trials, and a
trial whose worker died is failed by the heartbeat and retried once.

Output: reports/search-<name>.md (every candidate and why it was dropped), reports/search-<name>.png (the
Pareto view: validation MSE against bytes and against time per step on the profile, the chosen one marked),
and the chosen bundle in artifacts/<name>/.
"""
from __future__ import annotations

import json
import math
import os
import shutil
import socket
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.real_bench import pick_backend, run_logged

# the recurrent cells, AR(k) as a step model, and each cell with a linear AR highway (LSTNet's idea)
FAMILIES = ("lstm", "gru", "rnn", "ar", "lstm+ar", "gru+ar", "rnn+ar")
AR = "ar"
HIDDEN = (8, 16, 32, 64, 96, 128)
LAYERS = (1, 2)
MAX_RETRIES = 1  # a trial whose worker died is run once more
SE_BATCHES = 20  # the validation steps in 20 consecutive batches for a paired difference's standard error


@dataclass(frozen=True)
class SearchJob:
    name: str
    csv: str
    columns: list[str] | None
    target: list[str] | None
    device: str
    rate_hz: float
    families: tuple[str, ...] = FAMILIES
    hidden: tuple[int, ...] = HIDDEN
    layers: tuple[int, ...] = LAYERS
    epochs: int = 200
    patience: int = 20
    seed: int = 0
    out: Path = Path("runs/search")
    reports: Path = Path("reports")
    artifacts: Path = Path("artifacts")
    storage: str | None = None

    @property
    def folder(self) -> Path:
        return self.out / self.name

    @property
    def storage_url(self) -> str:
        return self.storage or f"sqlite:///{(self.folder / 'study.db').resolve()}"


@dataclass
class Candidate:
    """One finished trial, as the report shows it."""

    number: int
    state: str  # COMPLETE, PRUNED, FAIL, RUNNING
    family: str
    hidden: int  # 0 for AR(k)
    layers: int
    ar_order: int = 0  # the AR term's k (ar and *+ar), else 0
    val_mse: float | None = None  # the best feasible variant's (or float32's when none is feasible)
    variant: str | None = None
    bytes: int | None = None
    ram: int | None = None
    us_per_step: float | None = None
    feasible: bool = False
    parameters: int | None = None  # trained weights: the measure of size the choice prefers fewer of
    excess: float | None = None  # validation MSE over the best candidate's, step by step (mean of the difference)
    excess_se: float | None = None  # its standard error (batch means)
    why: str = ""  # why it was dropped (or "chosen")
    bundle: str | None = None
    run: str | None = None
    variants: dict = field(default_factory=dict)

    @property
    def label(self) -> str:
        if self.family == AR:
            return f"ar({self.ar_order})"
        return f"{self.family}-{self.hidden}x{self.layers}" + (f"({self.ar_order})" if self.ar_order else "")


# --- one trial ---

def variant_verdicts(bundle: Path, run: Path, job: SearchJob, warmup: int, log) -> dict:
    """Every variant of the bundle on the device: cost from firmware_sim; validation MSE through the device
    runtime when it fits and keeps up (and for float32 always, as the reference the report shows)."""
    from firmware_sim.budget import budget
    from firmware_sim.graph import GraphError

    manifest = json.loads((bundle / "manifest.json").read_text())
    verdicts = {}
    for entry in manifest["variants"]:
        name = entry["name"]
        try:
            cost = budget(str(bundle), name, job.device)
        except GraphError as e:  # e.g. float16 weights: no microcontroller kernel takes them
            verdicts[name] = {"bytes": entry["bytes"], "val_mse": None, "why": f"firmware_sim cannot cost it: {e}"}
            continue
        verdict = {"bytes": entry["bytes"], "ram": cost["ram_used"], "flash": cost["flash_used"],
                   "us_per_step": cost["us_per_step"], "max_rate_hz": cost["max_rate_hz"],
                   "deployable": entry.get("metrics", {}).get("deployable"), "val_mse": None, "why": ""}
        if cost["kind"] == "mcu" and cost["float_op"]:
            verdict["why"] = f"not integer-only, as the microcontroller's kernels need: {cost['float_op']}"
        elif not cost["fits"]:
            verdict["why"] = "does not fit: " + "; ".join(cost["problems"])
        elif cost["max_rate_hz"] < job.rate_hz:
            verdict["why"] = (f"misses the deadline: {cost['us_per_step']:,.0f} us per step, "
                              f"{cost['max_rate_hz']:,.0f} Hz at most < {job.rate_hz:g} Hz")
        backend, closed = pick_backend(entry)
        if backend is None:
            verdict["why"] = verdict["why"] or f"no runtime opens it: {closed}"
        elif not verdict["why"] or name == "float32":
            verdict["val_mse"] = validation_mse(bundle, run, name, backend, warmup, log)
        verdicts[name] = verdict
    return verdicts


def errors_file(run: Path, variant: str) -> Path:
    """Where a variant's per-step validation errors are kept: the paired comparison in `choose` reads them."""
    return run / "val-errors" / f"{variant}.npy"


def validation_mse(bundle: Path, run: Path, variant: str, backend: str, warmup: int, log) -> float:
    """The variant streamed over the run's val.csv through the device runtime; its per-step errors are kept."""
    errors = errors_file(run, variant)
    errors.parent.mkdir(parents=True, exist_ok=True)
    done = run_logged([sys.executable, "-m", "edge_eval", "eval", str(bundle), "--input", str(run / "val.csv"),
                       "--warmup", str(warmup), "--variant", variant, "--backend", backend, "--errors", str(errors)],
                      log, f"edge_eval eval --variant {variant}")
    return json.loads(done.stdout.strip().splitlines()[-1])["mse"]


def best_feasible(verdicts: dict) -> str | None:
    ok = {n: v for n, v in verdicts.items() if not v["why"] and v["val_mse"] is not None}
    return min(ok, key=lambda n: (ok[n]["val_mse"], ok[n]["bytes"])) if ok else None


def objective(trial, job: SearchJob, stream, features_record: dict, ar_k: int, log) -> float:
    """Train, convert and score one candidate; the value is the validation MSE of its best feasible variant.
    A candidate that fails (its conversion, say) is a failed trial with the reason kept, not a failed study."""
    import optuna

    try:
        return score_candidate(trial, job, stream, features_record, ar_k, log)
    except optuna.TrialPruned:
        raise
    except Exception as e:
        trial.set_user_attr("why", f"failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
        raise


def duplicate_of(trial) -> int | None:
    """The number of another finished or running trial with the same parameters (TPE proposes the single AR candidate
    again and again), or None."""
    from optuna.trial import TrialState

    for other in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.RUNNING)):
        if other.number != trial.number and other.params == trial.params:  # running: on another worker now
            return other.number
    return None


def validated_ar_order(stream, seed: int) -> int:
    """The AR order the run's own baseline picks on validation (train/baselines.py select_ar, on levels): the
    AR candidate's k, and the window of the AR highway beside a recurrent cell."""
    from train.baselines import select_ar
    from train.trainer import TrainConfig, normalization, normalize, split_stream

    splits = split_stream(stream.values, TrainConfig(seed=seed))
    norm = normalization(splits.train)
    ar, _ = select_ar(normalize(splits.train, norm), normalize(splits.val, norm), splits.warmup, stream.target)
    return ar.order


def score_candidate(trial, job: SearchJob, stream, features_record: dict, ar_k: int, log) -> float:
    import optuna

    from train.config import ModelConfig
    from train.run import train_run
    from train.trainer import TrainConfig

    family = trial.suggest_categorical("family", list(job.families))
    if family == AR:  # no hidden layer: one candidate, AR(k) on the levels with k chosen on validation
        hidden, layers, features = 1, 1, ("level", "delta")
    else:
        hidden = trial.suggest_categorical("hidden", list(job.hidden))
        layers = trial.suggest_categorical("layers", list(job.layers))
        features = tuple(features_record["features"])
    ar_order = max(2, ar_k) if family == AR or family.endswith("+ar") else 0
    trial.set_user_attr("ar_order", ar_order)
    twin = duplicate_of(trial)
    if twin is not None:
        trial.set_user_attr("why", f"the same candidate as trial {twin}")
        raise optuna.TrialPruned()
    run = job.folder / f"trial-{trial.number:04d}"
    trial.set_user_attr("run", str(run))
    trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")

    def report(epoch: int, val_mse: float) -> None:
        trial.report(val_mse, epoch)
        if trial.should_prune():
            trial.set_user_attr("why", f"pruned at epoch {epoch + 1}: validation MSE {val_mse:.4g} (float, torch)")
            raise optuna.TrialPruned()

    model_config = ModelConfig(cell=family, hidden=hidden, layers=layers, input_size=stream.values.shape[1],
                               target=stream.target, features=features, ar_order=ar_order)
    train_config = TrainConfig(epochs=job.epochs, patience=job.patience, seed=job.seed)
    train_run(stream, model_config, train_config, run, progress=False,
              extra_metrics={"level_check": features_record}, on_epoch=report)
    run_logged([sys.executable, "-m", "convert", str(run), "--out", str(run / "bundle")], log, "convert")
    bundle = run / "bundle" / run.name
    warmup = int(np.load(run / "splits.npz")["warmup"])
    verdicts = variant_verdicts(bundle, run, job, warmup, log)
    chosen = best_feasible(verdicts)
    trial.set_user_attr("bundle", str(bundle))
    trial.set_user_attr("variants", verdicts)
    trial.set_user_attr("variant", chosen)
    trial.set_constraint("fits and keeps up", 0.0 if chosen else 1.0)  # > 0: infeasible, for the sampler
    if chosen is None:
        trial.set_user_attr("why", "; ".join(sorted({f"{n}: {v['why']}" for n, v in verdicts.items()})))
        return verdicts["float32"]["val_mse"] or math.inf
    return verdicts[chosen]["val_mse"]


# --- the study ---

def rdb_storage(url: str, attempts: int = 6):
    """Optuna's RDB storage. Workers started together race to create the schema in a new database: the loser
    gets an IntegrityError (or "table already exists") and simply opens it again, once the winner is done."""
    import optuna
    from sqlalchemy.exc import IntegrityError, OperationalError

    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)  # heartbeats are "experimental"
    for attempt in range(attempts):
        try:
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=30, grace_period=120,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
                engine_kwargs={"connect_args": {"timeout": 120}} if url.startswith("sqlite") else None)
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * 2 ** attempt)  # backing off while the other worker finishes the schema


def first_candidates(job: SearchJob) -> list[dict]:
    """One candidate of each family first, at a middle size, so every family's best is in the table however
    the sampler goes on."""
    hidden = 32 if 32 in job.hidden else sorted(job.hidden)[len(job.hidden) // 2]
    return [{"family": f} if f == AR else {"family": f, "hidden": hidden, "layers": min(job.layers)}
            for f in job.families]


def open_study(job: SearchJob):
    import optuna

    optuna.logging.set_verbosity(optuna.logging.ERROR)  # a failed trial's reason is in the report and the log
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    job.folder.mkdir(parents=True, exist_ok=True)
    storage = rdb_storage(job.storage_url)
    sampler = optuna.samplers.TPESampler(seed=job.seed, n_startup_trials=6)
    # no pruning until the seeded trials (one of each family) have finished: each family's best is in the table
    # as a scored candidate, not as a curve stopped against another family's (three hybrids were pruned so)
    pruner = optuna.pruners.MedianPruner(n_startup_trials=len(job.families), n_warmup_steps=min(10, job.epochs // 4))
    try:  # the worker that creates the study (the database decides, once) seeds it with one of each family
        study = optuna.create_study(study_name=job.name, storage=storage, sampler=sampler, pruner=pruner,
                                    direction="minimize")
        for params in first_candidates(job):
            study.enqueue_trial(params)
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=job.name, storage=storage, sampler=sampler, pruner=pruner)
    study.set_user_attr("job", {"csv": job.csv, "columns": job.columns, "target": job.target, "device": job.device,
                                "rate_hz": job.rate_hz})
    return study


def finished(study) -> int:
    from optuna.trial import TrialState

    return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)))


def load_csv_stream(job: SearchJob):
    """The log as `python -m train --csv` reads it, and the same level check and feature choice."""
    from train.data import load_stream
    from train.trainer import TrainConfig
    from train.wander import choose_csv_features

    stream = load_stream(None, job.csv, 0, job.seed, job.columns, job.target)
    return choose_csv_features(stream, None, TrainConfig().split)


def search(job: SearchJob, trials: int, minutes: float | None, progress: bool = True):
    """Work on the study until it holds `trials` finished trials or `minutes` have passed; return it."""
    import optuna
    from tqdm import tqdm

    stream, features_record = load_csv_stream(job)
    study = open_study(job)
    done_before = finished(study)
    bar = tqdm(total=trials, initial=min(done_before, trials), desc=f"search {job.name}", unit="trial",
               disable=not progress, dynamic_ncols=True, file=sys.stderr)

    def after_trial(study, trial) -> None:
        bar.n = min(finished(study), trials)
        bar.refresh()

    log_path = job.folder / "search.log"
    with open(log_path, "a") as log:
        if done_before < trials:
            ar_k = validated_ar_order(stream, job.seed)
            study.optimize(lambda t: objective(t, job, stream, features_record, ar_k, log),
                           timeout=None if minutes is None else minutes * 60, catch=(Exception,),
                           callbacks=[optuna.study.MaxTrialsCallback(trials, states=None), after_trial])
    bar.close()
    return study


# --- the choice and the report ---

def candidates(study) -> list[Candidate]:
    rows = []
    for t in study.get_trials(deepcopy=False):
        params = t.params
        if "family" not in params:
            continue
        verdicts = t.user_attrs.get("variants", {})
        chosen = t.user_attrs.get("variant")
        shown = verdicts.get(chosen) or verdicts.get("float32") or {}
        why = t.user_attrs.get("why", "")
        if t.state.name == "FAIL" and not why:
            why = "failed: see search.log"
        run = t.user_attrs.get("run")
        metrics = Path(run, "metrics.json") if run else None
        parameters = json.loads(metrics.read_text()).get("parameters") if metrics and metrics.is_file() else None
        rows.append(Candidate(
            number=t.number, state=t.state.name, family=params["family"], hidden=params.get("hidden", 0),
            layers=params.get("layers", 0), ar_order=t.user_attrs.get("ar_order", 0),
            val_mse=t.value if t.state.name == "COMPLETE" else None, variant=chosen, parameters=parameters,
            bytes=shown.get("bytes"), ram=shown.get("ram"), us_per_step=shown.get("us_per_step"),
            feasible=t.state.name == "COMPLETE" and chosen is not None, why=why,
            bundle=t.user_attrs.get("bundle"), run=run, variants=verdicts))
    return rows


def batch_means_se(diff: np.ndarray, batches: int = SE_BATCHES) -> float:
    """The standard error of the mean of a serially correlated series, by the method of batch means: the
    means of consecutive blocks much longer than the correlation are close to independent, so their spread
    over sqrt(blocks) is the standard error. A forecast error is correlated over many steps (a missed
    level shift is missed for a while), so the i.i.d. formula would call small differences real."""
    batches = max(2, min(batches, len(diff) // 2))
    means = diff[: len(diff) // batches * batches].reshape(batches, -1).mean(axis=1)  # (batches,)
    return float(means.std(ddof=1) / np.sqrt(batches))


def choose(rows: list[Candidate], errors_of) -> Candidate | None:
    """The one-standard-error rule (Breiman et al., 1984; Hastie et al., ESL 7.10) on validation, paired step
    by step: among the feasible candidates whose validation MSE is within one standard error of the best
    one's, the one with the fewest trained parameters (then the fewest bytes).

    Why not simply the best: the best of many candidates on one validation window is partly the best at that
    window's noise, and the large candidates have the most room to fit it (their epoch is chosen on the same
    window too). On the first real-data runs the best on validation was a 128x2 hybrid that lost to AR(k)
    on test (x1.07, x1.20). A smaller candidate that validation cannot tell apart from the best is the safer
    forecast of the test split. errors_of(candidate) -> (N,) its per-step validation errors."""
    feasible = [c for c in rows if c.feasible]
    if not feasible:
        return None
    best = min(feasible, key=lambda c: (c.val_mse, c.bytes))
    reference = errors_of(best)  # (N,)
    for c in feasible:
        diff = errors_of(c) - reference if c is not best else np.zeros_like(reference)  # (N,)
        c.excess, c.excess_se = float(diff.mean()), batch_means_se(diff)
    close = [c for c in feasible if c.excess <= c.excess_se]
    chosen = min(close, key=lambda c: (c.parameters if c.parameters is not None else math.inf, c.bytes, c.val_mse))
    for c in feasible:
        ratio = c.val_mse / best.val_mse
        if c is chosen:
            c.why = ("chosen: the best on validation" if c is best else
                     f"chosen: within one standard error of the best (trial {best.number}, validation MSE "
                     f"{ratio:.3f}x, +-{c.excess_se / best.val_mse:.3f}x) with fewer parameters")
        elif c in close:
            c.why = (f"as good within one standard error ({ratio:.3f}x the best's, +-{c.excess_se / best.val_mse:.3f}x), "
                     f"but {c.parameters:,} parameters against the chosen one's {chosen.parameters:,}")
        else:
            c.why = (f"worse: validation MSE {ratio:.3f}x the best's, more than one standard error "
                     f"(+-{c.excess_se / best.val_mse:.3f}x)")
    return chosen


def candidate_errors(log):
    """errors_of for `choose`: each candidate's per-step validation errors in its chosen variant, read from
    its run (written while it was scored), or streamed again for a trial scored before they were kept."""
    cache: dict[int, np.ndarray] = {}

    def errors_of(c: Candidate) -> np.ndarray:
        if c.number not in cache:
            run, path = Path(c.run), errors_file(Path(c.run), c.variant)
            if not path.is_file():
                warmup = int(np.load(run / "splits.npz")["warmup"])
                entry = next(e for e in json.loads((Path(c.bundle) / "manifest.json").read_text())["variants"]
                             if e["name"] == c.variant)
                validation_mse(Path(c.bundle), run, c.variant, pick_backend(entry)[0], warmup, log)
            cache[c.number] = np.load(path)
        return cache[c.number]

    return errors_of


def test_score(chosen: Candidate, log) -> dict:
    """The chosen candidate's test MSE, read once, through the device runtime; the run's baselines beside it."""
    run, bundle = Path(chosen.run), Path(chosen.bundle)
    metrics = json.loads((run / "metrics.json").read_text())
    warmup = int(np.load(run / "splits.npz")["warmup"])
    entry = next(e for e in json.loads((bundle / "manifest.json").read_text())["variants"]
                 if e["name"] == chosen.variant)
    backend, _ = pick_backend(entry)
    done = run_logged([sys.executable, "-m", "edge_eval", "eval", str(bundle), "--input", str(run / "test.csv"),
                       "--warmup", str(warmup), "--variant", chosen.variant, "--backend", backend],
                      log, "edge_eval eval (test, once)")
    mse = json.loads(done.stdout.strip().splitlines()[-1])["mse"]
    return {"test_mse": mse, "persistence_mse": metrics["persistence_mse"], "ar_mse": metrics["ar_mse"],
            "ar_order": metrics["ar_order"], "of_ar": mse / metrics["ar_mse"],
            "of_persistence": mse / metrics["persistence_mse"]}


def firmware_check(chosen: Candidate, job: SearchJob, log) -> dict:
    """`python -m firmware_sim run` on the chosen variant at the sensor's rate, over the validation log's
    samples (up to 2,000): fits the profile, deadline misses, CPU load; and whether convert marked it deployable.

    Fit and deadline do not depend on accuracy, so the run does not stop at the deployable flag
    (--allow-not-deployable): a choice made on validation can come out at persistence on test (cycling-ride,
    1.005x), and the report then says both that it fits and keeps up and that it is not deployable, and why."""
    from edge_runtime.manifest import read_manifest, why_not_deployable

    manifest = read_manifest(chosen.bundle)
    not_deployable = why_not_deployable(manifest, manifest.variant(chosen.variant))
    run = Path(chosen.run)
    rows = sum(1 for _ in open(run / "val.csv")) - 1
    seconds = min(rows, 2000) / job.rate_hz
    out = run / "firmware"
    done = run_logged([sys.executable, "-m", "firmware_sim", "run", chosen.bundle, "--device", job.device,
                       "--variant", chosen.variant, "--rate", repr(job.rate_hz), "--seconds", repr(seconds),
                       "--csv", str(run / "val.csv"), "--no-plot", "--allow-not-deployable", "--out", str(out)],
                      log, "firmware_sim run (the chosen variant)", check=False)
    deployable = {"deployable": not not_deployable, "why_not_deployable": not_deployable}
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"ok": False, "why": lines[-1] if lines else f"exit {done.returncode}", **deployable}
    report = json.loads(next(out.glob(f"sim-*-{chosen.variant}-*.json")).read_text())
    timing = report["timing"]
    return {**deployable, "ok": report["memory"]["fits"] and timing["deadline_misses"] == 0, "fits": report["memory"]["fits"],
            "ticks": timing["ticks"], "deadline_misses": timing["deadline_misses"], "cpu_load": timing["cpu_load"],
            "ram_used": report["memory"]["ram_used"], "flash_used": report["memory"]["flash_used"]}


def family_bests(rows: list[Candidate]) -> dict[str, Candidate]:
    best: dict[str, Candidate] = {}
    for c in rows:
        if c.feasible and (c.family not in best or c.val_mse < best[c.family].val_mse):
            best[c.family] = c
    return best


def pareto_plot(rows: list[Candidate], chosen: Candidate | None, job: SearchJob, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [c for c in rows if c.val_mse is not None and math.isfinite(c.val_mse) and c.bytes]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    markers = {"lstm": "o", "gru": "s", "rnn": "^", "ar": "D", "lstm+ar": "P", "gru+ar": "X", "rnn+ar": "v"}
    for ax, key, label in ((axes[0], "bytes", "model bytes (the variant the device runs)"),
                           (axes[1], "us_per_step", f"us per step on {job.device} (firmware_sim estimate)")):
        for family in sorted({c.family for c in scored}):
            mine = [c for c in scored if c.family == family]
            ok = [c for c in mine if c.feasible]
            bad = [c for c in mine if not c.feasible]
            m = markers.get(family, "o")
            if ok:
                ax.scatter([getattr(c, key) for c in ok], [c.val_mse for c in ok], marker=m, label=family)
            if bad:
                ax.scatter([getattr(c, key) for c in bad], [c.val_mse for c in bad], marker=m, facecolors="none",
                           edgecolors="grey", label=f"{family} (does not fit / too slow)")
        if chosen is not None:
            ax.scatter([getattr(chosen, key)], [chosen.val_mse], marker="*", s=300, color="red", zorder=5,
                       label=f"chosen: {chosen.label} {chosen.variant}")
        if key == "us_per_step":
            ax.axvline(1e6 / job.rate_hz, color="red", linestyle="--", linewidth=1,
                       label=f"deadline at {job.rate_hz:g} Hz")
        ax.set_xscale("log")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation MSE (normalized, device runtime)")
    axes[1].legend(fontsize=7, loc="best")
    fig.suptitle(f"model search {job.name}: {job.device} at {job.rate_hz:g} Hz")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def firmware_line(check: dict, job: SearchJob) -> str:
    return _firmware_sentence(check, job) + _deployable_sentence(check)


def _firmware_sentence(check: dict, job: SearchJob) -> str:
    if not check["ok"] and "ticks" not in check:
        return f"firmware_sim run on it: **failed**: {check['why']}"
    verdict = "confirms it fits and keeps up" if check["ok"] else "**does not confirm it**"
    return (f"firmware_sim run on it ({job.device}, {job.rate_hz:g} Hz, {check['ticks']:,} samples of the validation "
            f"log) {verdict}: fits {'yes' if check['fits'] else 'NO'}, RAM {check['ram_used']:,} B, flash "
            f"{check['flash_used']:,} B, {check['deadline_misses']} deadline misses, CPU load "
            f"{100 * check['cpu_load']:.3g}%.")


def _deployable_sentence(check: dict) -> str:
    """What convert's flag says, from the test split (which did not choose): `deploy` and `run --max-mse-ratio`
    follow it."""
    if check.get("deployable", True):
        return ""
    return (f" **Not deployable** as convert judged it on the test split ({'; '.join(check['why_not_deployable'])}): "
            "`deploy` and `run --max-mse-ratio` will not take it; the choice was made on validation, which cannot "
            "see this.")


def markdown(job: SearchJob, rows: list[Candidate], chosen: Candidate | None, test: dict | None) -> str:
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    lines = [f"# Model search: {job.name}", "",
             f"Log `{job.csv}`, columns {job.columns or 'all'}, device profile `{job.device}`, sensor at "
             f"{job.rate_hz:g} Hz (deadline {1e6 / job.rate_hz:,.0f} us per step). {len(rows)} candidates; "
             "each scored on the validation split through the device runtime, in its best variant that fits the "
             "profile and keeps up. The test split is read once, for the chosen candidate.", ""]
    if chosen is None:
        lines += ["**No candidate fits the device and keeps up with the sensor.** See why below.", ""]
    else:
        lines += [f"**Chosen: {chosen.label} ({chosen.variant})**, {chosen.bytes:,} bytes, "
                  f"{chosen.us_per_step:,.0f} us per step, validation MSE {chosen.val_mse:.4g}. "
                  f"Test MSE {test['test_mse']:.4g}: {test['of_ar']:.3f}x the best AR(k) (k={test['ar_order']}, "
                  f"chosen on validation, {test['ar_mse']:.4g}) and {test['of_persistence']:.3f}x persistence "
                  f"({test['persistence_mse']:.4g}). Bundle: `{job.artifacts / job.name}`.", "",
                  firmware_line(test["firmware"], job), "",
                  "The choice: the one-standard-error rule on validation. Each candidate's per-step validation "
                  "errors minus the best one's, with the standard error of their mean by batch means (20 "
                  "consecutive batches); of the candidates within one standard error of the best, the one with "
                  "the fewest trained parameters.", ""]
    bests = family_bests(rows)
    if bests:
        lines += ["Best of each family (validation):", "", "| family | candidate | variant | bytes | us/step | val MSE |",
                  "|---|---|---|---|---|---|"]
        for family, c in sorted(bests.items(), key=lambda kv: kv[1].val_mse):
            lines.append(f"| {family} | {c.label} | {c.variant} | {c.bytes:,} | {c.us_per_step:,.0f} | "
                         f"{c.val_mse:.4g} |")
        lines.append("")
    lines += ["Every candidate:", "",
              "| trial | candidate | state | variant | parameters | bytes | RAM | us/step | val MSE | verdict |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for c in sorted(rows, key=lambda c: (c.val_mse is None, c.val_mse or 0.0)):
        lines.append(f"| {c.number} | {c.label} | {c.state.lower()} | {c.variant or '-'} | {fmt(c.parameters, ',')} | "
                     f"{fmt(c.bytes, ',')} | "
                     f"{fmt(c.ram, ',')} | {fmt(c.us_per_step, ',.0f')} | {fmt(c.val_mse, '.4g')} | {c.why} |")
    return "\n".join(lines) + "\n"


def report(job: SearchJob, study) -> dict:
    """Choose, read the test split once, write the report, plot and chosen bundle; return the summary."""
    rows = candidates(study)
    test = None
    with open(job.folder / "search.log", "a") as log:
        chosen = choose(rows, candidate_errors(log))
        if chosen is not None:
            test = test_score(chosen, log)
            test["firmware"] = firmware_check(chosen, job, log)
            target = job.artifacts / job.name
            if target.exists():
                shutil.rmtree(target)
            shutil.copytree(chosen.bundle, target)
    job.reports.mkdir(parents=True, exist_ok=True)
    (job.reports / f"search-{job.name}.md").write_text(markdown(job, rows, chosen, test))
    pareto_plot(rows, chosen, job, job.reports / f"search-{job.name}.png")
    summary = {"study": job.name, "candidates": len(rows), "feasible": sum(c.feasible for c in rows),
               "families": {f: c.label for f, c in family_bests(rows).items()},
               "chosen": None if chosen is None else {"candidate": chosen.label, "variant": chosen.variant,
                                                      "val_mse": chosen.val_mse, "bytes": chosen.bytes,
                                                      "us_per_step": chosen.us_per_step,
                                                      "bundle": str(job.artifacts / job.name), **test},
               "report": str(job.reports / f"search-{job.name}.md")}
    return summary
