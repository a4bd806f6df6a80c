"""The service's ceiling on the emulated Pi: `python -m pipeline service-ceiling BUNDLE --pi-emu`.

The service is the one `make deploy` installs: the release is built as for a Pi (deploy/release.py: the
edge_runtime wheel and the pinned aarch64 wheelhouse), installed offline into a venv inside a fresh copy of
the emulated Pi's root file system (deploy/emulator: Debian bookworm arm64), and run there in a chroot.
binfmt_misc hands every arm64 binary to qemu-user through the emulator's wrapper, which pins the CPU model to
a Pi 4's Cortex-A72. No systemd boot is needed to measure one process, so this does not boot the guest; the
chroot shares the host's network, so the sender reaches the service on 127.0.0.1 and reads its sink file
through the root file system. The service is pinned to the same host core as the laptop's run.

qemu-user translates the A72's instructions to x86: the figure is the emulated Pi's on this machine, an
estimate of a Pi's ceiling that can be off either way (a real Cortex-A72 at 1.5-1.8 GHz runs neither
Python nor XNNPACK's NEON kernels at the emulator's speed). It is reported as the laptop/Pi ratio.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from deploy.emulator import pi as pi_emu

VENV = "/opt/edge-rnn/venv"
RELEASE = "/opt/edge-rnn/release"
RUNS = "/opt/edge-rnn/runs"


class PiError(RuntimeError):
    """The emulated Pi could not be set up: not root, a missing package, a failed install."""


class PiGuest:
    """A root file system with the release installed; `launch` starts the service in it (see Host)."""

    name = "emulated Pi"
    cpu = pi_emu.CPU
    start_timeout_s = 600.0  # numpy and the interpreter import slowly under emulation

    def __init__(self, bundle: Path, work: Path):
        from deploy.release import ReleaseError, build_release

        if os.geteuid() != 0:
            raise PiError("needs root (binfmt_misc and chroot); run it as root or leave out --pi-emu")
        self.bundle = Path(bundle).resolve()
        try:
            pi_emu.setup_host()
            tarball = pi_emu.build_rootfs_tarball()  # cached after the first build (~3 min)
            self.rootfs = work / "rootfs"
            pi_emu.unpack_rootfs(tarball, self.rootfs)
            release = build_release([self.bundle], out_root=work / "releases", log=lambda *_: None,
                                    allow_not_deployable=True)
        except (pi_emu.EmulatorError, ReleaseError, OSError, subprocess.CalledProcessError) as e:
            raise PiError(str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__) from None
        shutil.copytree(release.path, self._host(RELEASE))
        self._guest(["python3", "-m", "venv", VENV])
        self._guest([f"{VENV}/bin/pip", "install", "--quiet", "--disable-pip-version-check", "--no-cache-dir",
                     "--no-index", "--find-links", f"{RELEASE}/wheels", *release.info["install"]])
        self.bundle_in_guest = f"{RELEASE}/bundles/{release.bundles[0].name}"

    def _host(self, guest_path: str) -> Path:
        return self.rootfs / guest_path.lstrip("/")

    def _guest(self, cmd: list[str]) -> None:
        done = subprocess.run(["chroot", str(self.rootfs), *cmd], capture_output=True, text=True,
                              env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": "/root", "LANG": "C.UTF-8"})
        if done.returncode != 0:
            raise PiError(f"{' '.join(cmd[:3])} in the Pi's root file system failed ({done.returncode}): "
                          f"{(done.stderr or done.stdout).strip()[-300:]}")

    def folder(self, under: Path) -> Path:
        """The run's folder inside the root file system (the host's path to it), e.g. runs/pi-csv-top."""
        return self._host(RUNS) / f"{under.parent.name}-{under.name}"

    def bundle_path(self) -> str:
        return self.bundle_in_guest

    def launch(self, folder: Path, config: Path, core: int | None, profile_to: Path | None, log) -> subprocess.Popen:
        if profile_to is not None:
            raise PiError("the profile is taken on the laptop only")
        guest_folder = "/" + folder.relative_to(self.rootfs).as_posix()
        rootfs = str(self.rootfs)

        def enter() -> None:  # in the child, before exec: the Pi's root, the run's folder, the service's core
            os.chroot(rootfs)
            os.chdir(guest_folder)
            if core is not None:
                os.sched_setaffinity(0, {core})
        return subprocess.Popen([f"{VENV}/bin/python", "-m", "edge_runtime", "serve", "--config", "edge.toml",
                                 "--fresh"], stdout=subprocess.DEVNULL, stderr=log, preexec_fn=enter,
                                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "TF_CPP_MIN_LOG_LEVEL": "2"})
