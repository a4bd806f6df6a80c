"""Open and step a bundle's model in a child process first: a model that crashes the interpreter
cannot take the caller down.

tflite-runtime 2.14 does not verify a model's flatbuffer: an outside tester
found 34 of 80 mutated models segfaulted it, which would kill the edge
service (no final snapshot, no status). `load_probed` runs the same load in a
child (`python -m edge_runtime.probe`), steps it twice (through the batched
companion too, when the caller will use it), and only when the child exits
cleanly loads the model in this process. A child killed by a signal refuses
the bundle naming the signal (e.g. SIGSEGV); a child still busy after
`timeout_s` is killed and refuses it too; a clean refusal in the child
(BundleError) is passed on with its own message. The child reports the
manifest sha256 it verified: the bundle loaded here must be the one probed.

Standard library and the runtime's own modules only: it ships to devices.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from edge_runtime.backends import interpreter_class
from edge_runtime.manifest import BundleError

PROBE_TIMEOUT_S = 60.0  # opening a KB-sized model takes milliseconds; a Pi's cold start a few seconds
PROBE_STEPS = 2
_RESULT_PREFIX = "probe-result "


def load_probed(bundle: str | Path, variant: str | None = None, backend: str | None = None,
                max_mse_ratio: float | None = None, trusted_key: str | Path | None = None,
                batched: bool | None = False, timeout_s: float = PROBE_TIMEOUT_S):
    """`edge_runtime.load(...)` after the same load and a few steps survived in a child process.

    batched: whether the caller will step through the variant's batched companion (as StreamPool's
    argument: None = when present); the child opens and steps it too.
    """
    from edge_runtime.tasks import load

    backend_name, _ = interpreter_class(backend)  # resolved here: the child must use the same one
    probed = probe(bundle, variant, backend_name, max_mse_ratio, trusted_key, batched, timeout_s)
    model = load(bundle, variant=variant, backend=backend_name, max_mse_ratio=max_mse_ratio, trusted_key=trusted_key)
    if (model.manifest.sha256, model.variant.name) != (probed["sha256"], probed["variant"]):
        raise BundleError(f"{bundle}: the bundle changed while it was being probed; refusing it")
    return model


def probe(bundle, variant, backend: str, max_mse_ratio, trusted_key, batched, timeout_s: float) -> dict:
    """Run the child; {"sha256", "variant"} of what it opened, or BundleError saying why not."""
    args = {"bundle": str(bundle), "variant": variant, "backend": backend, "max_mse_ratio": max_mse_ratio,
            "trusted_key": None if trusted_key is None else str(trusted_key), "batched": batched}
    package_root = str(Path(__file__).resolve().parents[1])  # the child imports this very edge_runtime
    path = os.environ.get("PYTHONPATH")
    env = {**os.environ, "PYTHONPATH": package_root if not path else f"{path}{os.pathsep}{package_root}"}
    try:
        done = subprocess.run([sys.executable, "-m", "edge_runtime.probe", json.dumps(args)],
                              stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:  # run() kills the child before raising
        raise BundleError(f"{bundle}: opening and stepping the model did not finish within {timeout_s:g} s "
                          "in a probe process; refusing it") from None
    except OSError as e:
        raise BundleError(f"{bundle}: cannot start the probe process ({e.strerror})") from None
    if done.returncode < 0:
        raise BundleError(f"{bundle}: the model crashed the {backend} interpreter in a probe process "
                          f"(killed by {signal_name(-done.returncode)}); refusing it")
    lines = [line for line in done.stdout.splitlines() if line.startswith(_RESULT_PREFIX)]
    if done.returncode != 0 or not lines:
        last = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise BundleError(last.removeprefix("error: ") if done.returncode == 2 else
                          f"{bundle}: the probe process failed ({last[:300]})")
    return json.loads(lines[-1].removeprefix(_RESULT_PREFIX))


def signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _step_in_child(args: dict) -> dict:
    """What the parent will do: load, then step (through the pool's batched companion when it will)."""
    from edge_runtime.tasks import load

    model = load(args["bundle"], variant=args["variant"], backend=args["backend"],
                 max_mse_ratio=args["max_mse_ratio"], trusted_key=args["trusted_key"])
    m = model.manifest
    if m.task == "forecast":
        sample = [float(v) for v in m.normalization["mean"]]  # (C,) a plausible reading of every channel
        session = model.session()
        for _ in range(PROBE_STEPS):
            session.step(sample)
        if args["batched"] is not False:
            from edge_runtime.pool import StreamPool

            pool = StreamPool(model, max_streams=2, batched=args["batched"], max_batch=2)
            for _ in range(PROBE_STEPS):
                pool.step_many({"a": sample, "b": sample})
    else:
        session = model.session()
        session.feed(m.vocabulary.letters[0])
        session.suggest(1)
    return {"sha256": m.sha256, "variant": model.variant.name}


def main(argv: list[str]) -> int:
    from edge_runtime.backends import BackendError

    try:
        result = _step_in_child(json.loads(argv[0]))
    except (BundleError, BackendError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(_RESULT_PREFIX + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
