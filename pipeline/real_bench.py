"""python -m pipeline bench-real: the real-data yardstick, next to the built-in scenarios.

Each real series (pipeline/real_series.py) goes through the path a user takes,
one process per step as on the command line:

  1. the series is written as a CSV sensor log;
  2. `python -m train --csv LOG --columns ...` (the CSV path picks the features: level + delta, or delta
     alone when the log's level wanders, see train/wander.py);
  3. `python -m convert RUN` (every variant the converter makes);
  4. `python -m edge_eval eval BUNDLE --variant V` for EVERY variant in the bundle, step by step on the
     run's test.csv under the device runtime (tflite-runtime; ai-edge-litert for a variant only it opens).

Nothing here knows which variants exist or how they are built: it reads the
bundle's manifest (variants, bytes, deployable and why not, variants left
out) and the run's metrics.json (persistence and the validation-chosen
AR(k<=256), on the same test targets), so a better integer graph shows up
here without a change. Output: reports/bench-real.md, two PNGs, a JSON of
every row, and the log of every subprocess (reports/bench-real.log).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.real_series import SERIES, SERIES_BY_NAME, default_cache, fetch, write_all

REPO = Path(__file__).resolve().parents[1]
# the deployment budget the report marks: a variant within this multiple of float32's test MSE
MSE_BUDGET = 1.2


@dataclass(frozen=True)
class BenchSettings:
    max_samples: int = 12000  # the last N samples of each series
    cell: str = "lstm"
    hidden: int = 32
    # the CSV CLI's own defaults (train/trainer.py TrainConfig), as a user gets them: a cap of 60 epochs with
    # patience 10 stopped the 200 Hz seismogram's LSTM at epoch 12 (8,400 training samples are 5 updates an
    # epoch), still at persistence's MSE, where the defaults reach 0.65 of it
    epochs: int = 200
    patience: int = 20


FULL = BenchSettings()
# for the tests: the same path end to end, small and short
QUICK = BenchSettings(max_samples=3000, epochs=3, patience=3)


@dataclass
class VariantRow:
    variant: str
    bytes: int | None
    of_float32: float | None
    mse: float | None  # test MSE, normalized units, from the device runtime
    backend: str | None
    deployable: bool | None
    why_not: str | None  # why not deployable, or why the variant is missing / not scored

    def ratio(self, reference: float | None) -> float | None:
        return None if self.mse is None or not reference else self.mse / reference


@dataclass
class SeriesResult:
    name: str
    info: dict  # real_series.describe(): source, package, licence, rate, channels, samples, level check
    features: list[str] = field(default_factory=list)
    level_check_line: str = ""
    torch_mse: float | None = None
    persistence_mse: float | None = None
    ar_mse: float | None = None
    ar_order: int | None = None
    output_gains: list[float] | None = None  # per target channel, fitted on validation (train/output_gains.py)
    torch_mse_as_trained: float | None = None  # float32 in torch before the gains (reported, never chosen on)
    variants: list[VariantRow] = field(default_factory=list)
    seconds: float = 0.0
    error: str | None = None

    @property
    def float32_mse(self) -> float | None:
        return next((v.mse for v in self.variants if v.variant == "float32"), None)


def run_logged(cmd: list[str], log, what: str, check: bool = True) -> subprocess.CompletedProcess:
    """One step of the user path in its own process; its whole output goes to the log. check: a failure
    raises RuntimeError with the output's last lines."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_ENABLE_ONEDNN_OPTS": "0",
           "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    log.write(done.stdout + done.stderr)
    log.flush()
    if check and done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(f"{what} failed (exit {done.returncode}): {' | '.join(tail)}")
    return done


def pick_backend(entry: dict) -> tuple[str | None, str | None]:
    """The device runtime for a variant: tflite-runtime when it opens it, else ai-edge-litert, else none."""
    opens = entry.get("compatibility", {})
    for backend in ("tflite_runtime", "ai_edge_litert"):
        if opens.get(backend, "unknown") is None:
            return backend, None
    return None, "; ".join(str(why) for why in opens.values())


