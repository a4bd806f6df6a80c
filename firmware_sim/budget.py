"""What one variant costs on one device profile, from its flatbuffer alone (no kernels run)."""
from __future__ import annotations

import numpy as np


def variant_graph(bundle: str, variant: str):
    """(manifest, graph, state tensor indices) of one variant, its bytes checked against the manifest."""
    from edge_runtime.manifest import read_manifest, verified_model_bytes
    from firmware_sim.graph import read_graph

    manifest = read_manifest(bundle)
    graph = read_graph(verified_model_bytes(manifest, manifest.variant(variant)))
    state = [graph.signature_inputs[n] for n in sorted(set(graph.signature_inputs) & set(graph.signature_outputs))]
    return manifest, graph, state


def float_op(graph) -> str | None:
    """The first op that computes in float (QUANTIZE/DEQUANTIZE at the edges aside), described; None when the
    graph is integer-only, as a microcontroller's integer kernels (and `firmware_sim run`) need."""
    for op in graph.operators:
        if op.op in ("QUANTIZE", "DEQUANTIZE"):
            continue
        for index in op.inputs + op.outputs:
            if index >= 0 and np.dtype(graph.tensors[index].dtype).kind == "f":
                return f"op #{op.index} {op.op} computes in {np.dtype(graph.tensors[index].dtype).name}"
    return None


def budget(bundle: str, variant: str, device: str) -> dict:
    """One variant on one device profile, no kernels run: does it fit, RAM/flash used, and time per step."""
    from firmware_sim.memory import memory_report
    from firmware_sim.profiles import load_profile
    from firmware_sim.ring import AGE, held_ring_bytes
    from firmware_sim.timing import step_cost

    manifest, graph, state = variant_graph(bundle, variant)
    profile = load_profile(device)
    core = manifest.variant(variant).raw.get("graph") == "core"
    held = held_ring_bytes(manifest, core and not set(graph.signature_inputs) >= {AGE})  # a core's ring ages
    memory, cost = memory_report(graph, profile, state, held), step_cost(graph, profile)
    return {"device": profile.name, "fits": memory.fits, "ram_used": memory.ram_used, "ram_bytes": memory.ram_bytes,
            "flash_used": memory.flash_used, "flash_bytes": memory.flash_bytes, "model_bytes": graph.model_bytes,
            "us_per_step": cost.seconds * 1e6, "max_rate_hz": cost.max_rate_hz, "problems": memory.problems(),
            "kind": profile.kind, "float_op": float_op(graph)}
