"""Integer-only kernels with TFLite's reference semantics, one `prepare` per builtin op.

`prepare(op, graph)` does what a kernel's Prepare does in TFLite (multipliers,
shifts, lookup tables, computed once from the tensors' scales with the same
float/double precision TFLite uses) and returns a function that runs the op
on the arena (a list of numpy arrays indexed by tensor). Eval is integer
arithmetic only, except QUANTIZE from float and DEQUANTIZE to float at a
float-I/O model's edge.

Where TFLite computes a constant in float32 (the product of two scales in
MUL, the int8 LOGISTIC/TANH tables) it is computed in float32 here too: a
multiplier derived in double instead of float differs in its last bits and
the outputs then differ by one LSB now and then.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from firmware_sim.fixedpoint import (checked_log2, multiply_by_quantized_multiplier,
                                     multiply_by_quantized_multiplier_int64, quantize_multiplier,
                                     round_half_away, rounding_divide_by_pot,
                                     saturating_rounding_doubling_high_mul)
from firmware_sim.graph import Graph, GraphError, Operator, Tensor

Kernel = Callable[[list], None]  # runs one op: reads and writes arena[tensor_index]
PREPARE: dict[str, Callable[[Operator, Graph, str], Kernel]] = {}

# The two interpreters' reference kernels do not agree bit for bit (measured, see DESIGN-NOTES):
# tflite-runtime 2.14 rescales FULLY_CONNECTED's accumulator with TFLite's fixed-point double
# rounding (and, for int16 activations, a multiplier rounded to 15 bits); ai-edge-litert 2.3
# behaves as acc * (input_scale * weight_scale / output_scale) in double precision rounded to
# the nearest integer (fixed-point single rounding matches it for int8 but missed 1 in 320,000
# int16 outputs). TFLite Micro's default build is the double-rounding one.
FLAVOURS = ("tflite-2.14", "litert-2.3")
DEFAULT_FLAVOUR = "tflite-2.14"

SIGMOID_TABLE = np.array([int(v) for line in (Path(__file__).with_name("sigmoid_table.txt")).read_text().splitlines()
                          if not line.startswith("#") for v in line.split()], np.int64)  # (256,) 0.16 fixed point
assert SIGMOID_TABLE.shape == (256,)


def kernel(*names: str):
    def register(fn):
        for name in names:
            PREPARE[name] = fn
        return fn
    return register


def _limits(dtype) -> tuple[int, int]:
    info = np.iinfo(dtype)
    return int(info.min), int(info.max)


def _scale(t: Tensor) -> float:
    if t.scale is None:
        raise GraphError(f"tensor {t.describe()} has no quantization scale")
    return float(t.scale[0])


def _zp(t: Tensor) -> int:
    return int(t.zero_point[0]) if t.zero_point is not None else 0


def _activation_range(activation: str, out: Tensor) -> tuple[int, int]:
    """CalculateActivationRangeQuantized: the fused activation as an integer clamp."""
    low, high = _limits(out.dtype)
    scale, zp = np.float32(_scale(out)), _zp(out)

    def q(f):
        return zp + int(round_half_away(np.float32(f) / scale))
    if activation in ("NONE", None):
        return low, high
    if activation == "RELU":
        return max(low, q(0.0)), high
    if activation == "RELU6":
        return max(low, q(0.0)), min(high, q(6.0))
    if activation == "RELU_N1_TO_1":
        return max(low, q(-1.0)), min(high, q(1.0))
    raise GraphError(f"fused activation {activation} is not supported on quantized tensors")


def _integer(t: Tensor, op: Operator) -> None:
    if np.dtype(t.dtype).kind not in "iu":
        raise GraphError(f"op #{op.index} {op.op}: tensor {t.describe()} is {np.dtype(t.dtype).name}; the simulator "
                         "runs integer-only graphs (int8, int16x8) with float only at QUANTIZE/DEQUANTIZE")


def _fc_rescale(x_t: Tensor, w_t: Tensor, out_t: Tensor, flavour: str, has_bias: bool = True):
    """The accumulator -> output rescale for every output channel, as each runtime computes it."""
    channels = w_t.shape[0]
    in_scale, out_scale = _scale(x_t), _scale(out_t)
    weight_scales = list(w_t.scale) if w_t.per_channel else [w_t.scale[0]] * channels
    if flavour == "litert-2.3":  # acc * effective scale in double, rounded to nearest
        real = np.array([float(in_scale) * float(s) / float(out_scale) for s in weight_scales])  # (N,)
        return lambda acc: round_half_away(acc * real).astype(np.int64)
    if w_t.per_channel:  # PopulateConvolutionQuantizationParams: per output channel, in double
        multipliers = [quantize_multiplier(float(in_scale) * float(s) / float(out_scale)) for s in weight_scales]
    else:  # GetQuantizedConvolutionMultipler: the scale product is a float32 product
        product = float(np.float32(in_scale) * np.float32(w_t.scale[0]))
        multipliers = [quantize_multiplier(product / float(out_scale))] * channels
    multiplier = np.array([m for m, _ in multipliers], np.int64)  # (N,)
    shift = np.array([sh for _, sh in multipliers], np.int64)  # (N,)
    # 16x8: int64 accumulator, multiplier reduced to 15 bits. Without a bias tensor (a core graph's
    # second feature matmul) tflite-runtime 2.14 takes its int32-bias template instead, whose
    # rescale is the int32 double-rounding one (measured: 1,771 of 3,000 steps differed otherwise)
    if np.dtype(x_t.dtype) == np.int16 and has_bias:
        return lambda acc: multiply_by_quantized_multiplier_int64(acc, multiplier, shift)
    return lambda acc: multiply_by_quantized_multiplier(acc, multiplier, shift)


@kernel("FULLY_CONNECTED")
def fully_connected(op: Operator, g: Graph, flavour: str) -> Kernel:
    x_t, w_t = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
    b_t = g.tensors[op.inputs[2]] if len(op.inputs) > 2 and op.inputs[2] >= 0 else None
    out_t = g.tensors[op.outputs[0]]
    for t in (x_t, w_t, out_t):
        _integer(t, op)
    if w_t.data is None:
        raise GraphError(f"op #{op.index} FULLY_CONNECTED: weights {w_t.describe()} are not constant")
    w_offset = w_t.data.astype(np.int64) - _zp(w_t)  # (N, K) weights plus TFLite's filter offset
    bias = b_t.data.astype(np.int64) if b_t is not None else np.zeros(w_offset.shape[0], np.int64)  # (N,)
    in_offset, out_offset = -_zp(x_t), _zp(out_t)
    low, high = _activation_range(op.options.get("FusedActivationFunction"), out_t)
    rescale = _fc_rescale(x_t, w_t, out_t, flavour, b_t is not None)
    x_index, out_index, out_dtype, k = op.inputs[0], op.outputs[0], out_t.dtype, w_offset.shape[1]

    def run(arena):
        x = arena[x_index].reshape(-1, k).astype(np.int64) + in_offset  # (B, K)
        acc = x @ w_offset.T + bias  # (B, N) exact in int64
        arena[out_index] = np.clip(rescale(acc) + out_offset, low, high).astype(out_dtype).reshape(out_t.shape)
    return run


def _broadcast_pair(op: Operator, g: Graph):
    a, b, out = (g.tensors[i] for i in (op.inputs[0], op.inputs[1], op.outputs[0]))
    for t in (a, b, out):
        _integer(t, op)
    return a, b, out


@kernel("ADD", "SUB")
def add_sub(op: Operator, g: Graph, flavour: str) -> Kernel:
    """The general rescaling path: both inputs to a common scale at 2^left_shift, add, rescale."""
    a, b, out = _broadcast_pair(op, g)
    int16 = np.dtype(out.dtype) == np.int16
    if int16 and op.options.get("PotScaleInt16", True):
        pot = [checked_log2(_scale(t))[0] for t in (a, b, out)]
        if all(pot):
            raise GraphError(f"op #{op.index} {op.op}: the int16 power-of-two-scale path is not implemented "
                             "(the converter's 16x8 graphs use the general path)")
    left_shift = 15 if int16 else 20
    twice_max = float(np.float32(2 * max(np.float32(_scale(a)), np.float32(_scale(b)))))
    m_a, s_a = quantize_multiplier(_scale(a) / twice_max)
    m_b, s_b = quantize_multiplier(_scale(b) / twice_max)
    m_out, s_out = quantize_multiplier(twice_max / float(np.float32((1 << left_shift) * np.float32(_scale(out)))))
    off_a, off_b, off_out = -_zp(a), -_zp(b), _zp(out)
    low, high = _activation_range(op.options.get("FusedActivationFunction"), out)
    sign = -1 if op.op == "SUB" else 1
    ia, ib, io, dtype = op.inputs[0], op.inputs[1], op.outputs[0], out.dtype

    def rescale(x, m, s):  # MultiplyByQuantizedMultiplierSmallerThanOneExp
        return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(x, m), -s)

    def run(arena):
        x = (arena[ia].astype(np.int64) + off_a) << left_shift
        y = (arena[ib].astype(np.int64) + off_b) << left_shift
        total = rescale(x, m_a, s_a) + sign * rescale(y, m_b, s_b)
        arena[io] = np.clip(rescale(total, m_out, s_out) + off_out, low, high).astype(dtype).reshape(out.shape)
    return run


@kernel("MUL")
def mul(op: Operator, g: Graph, flavour: str) -> Kernel:
    a, b, out = _broadcast_pair(op, g)
    # in TFLite's Prepare all three scales are float, so the product is a float32 product
    real = float(np.float32(np.float32(_scale(a)) * np.float32(_scale(b))) / np.float32(_scale(out)))
    multiplier, shift = quantize_multiplier(real)
    off_a, off_b, off_out = -_zp(a), -_zp(b), _zp(out)
    low, high = _activation_range(op.options.get("FusedActivationFunction"), out)
    ia, ib, io, dtype = op.inputs[0], op.inputs[1], op.outputs[0], out.dtype

    def run(arena):
        product = (arena[ia].astype(np.int64) + off_a) * (arena[ib].astype(np.int64) + off_b)
        result = multiply_by_quantized_multiplier(product, multiplier, shift) + off_out
        arena[io] = np.clip(result, low, high).astype(dtype).reshape(out.shape)
    return run


def _lut_int8(op: Operator, g: Graph, transform) -> Kernel:
    """LUTPopulate<int8_t>: the function over all 256 inputs, in float32 as TFLite computes it."""
    x_t, out_t = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    values = np.arange(-128, 128, dtype=np.int64)  # (256,) every int8 input
    dequantized = np.float32(_scale(x_t)) * (values - _zp(x_t)).astype(np.float32)
    transformed = transform(dequantized).astype(np.float32)
    inverse_scale = np.float32(1.0) / np.float32(_scale(out_t))
    rescaled = round_half_away((transformed * inverse_scale).astype(np.float32))
    table = np.clip(rescaled + _zp(out_t), -128, 127).astype(np.int8)  # indexed by input + 128
    ix, io = op.inputs[0], op.outputs[0]

    def run(arena):
        arena[io] = table[arena[ix].astype(np.int64) + 128]
    return run


def _sigmoid_f32(v: np.ndarray) -> np.ndarray:
    # 1.0f / (1.0f + expf(-v)): exp rounded to float32 once, then float32 arithmetic
    e = np.exp(-v.astype(np.float64)).astype(np.float32)
    return (np.float32(1.0) / (np.float32(1.0) + e)).astype(np.float32)


def _tanh_f32(v: np.ndarray) -> np.ndarray:
    return np.tanh(v.astype(np.float64)).astype(np.float32)


def _int16_input_rescale(x_t: Tensor, tanh: bool) -> tuple[int, int]:
    """TanhPrepare/SigmoidPrepare for int16: (multiplier, left shift) to the LUT's 1/(3*4096) input scale."""
    if _zp(x_t) != 0:
        raise GraphError(f"int16 activation input {x_t.describe()} needs zero point 0")
    pot, log2 = checked_log2(_scale(x_t))
    left_shift = (15 - 3) + log2
    pot = pot and (left_shift in (0, 1) if tanh else left_shift == 0)
    if pot:
        return 3 << left_shift, 0  # Eval's power-of-two case
    multiplier, left_shift = float(_scale(x_t)) * 4096.0 * 3.0, 0
    while multiplier <= 32767.0 / 2.0 and left_shift <= 30:
        left_shift += 1
        multiplier *= 2.0
    return int(multiplier), left_shift


