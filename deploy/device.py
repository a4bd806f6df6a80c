"""What `make deploy`, `make rollback` and `make deploy-status` do on the device.

    /opt/edge-rnn/releases/<version>/   one folder per release (+ its venv, installed offline)
    /opt/edge-rnn/current  -> releases/<version>   the running release (switched with one rename)
    /opt/edge-rnn/previous -> releases/<version>   what `make rollback` returns to
    /var/lib/edge-rnn/                  snapshots, status.json: outside releases, survive upgrades
    /etc/systemd/system/edge-rnn.service copied from the current release on each switch

Order: preflight (read only) -> push -> venv + offline install -> smoke step -> switch -> restart ->
health check (status.json) -> prune; a failed health check switches back and restarts the previous
release. Under DRY_RUN every step that would change the device is printed instead of run.
"""
from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from deploy.release import PLATFORM_TAGS, RUNTIME_PACKAGES, TARGET_PYTHON, Release
from deploy.target import Target, TargetError

BASE = "/opt/edge-rnn"
RELEASES = f"{BASE}/releases"
VENVS = f"{BASE}/venvs"
STATE_DIR = "/var/lib/edge-rnn"
UNIT = "edge-rnn.service"
SERVICE_USER = "edge-rnn"
MIN_FREE_MB = 150  # the venv alone is ~100 MB once numpy and the interpreter are unpacked
# glibc a runtime's aarch64 wheel needs (tflite-runtime 2.14.0: manylinux_2_34 only)
MIN_GLIBC = {"tflite_runtime": (2, 34), "ai_edge_litert": (2, 27)}
REFUSED_ARCH = {
    "armv7l": "32-bit ARM: ai-edge-litert publishes no 32-bit ARM wheels and tflite-runtime 2.14.0 "
              "none for Python 3.11; install 64-bit Raspberry Pi OS (aarch64)",
    "armv6l": "32-bit ARMv6 (Pi Zero/1): no TFLite interpreter wheels for it; needs a 64-bit Pi (Zero 2, 3, 4, 5)",
}


class DeployError(RuntimeError):
    """The deploy stopped; the message says at which step and why."""


# Every value put into a device command goes through shlex.quote (q) or is an argument; release names
# and hashes are also checked to be plain names, because they become folders that root creates and deletes.
q = shlex.quote
PLAIN_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}")
PARK_SCRIPT = Path(__file__).with_name("park_snapshot.py")  # runs on the device, sent on stdin


def plain_name(value: str, what: str, empty_ok: bool = False) -> str:
    """A release version or venv hash as a plain folder name (no '/', no leading '.', no shell characters)."""
    if (empty_ok and value == "") or PLAIN_NAME.fullmatch(value):
        return value
    raise DeployError(f"{what} {value[:80]!r} is not a plain name (letters, digits, '.', '_', '+', '-')")


def release_dir(version: str) -> str:
    return f"{RELEASES}/{plain_name(version, 'release version')}"


@dataclass
class Facts:
    arch: str
    python: str
    venv: bool
    systemd: bool
    free_mb: int
    sudo: bool
    glibc: tuple[int, int]
    current: str  # version currently switched to, or ""
    previous: str
    installed: bool  # this release is already installed (and smoke-tested) on the device


FACTS_SCRIPT = r"""
echo arch=$(uname -m)
echo python=$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || echo none)
echo venv=$(python3 -c 'import ensurepip, venv' 2>/dev/null && echo yes || echo no)
echo systemd=$([ -d /run/systemd/system ] && echo yes || echo no)
d=/; [ -d /opt ] && d=/opt; [ -d /opt/edge-rnn ] && d=/opt/edge-rnn
echo free_kb=$(df -Pk "$d" | awk 'NR==2 {print $4}')
echo sudo=$(sudo -n true 2>/dev/null && echo yes || echo no)
echo glibc=$(getconf GNU_LIBC_VERSION 2>/dev/null | awk '{print $2}')
echo current=$(basename "$(readlink /opt/edge-rnn/current 2>/dev/null)" 2>/dev/null)
echo previous=$(basename "$(readlink /opt/edge-rnn/previous 2>/dev/null)" 2>/dev/null)
echo installed=$([ -f "/opt/edge-rnn/releases/$1/.smoke-ok" ] && echo yes || echo no)
"""


