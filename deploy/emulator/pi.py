"""An emulated Raspberry Pi on this machine: what `make pi-emu-up` boots and the deploy tests use.

A Debian bookworm arm64 root file system (what 64-bit Raspberry Pi OS is built on), run by
qemu-user through binfmt_misc and booted with its own systemd as PID 1 by systemd-nspawn. It
shares the host's network, so its sshd listens on 127.0.0.1 and a free high port; user `pi`
has passwordless sudo and a throwaway ssh key made for this run (never committed).

    python -m deploy.emulator up   [--dir build/pi-emu] [--port N]   # prints how to ssh/deploy
    python -m deploy.emulator down [--dir build/pi-emu]
    python -m deploy.emulator boot / poweroff                          # reboot keeps the rootfs

Needs root (binfmt_misc, nspawn) and the Debian packages in the Makefile's PI_EMU_PACKAGES.
Standard library only. Pitfalls behind each step are in docs/DESIGN-NOTES.md.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
WRAPPER_SOURCE = HERE / "qemu-cpu-wrapper.c"
CACHE_DIR = Path(os.environ.get("EDGE_RNN_CACHE", Path.home() / ".cache" / "edge-rnn"))
DEFAULT_DIR = Path("build/pi-emu")

SUITE = "bookworm"
CPU = "cortex-a72"  # a Pi 4; a Pi 5 is cortex-a76
QEMU_HOST = Path("/usr/bin/qemu-aarch64-static")
QEMU_IN_GUEST = "/usr/bin/qemu-aarch64-static"  # the wrapper execs this path inside the guest too
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
BINFMT_NAME = "qemu-aarch64"
AARCH64_MAGIC = r"\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00"
AARCH64_MASK = r"\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff"
GUEST_PACKAGES = ("systemd", "systemd-sysv", "dbus", "openssh-server", "rsync", "sudo", "python3",
                  "python3-venv", "python3-pip", "ca-certificates", "procps", "iproute2")
# Timers that would wake apt/man-db under emulation in the middle of a test.
MASKED_UNITS = ("apt-daily.timer", "apt-daily-upgrade.timer", "man-db.timer", "e2scrub_all.timer",
                "fstrim.timer", "e2scrub_reap.service")
# Stock units whose sandboxing needs what qemu-user cannot give (measured on a boot without these):
# LoadCredential= fails with 243/CREDENTIALS ("Failed to set up credentials: Invalid argument") and
# PrivateNetwork= with 225/NETWORK. Mount namespaces (PrivateTmp=, ProtectSystem=) do work.
NAMESPACE_DROPIN = """# edge-rnn emulated Pi: qemu-user cannot set up credentials or a private network namespace
[Service]
LoadCredential=
PrivateNetwork=no
PrivateUsers=no
"""
DROPIN_UNITS = ("systemd-sysusers.service", "systemd-tmpfiles-setup.service",
                "systemd-tmpfiles-setup-dev.service", "systemd-hostnamed.service", "systemd-localed.service",
                "systemd-timedated.service", "systemd-journald.service")
RECIPE_VERSION = 1  # bump when the build steps below change what the tarball holds


class EmulatorError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[pi-emu] {message}", file=sys.stderr, flush=True)


def run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, text=True, capture_output=True, **kw)
    if check and result.returncode != 0:
        raise EmulatorError(f"{' '.join(cmd)} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")
    return result


# ---------------------------------------------------------------- host setup: wrapper + binfmt

def require_root() -> None:
    if os.geteuid() != 0:
        raise EmulatorError("the emulated Pi needs root (binfmt_misc registration, systemd-nspawn)")
    for tool in ("mmdebstrap", "systemd-nspawn", "nsenter", "ssh", "ssh-keygen", "zstd", "cc"):
        if shutil.which(tool) is None:
            raise EmulatorError(f"{tool} not found: run `make pi-emu-up` (installs the Debian packages)")
    if not QEMU_HOST.exists():
        raise EmulatorError(f"{QEMU_HOST} not found: apt-get install qemu-user-static")


def build_wrapper(cache: Path) -> Path:
    """Compile the static CPU-pinning wrapper once per source/CPU (cached by content hash)."""
    digest = hashlib.sha256(WRAPPER_SOURCE.read_bytes() + CPU.encode()).hexdigest()[:12]
    wrapper = cache / f"qemu-aarch64-{CPU}-{digest}"
    if not wrapper.exists():
        cache.mkdir(parents=True, exist_ok=True)
        tmp = wrapper.with_suffix(".tmp")
        run("cc", "-static", "-Os", "-Wall", f'-DCPU="{CPU}"', f'-DQEMU="{QEMU_IN_GUEST}"',
            "-o", str(tmp), str(WRAPPER_SOURCE))
        tmp.rename(wrapper)
    return wrapper


def register_binfmt(wrapper: Path) -> None:
    """Register aarch64 ELF binaries to run through the wrapper with flags POCF (see the C file)."""
    if not (BINFMT_DIR / "register").exists():
        run("mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR))
    entry = BINFMT_DIR / BINFMT_NAME
    if entry.exists():
        current = entry.read_text()
        if f"interpreter {wrapper}\n" in current and "flags: POCF" in current and current.startswith("enabled"):
            return
        entry.write_text("-1")  # Debian's own registration (flags PF, no CPU pin) or a stale one
    (BINFMT_DIR / "register").write_text(f":{BINFMT_NAME}:M::{AARCH64_MAGIC}:{AARCH64_MASK}:{wrapper}:POCF")
    # Another enabled entry for the same magic would compete; binfmt_misc tries the newest first,
    # but say so rather than rely on it.
    for other in BINFMT_DIR.iterdir():
        if other.name not in (BINFMT_NAME, "register", "status") and "b7" in other.read_text()[:400] \
                and "aarch64" in other.name:
            log(f"note: another binfmt entry {other.name} handles aarch64 too")


def setup_host(cache: Path = CACHE_DIR) -> Path:
    require_root()
    wrapper = build_wrapper(cache)
    register_binfmt(wrapper)
    return wrapper


# ---------------------------------------------------------------- the root file system

def recipe_digest() -> str:
    recipe = json.dumps([RECIPE_VERSION, SUITE, GUEST_PACKAGES, MASKED_UNITS]).encode()
    return hashlib.sha256(recipe).hexdigest()[:10]


def rootfs_tarball(cache: Path = CACHE_DIR) -> Path:
    return cache / f"pi-rootfs-{SUITE}-arm64-{recipe_digest()}.tar.zst"


def build_rootfs_tarball(cache: Path = CACHE_DIR) -> Path:
    """mmdebstrap a bookworm arm64 rootfs (~3 min here) into a zstd tarball cached outside the repo."""
    tarball = rootfs_tarball(cache)
    if tarball.exists():
        return tarball
    setup_host(cache)
    cache.mkdir(parents=True, exist_ok=True)
    partial = tarball.with_name(tarball.name + ".partial.tar.zst")
    customize = [
        # a user like Raspberry Pi OS's, with passwordless sudo (key added at boot time)
        'chroot "$1" useradd --create-home --shell /bin/bash --groups sudo pi',
        'echo "pi ALL=(ALL) NOPASSWD: ALL" > "$1/etc/sudoers.d/010_pi-nopasswd"',
        'chmod 0440 "$1/etc/sudoers.d/010_pi-nopasswd"',
        'echo raspberrypi > "$1/etc/hostname"',
        'printf "127.0.0.1 localhost\\n127.0.1.1 raspberrypi\\n" > "$1/etc/hosts"',
        ': > "$1/etc/machine-id"',
        'rm -f "$1"/etc/ssh/ssh_host_*',  # made fresh for each unpacked guest
        *[f'ln -sf /dev/null "$1/etc/systemd/system/{unit}"' for unit in MASKED_UNITS],
        'rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
    ]
    cmd = ["mmdebstrap", "--arch=arm64", "--variant=apt", "--mode=root", "--quiet",
           f"--include={','.join(GUEST_PACKAGES)}",
           # the binfmt wrapper execs qemu at this path inside the chroot: copy it in before any
           # arm64 binary runs
           f'--setup-hook=mkdir -p "$1/usr/bin" && cp {QEMU_HOST} "$1{QEMU_IN_GUEST}"',
           *[f"--customize-hook={step}" for step in customize],
           SUITE, str(partial)]
    return build_tarball(cmd, partial, tarball, f"the {SUITE} arm64 rootfs")


def build_tarball(cmd: list[str], partial: Path, tarball: Path, what: str) -> Path:
    """Run an mmdebstrap command that writes `partial`; rename it to `tarball` only when it succeeded,
    so a cached tarball is always a whole one. Also used by the fresh-machine check."""
    log(f"building {what} (one time, a few minutes) -> {tarball}")
    started = time.monotonic()
    result = subprocess.run(cmd, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise EmulatorError(f"mmdebstrap failed ({result.returncode}):\n{result.stdout[-4000:]}")
    partial.rename(tarball)
    log(f"{what} built in {time.monotonic() - started:.0f} s, {tarball.stat().st_size / 1e6:.0f} MB")
    return tarball


def unpack_tarball(tarball: Path, rootfs: Path) -> None:
    """A new copy of a cached root file system (owners and modes kept)."""
    if rootfs.exists():
        shutil.rmtree(rootfs)
    rootfs.mkdir(parents=True)
    run("tar", "--zstd", "-xpf", str(tarball), "-C", str(rootfs), "--numeric-owner")


def unpack_rootfs(tarball: Path, rootfs: Path) -> None:
    unpack_tarball(tarball, rootfs)
    # the binfmt wrapper execs qemu at this path inside the guest; mmdebstrap removes the copy it
    # used while building, so put the host's in place on every unpack
    shutil.copy2(QEMU_HOST, rootfs / QEMU_IN_GUEST.lstrip("/"))


def pi4_cpuinfo(cpus: int) -> str:
    """A Raspberry Pi 4's /proc/cpuinfo, one entry per host CPU. qemu-user 7.2 shows the host's x86
    cpuinfo, on which ai-edge-litert >= 2.2 segfaults in Interpreter()."""
    entry = ("processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n"
             "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\n"
             "CPU revision\t: 3\n\n")
    body = "".join(entry.format(n=n) for n in range(cpus))
    return body + "Hardware\t: BCM2835\nRevision\t: c03111\nModel\t\t: Raspberry Pi 4 Model B Rev 1.1\n"


def configure_guest(rootfs: Path, port: int, public_key: str) -> None:
    """Per-boot settings: sshd on 127.0.0.1:port with key auth only, pi's key, cpuinfo, drop-ins."""
    etc = rootfs / "etc"
    (etc / "edge-rnn-emu").mkdir(exist_ok=True)
    (etc / "edge-rnn-emu" / "cpuinfo").write_text(pi4_cpuinfo(os.cpu_count() or 1))
    (etc / "ssh" / "sshd_config.d").mkdir(parents=True, exist_ok=True)
    (etc / "ssh" / "sshd_config.d" / "edge-rnn-emu.conf").write_text(
        f"# emulated Pi: the host's loopback only, keys only\nPort {port}\nListenAddress 127.0.0.1\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nPermitRootLogin no\nUseDNS no\n")
    if not (etc / "ssh" / "ssh_host_ed25519_key").exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "raspberrypi",
            "-f", str(etc / "ssh" / "ssh_host_ed25519_key"))
    for unit in DROPIN_UNITS:
        dropin = etc / "systemd" / "system" / f"{unit}.d"
        dropin.mkdir(parents=True, exist_ok=True)
        (dropin / "edge-rnn-emu.conf").write_text(NAMESPACE_DROPIN)
    ssh_dir = rootfs / "home" / "pi" / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(public_key)
    uid, gid = _guest_ids(rootfs, "pi")
    for path in (ssh_dir, ssh_dir / "authorized_keys"):
        os.chown(path, uid, gid)
    (ssh_dir / "authorized_keys").chmod(0o600)


