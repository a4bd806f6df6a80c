"""Build a versioned release for a Raspberry Pi on the laptop: everything the device installs offline.

    build/releases/<version>/
      release.json            version, runtime, package versions, bundle identities, target
      edge.toml               the service config (bundle paths relative to it)
      edge-rnn.service        the systemd unit
      bundles/<name>/         manifest.json (+ manifest.json.sig) + model files (verified with edge_runtime's reader)
      trusted_key.pub         with --trusted-key: the public key the service requires bundles to be signed with
      wheels/                 edge_rnn_runtime-*.whl (edge_runtime only) + the aarch64 cp311 wheelhouse

The version is edge_runtime's version plus a hash of the release's content, so the same inputs give
the same version (a redeploy of it is a switch, not a copy) and any change gives a new one.
"""
from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from edge_runtime.manifest import (DEFAULT_MAX_MSE_RATIO, BundleError, read_manifest, verified_model_bytes,
                                   why_not_deployable)
from edge_runtime.service.config import ConfigError
from edge_runtime.service.config import read_config_text as service_config_text
from edge_runtime.signature import SIGNATURE_NAME

ROOT = Path(__file__).resolve().parents[1]
UNIT_FILE = Path(__file__).resolve().parent / "edge-rnn.service"
CACHE_DIR = Path(os.environ.get("EDGE_RNN_CACHE", Path.home() / ".cache" / "edge-rnn"))

TARGET_PYTHON = "3.11"  # 64-bit Raspberry Pi OS bookworm
# pip does not expand platform tags: each must be named. tflite-runtime 2.14.0's only aarch64 wheel is
# manylinux_2_34; with manylinux2014_aarch64 alone pip finds no tflite-runtime at all, and for
# ai-edge-litert it silently resolves 1.4.0 instead of 2.3.0.
PLATFORM_TAGS = {
    "aarch64": ("manylinux_2_34_aarch64", "manylinux_2_28_aarch64", "manylinux_2_27_aarch64",
                "manylinux_2_17_aarch64", "manylinux2014_aarch64"),
}
# interpreter backend name (as in the manifest's compatibility table) -> PyPI package
RUNTIME_PACKAGES = {"tflite_runtime": "tflite-runtime", "ai_edge_litert": "ai-edge-litert"}
RUNTIME_PREFERENCE = ("tflite_runtime", "ai_edge_litert")  # the card's runtime first
WHEEL_NAME = "edge_rnn_runtime"
# `make lock`: per interpreter, the device's packages for aarch64 cp311 with every wheel's sha256
DEVICE_LOCK = ROOT / "requirements" / "device-{arch}-{runtime}.lock.txt"


class ReleaseError(ValueError):
    """A release that must not be built or shipped; the message says why."""

    exit_code = 1


class BundleRefused(ReleaseError):
    """A bundle that is malformed or unsafe to ship (exit 2, as `run`/`serve` give for a malformed manifest)."""

    exit_code = 2


# A bundle's name becomes the folder build/releases/<v>/bundles/<name> here and on the device: one plain
# path component, so it cannot leave bundles/ ('..', '/', an absolute path) or hide ('.x').
BUNDLE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")


def check_bundle_name(name: str, source: Path) -> str:
    if not BUNDLE_NAME.fullmatch(name):
        shown = name if len(name) <= 80 else name[:80] + "..."
        raise BundleRefused(f"bundle refused: {source}: name {shown!r} in manifest.json is not a plain folder name "
                            "(1-128 letters, digits, '.', '_', '-', not starting with '.'; no '/')")
    return name


@dataclass
class BundleChoice:
    name: str
    source: Path
    variant: str
    manifest_sha256: str  # the bundle's identity (snapshots are keyed by it)
    variant_sha256: str
    opens_in: list[str] = field(default_factory=list)


@dataclass
class Release:
    version: str
    path: Path
    runtime: str
    packages: dict[str, str]  # wheel distribution name -> version
    bundles: list[BundleChoice]

    @property
    def info(self) -> dict:
        return json.loads((self.path / "release.json").read_text())


# ---------------------------------------------------------------- pins and config

def pins(pyproject: Path = ROOT / "pyproject.toml") -> dict[str, str]:
    """package name (normalized) -> pinned version, from the project's dependencies and extras."""
    project = tomllib.loads(pyproject.read_text())["project"]
    requirements = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        requirements += extra
    found = {}
    for requirement in requirements:
        m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*==\s*([^\s;]+)\s*", requirement)
        if m:
            found[normalize(m.group(1))] = m.group(2)
    return found


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_config_text(config: Path) -> str:
    """The service config's text, read as `serve` reads it."""
    try:
        return service_config_text(config)
    except ConfigError as e:
        raise ReleaseError(str(e)) from None


