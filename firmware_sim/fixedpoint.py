"""Integer rescaling the way TFLite's reference kernels do it, vectorized over numpy int64.

All values are held in int64 arrays but stay inside the int32 (or, for the
16x8 accumulators, int48) ranges the C++ code uses, so numpy's arithmetic
shifts and two's-complement masks behave like the C++ ones.

TFLite's default build uses "double rounding": a rounding doubling high
multiply (gemmlowp's SaturatingRoundingDoublingHighMul) followed by a
rounding right shift. The int64 overload used by 16x8 FULLY_CONNECTED rounds
the multiplier to 16 bits first ("reduced multiplier"); both are here.
"""
from __future__ import annotations

import math

import numpy as np

INT32_MIN, INT32_MAX = -(1 << 31), (1 << 31) - 1


def round_half_away(x) -> np.ndarray:
    """C's round(): half away from zero. Done in float64, exact for float32 inputs."""
    x = np.asarray(x, np.float64)
    return np.copysign(np.floor(np.abs(x) + 0.5), x)


def quantize_multiplier(real: float) -> tuple[int, int]:
    """real -> (int32 multiplier with its binary point at bit 31, shift); real = m * 2^(shift-31)."""
    if real == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real)
    fixed = int(round_half_away(mantissa * (1 << 31)))
    if fixed == (1 << 31):
        fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return INT32_MAX, 30
    return fixed, shift


def saturating_rounding_doubling_high_mul(a: np.ndarray, b) -> np.ndarray:
    """(a * b * 2) >> 32 rounded to nearest (ties away from zero), as gemmlowp computes it.

    b may be a scalar or an array broadcasting against a (per-channel multipliers).
    The one saturating case (a == b == INT32_MIN) cannot occur: TFLite's
    multipliers are non-negative. Written without np.where: on 1x32 tensors
    numpy's per-call overhead is the whole cost.
    """
    product = np.asarray(a, np.int64) * np.asarray(b, np.int64)
    negative = product < 0
    total = product + ((1 << 30) - negative * ((1 << 31) - 1))  # nudge: 2^30, or 1 - 2^30 below zero
    return (total + negative * ((1 << 31) - 1)) >> 31  # C++ division: truncate toward zero


def rounding_divide_by_pot(x: np.ndarray, exponent) -> np.ndarray:
    """x / 2^exponent rounded to nearest, ties away from zero (gemmlowp's RoundingDivideByPOT)."""
    x, exponent = np.asarray(x, np.int64), np.asarray(exponent, np.int64)
    mask = (np.int64(1) << exponent) - 1
    remainder = x & mask
    threshold = (mask >> 1) + (x < 0)
    return (x >> exponent) + (remainder > threshold)


def multiply_by_quantized_multiplier(x: np.ndarray, multiplier, shift) -> np.ndarray:
    """int32 x * real multiplier, TFLite's double-rounding MultiplyByQuantizedMultiplier (arrays broadcast)."""
    shift = np.asarray(shift, np.int64)
    left, right = np.maximum(shift, 0), np.maximum(-shift, 0)
    shifted = np.asarray(x, np.int64) << left
    return rounding_divide_by_pot(saturating_rounding_doubling_high_mul(shifted, multiplier), right)


def multiply_by_quantized_multiplier_int64(x: np.ndarray, multiplier, shift) -> np.ndarray:
    """The int64-accumulator overload (16x8 kernels): the multiplier is first rounded to 15 bits."""
    multiplier, shift = np.asarray(multiplier, np.int64), np.asarray(shift, np.int64)
    reduced = np.where(multiplier < 0x7FFF0000, (multiplier + (1 << 15)) >> 16, 0x7FFF)
    total_shift = 15 - shift
    x = np.asarray(x, np.int64) * reduced + (np.int64(1) << (total_shift - 1))
    return x >> total_shift


def checked_log2(x: float) -> tuple[bool, int]:
    """TFLite's CheckedLog2 in float32: (is x a power of two within 1e-3 in log2, rounded log2)."""
    log2 = np.float32(np.log(np.float32(x))) * np.float32(1.0 / np.log(np.float32(2.0)))
    rounded = np.float32(round_half_away(log2))
    return bool(abs(np.float32(log2 - rounded)) < np.float32(1e-3)), int(rounded)
