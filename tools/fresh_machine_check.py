"""Prove the README's two commands on a fresh machine: `make demo`, then `make test`, from nothing.

    python3 tools/fresh_machine_check.py [--commit REV] [--only demo|test] [--pytest-addopts "..."] [--no-nested-pi]
    make fresh-check [COMMIT=REV] [FRESH_PYTEST="..."]

1. Builds once (cached in ~/.cache/edge-rnn/, keyed by a hash of the recipe below) a clean Debian
   bookworm amd64 root file system with mmdebstrap, holding only what a new machine of this kind has
   before the project installs anything (FRESH_PACKAGES), and unpacks a new copy for every run.
2. Reproduces what this kind of machine provides besides Debian packages: its pip configuration
   (the config files pip reads, the PIP_* environment), the files it names (constraints, the CA
   bundle, with the machine's own CA certificates), and the local folders it names (find-links wheel
   folders, file:// indexes), bound read-only at the same paths.
3. Clones the given commit (default: HEAD of this checkout; committed work only) into /root/edge-rnn
   inside and runs `make demo` and then `make test` there as root, like CI, with systemd-nspawn
   (the same tool as the emulated Pi). Nothing is installed by hand: the Makefile must do it.
4. Prints each command's exit code and time, and the tail of the log of any that failed. Full logs:
   build/fresh-check/<time>/ (gitignored), summary in summary.json there.

The emulated-Pi tests run inside too: systemd-nspawn nests (the Pi boots with its own systemd in a
container inside the fresh root's container; measured, see docs/DESIGN-NOTES.md). The host registers
the arm64 binfmt handler first: binfmt_misc is the kernel's, and /proc/sys is read-only inside. Where
nspawn cannot nest, --no-nested-pi sets EDGE_RNN_NO_NESTED_PI=1: tests/test_deploy_pi.py then proves
the emulator's install path only (the Makefile's PI_EMU_PACKAGES, then the Pi rootfs built with
mmdebstrap) and skips the boots with that reason.

Needs root, mmdebstrap, systemd-nspawn, zstd, git. Standard library only.
"""
from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script: the emulated Pi's helpers (same cache, binfmt setup) from this checkout
from deploy.emulator import pi as pi_emu  # noqa: E402  (after the path insert above)

SUITE = "bookworm"
# What a new machine of this kind has before the project installs anything: Python 3.11 with pip
# and venv, a C/C++ toolchain, make, git, TLS roots, and the usual shell tools.
FRESH_PACKAGES = ("python3", "python3-pip", "python3-venv", "python3-dev", "gcc", "g++", "make", "git",
                  "ca-certificates", "curl", "xz-utils", "procps", "less", "locales", "tzdata")
RECIPE_VERSION = 1  # bump when the build steps below change what the tarball holds
# The pip configuration files pip reads for root (global, site-wide XDG, user); copied in when present.
PIP_CONFIG_FILES = (Path("/etc/pip.conf"), Path("/etc/xdg/pip"), Path.home() / ".config" / "pip",
                    Path.home() / ".pip")
# CA certificates this machine adds to Debian's (its HTTPS egress to PyPI is signed by one)
LOCAL_CA_CERTS = Path("/usr/local/share/ca-certificates")
CLONE_IN_GUEST = "/root/edge-rnn"
NO_NESTED_PI_ENV = "EDGE_RNN_NO_NESTED_PI"
LOG_TAIL_LINES = 60
ANSI_COLOR = re.compile(r"\x1b\[[0-9;]*m")


class CheckError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[fresh-check] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- the clean root, built once

def host_apt_sources() -> Path | None:
    """This machine's Debian sources (its mirror and suites): the fresh root uses the same ones."""
    deb822 = Path("/etc/apt/sources.list.d/debian.sources")
    return deb822 if deb822.exists() else None


def recipe_digest() -> str:
    sources = host_apt_sources()
    recipe = [RECIPE_VERSION, SUITE, FRESH_PACKAGES, sources.read_text() if sources else ""]
    return hashlib.sha256(json.dumps(recipe).encode()).hexdigest()[:10]


