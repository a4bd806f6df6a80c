"""One simulated deployment: a bundle variant on a device profile at a sensor rate, with faults.

Puts the pieces together and returns a plain dict (the JSON report):
memory and flash against the budget, cycles per step and the schedule at
this rate, the firmware loop over the sensor stream with faults injected,
and a watchdog reset's cost. Timing figures are estimates from the profile.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_sim import firmware, sensor
from firmware_sim.device_model import DeviceModel
from firmware_sim.memory import memory_report
from firmware_sim.profiles import Profile
from firmware_sim.timing import carry_cycles, macs_per_step, op_cycles, schedule, step_cost


@dataclass
class SimConfig:
    rate_hz: float = 100.0
    seconds: float = 60.0
    faults: tuple[str, ...] = ()
    reset_at_s: float | None = None  # watchdog reset time; None = halfway through
    snapshot_every_s: float = 1.0
    adc_bits: int = 12
    adc_noise_lsb: float = 1.0
    csv: str | None = None  # a sensor log instead of the synthetic source
    seed: int = 0


def simulate(model: DeviceModel, profile: Profile, config: SimConfig, cache: dict | None = None) -> tuple[dict, dict]:
    """-> (JSON-able report, arrays for the timeline plot).

    `cache` (a dict the caller keeps) reuses the fault-free-of-resets firmware run across
    profiles of one sweep: only the reset run depends on the device (its boot time).
    """
    m = model.manifest
    if m.task != "forecast":
        raise ValueError(f"{m.path}: the sensor simulation needs a forecast bundle, this one is {m.task!r}; "
                         "`python -m firmware_sim bitexact` and the memory/time budget work on it")
    ticks = int(round(config.rate_hz * config.seconds))
    if ticks < 10:
        raise ValueError(f"{config.seconds} s at {config.rate_hz} Hz is {ticks} samples; need at least 10")
    memory = memory_report(model.graph, profile, model.state_inputs)
    cost = step_cost(model.graph, profile)
    sched = schedule(cost, config.rate_hz, ticks, seed=config.seed)
    if config.csv:
        true = sensor.csv_stream(config.csv, list(m.channels))
        true = np.resize(true, (ticks, true.shape[1])) if len(true) < ticks else true[:ticks]
    else:
        true = sensor.synthetic_stream(m.normalization["mean"], m.normalization["std"], ticks, seed=config.seed)
    adc = sensor.Adc.around(m.normalization["mean"], m.normalization["std"], bits=config.adc_bits,
                            noise_lsb=config.adc_noise_lsb)
    model.use_adc(adc)  # a core int8-io variant's outer step works in this ADC's counts
    faults = sensor.plan_faults(list(config.faults), ticks, m.normalization["std"], seed=config.seed,
                                warmup=firmware.COMMISSIONING + 50,
                                every=max(200, ticks // (4 * max(1, len(config.faults)) + 1)))
    trace = sensor.sense(true, adc, faults, seed=config.seed)
    snapshot_every = max(1, int(round(config.snapshot_every_s * config.rate_hz)))
    reset_at = int(round((config.reset_at_s if config.reset_at_s is not None else config.seconds / 2) * config.rate_hz))
    reset_at = min(max(reset_at, firmware.COMMISSIONING), ticks - 1)  # after commissioning
    boot_ticks = int(np.ceil(profile.boot_ms / 1000 * config.rate_hz))
    key = (str(m.path), model.variant.name, repr(config))
    if cache is not None and key in cache:
        plain = cache[key]
    else:
        plain = firmware.run_firmware(model, trace, adc, snapshot_every)
        if cache is not None:
            cache[key] = plain
    with_reset = firmware.run_firmware(model, trace, adc, snapshot_every, reset_at, boot_ticks)
    target = list(m.target)
    cost_of_reset = firmware.reset_cost(with_reset, plain)
    deviation = cost_of_reset.pop("deviation")
    found = firmware.detections(plain, trace)
    report = {
        "bundle": str(m.path), "model": m.name, "variant": model.variant.name, "ops": model.graph.op_names,
        "device": {"name": profile.name, "description": profile.description, "kind": profile.kind,
                   "clock_hz": profile.clock_hz, "ram_bytes": profile.ram_bytes, "flash_bytes": profile.flash_bytes,
                   "estimates": profile.sources},
        "memory": {k: v for k, v in memory.to_dict().items() if k not in ("largest_activations", "largest_constants")}
        | {"largest_activations": memory.largest_activations[:5], "largest_constants": memory.largest_constants[:5]},
        "timing": {"estimate": True, "macs_per_step": macs_per_step(model.graph), "cycles_per_step": cost.cycles,
                   "us_per_step": cost.seconds * 1e6, "jitter": cost.jitter,
                   "max_sustainable_rate_hz": cost.max_rate_hz, "rate_hz": config.rate_hz, "ticks": ticks,
                   "cpu_load": sched.load, "deadline_misses": sched.misses,
                   "worst_latency_us": sched.worst_latency_s * 1e6,
                   "cycles_by_op": _cycles_by_op(op_cycles(model.graph, profile)),
                   "state_carry_cycles": carry_cycles(model.graph, profile)},
        "sensor": {"source": config.csv or "synthetic", "adc_bits": adc.bits, "adc_noise_lsb": adc.noise_lsb,
                   "adc_low": adc.low.tolist(), "adc_high": adc.high.tolist()},
        "faults": {"injected": len(found), "flagged": sum(f["flagged"] for f in found), "detections": found,
                   "false_flags": firmware.false_flags(plain, trace),
                   "flag_counts": {k: len(v) for k, v in plain.flag_ticks.items()}},
        "prediction": firmware.forecast_error(plain, trace, target),
        "reset": cost_of_reset | {"snapshot_every_ticks": snapshot_every, "snapshots_written": plain.snapshots},
    }
    arrays = {"true": trace.true[:, target], "readings": trace.readings[:, target], "forecast": plain.forecasts,
              "forecast_reset": with_reset.forecasts, "scores": plain.scores, "flags": plain.flag_ticks,
              "durations": sched.durations_s, "period": 1.0 / config.rate_hz, "faults": trace.faults,
              "reset_at": reset_at, "boot_ticks": boot_ticks, "deviation": deviation,
              "missed": sched.missed_ticks}
    return report, arrays


def _cycles_by_op(costs: list[tuple[str, float]]) -> dict:
    totals: dict[str, float] = {}
    for name, cycles in costs:
        totals[name] = totals.get(name, 0.0) + cycles
    return dict(sorted(totals.items(), key=lambda kv: -kv[1]))
