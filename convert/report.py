"""python -m convert report BUNDLE: what each variant costs, measured, in one table.

Bytes (weights vs the fixed graph/metadata overhead), streaming error
against float32 and the baselines, drift, which runtimes open it, and
per-step latency under each runtime on this machine. Latency is measured in
a separate process per runtime (tflite-runtime cannot share a process with
TensorFlow), through `python -m edge_eval bench`.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from convert.compat import RUNTIMES


def measure_latency(bundle: Path, backend: str, steps: int) -> dict:
    cmd = [sys.executable, "-m", "edge_eval", "bench", str(bundle), "--backend", backend, "--steps", str(steps)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        return {}
    return json.loads(done.stdout.strip().splitlines()[-1])["variants"]


def rows_of(manifest: dict, latency: dict[str, dict]) -> list[dict]:
    float_bytes = manifest["variants"][0]["bytes"]
    base = manifest["baselines"]
    rows = []
    for v in manifest["variants"]:
        m = v["metrics"]
        rows.append({
            "variant": v["name"], "bytes": v["bytes"], "of_float32": v["bytes"] / float_bytes,
            "weights": v["constant_bytes"], "overhead": v["bytes"] - v["constant_bytes"],
            "test_mse": m["test_mse"], "mse_ratio": m["mse_ratio"],
            "vs_persistence": m["test_mse"] / base["persistence_mse"], "vs_ar": m["test_mse"] / base["ar_mse"],
            "max_err": m["max_abs_error_vs_float"], "drift": m["drift"]["ratio"], "deployable": m["deployable"],
            "opens_in": [r for r, why in v["compatibility"].items() if why is None],
            "us": {r: latency.get(r, {}).get(v["name"], {}).get("median_us") for r in RUNTIMES},
        })
    return rows


def verdict(rows: list[dict], mse_budget: float = 1.10) -> list[str]:
    """Plain sentences: does int8 help this model on this machine?"""
    by = {r["variant"]: r for r in rows}
    f32, lines = by["float32"], []
    for name in ("int8", "int16x8"):
        r = by.get(name)
        if r is None:
            continue
        speed = [f"{r['us'][rt] / f32['us'][rt]:.1f}x float32's time under {RUNTIMES[rt]}"
                 for rt in RUNTIMES if r["us"].get(rt) and f32["us"].get(rt)]
        accuracy = "keeps" if r["mse_ratio"] <= mse_budget else "does not keep"
        lines.append(f"- **{name}**: {r['of_float32']:.0%} of float32's bytes; runs at {', '.join(speed) or 'n/a'}; "
                     f"{accuracy} float32's accuracy (test MSE x{r['mse_ratio']:.2f}).")
    fits = [r for r in rows if r["mse_ratio"] <= mse_budget and r["deployable"] and r["opens_in"]]
    best = min(fits, key=lambda r: r["bytes"])
    faster = [r["variant"] for r in rows if r["variant"] in ("int8", "int16x8", "int8-io")
              and all(r["us"].get(rt) and f32["us"].get(rt) and r["us"][rt] < f32["us"][rt] for rt in RUNTIMES)]
    lines.append(f"- Integer activations {'speed this model up' if faster else 'do not speed this model up'} "
                 f"on this machine{' (' + ', '.join(faster) + ')' if faster else ''}; "
                 f"the smallest variant within x{mse_budget:.2f} of float32's MSE is **{best['variant']}** "
                 f"({best['bytes']} bytes, {best['of_float32']:.0%}).")
    return lines


def markdown(manifest: dict, rows: list[dict]) -> str:
    head = ("| variant | bytes | of float32 | weights | graph+meta | test MSE | x float32 | x persistence | x AR "
            "| max err | drift | deployable | opens in | " + " | ".join(f"us/step {r}" for r in RUNTIMES) + " |")
    lines = [f"# {manifest['name']}: variants", "",
             f"{manifest['cell']} x{manifest['layers']}, hidden {manifest['hidden']}. MSE: next-sample forecast on "
             "the test split, normalized units, run step by step on the runtime. max err: largest deviation "
             "from the float32 torch model. drift: RMS deviation over the last 10% of a stream of up to "
             "20,000 steps, of a session that ran all of it / of one started fresh 256 steps before. us/step: median through Session.step, one thread.", "", head,
             "|" + "---|" * (13 + len(RUNTIMES))]
    for r in rows:
        us = " | ".join("-" if r["us"][rt] is None else f"{r['us'][rt]:.1f}" for rt in RUNTIMES)
        lines.append(f"| {r['variant']} | {r['bytes']} | {r['of_float32']:.0%} | {r['weights']} | {r['overhead']} | "
                     f"{r['test_mse']:.5f} | {r['mse_ratio']:.3f} | {r['vs_persistence']:.3f} | {r['vs_ar']:.3f} | "
                     f"{r['max_err']:.4f} | {r['drift']:.2f} | {'yes' if r['deployable'] else 'NO'} | "
                     f"{', '.join(r['opens_in']) or 'none'} | {us} |")
    return "\n".join(lines + ["", "## Does int8 help here?", ""] + verdict(rows) + [""])


def plot(manifest: dict, rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["variant"] for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    axes[0].bar(names, [r["weights"] for r in rows], label="weights")
    axes[0].bar(names, [r["overhead"] for r in rows], bottom=[r["weights"] for r in rows], label="graph + metadata")
    axes[0].set_ylabel("bytes")
    axes[0].legend(fontsize=8)
    axes[1].bar(names, [r["mse_ratio"] for r in rows], color="tab:orange")
    axes[1].axhline(1.0, color="k", lw=1, ls="--")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("test MSE / float32's (log)")
    width = 0.8 / len(RUNTIMES)
    for j, rt in enumerate(RUNTIMES):
        axes[2].bar([i + j * width for i in range(len(rows))], [r["us"][rt] or 0 for r in rows], width, label=rt)
    axes[2].set_xticks([i + width / 2 for i in range(len(rows))], names)
    axes[2].set_ylabel("us per step")
    axes[2].legend(fontsize=8)
    for ax in axes:
        ax.tick_params(axis="x", rotation=45, labelsize=8)
    fig.suptitle(f"{manifest['name']}: size, accuracy and speed per variant")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(bundle: Path, out_dir: Path, steps: int = 2000) -> Path:
    bundle = Path(bundle)
    manifest = json.loads((bundle / "manifest.json").read_text())
    latency = {rt: measure_latency(bundle, rt, steps) for rt in RUNTIMES}
    rows = rows_of(manifest, latency)
    out_dir.mkdir(parents=True, exist_ok=True)
    text = markdown(manifest, rows)
    plot(manifest, rows, out_dir / f"{manifest['name']}-variants.png")
    path = out_dir / f"{manifest['name']}-variants.md"
    path.write_text(text + f"\n![variants]({manifest['name']}-variants.png)\n")
    print(text)
    return path