def _lut_int16(op: Operator, g: Graph, tanh: bool) -> Kernel:
    """int16 LOGISTIC/TANH: linear interpolation in the 256-entry sigmoid table."""
    x_t, out_t = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    if not np.isclose(_scale(out_t), 1 / 32768) or _zp(out_t) != 0:
        raise GraphError(f"op #{op.index} {op.op}: int16 output must have scale 1/32768, zero point 0")
    multiplier, left_shift = _int16_input_rescale(x_t, tanh)
    rounding = (1 << (left_shift - 1)) if left_shift > 0 else 0
    ix, io = op.inputs[0], op.outputs[0]
    frac_bits = 8 if tanh else 9  # tanh(x) = 2 sigmoid(2x) - 1: the table step is half as wide

    def run(arena):
        x = (arena[ix].astype(np.int64) * multiplier + rounding) >> left_shift
        magnitude = np.abs(x)
        high = magnitude >> frac_bits
        clipped = np.minimum(high, 254)
        low_entry, high_entry = SIGMOID_TABLE[clipped], SIGMOID_TABLE[clipped + 1]
        frac = magnitude & ((1 << frac_bits) - 1)
        interpolated = (low_entry << frac_bits) + frac * (high_entry - low_entry)
        if tanh:
            interpolated = np.where(high >= 255, 0xFFFF << 8, interpolated)
            result = np.where(x >= 0, interpolated - (1 << 23) + (1 << 7), -interpolated + (1 << 23) + (1 << 7) - 1)
            result = result >> 8
        else:
            interpolated = np.where(high >= 255, 0x7FFF << 10, interpolated)
            result = np.where(x >= 0, interpolated + (1 << 9), (1 << 25) - interpolated + (1 << 9) - 1) >> 10
        arena[io] = result.astype(np.int16)
    return run


