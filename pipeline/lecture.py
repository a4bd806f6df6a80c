"""python -m pipeline bench-lecture: the lecture's claim measured, recurrent step against a Transformer's.

A recurrent step costs the same whatever the history; a streaming
Transformer's step attends over the last W samples, so its time and its state
grow with W. This bench builds the three families at matched parameter
counts (LSTM-32, GRU-37, Transformer d16 with 2 layers: 4.4-4.6k parameters)
and measures, every step in a process of its own as on the command line:

  1. latency and state bytes against the context W (64..4,096): the
     Transformer trained for one epoch (latency does not depend on the
     weights' values) and converted at each W, timed with `python -m edge_eval
     bench` under tflite-runtime and ai-edge-litert; the LSTM and GRU once
     (their state does not grow with W). State bytes from the manifest's state
     shapes.
  2. `firmware_sim` budgets (RAM, flash, time per step, the highest sustainable
     rate) on the Cortex-M4 and ESP32-S3 profiles, per family and per W, and the
     largest W at which the Transformer still fits the Cortex-M4's RAM and
     meets a 100 Hz deadline.
  3. accuracy at matched parameter counts on built-in scenarios and real
     series (pipeline/real_series.py, the CSV user path): float32 test MSE on
     the device runtime against persistence and the run's best AR(k).

Output: reports/rnn-vs-transformer.md, PNGs, a JSON of every figure, and the
log of every subprocess (reports/bench-lecture.log).
"""
from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from pipeline.real_bench import run_logged

# matched sizes: LSTM-32 4,641 parameters, GRU-37 about 4,600, Transformer d16 x 2 layers 4,549 (1 channel)
FAMILIES = {"lstm": ("--hidden", "32"), "gru": ("--hidden", "37"),
            "transformer": ("--hidden", "16", "--layers", "2")}
LABELS = {"lstm": "LSTM-32", "gru": "GRU-37", "transformer": "Transformer d16"}
BACKENDS = ("tflite_runtime", "ai_edge_litert")
DEVICES = ("cortex-m4", "esp32-s3")
DEADLINE_HZ = 100.0
BYTES = {"float32": 4, "float16": 2, "int8": 1, "int16": 2}


@dataclass(frozen=True)
class LectureSettings:
    contexts: tuple[int, ...] = tuple(2 ** k for k in range(6, 13))  # 64 .. 4,096
    variants: tuple[str, ...] = ("float32", "int8-io")  # timed per W (int8-io: the firmware form)
    latency_scenario: str = "temperature"
    latency_samples: int = 3000  # the latency models' training stream
    latency_epochs: int = 1  # latency does not depend on the weights: one epoch is enough
    bench_steps: int = 500
    bench_repeats: int = 3
    scenarios: tuple[str, ...] = ("temperature", "vibration", "random_walk")
    real_series: tuple[str, ...] = ("ecg-mitbih", "ppg-finger", "electricity-demand")
    # a scenario's stream, a real series' last N samples; `make bench-real`'s samples and patience, 60 epochs at
    # most (bench-real: 200): the first full run (4,000 samples, 6 epochs, patience 3) left every network above the
    # best AR on every series, a verdict on short training rather than on the families
    samples: int = 12000
    epochs: int = 60
    patience: int = 20
    accuracy_context: int = 64  # the Transformer's W in the accuracy runs


FULL = LectureSettings()
# for the tests: the same path end to end, small and short
QUICK = LectureSettings(contexts=(64, 256), variants=("float32",), latency_samples=1500, bench_steps=200,
                        bench_repeats=2, scenarios=("temperature",), real_series=("ppg-finger",), samples=2000,
                        epochs=1, patience=1)


@dataclass
class Built:
    """One latency model: a family (at one W for the Transformer), its bundle, timings and budgets."""
    family: str
    context: int | None
    parameters: int | None = None
    state_bytes: int | None = None  # float32 state, from the manifest's state shapes
    state_elements: int | None = None
    variant_bytes: dict = field(default_factory=dict)  # variant -> file bytes
    deployable: dict = field(default_factory=dict)  # variant -> bool
    latency: dict = field(default_factory=dict)  # "backend/variant" -> median us per step, or an error text
    budget: dict = field(default_factory=dict)  # "device/variant" -> firmware_sim budget dict
    error: str | None = None