def _guest_ids(rootfs: Path, user: str) -> tuple[int, int]:
    for line in (rootfs / "etc" / "passwd").read_text().splitlines():
        fields = line.split(":")
        if fields[0] == user:
            return int(fields[2]), int(fields[3])
    raise EmulatorError(f"user {user} missing in {rootfs}/etc/passwd (stale rootfs tarball?)")


# ---------------------------------------------------------------- one emulated Pi

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PiEmu:
    """The state of one emulated Pi, kept in <dir>/emu.json so `down` finds what `up` started."""
    dir: str
    port: int
    pid: int = 0  # systemd-nspawn's pid

    @property
    def rootfs(self) -> Path:
        return Path(self.dir) / "rootfs"

    @property
    def key(self) -> Path:
        return Path(self.dir) / "id_ed25519"

    @property
    def ssh_config(self) -> Path:
        return Path(self.dir) / "ssh_config"

    @property
    def host(self) -> str:
        return "pi-emu"

    @property
    def machine(self) -> str:
        return "pi-emu-" + hashlib.sha256(str(Path(self.dir).resolve()).encode()).hexdigest()[:8]

    def save(self) -> None:
        path = Path(self.dir) / "emu.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1))
        tmp.rename(path)

    @classmethod
    def load(cls, directory: Path) -> "PiEmu":
        try:
            return cls(**json.loads((Path(directory) / "emu.json").read_text()))
        except FileNotFoundError:
            raise EmulatorError(f"no emulated Pi in {directory} (run `make pi-emu-up` first)") from None

    def ssh_args(self) -> list[str]:
        return ["ssh", "-F", str(self.ssh_config), self.host]

    def ssh(self, command: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.ssh_args(), command], text=True, capture_output=True, timeout=timeout)
        if check and result.returncode != 0:
            raise EmulatorError(f"ssh {command!r} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def running(self) -> bool:
        if not self.pid:
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        cmdline = Path(f"/proc/{self.pid}/cmdline")
        return cmdline.exists() and b"systemd-nspawn" in cmdline.read_bytes()

    def write_ssh_config(self) -> None:
        host_key = (self.rootfs / "etc" / "ssh" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        known = Path(self.dir) / "known_hosts"
        known.write_text(f"[127.0.0.1]:{self.port} {' '.join(host_key)}\n")
        self.ssh_config.write_text(
            f"# the emulated Pi in {self.dir} (made by python -m deploy.emulator up)\n"
            f"Host {self.host}\n  HostName 127.0.0.1\n  Port {self.port}\n  User pi\n"
            f"  IdentityFile {self.key.resolve()}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known.resolve()}\n  StrictHostKeyChecking yes\n"
            "  ConnectTimeout 10\n  ServerAliveInterval 15\n  LogLevel ERROR\n")

    def boot(self, timeout: float = 180) -> None:
        """Start systemd-nspawn in the background and wait until ssh answers."""
        if self.running():
            raise EmulatorError(f"already running (nspawn pid {self.pid})")
        # nspawn mounts what lands under /proc from inside the container (after procfs is mounted there),
        # so the source is a path in the guest, kept in the rootfs
        cpuinfo = "/etc/edge-rnn-emu/cpuinfo"
        console = open(Path(self.dir) / "console.log", "ab")
        proc = subprocess.Popen(
            ["systemd-nspawn", "-D", str(self.rootfs), "-b", "--register=no", "--keep-unit",
             f"--machine={self.machine}", "--hostname=raspberrypi", "--console=read-only",
             f"--bind-ro={cpuinfo}:/proc/cpuinfo"],
            stdin=subprocess.DEVNULL, stdout=console, stderr=console, start_new_session=True)
        self.pid = proc.pid
        self.save()
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            if proc.poll() is not None:
                raise EmulatorError(f"systemd-nspawn exited ({proc.returncode}); see {self.dir}/console.log")
            if self.ssh("python3 -c 'print(1)'", timeout=30, check=False).returncode == 0:
                log(f"booted in {time.monotonic() - started:.1f} s, sshd on 127.0.0.1:{self.port}")
                return
            time.sleep(1)
        raise EmulatorError(f"no ssh after {timeout:.0f} s; see {self.dir}/console.log")

    def guest_init_pid(self) -> int | None:
        """PID (host view) of the guest's PID 1: the child of systemd-nspawn."""
        children = Path(f"/proc/{self.pid}/task/{self.pid}/children")
        pids = children.read_text().split() if children.exists() else []
        return int(pids[0]) if pids else None

    def poweroff(self, timeout: float = 90) -> None:
        """`systemctl poweroff` inside the guest, entered with nsenter: nspawn's own SIGTERM is
        mis-mapped by qemu-user and drops the guest into rescue mode instead of stopping it."""
        if not self.running():
            return
        init = self.guest_init_pid()
        if init:
            subprocess.run(["nsenter", "-t", str(init), "-m", "-u", "-i", "-p", "-r", "-w",
                            "/usr/bin/systemctl", "poweroff"], capture_output=True, timeout=60)
        started = time.monotonic()
        while self.running() and time.monotonic() - started < timeout:
            time.sleep(0.5)
        if self.running():
            log(f"guest did not power off within {timeout:.0f} s; killing nspawn")
            os.killpg(self.pid, signal.SIGKILL)
            time.sleep(1)
        try:  # reap if we are its parent
            os.waitpid(self.pid, os.WNOHANG)
        except ChildProcessError:
            pass
        self.pid = 0
        self.save()


def up(directory: Path = DEFAULT_DIR, port: int | None = None, fresh: bool = True,
       cache: Path = CACHE_DIR) -> PiEmu:
    """Build (once) and unpack the rootfs, make a throwaway key, boot, wait for ssh."""
    directory = Path(directory).resolve()
    setup_host(cache)
    tarball = build_rootfs_tarball(cache)
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "emu.json").exists():
        old = PiEmu.load(directory)
        if old.running():
            raise EmulatorError(f"an emulated Pi is already running from {directory} (port {old.port}); "
                                "`make pi-emu-down` first")
    emu = PiEmu(str(directory), port or free_port())
    if fresh or not emu.rootfs.exists():
        started = time.monotonic()
        unpack_rootfs(tarball, emu.rootfs)
        log(f"unpacked {tarball.name} in {time.monotonic() - started:.1f} s")
    if not emu.key.exists():
        run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "edge-rnn emulated-Pi test key",
            "-f", str(emu.key))
    configure_guest(emu.rootfs, emu.port, (emu.key.with_suffix(".pub")).read_text())
    emu.write_ssh_config()
    emu.save()
    emu.boot()
    return emu