def read_config(config: Path) -> dict:
    try:
        return tomllib.loads(read_config_text(config))
    except tomllib.TOMLDecodeError as e:
        raise ReleaseError(f"{config}: not valid TOML ({e})") from None


def config_bundle_paths(config: dict) -> list[str]:
    """Every `bundle = ...` value in the config, at the top level or in a table (one per model)."""
    found = []

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "bundle" and isinstance(value, str):
                    found.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)
    walk(config)
    return found


def config_variant(config: dict) -> str | None:
    value = config.get("variant")
    return value if isinstance(value, str) else None


def extra_packages(config: dict) -> list[str]:
    """Extras the configured service needs: paho-mqtt for MQTT, pyserial for a serial port, cryptography
    to check bundle signatures when the config names a trusted key, prometheus-client for [http]
    (/metrics and the live page are off unless the config has that section)."""
    used = set(config.get("sources", {})) | set(config.get("sinks", {}))
    used |= {key for key in ("trusted_key", "http") if key in config}
    return [package for kind, package in (("mqtt", "paho-mqtt"), ("serial", "pyserial"),
                                          ("trusted_key", "cryptography"), ("http", "prometheus-client"))
            if kind in used]


TRUSTED_KEY_NAME = "trusted_key.pub"  # the public key's name in a release, beside edge.toml


def require_signatures(config_text: str, config_data: dict, trusted_key: Path | None) -> str:
    """The config text with `trusted_key = "trusted_key.pub"` when a trusted key is given (the release ships
    the key under that name). A config that names a key of its own needs --trusted-key to ship it."""
    named = config_data.get("trusted_key")
    if trusted_key is None:
        if named is not None:
            raise ReleaseError(f"the service config requires signed bundles (trusted_key = {named!r}): pass "
                               "--trusted-key PUBLIC_KEY (TRUSTED_KEY= for make deploy) so the release ships it")
        return config_text
    if named is None:  # top-level keys go before the first table
        return f'trusted_key = "{TRUSTED_KEY_NAME}"  # bundles must be signed with this key\n' + config_text
    if named != TRUSTED_KEY_NAME:
        raise ReleaseError(f"the service config's trusted_key is {named!r}; in a release it must be "
                           f"{TRUSTED_KEY_NAME!r} (the copy of --trusted-key the release ships)")
    return config_text


def check_service_config(text: str, where: Path):
    """Parse the config with the service's own reader, so a typo is refused here and not at the
    device's first start (relative paths are resolved, not required to exist). Returns the ServiceConfig."""
    from edge_runtime.service.config import ConfigError, parse_config

    try:
        return parse_config(text, where)
    except ConfigError as e:
        raise ReleaseError(f"service config refused: {e}") from None


# ---------------------------------------------------------------- the systemd unit

DEVICE_CONFIG = Path("/opt/edge-rnn/current/edge.toml")  # where the unit points the service (relative paths)
DEVICE_STATE_DIR = Path("/var/lib/edge-rnn")  # the unit's StateDirectory=, writable already
UNIT_PATH = re.compile(r"/[A-Za-z0-9._/+-]*")  # a path a unit line can hold without quoting or % escapes
SERIAL_GROUP = "dialout"  # owns /dev/ttyUSB*, ttyACM*, ttyAMA*, serial0 on Raspberry Pi OS


def unit_path(path: Path | str, what: str) -> str:
    text = str(path)
    if not UNIT_PATH.fullmatch(text) or "/../" in text + "/":
        raise ReleaseError(f"{what} {text[:120]!r}: the unit can only name absolute paths of letters, digits "
                           "and ._/+- (no spaces, no '..')")
    return text