def rootfs_tarball(cache: Path = pi_emu.CACHE_DIR) -> Path:
    return cache / f"fresh-rootfs-{SUITE}-amd64-{recipe_digest()}.tar.zst"


def build_rootfs_tarball(cache: Path = pi_emu.CACHE_DIR) -> Path:
    """mmdebstrap the clean bookworm amd64 root into a zstd tarball (a few minutes, once)."""
    tarball = rootfs_tarball(cache)
    if tarball.exists():
        return tarball
    cache.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_name(tarball.name + ".partial.tar.zst")
    sources = host_apt_sources()
    cmd = ["mmdebstrap", "--arch=amd64", "--variant=apt", "--mode=root", "--quiet",
           f"--include={','.join(FRESH_PACKAGES)}",
           # a snapshot mirror's Release files are past their Valid-Until date; the host accepts them too
           "--aptopt=Acquire::Check-Valid-Until \"false\"",
           "--customize-hook=echo fresh > \"$1/etc/hostname\"",
           "--customize-hook=rm -rf \"$1\"/var/lib/apt/lists/* \"$1\"/var/cache/apt/*.bin",
           SUITE, str(partial)]
    if sources:
        cmd.append(str(sources))
    return pi_emu.build_tarball(cmd, partial, tarball, f"the clean {SUITE} amd64 root")


# ---------------------------------------------------------------- what this kind of machine provides

def pip_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith("PIP_")}


def pip_config_values() -> list[str]:
    """Every value in the pip config files and PIP_* variables (to find the local paths they name)."""
    values = list(pip_environment().values())
    for entry in PIP_CONFIG_FILES:
        files = sorted(entry.glob("*.conf")) if entry.is_dir() else [entry] if entry.is_file() else []
        for path in files:
            parser = configparser.ConfigParser(interpolation=None)
            parser.read(path)
            values += [v for section in parser.sections() for v in parser[section].values()]
    return values


def local_paths_named(values: list[str]) -> tuple[list[Path], list[Path]]:
    """Local (files, folders) named by pip settings: plain absolute paths and file:// URLs. A file://
    index (.../simple) is bound with its parent, where its links point."""
    files, folders = set(), set()
    for word in (w for v in values for w in v.split()):
        path = Path(urlparse(word).path) if word.startswith("file://") else Path(word) if word.startswith("/") else None
        if path is None or not path.exists():
            continue
        if path.is_file():
            files.add(path)
        else:
            folders.add(path.parent if path.name == "simple" else path)
    # one bind per top folder: drop folders inside another
    top = sorted(p for p in folders if not any(q != p and q in p.parents for q in folders))
    return sorted(files), top


def provide_machine_setup(rootfs: Path) -> tuple[list[str], dict[str, str]]:
    """Copy in the pip config files, the files they name (the CA bundle, constraints) and the local
    CA certificates; return nspawn bind options for the folders they name, and pip's environment."""
    files, folders = local_paths_named(pip_config_values())
    for entry in (*PIP_CONFIG_FILES, *files, LOCAL_CA_CERTS):
        if entry.exists():
            target = rootfs / entry.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if entry.is_dir():
                shutil.copytree(entry, target, dirs_exist_ok=True)
            else:
                shutil.copy2(entry, target)
    binds = [f"--bind-ro={p}" for p in folders if not (rootfs / p.relative_to("/")).exists()]
    return binds, pip_environment()


# ---------------------------------------------------------------- the clone and the commands

def resolve_commit(rev: str) -> str:
    result = pi_emu.run("git", "-C", str(ROOT), "rev-parse", "--verify", f"{rev}^{{commit}}", check=False)
    if result.returncode != 0:
        raise CheckError(f"no commit {rev!r} in {ROOT}")
    return result.stdout.strip()


