"""The demo's autocomplete stage: train on Debian's word list, convert, score every variant on the device runtime.

The character LSTM and the n-gram are trained on the same words; both are
scored on the same held-out 10% (seeded): next-letter top-1 and top-3 over
every letter and end symbol, and keystroke savings (KSR): float32 and the
n-gram on every held-out word, every variant on the first 500 (the integer
variants run 4-5x slower than float32 here). Each variant of the bundle is scored by
`python -m edge_eval eval-complete` in a process of its own, with the
device's interpreter (tflite-runtime, or ai-edge-litert for a variant the
manifest says tflite-runtime cannot open).

Acceptance rules:
  LSTM (float32, on the runtime) top-1  >= n-gram top-1 + 2 points
  LSTM KSR                              >  n-gram KSR
  int8 or int16x8 top-1                 within 1 point of float32's
  that variant's model file             fits the Cortex-M4 profile's flash
  typing real words (issue 15, float32 + lexicon):
    the 20 most used words of 7+ letters, typed to 4 letters: >= 18 in the top 3
    frequency-weighted KSR (3 shown)    >= the frequency-ranked lexicon completer's
Reported, not gating: next-letter top-1 against the best n-gram up to order 7, and a
quantized variant + lexicon within the Cortex-M4's flash.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from edge_eval.autocomplete import KSR_SUBSET
from train.config import CELLS

TOP1_MARGIN = 0.02
BENCH_VARIANTS = ("float32", "int8", "int16x8")  # timed per keystroke for the report
QUANTIZED_TOP1_TOLERANCE = 0.01
# What the model must fit: flash for the model file, RAM for the state and the interpreter's arena.
DEVICE_PROFILES = {
    "cortex-m4": {"flash_bytes": 1024 * 1024, "ram_bytes": 256 * 1024},
    "raspberry-pi-zero-2": {"flash_bytes": 8 * 1024 ** 3, "ram_bytes": 512 * 1024 ** 2},
}


@dataclass
class AutocompletePreset:
    cell: str = "lstm"
    # 192: the first width whose next-letter top-1 beats the best n-gram on validation (DESIGN-NOTES:
    # 2x128 0.459, with dropout 0.448, 20 epochs 0.467, 2x192 0.474, 6-gram 0.464)
    hidden: int = 192
    layers: int = 2
    epochs: int = 12
    words_per_epoch: int = 0  # 0: all training words every epoch
    batch: int = 128
    lr: float = 1e-2
    # 0: every word alike. 0.1 and 0.25 (drawn with replacement; the n-gram weighted alike) lost next-letter top-1
    # each word once on validation against the equally weighted n-gram (DESIGN-NOTES)
    frequency_exponent: float = 0.0
    # the epoch kept: best mean of validation next-letter top-1 each word once and weighted by use, the two ways
    # the issue compares with the n-gram (the lowest validation loss kept one that tied the n-gram weighted)
    select_on: str = "top1"
    ksr_words: int = 100_000  # float32 and the n-gram: KSR on this many held-out words (all of them)
    seed: int = 0


AUTOCOMPLETE_PRESETS = {
    "full": AutocompletePreset(),
    # what a test can afford: the same pipeline, a smaller model and fewer words per epoch
    "small": AutocompletePreset(hidden=32, epochs=2, words_per_epoch=8000, ksr_words=100),
}


@dataclass
class AutocompleteResult:
    name: str
    parameters: int
    train_seconds: float
    torch: dict  # test_top1, test_top3 (teacher-forced, torch)
    ngram: dict  # order, top1, top3, ksr: the baseline (order 4-5, chosen on validation)
    ngram_high_order: dict  # the same for order 6-7: the strongest n-gram here, reported alongside
    variants: dict[str, dict] = field(default_factory=dict)  # name -> eval-complete result + bytes
    latency: dict = field(default_factory=dict)  # python -m edge_eval bench-complete
    checks: dict[str, bool] = field(default_factory=dict)
    stage_seconds: float = 0.0
    typing: dict = field(default_factory=dict)  # eval-complete --typing on float32 (issue 15's metrics)

    @property
    def passed(self) -> bool:
        return all(self.checks.values())


def run_json(cmd: list[str]) -> dict:
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def eval_variant(bundle: Path, words: Path, variant: str, ksr_words: int, backend: str) -> dict:
    return run_json([sys.executable, "-m", "edge_eval", "eval-complete", str(bundle), "--words", str(words),
                     "--ksr-words", str(ksr_words), "--variant", variant, "--backend", backend])


def fits(nbytes: int, profile: str = "cortex-m4") -> bool:
    return nbytes <= DEVICE_PROFILES[profile]["flash_bytes"]


def acceptance(r: AutocompleteResult) -> dict[str, bool]:
    f32 = r.variants["float32"]
    quantized = [v for v in ("int8", "int16x8") if v in r.variants
                 and abs(r.variants[v]["top1"] - f32["top1"]) <= QUANTIZED_TOP1_TOLERANCE]
    return {
        f"top-1 >= n-gram + {TOP1_MARGIN * 100:.0f} points": f32["top1"] >= r.ngram["top1"] + TOP1_MARGIN,
        "KSR above n-gram's (all held-out words)": f32["ksr"] > r.ngram["ksr"],
        f"int8 or int16x8 within {QUANTIZED_TOP1_TOLERANCE * 100:.0f} point of float32": bool(quantized),
        "that variant fits a Cortex-M4 (1 MB flash)": any(fits(r.variants[v]["bytes"]) for v in quantized),
    }


COMMON_WORDS_FOUND = 18  # issue 15: of the 20 most used words of 7+ letters, typed to 4 letters, in the top 3


def typing_checks(r: AutocompleteResult) -> dict[str, bool]:
    """Issue 15's must-shows that hold by design, so they gate the demo: the suggestions rank lexicon words
    by frequency, ties as the frequency-ranked completer orders them (tie_break "alphabetical"), so the
    common words are found whenever the lexicon's frequencies put them in the top 3 and the savings equal
    the completer's; a decoder change that breaks either fails the demo."""
    if not r.typing:
        return {}
    model, frequency = r.typing["model"], r.typing["frequency_completer"]
    common = model["common_words"]
    return {
        f"the {common['words']} most used words of 7+ letters, typed to {common['typed']}: "
        f">= {COMMON_WORDS_FOUND} in the top {common['shown']} (found {common['found']})":
            common["found"] >= COMMON_WORDS_FOUND,
        "frequency-weighted KSR (3 shown) >= frequency-ranked lexicon completer's":
            model["ksr_weighted_3"] >= frequency["ksr_weighted_3"],
    }