def release_unit(config_text: str, template: str | None = None) -> str:
    """The unit this config needs: the template's sandbox with LimitNOFILE for its TCP connection cap,
    ReadWritePaths for a state_dir or JSON-lines file outside /var/lib/edge-rnn, and for a serial source
    that port only (PrivateDevices=no, DevicePolicy=closed, DeviceAllow) and the dialout group."""
    from edge_runtime.service.sources import FD_RESERVE

    unit = UNIT_FILE.read_text() if template is None else template
    config = check_service_config(config_text, DEVICE_CONFIG)  # relative paths resolved as on the device
    tcp = config.sources.get("tcp")
    fds = (tcp.max_connections if tcp else 0) + 2 * FD_RESERVE  # the service needs cap + FD_RESERVE; slack
    unit = replace_line(unit, "LimitNOFILE=", f"LimitNOFILE={max(fds, 256)}")
    writable = [config.state_dir]
    if "jsonl" in config.sinks and config.sinks["jsonl"].path != "-":
        writable.append(Path(config.sinks["jsonl"].path).parent)  # rotation renames within the folder
    extra = sorted({unit_path(p, "writable path") for p in writable if not Path(p).is_relative_to(DEVICE_STATE_DIR)})
    if extra:  # "-": a folder missing on the device is skipped, not a failed start
        unit = replace_line(unit, "ReadWritePaths=", " ".join(["ReadWritePaths=/var/lib/edge-rnn",
                                                               *(f"-{p}" for p in extra)]))
    if "serial" in config.sources:
        port = unit_path(config.sources["serial"].port, "[sources.serial].port")
        unit = replace_line(unit, "PrivateDevices=", "\n".join([
            "PrivateDevices=no", "DevicePolicy=closed", f"DeviceAllow={port} rw",
            f"SupplementaryGroups={SERIAL_GROUP}"]))
    return unit


def replace_line(unit: str, prefix: str, new: str) -> str:
    """The unit with its one line starting with `prefix` replaced (the template must have exactly one)."""
    lines = unit.splitlines(keepends=True)
    found = [i for i, line in enumerate(lines) if line.startswith(prefix)]
    if len(found) != 1:
        raise ReleaseError(f"{UNIT_FILE.name}: expected one {prefix} line, found {len(found)}")
    lines[found[0]] = new + "\n"
    return "".join(lines)


# ---------------------------------------------------------------- bundles and runtime

def choose_bundle(source: Path, variant: str | None, allow_not_deployable: bool = False,
                  trusted_key: Path | None = None) -> BundleChoice:
    """Read and verify a bundle as the device will (manifest, size and sha256 of the variant file, and
    with trusted_key its signature).

    A variant convert did not mark deployable (over its MSE budget, not below persistence, or
    drifting: edge_runtime.manifest.why_not_deployable) is refused with every reason, unless
    allow_not_deployable (`--allow-not-deployable`) says the user knows.
    """
    manifest = read_manifest(source, trusted_key)
    check_bundle_name(manifest.name, source)
    chosen = manifest.variant(variant)
    budget = manifest.raw.get("deployable_rule", {}).get("max_mse_ratio", DEFAULT_MAX_MSE_RATIO)
    reasons = why_not_deployable(manifest, chosen, budget)
    if reasons and not allow_not_deployable:
        raise ReleaseError(f"{source}: variant {chosen.name!r} is not deployable: {'; '.join(reasons)} "
                           "(choose another with --variant or the config's `variant`, or pass --allow-not-deployable)")
    verified_model_bytes(manifest, chosen)
    compat = chosen.raw.get("compatibility", {})
    opens_in = [runtime for runtime in RUNTIME_PREFERENCE if compat.get(runtime, None) is None]
    return BundleChoice(manifest.name, source, chosen.name, manifest.sha256, chosen.sha256, opens_in)


def choose_runtime(bundles: list[BundleChoice], wanted: str | None = None) -> str:
    """The interpreter every chosen variant opens in, from the manifests' compatibility tables."""
    candidates = [wanted] if wanted else list(RUNTIME_PREFERENCE)
    for runtime in candidates:
        if runtime not in RUNTIME_PACKAGES:
            raise ReleaseError(f"unknown runtime {runtime!r}; choose one of {', '.join(RUNTIME_PACKAGES)}")
        if all(runtime in b.opens_in for b in bundles):
            return runtime
    refused = "; ".join(f"{b.name}/{b.variant} opens in {b.opens_in or 'no supported runtime'}" for b in bundles)
    raise ReleaseError(f"no single runtime opens every bundle variant ({refused})")


# ---------------------------------------------------------------- the edge_runtime wheel

# The device's `edge-rnn` command with the device subcommands only (edge_runtime/frontdoor.py finds them);
# the laptop's pyproject.toml declares every stage.
DEVICE_ENTRY_POINTS = """[console_scripts]
edge-rnn = edge_runtime.frontdoor:main

[edge_rnn.commands]
run = edge_runtime.cli:run_main
serve = edge_runtime.cli:serve_main
complete = edge_runtime.cli:complete_main
info = edge_runtime.cli:info_main
"""