def down(directory: Path = DEFAULT_DIR, remove: bool = False) -> None:
    directory = Path(directory).resolve()
    if not (directory / "emu.json").exists():
        log(f"nothing running from {directory}")
        return
    emu = PiEmu.load(directory)
    emu.poweroff()
    if remove:
        shutil.rmtree(directory)


def main(argv: list[str] | None = None) -> int:
    """an emulated arm64 Raspberry Pi on this machine (root): up, down, boot, poweroff"""
    p = argparse.ArgumentParser(prog="python -m deploy.emulator", description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["up", "down", "boot", "poweroff", "build", "ssh-config"])
    p.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="where the guest's rootfs and keys live")
    p.add_argument("--port", type=int, help="sshd port on 127.0.0.1 (default: a free one)")
    p.add_argument("--keep-rootfs", action="store_true", help="up: reuse an unpacked rootfs (keeps deploys)")
    p.add_argument("--remove", action="store_true", help="down: delete the unpacked rootfs too")
    args = p.parse_args(argv)
    try:
        if args.command == "build":
            print(build_rootfs_tarball())
        elif args.command == "up":
            emu = up(args.dir, args.port, fresh=not args.keep_rootfs)
            print(f"emulated Pi up: ssh -F {emu.ssh_config} {emu.host}\n"
                  f"deploy to it:   make deploy PI_HOST={emu.host} PI_SSH_CONFIG={emu.ssh_config}")
        elif args.command == "down":
            down(args.dir, args.remove)
        elif args.command == "boot":
            setup_host()
            PiEmu.load(args.dir.resolve()).boot()
        elif args.command == "poweroff":
            PiEmu.load(args.dir.resolve()).poweroff()
        elif args.command == "ssh-config":
            print(PiEmu.load(args.dir.resolve()).ssh_config)
    except EmulatorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
