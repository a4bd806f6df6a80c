"""Small typed checks for the values of a manifest: each returns the value or raises a one-line BundleError.

The manifest reader (edge_runtime/manifest.py) checks every value the
runtime later uses with these at load time, so a malformed manifest is
refused before a model opens, never by a traceback mid-stream (a `target` of
[0.5] used to pass and kill `serve` at its second sample). Every message
names the field by its path, e.g. `variants[0].bytes`. Standard library only
(no jsonschema): it ships to devices.
"""
from __future__ import annotations

import math
import re

from edge_runtime.bundle_files import BundleError, short

MAX_DEPTH = 32  # nesting levels; a real manifest has 6
MAX_DIM = 1 << 16  # one tensor dimension (these models are 1-512 wide)
MAX_LIST = 4096  # entries of a list the runtime walks (channels, state, variants, ...)
MAX_MAGNITUDE = 1e30  # a normalization or threshold value; float32 (which the model sees) ends at 3.4e38
TENSOR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:/-]{0,127}")
SHA256 = re.compile(r"[0-9a-f]{64}")
_MISSING = object()


def check_depth(document, where: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH (walked without recursion, so it cannot overflow the stack)."""
    pending = [(document, 1)]
    while pending:
        value, depth = pending.pop()
        if depth > MAX_DEPTH:
            raise BundleError(f"{where}: nested more than {MAX_DEPTH} levels deep")
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        pending.extend((child, depth + 1) for child in children)


def field(d: dict, key: str, where: str, default=_MISSING):
    """d[key], or default when given; a missing required field is named."""
    if key in d:
        return d[key]
    if default is _MISSING:
        raise BundleError(f"{where}: missing required field {key!r}")
    return default


def obj(value, where: str) -> dict:
    if not isinstance(value, dict):
        raise BundleError(f"{where}: should be an object, got {short(value)}")
    return value


def array(value, where: str, low: int = 0, high: int = MAX_LIST) -> list:
    if not isinstance(value, list):
        raise BundleError(f"{where}: should be a list, got {short(value)}")
    if not low <= len(value) <= high:
        raise BundleError(f"{where}: should have {low} to {high} entries, has {len(value)}")
    return value


def integer(value, where: str, low: int, high: int) -> int:
    """An int (not a bool, not a float such as 0.5 or 1e400) in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise BundleError(f"{where}: should be an integer, got {short(value)}")
    if not low <= value <= high:
        raise BundleError(f"{where}: {short(value)} is outside [{low}, {high}]")
    return value


def number(value, where: str, positive: bool = False, limit: float = MAX_MAGNITUDE) -> float:
    """A finite int or float (not a bool, not NaN or Infinity) with |value| <= limit; > 0 when positive."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BundleError(f"{where}: should be a number, got {short(value)}")
    try:
        result = float(value)
    except OverflowError:  # a 400-digit integer
        raise BundleError(f"{where}: {short(value)} is not a finite number") from None
    if not math.isfinite(result) or abs(result) > limit:
        raise BundleError(f"{where}: {short(value)} is not a finite number within +/-{limit:g}")
    if positive and not result > 0:
        raise BundleError(f"{where}: should be positive, got {short(value)}")
    return result


def optional_number(value, where: str) -> float | None:
    """A recorded figure (a metric): null or a number. NaN and Infinity are allowed here (a ratio of two
    zero errors is NaN; every comparison with it is false, which the deployable rule reads as "no"), but
    not an integer too large for a float (formatting it would raise)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BundleError(f"{where}: should be a number, got {short(value)}")
    try:
        return float(value)
    except OverflowError:
        raise BundleError(f"{where}: {short(value)} is too large for a float") from None


def numbers(value, where: str, length: int, positive: bool = False) -> tuple[float, ...]:
    """A list of exactly `length` finite numbers."""
    values = array(value, where)
    if len(values) != length:
        raise BundleError(f"{where}: has {len(values)} values, needs {length}")
    return tuple(number(v, f"{where}[{k}]", positive) for k, v in enumerate(values))


def text(value, where: str, max_len: int = 256) -> str:
    """A printable one-line string (it reaches logs and one-line errors)."""
    if not isinstance(value, str):
        raise BundleError(f"{where}: should be a string, got {short(value)}")
    if not value or len(value) > max_len or not value.isprintable():
        raise BundleError(f"{where}: {short(value)} should be 1 to {max_len} printable characters")
    return value


def choice(value, where: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed or not isinstance(value, str):
        raise BundleError(f"{where}: {short(value)} is not one of {', '.join(allowed)}")
    return value


def tensor_name(value, where: str) -> str:
    if not isinstance(value, str) or not TENSOR_NAME.fullmatch(value):
        raise BundleError(f"{where}: {short(value)} is not a tensor name (a letter or '_', then letters, "
                          "digits, '_', '.', ':', '/', '-')")
    return value


def step_shape(value, where: str) -> tuple[int, int]:
    """A step tensor's shape: [1, n], n a small positive int (one sample or one state row)."""
    dims = array(value, where, 2, 2)
    if integer(dims[0], f"{where}[0]", 1, 1) != 1:
        raise BundleError(f"{where}: the first dimension must be 1")
    return 1, integer(dims[1], f"{where}[1]", 1, MAX_DIM)


def sha256_hex(value, where: str) -> str:
    if not isinstance(value, str) or not SHA256.fullmatch(value):
        raise BundleError(f"{where}: should be 64 lowercase hex digits, got {short(value)}")
    return value


def unique(values, where: str):
    if len(set(values)) != len(values):
        raise BundleError(f"{where}: names are not unique")
    return values
