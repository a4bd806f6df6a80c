"""Will it fit: the arena a TFLite Micro build would plan, persistent state, flash.

The arena holds every non-constant tensor for the span of ops that uses it.
Lifetimes come from the operator list (a graph input lives from before the
first op, a graph output until after the last); buffers are placed largest
first at the lowest 16-byte-aligned offset that overlaps no buffer alive at
the same time, as TFLM's GreedyMemoryPlanner does. The recurrent state must
survive between invokes, but the planner reuses an input tensor's bytes once
its last reader ran, so the firmware keeps the state in persistent buffers
of its own and copies it in and out: those are counted apart.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from firmware_sim.graph import Graph
from firmware_sim.profiles import Profile

ALIGNMENT = 16  # TFLM aligns arena buffers to 16 bytes
# Estimates of TFLM's own bookkeeping in the arena's persistent tail (assumptions, stated in reports):
BYTES_PER_EVAL_TENSOR = 16  # TfLiteEvalTensor + pointer table entry
BYTES_PER_NODE = 64  # TfLiteNode + registration pointer + typical OpData
BYTES_PER_CHANNEL = 8  # per-channel multiplier and shift (FULLY_CONNECTED with per-channel weights)
BYTES_PER_LUT = 256  # an int8 LOGISTIC/TANH table
FLASH_PAGE_BYTES = 2048  # snapshot region granularity (an STM32-class flash page; assumption)


def _aligned(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


@dataclass
class Buffer:
    tensor: int
    name: str
    size: int  # aligned bytes
    first: int  # op index that writes it (-1: a graph input, written before op 0)
    last: int  # last op index that reads it (len(ops): a graph output, read after the last op)
    offset: int = -1


def lifetimes(graph: Graph) -> list[Buffer]:
    n_ops = len(graph.operators)
    first, last = {}, {}
    for i in graph.inputs:
        first[i], last[i] = -1, -1
    for op in graph.operators:
        for t in op.inputs:
            if t >= 0 and not graph.tensors[t].is_constant:
                first.setdefault(t, op.index)
                last[t] = max(last.get(t, -1), op.index)
        for t in op.outputs:
            first.setdefault(t, op.index)
            last[t] = max(last.get(t, op.index), op.index)
    for o in graph.outputs:
        last[o] = n_ops
    return [Buffer(t, graph.tensors[t].name, _aligned(graph.tensors[t].bytes), first[t], last[t]) for t in first]


def greedy_plan(buffers: list[Buffer]) -> int:
    """Place buffers largest first at the lowest offset free during their lifetime; returns the arena size."""
    placed: list[Buffer] = []
    for b in sorted(buffers, key=lambda b: (-b.size, b.first)):
        overlapping = sorted((p for p in placed if p.first <= b.last and b.first <= p.last), key=lambda p: p.offset)
        offset = 0
        for p in overlapping:
            if offset + b.size <= p.offset:
                break
            offset = max(offset, p.offset + p.size)
        b.offset = offset
        placed.append(b)
    return max((b.offset + b.size for b in placed), default=0)


def kernel_persistent_bytes(graph: Graph) -> int:
    """TFLM's per-tensor and per-node bookkeeping plus per-op constants (estimate)."""
    total = BYTES_PER_EVAL_TENSOR * len(graph.tensors) + BYTES_PER_NODE * len(graph.operators)
    for op in graph.operators:
        if op.op == "FULLY_CONNECTED" and graph.tensors[op.inputs[1]].per_channel:
            total += BYTES_PER_CHANNEL * graph.tensors[op.inputs[1]].shape[0]
        if op.op in ("LOGISTIC", "TANH") and np.dtype(graph.tensors[op.inputs[0]].dtype) == np.int8:
            total += BYTES_PER_LUT
    return total


@dataclass
class MemoryReport:
    device: str
    arena_bytes: int  # planned activation arena
    naive_arena_bytes: int  # every activation in its own buffer, for comparison
    kernel_persistent_bytes: int
    state_bytes: int  # persistent copies of the recurrent state
    firmware_ram_bytes: int
    ram_bytes: int  # the device's
    model_bytes: int
    runtime_flash_bytes: int
    snapshot_flash_bytes: int
    flash_bytes: int  # the device's
    largest_activations: list = field(default_factory=list)  # [(name, bytes)]
    largest_constants: list = field(default_factory=list)

    @property
    def ram_used(self) -> int:
        return self.arena_bytes + self.kernel_persistent_bytes + self.state_bytes + self.firmware_ram_bytes

    @property
    def flash_used(self) -> int:
        return self.model_bytes + self.runtime_flash_bytes + self.snapshot_flash_bytes

    @property
    def fits(self) -> bool:
        return self.ram_used <= self.ram_bytes and self.flash_used <= self.flash_bytes

    def problems(self) -> list[str]:
        found = []
        if self.ram_used > self.ram_bytes:
            top = ", ".join(f"{n} ({b:,} B)" for n, b in self.largest_activations[:3])
            found.append(f"RAM: needs {self.ram_used:,} bytes of {self.ram_bytes:,}, over by "
                         f"{self.ram_used - self.ram_bytes:,} bytes (arena {self.arena_bytes:,}, state "
                         f"{self.state_bytes:,}, firmware {self.firmware_ram_bytes:,}); largest activations: {top}")
        if self.flash_used > self.flash_bytes:
            top = ", ".join(f"{n} ({b:,} B)" for n, b in self.largest_constants[:3])
            found.append(f"flash: needs {self.flash_used:,} bytes of {self.flash_bytes:,}, over by "
                         f"{self.flash_used - self.flash_bytes:,} bytes (model {self.model_bytes:,}, runtime "
                         f"{self.runtime_flash_bytes:,}); largest constants: {top}")
        return found

    def to_dict(self) -> dict:
        return {**{k: v for k, v in self.__dict__.items()}, "largest_activations": self.largest_activations[:10],
                "largest_constants": self.largest_constants[:10], "ram_used": self.ram_used,
                "flash_used": self.flash_used, "fits": self.fits, "problems": self.problems()}


class DoesNotFit(RuntimeError):
    """Raised by `check_fits`: the message says by how much and which tensors dominate."""


def memory_report(graph: Graph, profile: Profile, state_inputs: list[int], held_bytes: int = 0) -> MemoryReport:
    """held_bytes: state the firmware keeps outside the graph (a Transformer core's ring ages)."""
    buffers = lifetimes(graph)
    arena = greedy_plan(buffers)
    naive = sum(b.size for b in buffers)
    state_bytes = sum(_aligned(graph.tensors[i].bytes) for i in state_inputs) + _aligned(held_bytes)
    activations = sorted(((b.name, graph.tensors[b.tensor].bytes) for b in buffers), key=lambda x: -x[1])
    constants = sorted(((t.name, t.bytes) for t in graph.tensors if t.is_constant), key=lambda x: -x[1])
    snapshot = 2 * max(FLASH_PAGE_BYTES, -(-state_bytes // FLASH_PAGE_BYTES) * FLASH_PAGE_BYTES)  # A/B pages
    return MemoryReport(profile.name, arena, naive, kernel_persistent_bytes(graph), state_bytes,
                        profile.firmware_ram_bytes, profile.ram_bytes, graph.model_bytes,
                        profile.runtime_flash_bytes, snapshot, profile.flash_bytes, activations, constants)


def check_fits(report: MemoryReport) -> None:
    if not report.fits:
        raise DoesNotFit(f"does not fit {report.device}: " + "; ".join(report.problems()))