def gather_facts(target: Target, version: str) -> Facts:
    out = target.read(f"bash -s {q(version)} <<'EOF'\n{FACTS_SCRIPT}\nEOF", step="read the device's facts")
    kv = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    glibc = tuple(int(p) for p in (kv.get("glibc") or "0.0").split(".")[:2])
    current = plain_name(kv.get("current", ""), "the device's current release", empty_ok=True)
    previous = plain_name(kv.get("previous", ""), "the device's previous release", empty_ok=True)
    return Facts(kv.get("arch", "?"), kv.get("python", "none"), kv.get("venv") == "yes",
                 kv.get("systemd") == "yes", int(kv.get("free_kb") or 0) // 1024, kv.get("sudo") == "yes",
                 glibc, current, previous, kv.get("installed") == "yes")


def preflight(facts: Facts, release: Release, log=print) -> None:
    """Refuse a device that cannot run the release, naming every reason; change nothing."""
    info = release.info
    problems = []
    if facts.arch in REFUSED_ARCH:
        problems.append(f"architecture {facts.arch} is not supported: {REFUSED_ARCH[facts.arch]}")
    elif facts.arch != info["arch"]:
        problems.append(f"architecture {facts.arch}: this release's wheelhouse is for {info['arch']} "
                        f"({', '.join(PLATFORM_TAGS[info['arch']])})")
    if facts.python != TARGET_PYTHON:
        problems.append(f"python3 is {facts.python}, the wheelhouse is for Python {TARGET_PYTHON} "
                        "(64-bit Raspberry Pi OS bookworm has 3.11)")
    if not facts.venv:
        problems.append("python3 cannot create virtual environments: sudo apt install python3-venv")
    if not facts.systemd:
        problems.append("systemd is not running as init (/run/systemd/system missing): the service needs it")
    if not facts.sudo:
        problems.append("passwordless sudo is not available to the ssh user (installing to /opt needs root)")
    needed_mb = MIN_FREE_MB + 3 * release_size_mb(release)
    if facts.free_mb < needed_mb:
        problems.append(f"only {facts.free_mb} MB free under /opt, the release needs about {needed_mb} MB")
    runtime = info["runtime"]
    if facts.glibc < MIN_GLIBC[runtime]:
        problems.append(f"glibc {'.'.join(map(str, facts.glibc))} is older than "
                        f"{'.'.join(map(str, MIN_GLIBC[runtime]))}, which {RUNTIME_PACKAGES[runtime]}'s wheel needs")
    for b in info["bundles"]:
        if runtime not in b["opens_in"]:
            problems.append(f"bundle {b['name']} variant {b['variant']} does not open in {RUNTIME_PACKAGES[runtime]}")
    for line in (f"arch {facts.arch}, python {facts.python}, glibc {'.'.join(map(str, facts.glibc))}, "
                 f"systemd {'yes' if facts.systemd else 'no'}, {facts.free_mb} MB free, "
                 f"running release: {facts.current or 'none'}",
                 *(f"{b['name']}/{b['variant']} opens in {RUNTIME_PACKAGES[runtime]}: "
                   f"{'yes' if runtime in b['opens_in'] else 'NO'}" for b in info["bundles"])):
        log(f"    {line}")
    if problems:
        raise DeployError("preflight refused the device:\n  - " + "\n  - ".join(problems))
    log("  preflight passed")


def release_size_mb(release: Release) -> int:
    return int(sum(p.stat().st_size for p in release.path.rglob("*") if p.is_file()) / 1e6) + 1


# ---------------------------------------------------------------- install and smoke