def typing_targets(r: AutocompleteResult) -> dict[str, bool]:
    """Issue 15's must-shows that depend on training: reported, not gating the demo's exit status
    (the 2x192 passes the n-gram's next-letter top-1 by about a point, the 2x128 missed it by half a
    point; one training run's noise is not a reason to fail the demo, DESIGN-NOTES)."""
    if not r.typing:
        return {}
    model, ngram = r.typing["model"], r.typing["ngram"]
    quantized = [v for v in ("int8", "int16x8") if v in r.variants
                 and abs(r.variants[v]["top1"] - r.variants["float32"]["top1"]) <= QUANTIZED_TOP1_TOLERANCE]
    return {
        f"next-letter top-1 >= best n-gram's up to order 7 (order {ngram['order']}), each word once":
            model["top1"] >= ngram["top1"],
        f"next-letter top-1 >= best n-gram's up to order 7 (order {ngram['order']}), weighted by use":
            model["top1_weighted"] >= ngram["top1_weighted"],
        "a quantized variant + lexicon fits a Cortex-M4 (1 MB flash)":
            any(fits(r.variants[v]["bytes"] + r.typing["lexicon_bytes"]) for v in quantized),
    }


def run_autocomplete(preset: AutocompletePreset, runs_dir: Path, artifacts_dir: Path, words_path: Path | None = None,
                     progress: bool = True) -> AutocompleteResult:
    from convert.run import convert_run
    from train.autocomplete_train import AutocompleteTrainConfig, train_autocomplete_run
    from train.config import AutocompleteModelConfig
    from train.words import load_words

    started = time.perf_counter()
    name = f"words-{preset.cell}{preset.hidden}"
    splits = load_words(words_path, seed=preset.seed)
    config = AutocompleteModelConfig(cell=preset.cell, hidden=preset.hidden, layers=preset.layers)
    train_config = AutocompleteTrainConfig(epochs=preset.epochs, batch=preset.batch, lr=preset.lr, seed=preset.seed,
                                   words_per_epoch=preset.words_per_epoch, patience=preset.epochs,
                                   frequency_exponent=preset.frequency_exponent, select_on=preset.select_on)
    metrics = train_autocomplete_run(splits, config, train_config, runs_dir / name, progress=progress,
                             ksr_words=preset.ksr_words)
    manifest = convert_run(runs_dir / name, artifacts_dir / name)
    result = AutocompleteResult(name, metrics["parameters"], metrics["train_seconds"],
                                {k: metrics[k] for k in ("test_top1", "test_top3")},
                                *({k: metrics[n][k] for k in ("order", "top1", "top3", "ksr", "keys", "letters",
                                                              "words", "ksr_first")}
                                  for n in ("ngram", "ngram_high_order")))
    def score(entry: dict) -> dict:
        backend = "tflite_runtime" if entry["compatibility"]["tflite_runtime"] is None else "ai_edge_litert"
        ksr_words = preset.ksr_words if entry["name"] == "float32" else min(KSR_SUBSET, preset.ksr_words)
        return eval_variant(artifacts_dir / name, runs_dir / name / "test_words.txt", entry["name"],
                            ksr_words, backend)

    def typing() -> dict:  # the metrics that match typing, float32 against both references
        return run_json([sys.executable, "-m", "edge_eval", "eval-complete", str(artifacts_dir / name), "--words",
                         str(runs_dir / name / "test_words.txt"), "--typing", "--splits",
                         str(runs_dir / name / "words.json"), "--variant", "float32", "--backend", "tflite_runtime"]
                        )["typing"] if "lexicon" in manifest else {}

    # two processes at a time (this machine has two cores); the integer variants take ~4x float32's time
    with ThreadPoolExecutor(max_workers=2) as pool:
        typed = pool.submit(typing)
        scored = list(pool.map(score, manifest["variants"]))
        result.typing = typed.result()
    result.variants = {entry["name"]: s for entry, s in zip(manifest["variants"], scored)}
    result.latency = run_json([sys.executable, "-m", "edge_eval", "bench-complete", str(artifacts_dir / name),
                               "--backend", "tflite_runtime", "--repeats", "3"]
                              + [a for v in BENCH_VARIANTS if v in result.variants for a in ("--variant", v)])
    result.checks = {**acceptance(result), **typing_checks(result)}
    result.stage_seconds = round(time.perf_counter() - started, 1)
    return result