def clone_into(rootfs: Path, commit: str) -> None:
    clone = rootfs / CLONE_IN_GUEST.lstrip("/")
    common = pi_emu.run("git", "-C", str(ROOT), "rev-parse", "--path-format=absolute", "--git-common-dir").stdout.strip()
    pi_emu.run("git", "clone", "--quiet", "--no-local", "--no-checkout", common, str(clone))
    if pi_emu.run("git", "-C", str(clone), "cat-file", "-e", f"{commit}^{{commit}}", check=False).returncode != 0:
        pi_emu.run("git", "-C", str(clone), "fetch", "--quiet", "origin", commit)
    pi_emu.run("git", "-C", str(clone), "-c", "advice.detachedHead=false", "checkout", "--quiet", commit)


def nspawn_command(rootfs: Path, binds: list[str], env: dict[str, str], scratch: Path, shell: str) -> list[str]:
    machine = "fresh-" + hashlib.sha256(str(rootfs).encode()).hexdigest()[:8]
    return ["systemd-nspawn", "-D", str(rootfs), "--quiet", "--register=no", "--keep-unit", "--as-pid2",
            "--console=pipe",  # plain pipes, no pty: logs without colours or pagers, like CI
            f"--machine={machine}", f"--chdir={CLONE_IN_GUEST}",
            # pytest's and the Pi rootfs's temporary files go to disk, not to nspawn's tmpfs /tmp
            f"--bind={scratch}:/tmp", *binds,
            *(f"--setenv={k}={v}" for k, v in env.items()),
            "--setenv=HOME=/root", "--setenv=LANG=C.UTF-8", "--", "/bin/bash", "-lc", shell]


def run_logged(cmd: list[str], log_path: Path, timeout: float) -> tuple[int, float]:
    started = time.monotonic()
    with open(log_path, "wb") as out:
        try:
            code = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=timeout, check=False).returncode
        except subprocess.TimeoutExpired:
            out.write(f"\n[fresh-check] timed out after {timeout:.0f} s\n".encode())
            code = 124
    return code, time.monotonic() - started


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def error_lines(path: Path, limit: int = 20) -> list[str]:
    """pytest's `E   ...` lines, each once, in order: what actually went wrong, without the tracebacks."""
    seen: dict[str, None] = {}
    for line in ANSI_COLOR.sub("", path.read_text(errors="replace")).splitlines():
        if line.startswith("E ") and line[1:].strip():
            seen.setdefault(line[1:].strip(), None)
    return list(seen)[:limit]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tools/fresh_machine_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--commit", default="HEAD", help="what to clone (default: HEAD of this checkout)")
    p.add_argument("--only", choices=["demo", "test"], help="run one of the two commands only")
    p.add_argument("--pytest-addopts", default="",
                   help='narrow `make test` (PYTEST_ADDOPTS inside), e.g. "tests/test_deploy_pi.py"')
    p.add_argument("--out", type=Path, default=ROOT / "build" / "fresh-check", help="where the logs go")
    p.add_argument("--timeout", type=float, default=3 * 3600, help="per command, seconds")
    p.add_argument("--keep", action="store_true", help="keep the unpacked root and its /tmp afterwards (to look inside)")
    p.add_argument("--no-nested-pi", action="store_true",
                   help=f"where systemd-nspawn cannot nest: {NO_NESTED_PI_ENV}=1, the emulated-Pi tests prove "
                        "their install path only and skip the boots")
    args = p.parse_args(argv)
    if os.geteuid() != 0:
        print("error: the fresh-machine check needs root (mmdebstrap, systemd-nspawn)", file=sys.stderr)
        return 2
    for tool in ("mmdebstrap", "systemd-nspawn", "zstd", "git"):
        if shutil.which(tool) is None:
            print(f"error: {tool} not found (make fresh-check installs it)", file=sys.stderr)
            return 2
    run_dir = args.out / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    run_dir.mkdir(parents=True)
    rootfs = run_dir / "rootfs"
    try:
        commit = resolve_commit(args.commit)
        phases, binds, env = prepare_root(rootfs, commit)
    except (CheckError, pi_emu.EmulatorError) as e:
        print(f"error: {e}", file=sys.stderr)
        shutil.rmtree(rootfs, ignore_errors=True)
        return 2
    log(f"commit {commit[:12]} cloned into {rootfs}{CLONE_IN_GUEST}; binds: {' '.join(binds) or 'none'}")
    env = {**env, "PY_COLORS": "0", "NO_COLOR": "1", "TERM": "dumb"}  # plain logs
    if args.no_nested_pi:
        env[NO_NESTED_PI_ENV] = "1"
    if args.pytest_addopts:
        env["PYTEST_ADDOPTS"] = args.pytest_addopts
    for name in [c for c in ("demo", "test") if args.only in (None, c)]:
        phases.append(run_make(name, nspawn_command(rootfs, binds, env, run_dir / "tmp", f"make {name}"),
                               run_dir, args.timeout))
    failed = [phase["phase"] for phase in phases if phase.get("exit", 0) != 0]
    summary = {"commit": commit, "pytest_addopts": args.pytest_addopts, "phases": phases, "failed": failed}
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=1))
    print_summary(commit, phases, run_dir)
    if not args.keep:
        for folder in (rootfs, run_dir / "tmp"):
            shutil.rmtree(folder, ignore_errors=True)
    return 1 if failed else 0