def install(target: Target, release: Release, use_index: bool = False) -> None:
    """The release's venv: /opt/edge-rnn/venvs/<hash of its wheels>, shared by every release with the
    same wheels (pip under emulation or on an SD card is the slow step; a venv cannot be moved, so
    it is linked, not copied). Made once, marked complete only after pip succeeded."""
    here = release_dir(release.version)
    venv = f"{VENVS}/{plain_name(release.info['environment'], 'environment hash')}"
    source = "" if use_index else "--no-index "
    result = target.run(f"""set -e
if ! sudo test -f {q(venv + '/.complete')}; then
  sudo rm -rf -- {q(venv)}
  sudo python3 -m venv {q(venv)}
  sudo {q(venv + '/bin/pip')} install --quiet --disable-pip-version-check --no-cache-dir {source}\\
      --find-links {q(here + '/wheels')} {' '.join(q(r) for r in release.info['install'])}
  sudo touch {q(venv + '/.complete')}
  echo installed
fi
sudo ln -sfn -- {q(venv)} {q(here + '/venv')}
""", changes=True, step=f"install the venv from the wheelhouse ({'index allowed' if use_index else 'offline'}), "
                        f"shared as venvs/{release.info['environment']}")
    if not target.dry_run:
        target.log(f"    {'installed the wheels' if 'installed' in result.stdout else 'reused the venv of a release with the same wheels'}")


SMOKE_ROWS = 3


def smoke_csv(manifest: dict, rows: int = SMOKE_ROWS) -> str:
    """A few rows at the training mean of each channel: a valid input for any forecaster."""
    means = manifest["normalization"]["mean"]
    lines = ["index," + ",".join(manifest["channels"])]
    lines += [f"{i}," + ",".join(repr(float(m)) for m in means) for i in range(rows)]
    return "\n".join(lines) + "\n"


def smoke(target: Target, release: Release) -> None:
    """Load each bundle with the release's own venv and interpreter and step it a few times."""
    here = release_dir(release.version)
    for b in release.info["bundles"]:
        manifest = json.loads((release.path / "bundles" / b["name"] / "manifest.json").read_text())
        result = target.run(
            f"cd {q(here)} && sudo venv/bin/python -m edge_runtime run {q('bundles/' + b['name'])} "
            f"--variant {q(b['variant'])} --input -"
            + (f" --trusted-key {q(release.info['trusted_key'])}" if release.info.get("trusted_key") else ""),
            changes=True, step=f"smoke step: load {b['name']}/{b['variant']}, step it {SMOKE_ROWS} times",
            stdin=smoke_csv(manifest), check=False, timeout=300)
        if target.dry_run:
            continue
        if result.returncode != 0:
            raise DeployError(f"smoke step failed for bundle {b['name']}: {result.stderr.strip()[-1500:]}")
        rows = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        if len(rows) != SMOKE_ROWS or not all(all(abs(v) < float("inf") for v in r["prediction"]) for r in rows):
            raise DeployError(f"smoke step for {b['name']}: expected {SMOKE_ROWS} finite predictions, got {result.stdout!r}")
        target.log(f"    {b['name']}: {result.stderr.strip().splitlines()[-1] if result.stderr.strip() else ''}; "
                   f"prediction {rows[-1]['prediction']}")
    target.run(f"sudo touch {q(here + '/.smoke-ok')}", changes=True, step="mark the release installed")


# ---------------------------------------------------------------- switch, restart, health

def switch(target: Target, version: str, previous: str) -> None:
    """Point current at the release (one rename, atomic) and previous at what ran before."""
    here = release_dir(version)
    keep_previous = (f"sudo ln -sfn -- {q(release_dir(previous).removeprefix(BASE + '/'))} {q(BASE + '/previous.new')} "
                     f"&& sudo mv -T -- {q(BASE + '/previous.new')} {q(BASE + '/previous')}"
                     if previous and previous != version else f"sudo rm -f -- {q(BASE + '/previous')}")
    target.run(f"""set -e
id -u {q(SERVICE_USER)} >/dev/null 2>&1 || sudo useradd --system --no-create-home --home-dir {q(STATE_DIR)} \\
    --shell /usr/sbin/nologin {q(SERVICE_USER)}
{keep_previous}
sudo ln -sfn -- {q(here.removeprefix(BASE + '/'))} {q(BASE + '/current.new')} && sudo mv -T -- {q(BASE + '/current.new')} {q(BASE + '/current')}
sudo touch -- {q(here)}
sudo install -m 0644 -- {q(f'{BASE}/current/{UNIT}')} {q(f'/etc/systemd/system/{UNIT}')}
sudo systemctl daemon-reload
sudo systemctl enable --quiet {q(UNIT)}
""", changes=True, step=f"switch {BASE}/current -> releases/{version}" + (f" (previous: {previous})" if previous else ""))