def table(r: AutocompleteResult) -> str:
    f32 = r.variants["float32"]
    subset = min(KSR_SUBSET, f32["ksr_words"])

    def all_words(v: dict) -> str:  # KSR over every held-out word, where it was measured
        return f"{v['ksr']:.4f} ({v['keys']} / {v['letters']} keys)" if v.get("ksr_words", v.get("words")) > subset else "-"

    lines = [f"| model | bytes | fits Cortex-M4 flash | top-1 | top-3 | KSR, first {subset} words | "
             f"KSR, all {f32['words']} held-out | runtime |", "|---|---|---|---|---|---|---|---|"]
    for label, ng in ((f"n-gram (order {r.ngram['order']}, Witten-Bell)", r.ngram),
                      (f"n-gram (order {r.ngram_high_order['order']}, reference)", r.ngram_high_order)):
        lines.append(f"| {label} | - | - | {ng['top1']:.3f} | {ng['top3']:.3f} | {ng['ksr_first']:.4f} | "
                     f"{all_words(ng)} | numpy |")
    for name, v in r.variants.items():
        delta = "" if name == "float32" else f" ({(v['top1'] - f32['top1']) * 100:+.1f})"
        lines.append(f"| LSTM {name} | {v['bytes']} | {'yes' if fits(v['bytes']) else 'no'} | {v['top1']:.3f}{delta} | "
                     f"{v['top3']:.3f} | {v['ksr_first']:.4f} | {all_words(v)} | {v['backend']} |")
    return "\n".join(lines)