RUNTIME_SUFFIXES = (".py", ".html", ".js")


def build_runtime_wheel(out_dir: Path, numpy_pin: str) -> Path:
    """A wheel holding only edge_runtime/ (what the device needs), written deterministically."""
    import edge_runtime

    version = edge_runtime.__version__
    dist_info = f"{WHEEL_NAME}-{version}.dist-info"
    files: dict[str, bytes] = {}
    package = ROOT / "edge_runtime"
    # the code, and the live page's static files (edge_runtime/service/static/)
    for path in sorted(p for p in package.rglob("*") if p.suffix in RUNTIME_SUFFIXES and "__pycache__" not in p.parts):
        files[f"edge_runtime/{path.relative_to(package).as_posix()}"] = path.read_bytes()
    files[f"{dist_info}/METADATA"] = (
        f"Metadata-Version: 2.1\nName: edge-rnn-runtime\nVersion: {version}\n"
        "Summary: edge-rnn's device runtime (numpy + one TFLite interpreter)\n"
        f"Requires-Python: =={TARGET_PYTHON}.*\nRequires-Dist: numpy=={numpy_pin}\n").encode()
    files[f"{dist_info}/entry_points.txt"] = DEVICE_ENTRY_POINTS.encode()
    files[f"{dist_info}/WHEEL"] = b"Wheel-Version: 1.0\nGenerator: edge-rnn deploy\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append(f"{dist_info}/RECORD,,")
    files[f"{dist_info}/RECORD"] = ("\n".join(record) + "\n").encode()
    wheel = out_dir / f"{WHEEL_NAME}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=(2020, 1, 1, 0, 0, 0))  # fixed: same input, same bytes
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, data)
    return wheel


# ---------------------------------------------------------------- the wheelhouse

@dataclass
class LockedPackage:
    version: str
    hashes: list[str]  # "sha256:..." of every file of that version
    needed_by: set[str]  # the locked packages that depend on it (uv's "# via" lines)

    def requirement(self, name: str) -> str:
        return f"{name}=={self.version} " + " ".join(f"--hash={h}" for h in self.hashes)


def read_lock(path: Path) -> dict[str, LockedPackage]:
    """name (normalized) -> its pin, hashes and dependants, from a `uv pip compile --generate-hashes` file."""
    locked: dict[str, LockedPackage] = {}
    current = None
    for line in path.read_text().splitlines():
        text = line.strip()
        if m := re.match(r"([A-Za-z0-9_.\-]+)==([^\s\\]+)", line):
            current = locked.setdefault(normalize(m.group(1)), LockedPackage(m.group(2), [], set()))
        elif current and text.startswith("--hash="):
            current.hashes.append(text.removeprefix("--hash=").rstrip(" \\"))
        elif current and (m := re.match(r"#\s+(?:via\s+)?([A-Za-z0-9_.\-]+)$", text)) and m.group(1) != "via":
            current.needed_by.add(normalize(m.group(1)))
    return locked


def locked_requirements(wanted: dict[str, str], runtime_package: str, arch: str = "aarch64") -> list[str]:
    """The wanted packages and everything they pull in, each `name==version --hash=...` from the device lock
    of this interpreter; refused when the lock and pyproject.toml's pins disagree."""
    path = Path(str(DEVICE_LOCK).format(arch=arch, runtime=runtime_package))
    if not path.exists():
        raise ReleaseError(f"no device lock {path.relative_to(ROOT)}: run `make lock`")
    locked = read_lock(path)
    for name, version in wanted.items():
        if name not in locked or locked[name].version != version:
            found = locked[name].version if name in locked else "missing"
            raise ReleaseError(f"{path.name}: {name} is {found}, pyproject.toml pins {version}: run `make lock`")
    needed = set(wanted)
    while extra := {name for name, p in locked.items() if name not in needed and p.needed_by & needed}:
        needed |= extra
    return [locked[name].requirement(name) for name in sorted(needed)]