def restart(target: Target, bundle_sha: str) -> float:
    """Stop the unit (the service writes its final snapshot), keep each bundle's snapshot apart, start.

    The service refuses a snapshot taken with another bundle. So when the snapshot was taken with another
    bundle than the one now served, it is parked as snapshots/<its sha256>.npz, and a parked snapshot of
    the bundle now served is put back: a rollback resumes the old streams where they were. The state
    folder is the service's, so its contents are untrusted: that step is deploy/park_snapshot.py, run by
    the release's python as root with the folder and sha256 as arguments (no shell sees them), which
    opens every file relative to the folder without following links (a crafted snapshot or a symlinked
    snapshots/ cannot make root move a file anywhere else).
    Returns the device's clock just before the start (for the health check)."""
    if bundle_sha and not re.fullmatch(r"[0-9a-f]{64}", bundle_sha):
        raise DeployError(f"served bundle sha256 {bundle_sha[:80]!r} is not a sha256")
    python = f"{BASE}/current/venv/bin/python"
    out = target.run(f"""set -e
sudo systemctl stop {q(UNIT)}
sudo {q(python)} - {q(STATE_DIR)} {q(bundle_sha)} || echo "snapshots not sorted (exit $?); the service decides" >&2
date +%s.%N
sudo systemctl start {q(UNIT)}
""", changes=True, step=f"restart {UNIT} (snapshots kept per bundle)", stdin=PARK_SCRIPT.read_text())
    for line in out.stderr.splitlines():
        target.log(f"    {line}")
    return float(out.stdout.split()[0]) if out.stdout.strip() else 0.0


STATUS_SCRIPT = f"""
echo "unit=$(systemctl is-active {q(UNIT)} 2>/dev/null)"
echo "main_pid=$(systemctl show -p MainPID --value {q(UNIT)} 2>/dev/null)"
echo "now=$(date +%s.%N)"
echo "current=$(basename "$(readlink {q(BASE + '/current')} 2>/dev/null)" 2>/dev/null)"
echo "previous=$(basename "$(readlink {q(BASE + '/previous')} 2>/dev/null)" 2>/dev/null)"
echo "status=$(sudo -n -u {q(SERVICE_USER)} cat -- {q(STATE_DIR + '/status.json')} 2>/dev/null | tr -d '\\n')"
"""


def read_status(target: Target) -> dict:
    out = target.read(STATUS_SCRIPT, check=False)
    kv = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
    try:
        kv["status"] = json.loads(kv.get("status") or "null")
    except json.JSONDecodeError:
        kv["status"] = None  # half-written never happens (atomic), but a foreign file might be there
    return kv


def health_problem(kv: dict, since: float, expected_sha: set[str]) -> str | None:
    """None when the service runs the expected bundle and refreshes its status; else what is wrong."""
    status = kv.get("status")
    if kv.get("unit") != "active":
        return f"unit is {kv.get('unit') or 'unknown'}"
    if not isinstance(status, dict):
        return f"{STATE_DIR}/status.json missing or unreadable"
    if str(status.get("pid")) != kv.get("main_pid"):
        return f"status.json is from pid {status.get('pid')}, the unit's main pid is {kv.get('main_pid')}"
    if status.get("state") != "running":
        return f"service state is {status.get('state')!r}"
    if float(status.get("started_unix", 0)) < since - 1:
        return "status.json is from before the restart"
    if float(kv.get("now", 0)) - float(status.get("updated_unix", 0)) > 5:
        return "status.json is not being refreshed (older than 5 s)"
    bundle_sha = (status.get("bundle") or {}).get("sha256")
    if expected_sha and bundle_sha not in expected_sha:
        return f"service runs bundle {str(bundle_sha)[:12]}..., the release ships {sorted(s[:12] for s in expected_sha)}"
    return None


def wait_healthy(target: Target, since: float, expected_sha: set[str], timeout: float) -> str | None:
    """Poll status.json until healthy (None) or timeout (the last problem seen)."""
    if target.dry_run:
        target.log(f"  [dry-run] would wait up to {timeout:.0f} s for {STATE_DIR}/status.json to show it running")
        return None
    deadline = time.monotonic() + timeout
    problem = "no status read yet"
    while time.monotonic() < deadline:
        problem = health_problem(read_status(target), since, expected_sha)
        if problem is None:
            return None
        time.sleep(1)
    return problem