def typing_table(r: AutocompleteResult) -> str:
    """Issue 15's metrics: frequency-weighted keystroke savings and next-letter accuracy, both references."""
    t = r.typing
    if not t:
        return ""
    lines = [f"Typing the {t['typing_words']} held-out words (weights: how often each is used, wordfreq):", "",
             "| completer | bytes | KSR, 1 shown (weighted / each once) | KSR, 3 shown (weighted / each once) | "
             "next-letter top-1 (each once / weighted) | top-3 (each once / weighted) |", "|---|---|---|---|---|---|"]
    rows = [(f"LSTM float32 + lexicon ({t['variant']})", t["model"]),
            ("frequency-ranked lexicon completer", t["frequency_completer"]),
            (f"Witten-Bell {t['ngram']['order']}-gram + lexicon (best of 4-7)", t["ngram"])]
    for label, v in rows:
        letters = (f"{v['top1']:.3f} / {v['top1_weighted']:.3f} | {v['top3']:.3f} / {v['top3_weighted']:.3f}"
                   if "top1" in v else "- | -")
        lines.append(f"| {label} | {v['bytes']} | {v['ksr_weighted_1']:.4f} / {v['ksr_1']:.4f} | "
                     f"{v['ksr_weighted_3']:.4f} / {v['ksr_3']:.4f} | {letters} |")
    common = t["model"]["common_words"]
    lines += ["", f"Words of equal frequency in the frequency completer's order (tie_break {t['tie_break']!r}). "
              f"The {common['words']} most used words of 7+ letters, typed to {common['typed']} letters: "
              f"{common['found']} in the top {common['shown']}"
              + (f" (missed: {', '.join(common['misses'])})." if common["misses"] else ".")]
    return "\n".join(lines)


def latency_table(r: AutocompleteResult) -> str:
    lines = [f"per keystroke (feed + suggest(3)) on {r.latency.get('backend')}, bundle folder "
             f"{r.latency.get('bundle_bytes')} bytes:"]
    lines += [f"  {n:<9} {v['bytes']:>8} bytes  median {v['median_us']:.0f} us  p90 {v['p90_us']:.0f} us"
              for n, v in r.latency.get("variants", {}).items() if "median_us" in v]
    return "\n".join(lines)


def summary(r: AutocompleteResult) -> str:
    verdicts = [f"- {'PASS' if ok else 'FAIL'}: {rule}" for rule, ok in r.checks.items()]
    verdicts += [f"- target {'met' if ok else 'NOT met'} (issue 15, reported): {rule}"
                 for rule, ok in typing_targets(r).items()]
    return "\n".join(verdicts)