def prepare_root(rootfs: Path, commit: str) -> tuple[list[dict], list[str], dict[str, str]]:
    """The clean root (built once), this machine's pip setup and a clone of `commit`, ready to run."""
    phases = []
    started = time.monotonic()
    tarball = build_rootfs_tarball()
    phases.append({"phase": "clean root (cached tarball)", "seconds": round(time.monotonic() - started, 1)})
    started = time.monotonic()
    pi_emu.unpack_tarball(tarball, rootfs)
    binds, env = provide_machine_setup(rootfs)
    clone_into(rootfs, commit)
    # the arm64 binfmt handler is the kernel's (read-only inside a container): registered from out here
    pi_emu.register_binfmt(pi_emu.build_wrapper(pi_emu.CACHE_DIR))
    scratch = rootfs.parent / "tmp"
    scratch.mkdir(exist_ok=True)
    scratch.chmod(0o1777)  # like /tmp: apt's gpgv runs as the _apt user (mkdir's mode is masked)
    phases.append({"phase": "unpack + machine setup + clone", "seconds": round(time.monotonic() - started, 1)})
    return phases, binds, env


def run_make(name: str, cmd: list[str], run_dir: Path, timeout: float) -> dict:
    """One `make NAME` inside, logged; on failure print the log's tail and pytest's error lines."""
    log_path = run_dir / f"make-{name}.log"
    log(f"make {name} ... (log: {log_path})")
    code, seconds = run_logged(cmd, log_path, timeout)
    phase = {"phase": f"make {name}", "exit": code, "seconds": round(seconds, 1), "log": str(log_path)}
    log(f"make {name}: exit {code} in {seconds / 60:.1f} min")
    if code != 0:
        print(f"---- make {name} failed (exit {code}); last {LOG_TAIL_LINES} lines of {log_path}:\n"
              f"{tail(log_path)}\n----", flush=True)
        phase["errors"] = error_lines(log_path)
        if phase["errors"]:
            print("errors raised (pytest's E lines, each once):\n  " + "\n  ".join(phase["errors"]), flush=True)
    return phase


def print_summary(commit: str, phases: list[dict], run_dir: Path) -> None:
    print(f"fresh-machine check of {commit[:12]}:")
    for phase in phases:
        status = "" if "exit" not in phase else ("  ok" if phase["exit"] == 0 else f"  FAILED (exit {phase['exit']})")
        print(f"  {phase['phase']:<34} {phase['seconds'] / 60:6.1f} min{status}")
    print(f"logs: {run_dir}")

if __name__ == "__main__":
    sys.exit(main())