@dataclass
class AccuracyRow:
    series: str
    kind: str  # scenario or real
    family: str
    parameters: int | None = None
    mse: float | None = None  # float32 on the device runtime, test split, normalized units
    persistence_mse: float | None = None
    ar_mse: float | None = None
    ar_order: int | None = None
    seconds: float = 0.0
    error: str | None = None


def state_size(manifest: dict) -> tuple[int, int]:
    """(elements, bytes) of the step's state, from the manifest's state shapes and dtypes."""
    elements = nbytes = 0
    for s in manifest["state"]:
        n = math.prod(s["shape"])
        elements += n
        nbytes += n * BYTES.get(s.get("dtype", "float32"), 4)
    return elements, nbytes


def family_args(family: str, context: int | None) -> list[str]:
    return ["--cell", family, *FAMILIES[family], *(["--context", str(context)] if family == "transformer" else [])]


def build_latency_model(family: str, context: int | None, settings: LectureSettings, work: Path, log) -> Built:
    built = Built(family, context)
    name = f"lat-{family}" + (f"-w{context}" if context else "")
    runs, artifacts = work / "runs", work / "artifacts"
    try:
        run_logged([sys.executable, "-m", "train", "--scenario", settings.latency_scenario, "--samples",
                    str(settings.latency_samples), *family_args(family, context), "--epochs",
                    str(settings.latency_epochs), "--out", str(runs), "--name", name, "--quiet"], log, f"train {name}")
        built.parameters = json.loads((runs / name / "metrics.json").read_text()).get("parameters")
        extra = [v for v in settings.variants if v != "float32"] or ["float32"]
        run_logged([sys.executable, "-m", "convert", str(runs / name), "--out", str(artifacts), "--variants", *extra,
                    "--parity-steps", "300", "--firmware-variant", settings.variants[-1]], log, f"convert {name}")
        bundle = artifacts / name
        manifest = json.loads((bundle / "manifest.json").read_text())
        built.state_elements, built.state_bytes = state_size(manifest)
        present = [v["name"] for v in manifest["variants"]]
        for v in manifest["variants"]:
            built.variant_bytes[v["name"]] = v["bytes"]
            built.deployable[v["name"]] = v.get("metrics", {}).get("deployable")
        for backend in BACKENDS:
            for variant in settings.variants:
                key = f"{backend}/{variant}"
                if variant not in present:
                    built.latency[key] = "not in the bundle"
                    continue
                done = run_logged([sys.executable, "-m", "edge_eval", "bench", str(bundle), "--variant", variant,
                                   "--backend", backend, "--steps", str(settings.bench_steps), "--repeats",
                                   str(settings.bench_repeats)], log, f"edge_eval bench {name}", check=False)
                if done.returncode != 0:  # one runtime crashing on one graph: recorded, the bench goes on
                    built.latency[key] = f"the runtime's process died (exit {done.returncode})"
                    continue
                figures = json.loads(done.stdout.strip().splitlines()[-1])["variants"][variant]
                built.latency[key] = figures.get("median_us", figures.get("error", "no figure"))
        from firmware_sim.budget import budget

        for device in DEVICES:
            for variant in settings.variants:
                if variant in present:
                    built.budget[f"{device}/{variant}"] = budget(str(bundle), variant, device)
    except (RuntimeError, OSError, KeyError, ValueError, IndexError) as e:
        built.error = str(e)
    return built