def plot(r: AutocompleteResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["n-gram"] + list(r.variants)
    series = {"top-1": [r.ngram["top1"]] + [v["top1"] for v in r.variants.values()],
              "top-3": [r.ngram["top3"]] + [v["top3"] for v in r.variants.values()],
              f"KSR (first {KSR_SUBSET} words)": [r.ngram["ksr_first"]] + [v["ksr_first"] for v in r.variants.values()]}
    fig, (ax, size_ax) = plt.subplots(1, 2, figsize=(11, 4), gridspec_kw={"width_ratios": [3, 2]})
    width = 0.8 / len(series)
    for j, (label, values) in enumerate(series.items()):
        ax.bar([i + j * width for i in range(len(names))], values, width, label=label)
    ax.set_xticks([i + width for i in range(len(names))], names, rotation=30, ha="right")
    ax.set_ylim(0, 1)
    ax.set_title("Held-out words: next letter and keystroke savings")
    ax.legend(fontsize=8)
    kb = [v["bytes"] / 1024 for v in r.variants.values()]
    size_ax.barh(list(r.variants), kb, color="tab:gray")
    size_ax.axvline(DEVICE_PROFILES["cortex-m4"]["flash_bytes"] / 1024, color="r", ls="--", label="Cortex-M4 flash")
    size_ax.set_xlabel("model file, KB")
    size_ax.set_title("Size per variant")
    size_ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_autocomplete_report(r: AutocompleteResult, preset: AutocompletePreset, report_dir: Path) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    plot(r, report_dir / "autocomplete.png")
    f32 = r.variants["float32"]
    state_bytes = 4 * preset.hidden * preset.layers * len(CELLS[preset.cell].state)
    text = [f"# Keystroke autocomplete ({r.name})", "",
            f"A {preset.layers}-layer {preset.cell.upper()} with {preset.hidden} units ({r.parameters} parameters), "
            f"trained {r.train_seconds:.0f} s on the lowercase words of Debian's wamerican list; "
            f"scored on the held-out 10% ({f32['words']} words, {f32['positions']} next-symbol predictions; "
            f"KSR on all of them for float32 and the n-gram, on the first {KSR_SUBSET} for every variant). "
            "Every variant runs step by step on the edge runtime. "
            "The first table is open-vocabulary and unweighted (the model alone, as before the lexicon); "
            "the next one is how typing feels: real words from the bundle's lexicon, weighted by use.", "",
            table(r), "", "Top-1 in parentheses: points against float32. KSR = 1 - keys / letters, where a user "
            "types letters until the top suggestion is the word and accepts it with Tab "
            f"(beam width {f32['beam_width']}).", "",
            "## Typing real words (issue 15)", "", typing_table(r) or "(the bundle has no lexicon)", "",
            "Bytes: model file + lexicon; the frequency completer is the lexicon alone; the n-gram's counts "
            "zip-compressed + lexicon. KSR here: the user types until the word is among the suggestions shown "
            "and picks it with one key.", "",
            "## Acceptance", "", summary(r), "",
            "## Size against the device profiles", "",
            f"State: {state_bytes} bytes of float32 ({state_bytes // 4} int8 in the firmware form). "
            "Model file per variant in the table; the interpreter's tensor arena is the firmware simulator's to "
            "measure.", ""]
    for profile, limits in DEVICE_PROFILES.items():
        fitting = [n for n, v in r.variants.items() if v["bytes"] <= limits["flash_bytes"]]
        text.append(f"- {profile}: {limits['flash_bytes'] // 1024} KB flash, {limits['ram_bytes'] // 1024} KB RAM; "
                    f"fits: {', '.join(fitting) or 'none'}")
    if r.latency:
        text += ["", f"## Per-keystroke latency (feed + suggest(3)), {r.latency['backend']}, one thread, this machine",
                 "", f"Bundle folder: {r.latency['bundle_bytes']} bytes (every variant, manifest, C array).", "",
                 "| variant | model bytes | median µs | p90 µs |", "|---|---|---|---|"]
        text += [f"| {n} | {v['bytes']} | {v['median_us']:.0f} | {v['p90_us']:.0f} |"
                 for n, v in r.latency["variants"].items() if "median_us" in v]
    text += ["", "![accuracy and size](autocomplete.png)", ""]
    path = report_dir / "autocomplete.md"
    path.write_text("\n".join(text))
    (report_dir / "autocomplete.json").write_text(json.dumps({**asdict(r), "preset": asdict(preset)}, indent=1))
    return path