def wheelhouse(requirements: list[str], arch: str = "aarch64", cache: Path = CACHE_DIR) -> Path:
    """pip download the target's wheels (binary only, cp311, every platform tag named, every file's sha256
    checked against the requirements' --hash) into a cache."""
    if arch not in PLATFORM_TAGS:
        raise ReleaseError(f"no wheelhouse recipe for {arch}")
    key = hashlib.sha256(json.dumps([sorted(requirements), arch, TARGET_PYTHON]).encode()).hexdigest()[:12]
    folder = cache / f"wheelhouse-{arch}-{key}"
    if (folder / ".complete").exists():
        return folder
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    requirements_file = partial / "requirements.txt"  # --hash is only allowed in a requirements file
    requirements_file.write_text("\n".join(requirements) + "\n")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
           "--require-hashes", "--only-binary=:all:", "--python-version", TARGET_PYTHON, "--implementation", "cp",
           "--abi", "cp" + TARGET_PYTHON.replace(".", "")]
    for tag in PLATFORM_TAGS[arch]:
        cmd += ["--platform", tag]
    result = subprocess.run([*cmd, "-d", str(partial), "-r", str(requirements_file)], text=True, capture_output=True)
    if result.returncode != 0:
        raise ReleaseError(f"pip download for {arch} failed: {result.stderr.strip()[-1500:]}")
    requirements_file.unlink()
    (partial / ".complete").touch()
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)
    return folder


def wheel_versions(folder: Path) -> dict[str, str]:
    """distribution (normalized) -> version, from wheel file names."""
    found = {}
    for wheel in folder.glob("*.whl"):
        name, version = wheel.name.split("-")[:2]
        found[normalize(name)] = version
    return found


def verify_wheelhouse(folder: Path, expected: dict[str, str], arch: str = "aarch64") -> dict[str, str]:
    """Every pinned package present at its pinned version, every binary wheel for the target."""
    versions = wheel_versions(folder)
    for name, version in expected.items():
        if versions.get(name) != version:
            raise ReleaseError(f"wheelhouse {folder}: {name} is {versions.get(name, 'missing')}, pinned {version}")
    for wheel in folder.glob("*.whl"):
        platform = wheel.stem.split("-")[-1]
        if platform != "any" and not any(tag in platform for tag in PLATFORM_TAGS[arch]):
            raise ReleaseError(f"wheelhouse {folder}: {wheel.name} is not built for {arch}")
    return versions


# ---------------------------------------------------------------- assembling a release

def served_bundle(config: dict, bundles: list[BundleChoice]) -> dict:
    """The bundle the service config names (its sha256 is what status.json must show)."""
    path = config["bundle"].rstrip("/")
    chosen = next(b for b in bundles if f"bundles/{b.name}" == path)
    return {"name": chosen.name, "manifest_sha256": chosen.manifest_sha256}


def default_config(bundles: list[BundleChoice]) -> str:
    """The service config when none is given: first bundle, TCP source on the device's loopback,
    JSON-lines predictions in the state folder."""
    return (f'# edge-rnn service config written by `make deploy` (no CONFIG= given)\n'
            f'bundle = "bundles/{bundles[0].name}"\n'
            f'variant = "{bundles[0].variant}"\n'
            f'state_dir = "/var/lib/edge-rnn"\n\n'
            f'[sources.tcp]\nhost = "127.0.0.1"\nport = 7878\n\n'
            f'[sinks.jsonl]\npath = "/var/lib/edge-rnn/predictions.jsonl"\n')


