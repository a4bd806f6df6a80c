"""Device profiles: RAM, flash, clock and per-op cycle costs, read from profiles/<name>.toml.

Every cycle figure carries its source in the file (`<key>_source`): most are
estimates derived from published kernel benchmarks or plain assumptions, and
every report says so. A profile is data; adding a device is adding a file.
"""
from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

PROFILE_DIR = Path(__file__).with_name("profiles")
CYCLE_KEYS = ("per_mac", "per_mac_int16", "per_element", "per_lut_element", "per_copy_byte", "per_op",
              "per_invoke", "per_sample", "jitter")
TOP_KEYS = ("name", "description", "kind", "clock_hz", "ram_bytes", "flash_bytes", "firmware_ram_bytes",
            "runtime_flash_bytes", "boot_ms", "cycles")


class ProfileError(ValueError):
    pass


@dataclass(frozen=True)
class Profile:
    name: str
    description: str
    kind: str  # "mcu" (TFLM, bare metal/RTOS) or "linux" (Python + tflite-runtime)
    clock_hz: int
    ram_bytes: int
    flash_bytes: int
    firmware_ram_bytes: int
    runtime_flash_bytes: int
    boot_ms: float
    cycles: dict  # CYCLE_KEYS -> float
    sources: dict  # CYCLE_KEYS -> where the figure comes from

    def describe_sources(self) -> list[str]:
        return [f"{k} = {self.cycles[k]:g}: {self.sources[k]}" for k in CYCLE_KEYS]


def available() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str) -> Profile:
    path = Path(name_or_path)
    if not path.suffix:
        path = PROFILE_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise ProfileError(f"no device profile {name_or_path!r}; known: {', '.join(available())}")
    raw = tomllib.loads(path.read_text())
    unknown = set(raw) - set(TOP_KEYS)
    missing = set(TOP_KEYS) - set(raw)
    if unknown or missing:
        raise ProfileError(f"{path}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
    table = raw["cycles"]
    expected = set(CYCLE_KEYS) | {f"{k}_source" for k in CYCLE_KEYS}
    if set(table) != expected:
        raise ProfileError(f"{path} [cycles]: need each of {', '.join(CYCLE_KEYS)} with a <key>_source; "
                           f"unknown {sorted(set(table) - expected)}, missing {sorted(expected - set(table))}")
    return Profile(raw["name"], raw["description"], raw["kind"], int(raw["clock_hz"]), int(raw["ram_bytes"]),
                   int(raw["flash_bytes"]), int(raw["firmware_ram_bytes"]), int(raw["runtime_flash_bytes"]),
                   float(raw["boot_ms"]), {k: float(table[k]) for k in CYCLE_KEYS},
                   {k: str(table[f"{k}_source"]) for k in CYCLE_KEYS})