@kernel("LOGISTIC")
def logistic(op: Operator, g: Graph, flavour: str) -> Kernel:
    dtype = np.dtype(g.tensors[op.inputs[0]].dtype)
    if dtype == np.int8:
        return _lut_int8(op, g, _sigmoid_f32)
    if dtype == np.int16:
        return _lut_int16(op, g, tanh=False)
    raise GraphError(f"op #{op.index} LOGISTIC on {dtype.name} is not supported")


@kernel("TANH")
def tanh(op: Operator, g: Graph, flavour: str) -> Kernel:
    dtype = np.dtype(g.tensors[op.inputs[0]].dtype)
    if dtype == np.int8:
        return _lut_int8(op, g, _tanh_f32)
    if dtype == np.int16:
        return _lut_int16(op, g, tanh=True)
    raise GraphError(f"op #{op.index} TANH on {dtype.name} is not supported")


def _axis(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


@kernel("SPLIT")
def split(op: Operator, g: Graph, flavour: str) -> Kernel:
    axis_t, x_t = g.tensors[op.inputs[0]], g.tensors[op.inputs[1]]
    if axis_t.data is None:
        raise GraphError(f"op #{op.index} SPLIT: axis is not a constant")
    axis = _axis(int(axis_t.data.reshape(-1)[0]), len(x_t.shape))
    ix, outs = op.inputs[1], list(op.outputs)

    def run(arena):
        for index, part in zip(outs, np.split(arena[ix], len(outs), axis=axis)):
            arena[index] = part.copy()
    return run


@kernel("CONCATENATION")
def concatenation(op: Operator, g: Graph, flavour: str) -> Kernel:
    """A copy when every input shares the output's scale (TFLite requires it for int8/int16: the
    converter inserts a requantizing QUANTIZE); otherwise each input is requantized the way the
    uint8 reference kernel does (float scale and bias, rounded half away from zero)."""
    out_t = g.tensors[op.outputs[0]]
    ins = [g.tensors[i] for i in op.inputs]
    axis = _axis(op.options.get("Axis", 0), len(out_t.shape))
    low, high = _limits(out_t.dtype)
    plans = []
    for t in ins:
        same = t.scale is None or (_scale(t) == _scale(out_t) and _zp(t) == _zp(out_t))
        if same:
            plans.append(None)
        else:
            scale = np.float32(_scale(t)) * (np.float32(1.0) / np.float32(_scale(out_t)))
            plans.append((scale, np.float32(-_zp(t)) * scale))
    io, inputs, dtype = op.outputs[0], list(op.inputs), out_t.dtype

    def run(arena):
        parts = []
        for index, plan in zip(inputs, plans):
            v = arena[index]
            if plan is not None:
                scaled = (v.astype(np.float32) * plan[0] + plan[1]).astype(np.float32)
                v = np.clip(round_half_away(scaled) + _zp(out_t), low, high).astype(dtype)
            parts.append(v)
        arena[io] = np.concatenate(parts, axis=axis)
    return run


@kernel("GATHER")
def gather(op: Operator, g: Graph, flavour: str) -> Kernel:
    params_t = g.tensors[op.inputs[0]]
    axis = _axis(op.options.get("Axis", 0), len(params_t.shape))
    if op.options.get("BatchDims", 0):
        raise GraphError(f"op #{op.index} GATHER with batch_dims is not supported")
    ip, ii, io = op.inputs[0], op.inputs[1], op.outputs[0]
    size = params_t.shape[axis]

    def run(arena):
        indices = arena[ii].astype(np.int64)
        if indices.size and (indices.min() < 0 or indices.max() >= size):
            raise IndexError(f"GATHER op #{op.index}: index out of range [0, {size})")
        arena[io] = np.take(arena[ip], indices, axis=axis)
    return run


@kernel("RESHAPE", "SQUEEZE", "EXPAND_DIMS")
def reshape(op: Operator, g: Graph, flavour: str) -> Kernel:
    out_t, ix, io = g.tensors[op.outputs[0]], op.inputs[0], op.outputs[0]

    def run(arena):
        arena[io] = arena[ix].reshape(out_t.shape).copy()
    return run


@kernel("QUANTIZE")
def quantize(op: Operator, g: Graph, flavour: str) -> Kernel:
    x_t, out_t = g.tensors[op.inputs[0]], g.tensors[op.outputs[0]]
    low, high = _limits(out_t.dtype)
    ix, io, dtype = op.inputs[0], op.outputs[0], out_t.dtype
    if np.dtype(x_t.dtype) == np.float32:
        scale, zp = np.float32(_scale(out_t)), _zp(out_t)

        def run(arena):  # AffineQuantize: float32 division, rounded half away from zero
            q = round_half_away((arena[ix].astype(np.float32) / scale).astype(np.float32)) + zp
            arena[io] = np.clip(q, low, high).astype(dtype)
        return run
    multiplier, shift = quantize_multiplier(float(_scale(x_t)) / float(_scale(out_t)))
    zp_in, zp_out = _zp(x_t), _zp(out_t)

    def requantize(arena):
        v = multiply_by_quantized_multiplier(arena[ix].astype(np.int64) - zp_in, multiplier, shift) + zp_out
        arena[io] = np.clip(v, low, high).astype(dtype)
    return requantize


@kernel("DEQUANTIZE")
def dequantize(op: Operator, g: Graph, flavour: str) -> Kernel:
    x_t = g.tensors[op.inputs[0]]
    scale, zp = float(_scale(x_t)), _zp(x_t)  # the reference kernel multiplies in double, then rounds to float
    ix, io = op.inputs[0], op.outputs[0]

    def run(arena):
        arena[io] = (scale * (arena[ix].astype(np.float64) - zp)).astype(np.float32)
    return run


def prepare(op: Operator, g: Graph, flavour: str = DEFAULT_FLAVOUR) -> Kernel:
    if op.op not in PREPARE:
        raise GraphError(f"op #{op.index} {op.op} (version {op.version}) has no integer kernel in firmware_sim; "
                         f"it implements {', '.join(sorted(PREPARE))}")
    if flavour not in FLAVOURS:
        raise ValueError(f"unknown kernel flavour {flavour!r}; choose one of {', '.join(FLAVOURS)}")
    return PREPARE[op.op](op, g, flavour)