def journal_tail(target: Target, lines: int = 20) -> str:
    return target.read(f"sudo journalctl -u {q(UNIT)} -n {int(lines)} --no-pager 2>&1 | tail -n {int(lines)}", check=False)


def prune(target: Target, keep: int) -> None:
    """Keep the newest `keep` releases (by switch time), never current or previous."""
    target.run(f"""set -e
cd {q(RELEASES)}
cur=$(basename "$(readlink {q(BASE + '/current')})"); prev=$(basename "$(readlink {q(BASE + '/previous')} 2>/dev/null)" 2>/dev/null || true)
ls -1t | tail -n +{int(keep) + 1} | while read -r r; do
  [ "$r" = "$cur" ] || [ "$r" = "$prev" ] || {{ echo "removing $r"; sudo rm -rf -- "$r"; }}
done
for v in {q(VENVS)}/*; do
  [ -d "$v" ] || continue
  used=no
  for link in {q(RELEASES)}/*/venv; do [ "$(readlink "$link")" = "$v" ] && used=yes; done
  [ $used = yes ] || {{ echo "removing unused $v"; sudo rm -rf -- "$v"; }}
done
""", changes=True, step=f"keep the last {keep} releases")


# ---------------------------------------------------------------- the commands

def deploy(target: Target, release: Release, keep: int = 3, health_timeout: float = 60,
           use_index: bool = False) -> str:
    log = target.log
    log(f"deploy {release.version} to {target.host}{' (DRY RUN: nothing will change)' if target.dry_run else ''}")
    facts = gather_facts(target, release.version)
    preflight(facts, release, log)
    if facts.installed:
        log(f"  release {release.version} is already installed on the device; switching to it")
    else:
        target.push(release.path, release_dir(release.version),
                    step=f"rsync {release.path} -> {release_dir(release.version)}/",
                    link_dest=release_dir(facts.current) if facts.current else None)
        try:
            install(target, release, use_index)
            smoke(target, release)
        except (DeployError, TargetError):
            target.run(f"sudo rm -rf -- {q(release_dir(release.version))}", changes=True, check=False,
                       step="remove the failed release (the running one is untouched)")
            raise
    previous = facts.current if facts.current != release.version else facts.previous
    switch(target, release.version, previous)
    served = release.info["serves"]["manifest_sha256"]
    since = restart(target, served)
    problem = wait_healthy(target, since, {served}, health_timeout)
    if problem:
        journal = journal_tail(target)
        if previous:
            log(f"  health check failed ({problem}); rolling back to {previous}")
            switch(target, previous, facts.previous if facts.previous != previous else "")
            back = restart(target, served_sha(target, previous))
            again = wait_healthy(target, back, set(), health_timeout)
            state = (f"rolled back: {previous} runs again" if again is None
                     else f"rolled back to {previous}, which is not healthy either: {again}")
        else:
            target.run(f"sudo systemctl disable --now --quiet {q(UNIT)}", changes=True, check=False,
                       step=f"stop {UNIT} (no previous release to return to)")
            state = "there is no previous release to return to, so the unit was stopped"
        raise DeployError(f"release {release.version} did not become healthy within {health_timeout:.0f} s: "
                          f"{problem}; {state}.\njournal:\n{journal}")
    prune(target, keep)
    log(f"[dry-run] nothing was changed on {target.host}" if target.dry_run
        else f"release {release.version} is running on {target.host}")
    target.report_timings()
    return release.version


def served_sha(target: Target, version: str) -> str:
    """The bundle sha256 a release on the device serves, from its release.json."""
    text = target.read(f"cat -- {q(release_dir(version) + '/release.json')}", check=False)
    try:
        return json.loads(text)["serves"]["manifest_sha256"]
    except (json.JSONDecodeError, KeyError):
        return ""


