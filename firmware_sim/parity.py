"""The simulator against a real TFLite interpreter, step by step with state carried.

Both run the same bundle variant on the same input stream, each carrying its
own state (no resynchronisation): any difference would compound, so equality
after 10,000 steps is a strong statement. Differences are counted in LSBs of
the integer tensor concerned; a float output (int16x8's DEQUANTIZE) is
compared bit for bit and its difference expressed in LSBs of the int16
tensor it was dequantized from.

`resolver="reference"` asks the interpreter for its reference kernels
(OpResolverType.BUILTIN_REF), the implementation TFLite Micro follows;
`resolver="default"` uses the optimized kernels (and XNNPACK where it
applies), to report how far they are. Free-running, a one-LSB difference in
a recurrent state compounds; `resync=True` starts every step from the
interpreter's state instead, which measures one invoke's difference.

State goes from a step's output tensor to the next step's input tensor the
same way on both sides (`StateCarry`: requantized where the two tensors'
quantization differs, as the Session does), so the comparison is of the
kernels alone. Outputs are compared as the kernels wrote them (the state
output tensors, before the carry).
"""
from __future__ import annotations

import importlib

import numpy as np

from edge_runtime.backends import allocate
from firmware_sim.device_model import DeviceModel, encode
from firmware_sim.sensor import synthetic_stream

RUNTIME_FLAVOUR = {"tflite_runtime": "tflite-2.14", "ai_edge_litert": "litert-2.3"}


def _interpreter(backend: str, content: bytes, resolver: str, preserve: bool):
    module = importlib.import_module(f"{backend}.interpreter")
    kind = module.OpResolverType.BUILTIN_REF if resolver == "reference" else module.OpResolverType.AUTO
    interpreter = module.Interpreter(model_content=content, experimental_op_resolver_type=kind,
                                     experimental_preserve_all_tensors=preserve, num_threads=1)
    allocate(interpreter)
    return interpreter


def _lsb_scale(model: DeviceModel, name: str) -> float | None:
    """For a float signature output: the scale of the integer tensor DEQUANTIZE read it from."""
    g = model.graph
    index = g.signature_outputs[name]
    t = g.tensors[index]
    if t.scale is not None:
        return None  # integer: differences are already in LSBs
    for op in g.operators:
        if op.outputs[0] == index and op.op == "DEQUANTIZE":
            return float(g.tensors[op.inputs[0]].scale[0])
    return None


def input_stream(model: DeviceModel, steps: int, seed: int = 0) -> np.ndarray:
    """(steps, C) what the step model's x sees: sensor units for a forecaster, one-hot symbols for
    an autocomplete model (a seeded walk over the vocabulary, so the state sees repeated contexts)."""
    m = model.manifest
    if m.task == "autocomplete":
        size = model.x_spec.shape[-1]
        rng = np.random.default_rng(seed)
        symbols = np.cumsum(rng.integers(-3, 4, steps)) % size  # (steps,)
        return np.eye(size, dtype=np.float32)[symbols]
    stream = synthetic_stream(m.normalization["mean"], m.normalization["std"], steps, seed=seed)
    # push past the calibrated range now and then, so saturating paths are exercised too
    stream[::997] += 6 * np.asarray(m.normalization["std"])
    return stream


def compare(bundle: str, variant: str, backend: str, steps: int = 10_000, resolver: str = "reference",
            flavour: str | None = None, internal: bool = False, seed: int = 0, resync: bool = False) -> dict:
    """Run both for `steps` steps; max difference per signature output in LSBs, first differing step."""
    from edge_runtime.manifest import verified_model_bytes

    flavour = flavour or RUNTIME_FLAVOUR[backend]
    model = DeviceModel.load(bundle, variant, flavour)
    g, m = model.graph, model.manifest
    interpreter = _interpreter(backend, verified_model_bytes(m, model.variant), resolver, internal)
    stream = input_stream(model, steps, seed)
    names = [model.output_name] + model.runner.state_names
    lsb = {n: _lsb_scale(model, n) for n in names}
    max_lsb = {n: 0.0 for n in names}
    state = {n: v.copy() for n, v in model.runner.state.items()}
    first_difference, differing_steps, internal_checked, internal_diff = None, 0, 0, 0
    internal_examples = []  # (step, tensor, ours, theirs) for the first few internal differences
    binding = model.binding  # the same tensor indices in both: one flatbuffer
    carries, executor = model.runner.carries, model.runner.executor  # one state carry for both sides
    model.reset()
    for step, raw in enumerate(stream):
        if binding.core:  # the same feature tensors into both: the firmware's outer step made them
            inputs = model.core_inputs(raw)
            model.steps += 1
            ours = model.runner.run_inputs(inputs)
            for n, index in binding.features + binding.ring:  # a Transformer core's ring inputs too
                interpreter.set_tensor(index, inputs[n])
        else:
            if step == 0 and binding.primes_x_prev:
                state["x_prev"] = encode(model.runner.tensor_spec("x_prev"), binding.x_prev_from(raw))
                model.runner.state["x_prev"] = state["x_prev"].copy()
            x = encode(model.x_spec, raw)
            ours = model.runner.run(x)
            interpreter.set_tensor(binding.x, x)
        for n, in_index, _ in binding.state:
            interpreter.set_tensor(in_index, state[n])
        interpreter.invoke()
        theirs = {model.output_name: interpreter.get_tensor(binding.y)}
        for n, _, out_index in binding.state:
            theirs[n] = interpreter.get_tensor(out_index).copy()
            state[n] = carries[n](theirs[n])
        mine = {model.output_name: ours, **{n: executor.tensor(g.signature_outputs[n]) for n in carries}}
        differs = False
        for n in names:
            a, b = mine[n], theirs[n]
            if a.tobytes() != b.tobytes():
                differs = True
                diff = float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))
                max_lsb[n] = max(max_lsb[n], diff / lsb[n] if lsb[n] else diff)
        if internal:  # every intermediate tensor (reliable in ai-edge-litert; see DESIGN-NOTES)
            for t in range(len(g.tensors)):
                if g.tensors[t].is_constant or model.runner.executor.arena[t] is None:
                    continue
                internal_checked += 1
                if model.runner.executor.arena[t].tobytes() != interpreter.get_tensor(t).tobytes():
                    internal_diff += 1
                    internal_examples.append((step, g.tensors[t].describe(), model.runner.executor.arena[t].tolist(),
                                              interpreter.get_tensor(t).tolist()))
        if differs:
            differing_steps += 1
            first_difference = step if first_difference is None else first_difference
        if resync:
            model.runner.state = {n: v.copy() for n, v in state.items()}
    return {"bundle": bundle, "variant": variant, "backend": backend, "resolver": resolver, "flavour": flavour,
            "steps": steps, "resync": resync, "identical": differing_steps == 0, "differing_steps": differing_steps,
            "first_difference": first_difference, "max_lsb": max_lsb,
            "internal_tensor_checks": internal_checked, "internal_tensor_differences": internal_diff,
            "internal_examples": internal_examples[:5]}
