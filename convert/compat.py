"""Which runtime can open which model: operator versions checked against a table.

The table was derived by testing, not read from release notes: every
variant the converter writes (all modes of `convert/quantize.py`, plus the
per-channel dynamic-range mode we do not ship) was opened, allocated and
invoked under each runtime, and for each operator the highest version that
opened was recorded; the resource-variable ops (VAR_HANDLE, READ_VARIABLE,
ASSIGN_VARIABLE, CALL_ONCE) come from the resident companions
(convert/resident_step.py), opened and stepped under both runtimes.
tests/test_compat.py re-derives it the same way and fails when a runtime or
converter upgrade changes it.

An op version above the table's entry is refused by name. So is an op the
table has never seen open: unverified is not the same as supported.
"""
from __future__ import annotations

RUNTIMES = {
    "tflite_runtime": "tflite-runtime 2.14.0",
    "ai_edge_litert": "ai-edge-litert 2.3.0",
}

# runtime -> operator -> highest version seen to open (tensorflow 2.21 converter)
# BATCH_MATMUL, MEAN, MINIMUM, RESHAPE, RSQRT and SOFTMAX come from the transformer's step models
# (convert/transformer_step.py); MINIMUM only from its float graphs (version 1): the integer core gets its
# ring bookkeeping from outside (edge_runtime/ring.py), and with it went its MINIMUM 2, GATHER 2 and MUL 3
# (a mask rescale above 1, issue 18). GATHER 2 still comes from a raw graph's int8 forms (x[target]).
MAX_OPENED_VERSION: dict[str, dict[str, int]] = {
    "tflite_runtime": {
        "ADD": 2, "BATCH_MATMUL": 2, "CONCATENATION": 2, "DEQUANTIZE": 3, "FULLY_CONNECTED": 9, "GATHER": 2,
        "LOGISTIC": 2, "MEAN": 2, "MINIMUM": 1, "MUL": 2, "QUANTIZE": 2, "RESHAPE": 1, "RSQRT": 2,
        "SOFTMAX": 2, "SPLIT": 2, "SUB": 2, "TANH": 2,
        "ASSIGN_VARIABLE": 1, "CALL_ONCE": 1, "READ_VARIABLE": 1, "VAR_HANDLE": 1,
    },
    "ai_edge_litert": {
        "ADD": 2, "BATCH_MATMUL": 2, "CONCATENATION": 2, "DEQUANTIZE": 3, "FULLY_CONNECTED": 12, "GATHER": 2,
        "LOGISTIC": 2, "MEAN": 2, "MINIMUM": 1, "MUL": 2, "QUANTIZE": 2, "RESHAPE": 1, "RSQRT": 2,
        "SOFTMAX": 2, "SPLIT": 2, "SUB": 2, "TANH": 2,
        "ASSIGN_VARIABLE": 1, "CALL_ONCE": 1, "READ_VARIABLE": 1, "VAR_HANDLE": 1,
    },
}

# An op version that opens with one tensor type and not with another: (runtime, op, input type) -> the
# runtime's words. RSQRT version 2 is int8 and int16 alike; tflite-runtime 2.14 has only the int8 kernel.
TYPE_REFUSALS = {
    ("tflite_runtime", "RSQRT", "INT16"): "Type INT16 is unsupported by op Rsqrt",
}

# Seen to fail, with the runtime's own words, for the record and the tests.
KNOWN_REFUSALS = {
    ("tflite_runtime", "FULLY_CONNECTED", 12):
        "Didn't find op for builtin opcode 'FULLY_CONNECTED' version '12'",
}


def refusal(ops: list[dict], runtime: str, op_types: set[tuple[str, str]] = frozenset()) -> str | None:
    """None if every (op, version) is known to open in `runtime`; else why not, naming op and version.
    op_types: the model's (op, first input's type) pairs, for TYPE_REFUSALS."""
    for op, dtype in sorted(op_types):
        if (runtime, op, dtype) in TYPE_REFUSALS:
            return f"{op} on {dtype} does not open in {RUNTIMES[runtime]} ({TYPE_REFUSALS[runtime, op, dtype]})"
    table = MAX_OPENED_VERSION[runtime]
    for entry in ops:
        op, version = entry["op"], entry["version"]
        if op not in table:
            return f"{op} (version {version}) has not been verified to open in {RUNTIMES[runtime]}"
        if version > table[op]:
            return (f"{op} version {version} is beyond {RUNTIMES[runtime]} "
                    f"(highest version that opens: {table[op]})")
    return None


def compatibility(ops: list[dict], op_types: set[tuple[str, str]] = frozenset()) -> dict[str, str | None]:
    """runtime -> None (opens) or the reason it does not."""
    return {runtime: refusal(ops, runtime, op_types) for runtime in RUNTIMES}