def accuracy_run(series: str, kind: str, family: str, settings: LectureSettings, work: Path, csv: Path | None,
                 channels: list[str] | None, log) -> AccuracyRow:
    row = AccuracyRow(series, kind, family)
    started = time.perf_counter()
    name = f"acc-{series}-{family}"
    runs, artifacts = work / "runs", work / "artifacts"
    source = (["--scenario", series, "--samples", str(settings.samples)] if csv is None
              else ["--csv", str(csv), "--columns", *channels])
    try:
        run_logged([sys.executable, "-m", "train", *source, *family_args(family, settings.accuracy_context),
                    "--epochs", str(settings.epochs), "--patience", str(settings.patience), "--out", str(runs),
                    "--name", name, "--quiet"], log, f"train {name}")
        metrics = json.loads((runs / name / "metrics.json").read_text())
        row.parameters, row.persistence_mse = metrics.get("parameters"), metrics["persistence_mse"]
        row.ar_mse, row.ar_order = metrics["ar_mse"], metrics["ar_order"]
        run_logged([sys.executable, "-m", "convert", str(runs / name), "--out", str(artifacts), "--variants", "float32",
                    "--firmware-variant", "float32", "--parity-steps", "300"], log, f"convert {name}")
        with np.load(runs / name / "splits.npz") as splits:
            warmup = int(splits["warmup"])
        done = run_logged([sys.executable, "-m", "edge_eval", "eval", str(artifacts / name), "--input",
                           str(runs / name / "test.csv"), "--warmup", str(warmup), "--variant", "float32",
                           "--backend", "tflite_runtime"], log, f"edge_eval eval {name}")
        row.mse = json.loads(done.stdout.strip().splitlines()[-1])["mse"]
    except (RuntimeError, OSError, KeyError, ValueError) as e:
        row.error = str(e)
    row.seconds = time.perf_counter() - started
    return row


# ---- the numbers the report states

def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of a least-squares line."""
    slope, intercept = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)
    return float(intercept), float(slope)


def context_limit(transformers: list[Built], device: str, variant: str, rate_hz: float = DEADLINE_HZ) -> dict:
    """The largest measured W at which the Transformer fits the device's RAM and meets the rate's deadline,
    and where the linear fits of RAM and time against W cross the device's RAM and the deadline."""
    rows = [(b.context, b.budget[f"{device}/{variant}"]) for b in transformers
            if not b.error and f"{device}/{variant}" in b.budget]
    if not rows:
        return {"measured": None}
    deadline_us = 1e6 / rate_hz
    ok = [w for w, r in rows if r["fits"] and r["us_per_step"] <= deadline_us]
    out = {"measured": max(ok) if ok else None, "first_failing": min((w for w, r in rows if w not in ok), default=None)}
    if len(rows) >= 2:
        ws = [w for w, _ in rows]
        a_ram, b_ram = linear_fit(ws, [r["ram_used"] for _, r in rows])
        a_t, b_t = linear_fit(ws, [r["us_per_step"] for _, r in rows])
        ram_bytes = rows[0][1]["ram_bytes"]
        out["ram_limit_w"] = (ram_bytes - a_ram) / b_ram if b_ram > 0 else None
        out["deadline_limit_w"] = (deadline_us - a_t) / b_t if b_t > 0 else None
        out["ram_per_w"], out["us_per_w"] = b_ram, b_t
        limits = [v for v in (out["ram_limit_w"], out["deadline_limit_w"]) if v is not None]
        # the largest whole W within both (1e-6: a fit's rounding must not cost a whole sample)
        out["fitted"] = math.floor(min(limits) + 1e-6) if limits else None
        out["binding"] = "RAM" if out["ram_limit_w"] is not None and out["ram_limit_w"] == min(limits) else "deadline"
    return out


def latency_of(b: Built, key: str) -> float | None:
    v = b.latency.get(key)
    return v if isinstance(v, (int, float)) else None