def build_release(bundle_dirs: list[Path], config: Path | None = None, out_root: Path = ROOT / "build" / "releases",
                  runtime: str | None = None, arch: str = "aarch64", variant: str | None = None,
                  log=print, allow_not_deployable: bool = False, trusted_key: Path | None = None) -> Release:
    """Verify the inputs, fetch and check the wheelhouse, and write build/releases/<version>/.

    trusted_key: an Ed25519 public key (PEM). Every bundle must be signed with it (checked here), the
    release ships it and the service config requires it, and cryptography joins the wheelhouse.
    """
    if not bundle_dirs:
        raise ReleaseError("no bundles given (BUNDLES=artifacts/<name> ...)")
    config_text = read_config_text(config) if config else None
    config_data = read_config(config) if config else {}
    wanted_variant = variant or config_variant(config_data)
    try:
        bundles = [choose_bundle(Path(b), wanted_variant, allow_not_deployable, trusted_key) for b in bundle_dirs]
    except BundleError as e:
        raise BundleRefused(f"bundle refused: {e}") from None
    names = [b.name for b in bundles]
    if len(set(names)) != len(names):
        raise ReleaseError(f"two bundles share a name: {names}")
    if config_text is None:
        config_text = default_config(bundles)
        config_data = tomllib.loads(config_text)
    config_text = require_signatures(config_text, config_data, trusted_key)
    config_data = tomllib.loads(config_text)
    if not isinstance(config_data.get("bundle"), str):
        raise ReleaseError(f"{config}: the service config has no top-level 'bundle' (e.g. bundle = \"bundles/{names[0]}\")")
    for path in config_bundle_paths(config_data):
        if path.rstrip("/") not in {f"bundles/{n}" for n in names}:
            raise ReleaseError(f"config bundle {path!r} is not in the release; ship it with BUNDLES= and "
                               f"refer to it as bundles/<name> (release has {', '.join('bundles/' + n for n in names)})")
    chosen_runtime = choose_runtime(bundles, runtime)
    pinned = pins()
    runtime_package = RUNTIME_PACKAGES[chosen_runtime]
    # orjson: the service's record encoder; without it the service runs as well, encoding ~4 us a record slower
    wanted = {"numpy": pinned["numpy"], runtime_package: pinned[runtime_package], "orjson": pinned["orjson"]}
    check_service_config(config_text, (config or Path("edge.toml")).resolve())
    for extra in extra_packages(config_data):
        if extra not in pinned:
            raise ReleaseError(f"the config needs {extra}, which pyproject.toml does not pin")
        wanted[extra] = pinned[extra]
    log(f"runtime {runtime_package}=={wanted[runtime_package]} (every variant opens in it: "
        f"{', '.join(f'{b.name}/{b.variant}' for b in bundles)})")
    house = wheelhouse(locked_requirements(wanted, runtime_package, arch), arch)
    versions = verify_wheelhouse(house, wanted, arch)

    out_root.mkdir(parents=True, exist_ok=True)
    staging = out_root / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "wheels").mkdir(parents=True)
    runtime_wheel = build_runtime_wheel(staging / "wheels", pinned["numpy"])
    for wheel in house.glob("*.whl"):
        shutil.copy2(wheel, staging / "wheels" / wheel.name)
    for b in bundles:
        target = staging / "bundles" / b.name
        target.mkdir(parents=True)
        for file in sorted(b.source.iterdir()):
            if file.name in ("manifest.json", SIGNATURE_NAME) or file.suffix in (".tflite", ".npz"):  # npz: a lexicon
                shutil.copy2(file, target / file.name)
    (staging / "edge.toml").write_text(config_text)
    if trusted_key is not None:
        shutil.copyfile(trusted_key, staging / TRUSTED_KEY_NAME)
    (staging / "edge-rnn.service").write_text(release_unit(config_text))

    environment = hashlib.sha256()  # what the venv is made of: releases with equal wheels share one
    for wheel in sorted((staging / "wheels").glob("*.whl")):
        environment.update(wheel.name.encode() + b"\0" + hashlib.sha256(wheel.read_bytes()).digest())
    content = hashlib.sha256()
    for path in sorted(p for p in staging.rglob("*") if p.is_file()):
        content.update(path.relative_to(staging).as_posix().encode() + b"\0" + path.read_bytes())
    import edge_runtime
    version = f"{edge_runtime.__version__}-{content.hexdigest()[:10]}"
    packages = {**versions, "edge-rnn-runtime": edge_runtime.__version__}
    info = {"version": version, "arch": arch, "python": TARGET_PYTHON, "runtime": chosen_runtime,
            "edge_runtime_wheel": runtime_wheel.name, "packages": packages,
            "install": sorted(f"{n}=={v}" for n, v in {**wanted, "edge-rnn-runtime": edge_runtime.__version__}.items()),
            "bundles": [{"name": b.name, "variant": b.variant, "manifest_sha256": b.manifest_sha256,
                         "variant_sha256": b.variant_sha256, "opens_in": b.opens_in} for b in bundles],
            "serves": served_bundle(config_data, bundles),
            "trusted_key": TRUSTED_KEY_NAME if trusted_key is not None else None,
            "environment": environment.hexdigest()[:16],
            "config": "edge.toml", "unit": "edge-rnn.service"}
    (staging / "release.json").write_text(json.dumps(info, indent=1) + "\n")
    final = out_root / version
    if final.exists():
        shutil.rmtree(staging)  # identical content already built
    else:
        staging.rename(final)
    size = sum(p.stat().st_size for p in final.rglob("*") if p.is_file())
    log(f"release {version}: {len(bundles)} bundle(s), {len(packages)} packages, {size / 1e6:.1f} MB -> {final}")
    return Release(version, final, chosen_runtime, packages, bundles)
