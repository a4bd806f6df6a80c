"""Print the device's requirement set for one interpreter choice, from pyproject.toml's pins.

`make lock` pipes this into `uv pip compile` for aarch64, one lock per interpreter:
    python tools/device_requirements.py tflite-runtime
"""
from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
RUNTIMES = ("tflite-runtime", "ai-edge-litert")
# numpy + the interpreter, and the extras a service config may need (MQTT, serial port, /metrics,
# bundle signatures), and orjson, the service's record encoder
DEVICE_PACKAGES = ("numpy", "paho-mqtt", "pyserial", "prometheus-client", "cryptography", "orjson")


def pinned_requirements() -> dict[str, str]:
    """package name -> the `name==version` line pyproject.toml pins it with (dependencies and extras)."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    lines = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        lines += extra
    found = {}
    for line in lines:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)\s*", line)
        if m:
            found[m.group(1).lower()] = f"{m.group(1)}=={m.group(2)}"
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in RUNTIMES:
        print(f"usage: device_requirements.py {{{','.join(RUNTIMES)}}}", file=sys.stderr)
        return 2
    pinned = pinned_requirements()
    for name in (*DEVICE_PACKAGES, argv[0]):
        print(pinned[name])
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