def fmt(x, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def latency_table(recurrent: list[Built], transformers: list[Built], settings: LectureSettings) -> str:
    keys = [f"{b}/{v}" for b in BACKENDS for v in settings.variants]
    head = ["model", "W", "params", "state bytes (float32)", *[f"us/step {k}" for k in keys]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in [*recurrent, *transformers]:
        if b.error:
            lines.append(f"| {LABELS[b.family]} | {b.context or 'any'} | FAILED: {b.error} |" + " |" * (len(head) - 3))
            continue
        cells = [fmt(latency_of(b, k), ",.1f") if latency_of(b, k) is not None else str(b.latency.get(k, "-"))
                 for k in keys]
        lines.append(f"| {LABELS[b.family]} | {b.context or 'any (flat)'} | {fmt(b.parameters)} | {fmt(b.state_bytes)} "
                     f"| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def budget_table(recurrent: list[Built], transformers: list[Built], settings: LectureSettings) -> str:
    head = ["model", "W", "variant", "device", "fits", "RAM used / of", "flash used / of", "us/step (est.)",
            "max rate Hz (est.)", f"meets {DEADLINE_HZ:g} Hz"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for b in [*recurrent, *transformers]:
        for key, r in b.budget.items():
            device, variant = key.split("/", 1)
            meets = r["fits"] and r["us_per_step"] <= 1e6 / DEADLINE_HZ
            lines.append(f"| {LABELS[b.family]} | {b.context or 'any'} | {variant} | {device} | "
                         f"{'yes' if r['fits'] else '**NO**'} | {r['ram_used'] / 1024:,.1f} / {r['ram_bytes'] / 1024:,.0f} KB"
                         f" | {r['flash_used'] / 1024:,.1f} / {r['flash_bytes'] / 1024:,.0f} KB | "
                         f"{r['us_per_step']:,.0f} | {r['max_rate_hz']:,.0f} | {'yes' if meets else '**no**'} |")
    return "\n".join(lines)


def accuracy_table(rows: list[AccuracyRow]) -> str:
    families = list(FAMILIES)
    head = ["series", "kind", "persistence", "best AR (k)", *[f"{LABELS[f]} ({'params'})" for f in families],
            "best family"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for series in dict.fromkeys(r.series for r in rows):
        of = {r.family: r for r in rows if r.series == series}
        first = next(iter(of.values()))
        base = next((r for r in of.values() if r.persistence_mse is not None), first)
        cells = []
        for f in families:
            r = of.get(f)
            if r is None or r.mse is None:
                cells.append(f"FAILED: {r.error}" if r and r.error else "-")
                continue
            cells.append(f"{r.mse:.5f} (x{r.mse / r.persistence_mse:.2f} pers., x{r.mse / r.ar_mse:.2f} AR; "
                         f"{fmt(r.parameters)})")
        scored = [r for r in of.values() if r.mse is not None]
        best = LABELS[min(scored, key=lambda r: r.mse).family] if scored else "-"
        lines.append(f"| {series} | {first.kind} | {fmt(base.persistence_mse, '.5f')} | {fmt(base.ar_mse, '.5f')} "
                     f"({base.ar_order}) | " + " | ".join(cells) + f" | {best} |")
    return "\n".join(lines)


def headline(recurrent: list[Built], transformers: list[Built], rows: list[AccuracyRow],
             settings: LectureSettings) -> dict:
    """The figures the verdict and the summary are made of."""
    ok_t = [b for b in transformers if not b.error]
    out: dict = {"latency_ratio": {}, "limits": {}}
    for backend in BACKENDS:
        key = f"{backend}/float32"
        for rnn in recurrent:
            base = latency_of(rnn, key)
            at = [(b.context, latency_of(b, key)) for b in ok_t if latency_of(b, key) is not None]
            if base and at:
                w, t = max(at)
                lo_w, lo_t = min(at)
                out["latency_ratio"][f"{backend}/{rnn.family}"] = {"w": w, "transformer_us": t, "rnn_us": base,
                                                                   "ratio": t / base, "w_low": lo_w,
                                                                   "ratio_low": lo_t / base}
    for device in DEVICES:
        for variant in settings.variants:
            out["limits"][f"{device}/{variant}"] = context_limit(ok_t, device, variant)
    if len(ok_t) >= 2:
        _, out["state_bytes_per_w"] = linear_fit([b.context for b in ok_t], [b.state_bytes for b in ok_t])
    out["rnn_state_bytes"] = {b.family: b.state_bytes for b in recurrent}
    wins = {}
    for series in dict.fromkeys(r.series for r in rows):
        of = {r.family: r for r in rows if r.series == series and r.mse is not None}
        if "transformer" in of:
            for rnn in ("lstm", "gru"):
                if rnn in of:
                    wins.setdefault(rnn, []).append(of["transformer"].mse / of[rnn].mse)
    best = [min((r for r in rows if r.series == series and r.mse is not None), key=lambda r: r.mse, default=None)
            for series in dict.fromkeys(r.series for r in rows)]
    out["best"] = {f: sum(b is not None and b.family == f for b in best) for f in FAMILIES}
    out["best"] = {f: n for f, n in out["best"].items() if n}
    out["mse_ratio"] = {rnn: {"series": len(v), "transformer_better": sum(x < 1 for x in v),
                              "geo_mean": float(np.exp(np.mean(np.log(v)))), "min": min(v), "max": max(v)}
                        for rnn, v in wins.items()}
    return out


def verdict(h: dict, settings: LectureSettings) -> str:
    """A plain-language paragraph built from the measured figures only."""
    parts = []
    r = h["latency_ratio"].get("tflite_runtime/lstm") or next(iter(h["latency_ratio"].values()), None)
    if r:
        parts.append(f"Per step on this machine (tflite-runtime, float32), the Transformer d16 costs "
                     f"{r['ratio_low']:.1f}x an LSTM-32's time at W = {r['w_low']:,} and {r['ratio']:.1f}x at "
                     f"W = {r['w']:,} ({r['transformer_us']:,.0f} us against {r['rnn_us']:,.0f} us); the LSTM's "
                     "step does not depend on how much history it summarizes.")
    if "state_bytes_per_w" in h and h["rnn_state_bytes"].get("lstm"):
        w = max(settings.contexts)
        parts.append(f"Its state grows by {h['state_bytes_per_w']:,.0f} bytes per sample of context "
                     f"({h['state_bytes_per_w'] * w / 1024:,.0f} KB at W = {w:,}), where the LSTM-32 carries "
                     f"{h['rnn_state_bytes']['lstm']:,} bytes whatever the history.")
    lim = h["limits"].get("cortex-m4/float32", {})
    if lim.get("measured") is not None or lim.get("fitted") is not None:
        text = (f"On the Cortex-M4 profile at {DEADLINE_HZ:g} Hz (firmware_sim estimates, float32), the largest "
                f"measured W that still fits and keeps up is {fmt(lim.get('measured'), ',')}")
        if lim.get("fitted") is not None:
            text += (f"; the linear fits put the limit at W = {lim['fitted']:,} (the {lim['binding']} binds first: "
                     f"{lim['ram_per_w']:,.0f} B of RAM and {lim['us_per_w']:.2f} us per sample of context)")
        parts.append(text + ".")
    elif lim:
        parts.append(f"On the Cortex-M4 profile at {DEADLINE_HZ:g} Hz the Transformer fits at no measured W.")
    for rnn in ("lstm", "gru"):
        m = h["mse_ratio"].get(rnn)
        if not m:
            continue
        where = "lower" if m["geo_mean"] < 0.98 else "higher" if m["geo_mean"] > 1.02 else "about the same"
        first = rnn == "lstm" or "lstm" not in h["mse_ratio"]
        lead = (f"In accuracy at matched parameter counts (W = {settings.accuracy_context}, at most "
                f"{settings.epochs} epochs), the Transformer's float32 test MSE was below the" if first
                else "Against the")
        subject = f"{LABELS[rnn]}'s on" if first else f"{LABELS[rnn]}, it was lower on"
        parts.append(f"{lead} {subject} {m['transformer_better']} of {m['series']} series: geometric mean "
                     f"x{m['geo_mean']:.2f} of it (x{m['min']:.2f} to x{m['max']:.2f}), {where} overall.")
    if h.get("best"):
        parts.append("Lowest test MSE per series: " + ", ".join(f"{LABELS[f]} on {n}" for f, n in h["best"].items())
                     + ".")
    if r and r["ratio"] > 1:
        cost = (f"So on cost the recurrent step wins everywhere measured, by x{r['ratio_low']:.1f} at the shortest "
                f"context and x{r['ratio']:.0f} at the longest")
        lim_w = lim.get("fitted") or lim.get("measured")
        if lim_w is not None:
            cost += f", and on the Cortex-M4 at {DEADLINE_HZ:g} Hz the Transformer stops at W = {lim_w:,}"
        mse = h["mse_ratio"].get("lstm")
        if mse and mse["geo_mean"] < 1:
            cost += ("; the Transformer's case is accuracy at a short context, where it beat the LSTM on "
                     f"{mse['transformer_better']} of {mse['series']} series")
        parts.append(cost + ".")
    return " ".join(p for p in parts if p)


# ---- plots

def plot_latency_state(recurrent: list[Built], transformers: list[Built], settings: LectureSettings, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [b for b in transformers if not b.error]
    ws = list(settings.contexts)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    styles = {"tflite_runtime": "-", "ai_edge_litert": "--"}
    colors = {"lstm": "C0", "gru": "C2", "transformer": "C3"}
    markers = {"float32": "o", "int8-io": "s"}
    for backend in BACKENDS:
        for variant in settings.variants:
            key = f"{backend}/{variant}"
            pts = [(b.context, latency_of(b, key)) for b in ok if latency_of(b, key) is not None]
            if pts:
                ax1.plot(*zip(*pts), styles[backend], marker=markers.get(variant, "^"), color=colors["transformer"],
                         alpha=1.0 if variant == "float32" else 0.5, label=f"Transformer d16 {variant}, {backend}")
            for rnn in recurrent:
                t = latency_of(rnn, key)
                if t is not None and variant == "float32":
                    ax1.plot(ws, [t] * len(ws), styles[backend], color=colors[rnn.family],
                             label=f"{LABELS[rnn.family]} {variant}, {backend}")
    ax1.set_xscale("log", base=2)
    ax1.set_yscale("log")
    ax1.set_xlabel("context W (samples)")
    ax1.set_ylabel("median time per step, us (this machine)")
    ax1.set_title("Per-step latency against context")
    ax1.legend(fontsize=6)
    pts = [(b.context, b.state_bytes) for b in ok if b.state_bytes]
    if pts:
        ax2.plot(*zip(*pts), "-o", color=colors["transformer"], label="Transformer d16 (x_prev, ages, KV rings)")
    for rnn in recurrent:
        if rnn.state_bytes:
            ax2.plot(ws, [rnn.state_bytes] * len(ws), "-", color=colors[rnn.family], label=LABELS[rnn.family])
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("log")
    ax2.set_xlabel("context W (samples)")
    ax2.set_ylabel("state bytes (float32)")
    ax2.set_title("State carried between steps")
    ax2.legend(fontsize=7)
    fig.suptitle("Recurrent vs Transformer step, one run (log-log)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_device(recurrent: list[Built], transformers: list[Built], settings: LectureSettings, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [b for b in transformers if not b.error]
    ws = list(settings.contexts)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.8))
    for i, device in enumerate(DEVICES):
        for variant in settings.variants:
            key = f"{device}/{variant}"
            pts = [(b.context, b.budget[key]) for b in ok if key in b.budget]
            if not pts:
                continue
            ls = "-" if variant == "float32" else ":"
            ax1.plot([w for w, _ in pts], [r["us_per_step"] for _, r in pts], ls, marker="o", color=f"C{i}",
                     label=f"Transformer {variant}, {device}")
            ax2.plot([w for w, _ in pts], [r["ram_used"] / 1024 for _, r in pts], ls, marker="o", color=f"C{i}",
                     label=f"Transformer {variant}, {device}")
            for rnn in recurrent:
                if key in rnn.budget and variant == "float32":
                    ax1.plot(ws, [rnn.budget[key]["us_per_step"]] * len(ws), "--", color=f"C{i}", alpha=0.5,
                             label=f"{LABELS[rnn.family]}, {device}")
            ram = pts[0][1]["ram_bytes"] / 1024
            ax2.axhline(ram, color=f"C{i}", lw=1, ls="-.", label=f"{device} RAM ({ram:,.0f} KB)")
    ax1.axhline(1e6 / DEADLINE_HZ, color="k", lw=1, ls="-.", label=f"{DEADLINE_HZ:g} Hz deadline")
    for ax in (ax1, ax2):
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context W (samples)")
        ax.legend(fontsize=6)
    ax1.set_ylabel("us per step (firmware_sim estimate)")
    ax2.set_ylabel("RAM used, KB (firmware_sim)")
    fig.suptitle("Microcontroller budgets against context (firmware_sim, estimates)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def limits_lines(h: dict) -> list[str]:
    lines = []
    for key, lim in h["limits"].items():
        device, variant = key.split("/", 1)
        if lim.get("measured") is None and lim.get("fitted") is None:
            lines.append(f"- {device}, {variant}: fits and meets {DEADLINE_HZ:g} Hz at no measured W.")
            continue
        text = (f"- {device}, {variant}: largest measured W that fits the RAM and meets {DEADLINE_HZ:g} Hz: "
                f"**{fmt(lim.get('measured'), ',')}** (first failing: {fmt(lim.get('first_failing'), ',')})")
        if lim.get("fitted") is not None:
            text += (f"; linear fits: RAM runs out at W = {fmt(lim['ram_limit_w'], ',.1f')}, the deadline at W = "
                     f"{fmt(lim['deadline_limit_w'], ',.1f')}, so the limit is W = **{lim['fitted']:,}** "
                     f"({lim['binding']} binds)")
        lines.append(text + ".")
    return lines


def write_report(recurrent: list[Built], transformers: list[Built], rows: list[AccuracyRow],
                 settings: LectureSettings, seconds: float, reports: Path, quick: bool) -> tuple[Path, dict]:
    reports.mkdir(parents=True, exist_ok=True)
    plot_latency_state(recurrent, transformers, settings, reports / "rnn-vs-transformer_latency.png")
    plot_device(recurrent, transformers, settings, reports / "rnn-vs-transformer_device.png")
    h = headline(recurrent, transformers, rows, settings)
    s = settings
    n_series = len(dict.fromkeys(r.series for r in rows))
    text = [f"# Recurrent vs Transformer step (issue 18){' (quick mode)' if quick else ''}", "",
            "The lecture's claim, measured: a recurrent step costs the same whatever the history, a streaming "
            "Transformer's step and state grow with its context W. Families at matched parameter counts: "
            "LSTM-32, GRU-37, Transformer d16 (2 layers, ALiBi, KV ring; convert/transformer_step.py). "
            f"Total {seconds / 60:.1f} min on this machine (2 shared cores: absolute times are this machine's, "
            "the ratios are the point).", "",
            "## Summary", "", verdict(h, s), "",
            *limits_lines(h), "",
            "## Latency and state against context", "",
            f"The latency models are trained for {s.latency_epochs} epoch(s) on {s.latency_samples:,} samples of "
            f"{s.latency_scenario} (the step's time does not depend on the weights' values; their accuracy is not "
            f"the point here), converted ({', '.join(s.variants)}), and timed with `python -m edge_eval bench` "
            f"({s.bench_steps} steps x {s.bench_repeats} repeats, median of the repeats' mean per step; one process "
            "per backend and variant). The LSTM and GRU are built once: nothing in them depends on W, so they are "
            "drawn flat. State bytes: the manifest's state shapes (float32); the Transformer's is x_prev, the "
            "ring's ages (W) and per layer a K and a V ring (heads x W x head_dim each). W x d is capped at 65,536 "
            "by the bundle's state width: d16 reaches W = 4,096.",
            "" if "int8-io" not in s.variants else
            "\nint8-io is timed too: its ring's bookkeeping runs outside the quantized core (edge_runtime/ring.py), "
            "so its ages are exact and its times are those of the attention the float model computes.", "",
            latency_table(recurrent, transformers, s), "",
            "![latency and state against W](rnn-vs-transformer_latency.png)", "",
            "## Microcontroller budgets (firmware_sim)", "",
            "`firmware_sim budget` per family, variant and W (no kernels run: RAM from the tensor arena plan, flash "
            "from the model and runtime, time per step from the profile's cycle costs, every one an ESTIMATE). "
            f"`meets {DEADLINE_HZ:g} Hz`: fits and at most {1e3 / DEADLINE_HZ:g} ms per step.", "",
            budget_table(recurrent, transformers, s), "",
            "![budgets against W](rnn-vs-transformer_device.png)", "",
            "## Accuracy at matched parameter counts", "",
            f"{n_series} series: built-in scenarios ({s.samples:,} samples) and real series from the real-data "
            f"benchmark (the CSV user path, the last {s.samples:,} samples), each family trained with at most "
            f"{s.epochs} epochs (patience {s.patience}; the Transformer at W = {s.accuracy_context}), converted, and "
            "scored in float32 step by step on the run's test.csv under tflite-runtime (`python -m edge_eval "
            "eval`). Persistence and the best AR(k) (k chosen on validation) are the run's own baselines "
            "(metrics.json) on the same targets. MSE in normalized units; the caps make these short runs, not "
            "each family's best.", "",
            accuracy_table(rows), ""]
    path = reports / "rnn-vs-transformer.md"
    path.write_text("\n".join(text))
    (reports / "rnn-vs-transformer.json").write_text(json.dumps(
        {"settings": asdict(s), "recurrent": [asdict(b) for b in recurrent],
         "transformer": [asdict(b) for b in transformers], "accuracy": [asdict(r) for r in rows],
         "headline": h, "seconds": seconds}, indent=1, default=str))
    return path, h


def summary_lines(recurrent: list[Built], transformers: list[Built], settings: LectureSettings) -> str:
    return latency_table(recurrent, transformers, settings)


def rerender(reports: Path) -> int:
    """Write the report and plots again from reports/rnn-vs-transformer.json (no model is built or timed)."""
    data = json.loads((reports / "rnn-vs-transformer.json").read_text())
    s = data["settings"]
    settings = LectureSettings(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()})
    recurrent = [Built(**b) for b in data["recurrent"]]
    transformers = [Built(**b) for b in data["transformer"]]
    rows = [AccuracyRow(**r) for r in data["accuracy"]]
    seconds = data.get("seconds", 0.0)
    path, h = write_report(recurrent, transformers, rows, settings, seconds, reports, settings != FULL)
    print(f"{verdict(h, settings)}\n\nreport: {path}")
    return 0


def main(quick: bool, work: Path, reports: Path, progress: bool = True) -> int:
    settings = QUICK if quick else FULL
    started = time.perf_counter()
    reports.mkdir(parents=True, exist_ok=True)
    log_path = reports / "bench-lecture.log"
    from pipeline.real_series import SERIES_BY_NAME, default_cache, fetch, write_all

    cache = fetch(default_cache()) if settings.real_series else None
    records = {r["name"]: r for r in write_all(cache, work / "logs", settings.samples, list(settings.real_series))} \
        if settings.real_series else {}
    jobs = ([("latency", f, None) for f in ("lstm", "gru")] + [("latency", "transformer", w) for w in settings.contexts]
            + [("accuracy", f, (s, "scenario")) for s in settings.scenarios for f in FAMILIES]
            + [("accuracy", f, (s, "real")) for s in settings.real_series for f in FAMILIES])
    recurrent, transformers, rows = [], [], []
    with log_path.open("w") as log, tqdm(jobs, desc="bench-lecture", unit="model", disable=not progress,
                                         dynamic_ncols=True) as bar:
        for what, family, arg in bar:
            if what == "latency":
                bar.set_postfix_str(f"latency {family}" + (f" W={arg}" if arg else ""))
                built = build_latency_model(family, arg, settings, work, log)
                (transformers if family == "transformer" else recurrent).append(built)
            else:
                series, kind = arg
                bar.set_postfix_str(f"accuracy {series} {family}")
                csv = work / "logs" / f"{series}.csv" if kind == "real" else None
                channels = records[series]["channels"] if kind == "real" else None
                rows.append(accuracy_run(series, kind, family, settings, work, csv, channels, log))
    assert all(n in SERIES_BY_NAME for n in settings.real_series)
    seconds = time.perf_counter() - started
    path, h = write_report(recurrent, transformers, rows, settings, seconds, reports, quick)
    print("\n== per-step latency and state bytes against context ==\n")
    print(summary_lines(recurrent, transformers, settings))
    print("\n" + "\n".join(limits_lines(h)))
    print(f"\n{verdict(h, settings)}")
    print(f"\nreport: {path} (plots: rnn-vs-transformer_latency.png, rnn-vs-transformer_device.png); every step's "
          f"output: {log_path}; {seconds / 60:.1f} min")
    failed = [f"{b.family} W={b.context}" for b in [*recurrent, *transformers] if b.error] + \
             [f"{r.series}/{r.family}" for r in rows if r.error]
    if failed:
        print(f"FAILED: {', '.join(failed)} (see {log_path})", file=sys.stderr)
        return 1
    return 0