def score_variants(bundle: Path, test_csv: Path, warmup: int, log) -> list[VariantRow]:
    manifest = json.loads((bundle / "manifest.json").read_text())
    float_bytes = manifest["variants"][0]["bytes"]
    rows = []
    for entry in manifest["variants"]:
        metrics = entry.get("metrics", {})
        backend, why_closed = pick_backend(entry)
        mse = None
        if backend:
            done = run_logged([sys.executable, "-m", "edge_eval", "eval", str(bundle), "--input", str(test_csv),
                               "--warmup", str(warmup), "--variant", entry["name"], "--backend", backend],
                              log, f"edge_eval eval --variant {entry['name']}")
            mse = json.loads(done.stdout.strip().splitlines()[-1])["mse"]
        deployable = metrics.get("deployable")
        rows.append(VariantRow(entry["name"], entry["bytes"], entry["bytes"] / float_bytes, mse, backend, deployable,
                               why_closed or (None if deployable is not False else why_not_deployable(metrics))))
    return rows + missing_variants(manifest)


def why_not_deployable(metrics: dict) -> str:
    """The manifest's reason (why_not_deployable today; any why* field a later convert writes)."""
    reasons = [str(v) for k, v in metrics.items() if k.startswith("why") and v]
    return "; ".join(reasons) or "the manifest gives no reason"


def missing_variants(manifest: dict) -> list[VariantRow]:
    """Variants the converter made but did not ship: every manifest list named *_variants (left_out_variants
    today), each item a name and a why (text, or runtime -> reason)."""
    rows = []
    for key, items in manifest.items():
        if key == "variants" or not key.endswith("_variants") or not isinstance(items, list):
            continue
        for item in items:
            why = item.get("why", "")
            why = "; ".join(str(w) for w in why.values() if w) if isinstance(why, dict) else str(why)
            rows.append(VariantRow(item.get("name", "?"), None, None, None, None, False,
                                   f"{key.removesuffix('_variants').replace('_', ' ')} by convert: {why}"))
    return rows


def bench_series(name: str, info: dict, log_csv: Path, work: Path, settings: BenchSettings, log) -> SeriesResult:
    result = SeriesResult(name, info)
    started = time.perf_counter()
    runs, artifacts = work / "runs", work / "artifacts"
    try:
        done = run_logged([sys.executable, "-m", "train", "--csv", str(log_csv), "--columns", *info["channels"],
                           "--cell", settings.cell, "--hidden", str(settings.hidden), "--epochs", str(settings.epochs),
                           "--patience", str(settings.patience), "--out", str(runs), "--name", name, "--quiet"],
                          log, "python -m train --csv")
        result.level_check_line = next((line for line in done.stderr.splitlines() if line.startswith("level check:")), "")
        metrics = json.loads((runs / name / "metrics.json").read_text())
        result.features = metrics.get("level_check", {}).get("features", [])
        result.torch_mse, result.persistence_mse = metrics["test_mse"], metrics["persistence_mse"]
        result.ar_mse, result.ar_order = metrics["ar_mse"], metrics["ar_order"]
        result.output_gains = metrics.get("output_gains", {}).get("alpha")
        result.torch_mse_as_trained = metrics.get("test_mse_as_trained")
        run_logged([sys.executable, "-m", "convert", str(runs / name), "--out", str(artifacts)], log, "python -m convert")
        with np.load(runs / name / "splits.npz") as splits:
            warmup = int(splits["warmup"])
        result.variants = score_variants(artifacts / name, runs / name / "test.csv", warmup, log)
    except (RuntimeError, OSError, KeyError, ValueError) as e:
        result.error = str(e)
    result.seconds = time.perf_counter() - started
    return result


def run_bench_real(names: list[str], work: Path, settings: BenchSettings, log_path: Path,
                   cache: Path | None = None, progress: bool = True) -> list[SeriesResult]:
    cache = fetch(cache or default_cache())
    records = {r["name"]: r for r in write_all(cache, work / "logs", settings.max_samples, names)}
    results = []
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log, tqdm(names, desc="bench-real", unit="series", disable=not progress,
                                         dynamic_ncols=True) as bar:
        for name in bar:
            bar.set_postfix_str(name)
            results.append(bench_series(name, records[name], work / "logs" / f"{name}.csv", work, settings, log))
    return results


# ---- tables and plots

def fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def variant_names(results: list[SeriesResult]) -> list[str]:
    return list(dict.fromkeys(v.variant for r in results for v in r.variants))


