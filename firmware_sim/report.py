"""The report a firmware engineer reads: text on stdout, JSON and a PNG timeline in reports/."""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

ESTIMATE_NOTE = ("timing figures are ESTIMATES from the profile's cited cycle costs "
                 "(firmware_sim/profiles/*.toml), not measurements on the device")


def _kb(n: int) -> str:
    return f"{n / 1024:,.1f} KB"


def text(report: dict) -> str:
    mem, t, f, p, r = report["memory"], report["timing"], report["faults"], report["prediction"], report["reset"]
    dev = report["device"]
    lines = [f"firmware_sim: {report['model']} [{report['variant']}] on {dev['name']} ({dev['description']})",
             f"  ops: {', '.join(report['ops'])}",
             f"  fits: {'YES' if mem['fits'] else 'NO'}",
             f"  RAM  : {_kb(mem['ram_used'])} of {_kb(mem['ram_bytes'])} ({100 * mem['ram_used'] / mem['ram_bytes']:.2f}%)"
             f"  = arena {mem['arena_bytes']:,} B (naive {mem['naive_arena_bytes']:,} B) + kernel data "
             f"{mem['kernel_persistent_bytes']:,} B + state {mem['state_bytes']:,} B + firmware {mem['firmware_ram_bytes']:,} B",
             f"  flash: {_kb(mem['flash_used'])} of {_kb(mem['flash_bytes'])} ({100 * mem['flash_used'] / mem['flash_bytes']:.2f}%)"
             f"  = model {mem['model_bytes']:,} B + runtime {mem['runtime_flash_bytes']:,} B (stated) + snapshots "
             f"{mem['snapshot_flash_bytes']:,} B"]
    lines += [f"  !! {problem}" for problem in mem["problems"]]
    lines += [f"  time (estimate): {t['macs_per_step']:,} MACs, {t['cycles_per_step']:,.0f} cycles = "
              f"{t['us_per_step']:,.1f} us per step (+-{100 * t['jitter']:.0f}% jitter); max sustainable "
              f"{t['max_sustainable_rate_hz']:,.0f} Hz",
              f"  at {t['rate_hz']:g} Hz for {t['ticks']:,} ticks: CPU load {100 * t['cpu_load']:.2f}%, deadline misses "
              f"{t['deadline_misses']:,}, worst latency {t['worst_latency_us']:,.1f} us",
              f"  prediction: MSE {p['mse']:.4g} vs persistence {p['persistence_mse']:.4g} over {p['ticks_scored']:,} "
              f"fault-free ticks" if p["mse"] is not None else "  prediction: no fault-free ticks to score",
              f"  faults: {f['injected']} injected, {f['flagged']} flagged, {f['false_flags']} flags outside fault windows"]
    for d in f["detections"]:
        outcome = f"flagged as {d['flag']} after {d['delay_ticks']} ticks" if d["flagged"] else "NOT flagged"
        lines.append(f"    {d['kind']:<10} tick {d['start']:>6} ch {d['channel']} len {d['length']:>3}: {outcome}")
    stale = r["stale_ticks"]
    lines += [f"  watchdog reset at tick {r['reset_at']}: {r['boot_ticks']} ticks lost booting, state restored from the "
              f"snapshot of tick {r['restored_snapshot_tick']} ({stale} ticks stale); forecast deviation from an "
              f"uninterrupted run: max {r['max_abs_deviation']:.4g}, mean over the first 100 ticks "
              f"{r['mean_abs_deviation_first_100']:.4g}, identical again after {r['ticks_until_identical']} ticks",
              f"  note: {ESTIMATE_NOTE}"]
    return "\n".join(lines)


def write_json(report: dict, path: Path) -> None:
    """Atomic: a temp file in the same folder, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        json.dump(report, f, indent=1, default=_jsonable)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value)}")


FAULT_COLOURS = {"spike": "tab:red", "stuck": "tab:purple", "dropout": "tab:gray", "drift": "tab:orange",
                 "saturation": "tab:brown"}


def write_timeline(report: dict, arrays: dict, path: Path) -> None:
    """Signal and forecast, residual score and flags, per-tick CPU time vs the period, reset deviation."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate = report["timing"]["rate_hz"]
    ticks = np.arange(len(arrays["true"]))
    seconds = ticks / rate
    fig, axes = plt.subplots(4, 1, figsize=(12, 10), sharex=True)
    ax = axes[0]
    ax.plot(seconds, arrays["readings"][:, 0], lw=0.6, color="0.6", label="ADC reading")
    ax.plot(seconds[1:], arrays["forecast"][:-1, 0], lw=0.8, color="tab:blue", label="forecast (integer kernels)")
    for fault in arrays["faults"]:
        ax.axvspan(fault.start / rate, (fault.end + 1) / rate, color=FAULT_COLOURS[fault.kind], alpha=0.25)
    ax.set_ylabel("sensor units")
    ax.set_title(f"{report['model']} [{report['variant']}] on {report['device']['name']} at {rate:g} Hz "
                 f"(shaded: injected faults)")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[1]
    ax.plot(seconds, arrays["scores"], lw=0.6, color="tab:green", label="residual |z|")
    for name, flagged in arrays["flags"].items():
        ax.scatter(np.asarray(flagged) / rate, np.full(len(flagged), np.nanmax(arrays["scores"]) if
                   np.isfinite(arrays["scores"]).any() else 1.0), s=10, label=f"flag: {name}")
    ax.set_yscale("symlog")
    ax.set_ylabel("|z|")
    ax.legend(loc="upper right", fontsize=8, ncol=3)
    ax = axes[2]
    ax.plot(seconds, arrays["durations"] * 1e6, lw=0.6, label="CPU time per tick (estimate)")
    ax.axhline(arrays["period"] * 1e6, color="tab:red", ls="--", label="period (deadline)")
    if len(arrays["missed"]):
        ax.scatter(arrays["missed"] / rate, np.full(len(arrays["missed"]), arrays["period"] * 1e6), color="tab:red",
                   s=8, label="deadline miss")
    ax.set_ylabel("us")
    ax.set_yscale("log")
    ax.legend(loc="upper right", fontsize=8)
    ax = axes[3]
    start = arrays["reset_at"] + arrays["boot_ticks"]
    ax.plot((start + np.arange(len(arrays["deviation"]))) / rate, arrays["deviation"], color="tab:purple")
    ax.axvline(arrays["reset_at"] / rate, color="k", ls=":", label="watchdog reset")
    ax.set_ylabel("|forecast - uninterrupted|")
    ax.set_xlabel("seconds")
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=90)
    plt.close(fig)
    os.replace(tmp, path)
