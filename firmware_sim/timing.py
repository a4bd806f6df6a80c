"""Will it keep up: cycles per step from the op list and a profile, and a tick scheduler.

Each op costs the profile's per-op overhead plus its work: MACs for
FULLY_CONNECTED and BATCH_MATMUL (attention over a KV cache), elements for elementwise ops and QUANTIZE/DEQUANTIZE, table
lookups for LOGISTIC/TANH, bytes for copies. The firmware's loop adds a
per-invoke and a per-sample cost, and, for each state whose output tensor is
quantized differently from its input (firmware_sim/executor.py StateCarry),
one requantize per element at the elementwise rate (the profile's
per-sample figure already covers a state copy-back). All of it is an estimate from the
profile's cited figures, and reports say so.

The scheduler runs one job per sensor tick: the sample arrives at t = k/rate
and must be processed before the next one arrives (a one-sample buffer). A
job that starts late (the previous one overran) or runs past the next
arrival is a deadline miss; the sample it overran is processed late, not
lost, so a backlog shows up as a run of misses.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from firmware_sim.executor import state_carries
from firmware_sim.graph import Graph
from firmware_sim.profiles import Profile

ELEMENTWISE = {"ADD", "SUB", "MUL", "QUANTIZE", "DEQUANTIZE"}
LOOKUP = {"LOGISTIC", "TANH", "SOFTMAX"}
COPIES = {"SPLIT", "SPLIT_V", "CONCATENATION", "GATHER", "RESHAPE", "SQUEEZE", "EXPAND_DIMS"}
REDUCTIONS = {"MEAN", "SUM"}  # work is the elements read, not the few written


def _macs(graph: Graph, op) -> int:
    """Multiply-accumulates of a FULLY_CONNECTED (weights x rows) or a BATCH_MATMUL (outputs x inner size); 0 else."""
    out = graph.tensors[op.outputs[0]]
    elements = int(np.prod(out.shape, dtype=np.int64))
    if op.op == "FULLY_CONNECTED":
        weights = graph.tensors[op.inputs[1]]
        return int(np.prod(weights.shape, dtype=np.int64)) * max(1, elements // weights.shape[0])
    if op.op == "BATCH_MATMUL":
        left = graph.tensors[op.inputs[0]].shape
        return elements * int(left[-2] if op.options.get("AdjX") else left[-1])
    return 0


def op_cycles(graph: Graph, profile: Profile) -> list[tuple[str, float]]:
    """[(op name, cycles)] for one invoke, in execution order."""
    c = profile.cycles
    costs = []
    for op in graph.operators:
        out = graph.tensors[op.outputs[0]]
        elements = int(np.prod(out.shape, dtype=np.int64))
        work = 0.0
        if op.op in ("FULLY_CONNECTED", "BATCH_MATMUL"):
            wide = np.dtype(graph.tensors[op.inputs[0]].dtype) in (np.dtype(np.int16), np.dtype(np.float32))
            work = _macs(graph, op) * (c["per_mac_int16"] if wide else c["per_mac"])
        elif op.op in ELEMENTWISE:
            work = elements * c["per_element"]
        elif op.op in LOOKUP:
            work = elements * c["per_lut_element"]
        elif op.op in COPIES:
            work = sum(graph.tensors[o].bytes for o in op.outputs) * c["per_copy_byte"]
        elif op.op in REDUCTIONS:
            work = int(np.prod(graph.tensors[op.inputs[0]].shape, dtype=np.int64)) * c["per_element"]
        else:
            work = elements * c["per_element"]
        costs.append((op.op, c["per_op"] + work))
    return costs


def carry_cycles(graph: Graph, profile: Profile) -> float:
    """Requantizing the states whose output and input quantization differ: one per element, like QUANTIZE's."""
    elements = sum(int(np.prod(c.target.shape, dtype=np.int64)) for c in state_carries(graph).values()
                   if c.requantize)
    return elements * profile.cycles["per_element"]


def macs_per_step(graph: Graph) -> int:
    """The weights of every FULLY_CONNECTED (one row in a step model) and the attention's BATCH_MATMULs."""
    total = 0
    for op in graph.operators:
        if op.op == "FULLY_CONNECTED":
            total += int(np.prod(graph.tensors[op.inputs[1]].shape, dtype=np.int64))
        elif op.op == "BATCH_MATMUL":
            total += _macs(graph, op)
    return total


@dataclass
class StepCost:
    cycles: float  # nominal cycles per sample (model + firmware loop)
    jitter: float  # +- fraction
    clock_hz: int

    @property
    def seconds(self) -> float:
        return self.cycles / self.clock_hz

    @property
    def worst_seconds(self) -> float:
        return self.seconds * (1 + self.jitter)

    @property
    def max_rate_hz(self) -> float:
        """The highest sample rate at which even the slowest (worst-jitter) step fits its period."""
        return 1.0 / self.worst_seconds


def step_cost(graph: Graph, profile: Profile) -> StepCost:
    model = sum(cycles for _, cycles in op_cycles(graph, profile))
    total = model + carry_cycles(graph, profile) + profile.cycles["per_invoke"] + profile.cycles["per_sample"]
    return StepCost(total, profile.cycles["jitter"], profile.clock_hz)


@dataclass
class Schedule:
    rate_hz: float
    ticks: int
    misses: int
    missed_ticks: np.ndarray  # (misses,) tick indices
    load: float  # busy time / elapsed time
    worst_latency_s: float  # arrival to completion
    durations_s: np.ndarray  # (ticks,)


def schedule(cost: StepCost, rate_hz: float, ticks: int, seed: int = 0,
             extra_s: dict[int, float] | None = None) -> Schedule:
    """Simulate `ticks` sensor periods; extra_s adds time to given ticks (a reboot, a snapshot)."""
    rng = np.random.default_rng(seed)
    period = 1.0 / rate_hz
    durations = cost.seconds * (1 + rng.uniform(-cost.jitter, cost.jitter, ticks))  # (ticks,)
    for tick, seconds in (extra_s or {}).items():
        if 0 <= tick < ticks:
            durations[tick] += seconds
    free_at, missed, worst = 0.0, [], 0.0
    for k in range(ticks):
        arrival = k * period
        start = max(arrival, free_at)
        free_at = start + durations[k]
        latency = free_at - arrival
        worst = max(worst, latency)
        if latency > period:
            missed.append(k)
    elapsed = max(ticks * period, free_at)
    return Schedule(rate_hz, ticks, len(missed), np.asarray(missed, np.int64), float(durations.sum() / elapsed),
                    worst, durations)