def summary_table(results: list[SeriesResult]) -> str:
    """One row per series: float32 against the baselines, then each variant's MSE as a multiple of float32's.

    A variant's cell: xRATIO, then `p` when it is not below persistence, `n` when the manifest says not
    deployable, `-` when the bundle has no such variant (or it could not be scored)."""
    names = [n for n in variant_names(results) if n != "float32"]
    head = ["series", "ch", "features", "float32 / persistence", "float32 / AR(k)", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if r.error:
            lines.append(f"| {r.name} | {len(r.info['channels'])} | FAILED: {r.error} |" + " |" * (len(head) - 3))
            continue
        f32 = r.float32_mse
        cells = []
        for n in names:
            v = next((v for v in r.variants if v.variant == n), None)
            if v is None or v.mse is None:
                cells.append("left out" if v and v.bytes is None else "-")  # made by convert, not shipped
                continue
            flags = ("p" if v.mse >= r.persistence_mse else "") + ("n" if v.deployable is False else "")
            cells.append(f"x{v.mse / f32:.2f}" + (f" {flags}" if flags else ""))
        lines.append(f"| {r.name} | {len(r.info['channels'])} | {'+'.join(r.features)} | "
                     f"{fmt(r.persistence_mse and f32 / r.persistence_mse)} | "
                     f"{fmt(r.ar_mse and f32 / r.ar_mse)} ({r.ar_order}) | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def counts_line(results: list[SeriesResult]) -> str:
    """How many series each integer variant serves within budget and below persistence."""
    ok = [r for r in results if not r.error and r.float32_mse]
    parts = []
    for n in variant_names(ok):
        if n == "float32":
            continue
        scored = [(r, v) for r in ok for v in r.variants if v.variant == n and v.mse is not None]
        within = sum(v.mse <= MSE_BUDGET * r.float32_mse and v.mse < r.persistence_mse for r, v in scored)
        parts.append(f"{n} {within}/{len(ok)}")
    return (f"within {MSE_BUDGET}x float32's test MSE and below persistence: " + ", ".join(parts)
            + f" (of {len(ok)} series)")


def series_table(results: list[SeriesResult]) -> str:
    lines = ["| series | kind | source | package (file in the wheel) | licence | rate | channels | samples used | "
             "level wanders? |", "|" + "---|" * 9]
    for r in results:
        i = r.info
        lines.append(f"| {r.name} | {i['kind']} | {i['source']} | {i['package']} (`{i['member']}`) | {i['licence']} | "
                     f"{i['rate']} | {len(i['channels'])}: {', '.join(i['channels'])} | {i['samples']:,} | "
                     f"{'**yes**' if i['level_wanders'] else 'no'}: {i['level_check']} |")
    return "\n".join(lines)


def gains_line(r: SeriesResult) -> str:
    """The correction's per-channel gains fitted on validation, and float32's test MSE without them."""
    if r.output_gains is None:
        return "output gains: not recorded (a run from before train/output_gains.py)"
    gains = ", ".join(f"{c} {g:.2f}" for c, g in zip(r.info["channels"], r.output_gains))
    return (f"output gains (fitted on validation; 1 = the correction as trained, 0 = persistence): {gains}; "
            f"float32 in torch without them {fmt(r.torch_mse_as_trained, '.5f')} "
            f"({fmt(r.torch_mse_as_trained and r.persistence_mse and r.torch_mse_as_trained / r.persistence_mse)}x "
            "persistence).")


def variant_table(r: SeriesResult) -> str:
    lines = ["| variant | bytes | of float32 | test MSE | x float32 | x persistence | x AR(%s) | runtime | "
             "deployable | why not |" % r.ar_order, "|" + "---|" * 10]
    for v in r.variants:
        deployable = "-" if v.deployable is None else ("yes" if v.deployable else "NO")
        lines.append(f"| {v.variant} | {fmt(v.bytes, ',')} | {fmt(v.of_float32, '.0%')} | {fmt(v.mse, '.5f')} | "
                     f"{fmt(v.ratio(r.float32_mse))} | {fmt(v.ratio(r.persistence_mse))} | {fmt(v.ratio(r.ar_mse))} | "
                     f"{v.backend or '-'} | {deployable} | {v.why_not or ''} |")
    return "\n".join(lines)


def plot_ratios(results: list[SeriesResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if not r.error and r.float32_mse]
    names = [n for n in variant_names(ok) if n != "float32"]
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(ok) + 2), 4.5))
    width = 0.8 / (len(names) + 1)
    for j, n in enumerate(["persistence", *names]):
        heights = []
        for r in ok:
            if n == "persistence":
                heights.append(r.persistence_mse / r.float32_mse)
            else:
                v = next((v for v in r.variants if v.variant == n), None)
                heights.append(v.mse / r.float32_mse if v and v.mse else np.nan)
        ax.bar([i + j * width for i in range(len(ok))], heights, width, label=n,
               color="0.6" if n == "persistence" else None)
    ax.axhline(1.0, color="k", lw=1, ls="--", label="float32")
    ax.axhline(MSE_BUDGET, color="r", lw=1, ls=":", label=f"{MSE_BUDGET}x float32")
    ax.set_yscale("log")
    ax.set_xticks([i + width * len(names) / 2 for i in range(len(ok))], [r.name for r in ok], rotation=30, ha="right")
    ax.set_ylabel("test MSE / float32's (log)")
    ax.set_title("Each variant on the device runtime, relative to float32")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_bytes_vs_error(results: list[SeriesResult], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in results if not r.error and r.float32_mse]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for n in variant_names(ok):
        points = [(v.bytes, v.mse / r.persistence_mse) for r in ok for v in r.variants
                  if v.variant == n and v.mse is not None]
        if points:
            ax.scatter(*zip(*points), label=n, s=22)
    ax.axhline(1.0, color="k", lw=1, ls="--", label="persistence")
    ax.set_yscale("log")
    ax.set_xlabel("variant file size, bytes")
    ax.set_ylabel("test MSE / persistence's (log)")
    ax.set_title("Size against error, every variant of every series")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(results: list[SeriesResult], settings: BenchSettings, seconds: float, reports: Path,
                 quick: bool) -> Path:
    reports.mkdir(parents=True, exist_ok=True)
    plot_ratios(results, reports / "bench-real_ratios.png")
    plot_bytes_vs_error(results, reports / "bench-real_bytes.png")
    text = [f"# Real-data benchmark{' (quick mode)' if quick else ''}", "",
            f"{len(results)} real series, each through the user path: CSV log -> `python -m train --csv LOG --columns "
            f"...` ({settings.cell.upper()}-{settings.hidden}, {settings.epochs} epochs at most, patience "
            f"{settings.patience}, the last {settings.max_samples:,} samples at most) -> `python -m convert RUN` -> "
            "`python -m edge_eval eval --variant V` for every variant, step by step on the run's test.csv under the "
            f"device runtime. Total {seconds / 60:.1f} min on this machine.", "",
            "MSE: next-sample forecast on the test split, normalized units (1.0 = the training variance), "
            "as the device runtime computes it. Persistence and AR(k) (k <= 256, chosen on validation) are "
            "the run's own baselines (metrics.json) on the same targets.", "",
            "## Series", "", series_table(results), "",
            "## Summary", "",
            "Each variant's test MSE as a multiple of float32's (both on the device runtime). "
            "`p`: not below persistence; `n`: the manifest says not deployable; `left out`: the converter dropped it "
            "(why: in the series' table below); `-`: no such variant in the bundle.",
            "", summary_table(results), "", counts_line(results), "",
            "![MSE over float32's](bench-real_ratios.png)", "", "![bytes against error](bench-real_bytes.png)", "",
            "## Per series", ""]
    for r in results:
        text += [f"### {r.name}", ""]
        if r.error:
            text += [f"FAILED: {r.error}", ""]
            continue
        text += [f"`{r.level_check_line}`", "", f"float32 in torch: {fmt(r.torch_mse, '.5f')}; persistence "
                 f"{fmt(r.persistence_mse, '.5f')}; AR({r.ar_order}) {fmt(r.ar_mse, '.5f')}; {r.seconds:.0f} s.", "",
                 gains_line(r), "",
                 variant_table(r), ""]
    path = reports / "bench-real.md"
    path.write_text("\n".join(text))
    (reports / "bench-real.json").write_text(json.dumps([asdict(r) for r in results], indent=1))
    return path


def main(series: list[str] | None, quick: bool, work: Path, reports: Path) -> int:
    names = series or [s.name for s in SERIES]
    unknown = [n for n in names if n not in SERIES_BY_NAME]
    if unknown:
        print(f"error: unknown series {unknown}; choose from {', '.join(SERIES_BY_NAME)}", file=sys.stderr)
        return 2
    settings = QUICK if quick else FULL
    started = time.perf_counter()
    log = reports / "bench-real.log"
    results = run_bench_real(names, work, settings, log)
    seconds = time.perf_counter() - started
    path = write_report(results, settings, seconds, reports, quick)
    print("\n== real series: test MSE of each variant as a multiple of float32's (device runtime) ==\n")
    print(summary_table(results))
    print(f"\n{counts_line(results)}")
    print(f"\nreport: {path} (plots: bench-real_ratios.png, bench-real_bytes.png); "
          f"every step's output: {log}; {seconds / 60:.1f} min")
    failed = [r.name for r in results if r.error]
    if failed:
        print(f"FAILED: {', '.join(failed)} (see {log})", file=sys.stderr)
        return 1
    return 0