def rollback(target: Target, health_timeout: float = 60) -> str:
    kv = read_status(target)
    current, previous = kv.get("current"), kv.get("previous")
    if not previous or previous == current:
        raise DeployError(f"no previous release on {target.host} to roll back to (current: {current or 'none'})")
    target.log(f"rollback on {target.host}: {current} -> {previous}{' (DRY RUN: nothing will change)' if target.dry_run else ''}")
    switch(target, previous, current)
    sha = served_sha(target, previous)
    since = restart(target, sha)
    problem = wait_healthy(target, since, {sha} if sha else set(), health_timeout)
    if problem:
        raise DeployError(f"after rollback to {previous} the service is not healthy: {problem}\n{journal_tail(target)}")
    target.log(f"[dry-run] nothing was changed on {target.host}" if target.dry_run
               else f"release {previous} is running on {target.host}")
    return previous


def status_report(target: Target) -> tuple[str, dict]:
    """What `make deploy-status` prints: release, bundle hashes, the service's counters."""
    kv = read_status(target)
    release = {}
    if kv.get("current"):
        text = target.read(f"cat -- {q(BASE + '/current/release.json')} 2>/dev/null", check=False)
        release = json.loads(text) if text.strip() else {}
    status = kv.get("status") or {}
    lines = [f"release   {kv.get('current') or 'none'} (previous: {kv.get('previous') or 'none'})",
             f"unit      {UNIT}: {kv.get('unit')} (pid {kv.get('main_pid')})"]
    for b in release.get("bundles", []):
        lines.append(f"bundle    {b['name']}/{b['variant']}  manifest sha256 {b['manifest_sha256']}")
    if release:
        lines.append(f"runtime   {RUNTIME_PACKAGES[release['runtime']]} {release['packages'].get(RUNTIME_PACKAGES[release['runtime']])}")
    if status:
        lines.append(f"service   {status.get('state')}, {status.get('streams')} stream(s), running bundle "
                     f"{(status.get('bundle') or {}).get('sha256', '?')}")
        lines.append(f"counters  {json.dumps(status.get('counters', {}))}")
        lines.append(f"latency   {json.dumps(status.get('latency_us', {}))} us")
        lines.append(f"snapshot  {json.dumps(status.get('snapshot', {}))}")
    else:
        lines.append(f"service   no {STATE_DIR}/status.json")
    metrics = device_metrics(target, status.get("http")) if status.get("http") else None
    if metrics is not None:
        lines += metrics_lines(metrics, status["http"])
    return "\n".join(lines), {"status": status, "release": release, "metrics": metrics,
                              **{k: v for k, v in kv.items() if k != "status"}}


def device_metrics(target: Target, http: dict) -> str | None:
    """The service's /metrics text, fetched on the device (it listens on the device's loopback)."""
    host = "127.0.0.1" if http.get("host") in ("0.0.0.0", "::", "", None) else http["host"]
    url = f"http://{host}:{int(http['port'])}/metrics"
    script = f"import urllib.request, sys; sys.stdout.write(urllib.request.urlopen({url!r}, timeout=10).read().decode())"
    text = target.read(f"python3 -c {shlex.quote(script)}", check=False)
    return text if text.startswith("# HELP") else None


def metrics_lines(text: str, http: dict) -> list[str]:
    """A few lines of `make deploy-status` from the /metrics text (the full text: curl it through a tunnel)."""
    totals = {"edge_samples_total": 0.0, "edge_anomaly_events_total": 0.0}  # no stream yet: no labelled series
    rejected: dict[str, int] = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        metric = name.split("{", 1)[0]
        if metric == "edge_rejected_total" and float(value):
            rejected[name.split('reason="', 1)[1].split('"', 1)[0]] = int(float(value))
        elif metric in ("edge_samples_total", "edge_anomaly_events_total", "edge_streams", "edge_queue_depth",
                        "edge_snapshot_age_seconds", "process_resident_memory_bytes"):
            totals[metric] = totals.get(metric, 0.0) + float(value)
    shown = ", ".join(f"{k} {v:g}" for k, v in totals.items())
    return [f"metrics   http://127.0.0.1:{http['port']}/metrics on the device (tunnel: ssh -L "
            f"{http['port']}:127.0.0.1:{http['port']} ...; the live page at /)",
            f"          {shown}", f"          edge_rejected_total {json.dumps(rejected)}"]
