"""The whole pipeline on built-in data: train -> convert -> run on the edge runtime -> table.

Each model is trained (train/), converted to a bundle (convert/), then
scored by `python -m edge_eval eval` in a separate process, as a device
would run it: raw samples in, state never reset, the default interpreter
(tflite-runtime when installed) and no torch or TensorFlow in that process.

Acceptance rules, per scenario (see train/scenarios.py for why each is or
is not linear):
  every scenario:          edge MSE < persistence MSE
  nonlinear scenarios:     edge MSE <= AR MSE
  the linear control:      |edge MSE / AR MSE - 1| <= 5%
and for the flagship (the temperature LSTM at hidden 128), quantized:
  int8 or int16x8:         file <= 35% of float32's, test MSE <= 1.10x float32's,
                           still below persistence, and at most AR's where float32 is
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

LINEAR_TOLERANCE = 0.05
QUANTIZED_BYTES_LIMIT = 0.35
QUANTIZED_MSE_LIMIT = 1.10


@dataclass
class Preset:
    samples: dict[str, int]
    cells: tuple[str, ...] = ("rnn", "gru", "lstm")
    hidden: int = 32
    layers: int = 1
    epochs: int = 200
    seed: int = 0
    flagship: tuple[str, str, int] = ("temperature", "lstm", 128)  # scenario, cell, hidden

    @property
    def scenarios(self) -> tuple[str, ...]:
        return tuple(self.samples)

    def jobs(self) -> list[tuple[str, str, int, str]]:
        """(scenario, cell, hidden, run name) for every model the demo trains."""
        jobs = [(s, c, self.hidden, f"{s}-{c}") for s in self.scenarios for c in self.cells]
        scenario, cell, hidden = self.flagship
        return jobs + [(scenario, cell, hidden, f"{scenario}-{cell}{hidden}")]


PRESETS = {
    # what `make demo` runs: about 3-5 minutes on 2 cores
    "full": Preset(samples={"temperature": 30000, "vibration": 30000, "random_walk": 20000,
                            "number_sequence": 16000}),
    # what the test suite runs: the same rules on half-length streams
    "small": Preset(samples={"temperature": 15000, "vibration": 15000, "random_walk": 10000,
                             "number_sequence": 8000}),
}


@dataclass
class Row:
    name: str
    scenario: str
    cell: str
    hidden: int
    nonlinear: str | None
    parameters: int
    bundle_bytes: int
    edge_mse: float
    torch_mse: float
    persistence_mse: float
    ar_mse: float
    ar_order: int
    parity_max_abs_error: float
    backend: str
    variants: dict[str, dict] = field(default_factory=dict)  # name -> bytes, of_float32, mse_ratio, ...
    flagship: bool = False
    checks: dict[str, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(self.checks.values())


def acceptance(row: Row) -> dict[str, bool]:
    checks = {"below persistence": row.edge_mse < row.persistence_mse}
    if row.nonlinear:
        checks["at most AR"] = row.edge_mse <= row.ar_mse
    else:
        checks[f"within {LINEAR_TOLERANCE:.0%} of AR"] = abs(row.edge_mse / row.ar_mse - 1) <= LINEAR_TOLERANCE
    if row.flagship:
        checks["int8 or int16x8 small and accurate"] = any(quantized_ok(row, v) for v in ("int8", "int16x8"))
    return checks


def quantized_ok(row: Row, variant: str) -> bool:
    v = row.variants.get(variant)
    if v is None:
        return False
    mse = v["mse_ratio"] * row.torch_mse
    return (v["of_float32"] <= QUANTIZED_BYTES_LIMIT and v["mse_ratio"] <= QUANTIZED_MSE_LIMIT
            and mse < row.persistence_mse and (mse <= row.ar_mse or row.torch_mse > row.ar_mse))


def variant_summary(manifest: dict) -> dict[str, dict]:
    float_bytes = manifest["variants"][0]["bytes"]
    return {v["name"]: {"bytes": v["bytes"], "of_float32": v["bytes"] / float_bytes,
                        "mse_ratio": v["metrics"]["mse_ratio"], "deployable": v["metrics"]["deployable"],
                        "opens_in": [r for r, why in v["compatibility"].items() if why is None]}
            for v in manifest["variants"]}


def edge_eval(bundle: Path, test_csv: Path, warmup: int) -> dict:
    """Score a bundle in a fresh process that has only the edge runtime loaded."""
    cmd = [sys.executable, "-m", "edge_eval", "eval", str(bundle), "--input", str(test_csv),
           "--warmup", str(warmup)]
    done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_demo(preset: Preset, runs_dir: Path, artifacts_dir: Path, progress: bool = True) -> list[Row]:
    from convert.run import convert_run
    from train.models import ModelConfig
    from train.run import train_run
    from train.scenarios import make_stream
    from train.trainer import TrainConfig

    jobs = preset.jobs()
    rows = []
    for scenario, cell, hidden, name in tqdm(jobs, desc="demo", disable=not progress, dynamic_ncols=True):
        stream = make_stream(scenario, preset.samples[scenario], preset.seed)
        features = ("level", "delta") if stream.stationary else ("delta",)
        model_config = ModelConfig(cell=cell, hidden=hidden, layers=preset.layers,
                                   input_size=stream.values.shape[1], target=stream.target, features=features)
        train_config = TrainConfig(epochs=preset.epochs, seed=preset.seed)
        metrics = train_run(stream, model_config, train_config, runs_dir / name, progress=progress)
        manifest = convert_run(runs_dir / name, artifacts_dir / name)
        variant = manifest["variants"][0]
        edge = edge_eval(artifacts_dir / name, runs_dir / name / "test.csv", train_config.warmup)
        row = Row(name, scenario, cell, hidden, stream.nonlinear, metrics["parameters"], variant["bytes"],
                  edge["mse"], metrics["test_mse"], metrics["persistence_mse"], metrics["ar_mse"],
                  metrics["ar_order"], variant["parity"]["max_abs_error"], edge["backend"],
                  variant_summary(manifest), flagship=name == jobs[-1][3])
        row.checks = acceptance(row)
        rows.append(row)
    return rows


def table(rows: list[Row]) -> str:
    head = ("| scenario | cell | hidden | params | bytes | edge MSE | torch MSE | persistence | AR (k) | "
            "edge/AR | parity err | checks |")
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        verdict = "PASS" if r.passed else "FAIL: " + ", ".join(k for k, ok in r.checks.items() if not ok)
        lines.append(f"| {r.scenario} | {r.cell} | {r.hidden} | {r.parameters} | {r.bundle_bytes} | {r.edge_mse:.5f} | "
                     f"{r.torch_mse:.5f} | {r.persistence_mse:.5f} | {r.ar_mse:.5f} ({r.ar_order}) | "
                     f"{r.edge_mse / r.ar_mse:.3f} | {r.parity_max_abs_error:.1e} | {verdict} |")
    return "\n".join(lines)


def quantization_table(rows: list[Row]) -> str:
    """Per bundle and variant: bytes as a share of float32, and test MSE as a multiple of float32's."""
    names = list(rows[0].variants)
    lines = ["| model | " + " | ".join(names) + " | smallest within x1.10 |", "|" + "---|" * (len(names) + 2)]
    for r in rows:
        cells = [f"{v['of_float32']:.0%}, x{v['mse_ratio']:.2f}" + ("" if v["deployable"] else " (not deployable)")
                 for v in r.variants.values()]
        fits = [(v["bytes"], n) for n, v in r.variants.items()
                if v["mse_ratio"] <= QUANTIZED_MSE_LIMIT and v["deployable"] and v["opens_in"]]
        lines.append(f"| {r.name} | " + " | ".join(cells) + f" | {min(fits)[1] if fits else '-'} |")
    return "\n".join(lines)


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scenarios = list(dict.fromkeys(r.scenario for r in rows))
    cells = list(dict.fromkeys(r.cell for r in rows))
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / (len(cells) + 1)
    for j, name in enumerate(["persistence"] + cells):
        heights = [next((r.persistence_mse if name == "persistence" else r.edge_mse) / r.ar_mse
                        for r in rows if r.scenario == s and (name == "persistence" or r.cell == name))
                   for s in scenarios]
        ax.bar([i + j * width for i in range(len(scenarios))], heights, width, label=name)
    ax.axhline(1.0, color="k", lw=1, ls="--", label="AR baseline")
    ax.set_yscale("log")
    ax.set_xticks([i + width * len(cells) / 2 for i in range(len(scenarios))], scenarios)
    ax.set_ylabel("test MSE / AR's MSE (log)")
    ax.set_title("Next-sample forecast error on the edge runtime, relative to AR(k)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(rows: list[Row], report_dir: Path, preset_name: str) -> Path:
    report_dir.mkdir(parents=True, exist_ok=True)
    plot(rows, report_dir / "demo_mse.png")
    nonlinear = {r.scenario: r.nonlinear or "none: linear-Gaussian control" for r in rows}
    text = [f"# edge-rnn demo ({preset_name} preset)", "",
            "MSE of the next-sample forecast on the test split, normalized units, run step by step "
            "through the edge runtime with state never reset.", "", table(rows), "",
            "## Quantized variants", "",
            "Each cell: file size as a share of float32's, and test MSE (run step by step on the runtime) as a "
            "multiple of float32's. `python -m convert report artifacts/<name>` gives the full table with "
            "latency per runtime.", "", quantization_table(rows), "",
            "## What makes each scenario nonlinear", ""]
    text += [f"- **{s}**: {why}" for s, why in nonlinear.items()]
    text += ["", "![MSE relative to AR](demo_mse.png)", ""]
    path = report_dir / "demo.md"
    path.write_text("\n".join(text))
    (report_dir / "demo.json").write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    return path
