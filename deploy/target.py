"""The device at the other end of ssh: run commands, copy folders, and honour DRY_RUN.

ssh keys come from the user's agent or ~/.ssh (or an ssh config naming an IdentityFile, as the
emulated Pi's does); nothing here knows or stores a password. One multiplexed ssh connection is
reused for all the steps of a deploy (a fresh connection costs ~1 s on an emulated Pi).
"""
from __future__ import annotations

import hashlib
import shlex
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path


class TargetError(RuntimeError):
    """A command on the device failed; the message carries its stderr."""


@dataclass
class Target:
    host: str  # user@host, or a Host from the ssh config
    port: int | None = None
    ssh_config: Path | None = None
    dry_run: bool = False
    log: object = print
    control_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()))
    timings: dict = field(default_factory=dict)  # step -> seconds, for the summary at the end

    def ssh_options(self) -> list[str]:
        tag = hashlib.sha256(f"{self.host}:{self.port}:{self.ssh_config}".encode()).hexdigest()[:10]
        options = ["-o", "BatchMode=yes", "-o", "ControlMaster=auto", "-o", "ControlPersist=60",
                   "-o", f"ControlPath={self.control_dir}/edge-rnn-ssh-{tag}"]
        if self.ssh_config:
            options = ["-F", str(self.ssh_config), *options]
        if self.port:
            options += ["-p", str(self.port)]
        return options

    def ssh_command(self, script: str) -> list[str]:
        return ["ssh", *self.ssh_options(), self.host, script]

    def run(self, script: str, *, changes: bool, step: str = "", check: bool = True,
            timeout: float = 600, stdin: str | None = None) -> subprocess.CompletedProcess:
        """Run a shell script on the device. Steps that change it only print under DRY_RUN."""
        if step:
            self.log(f"  {'[dry-run] would ' if self.dry_run and changes else ''}{step}")
        if self.dry_run and changes:
            self.log("      $ " + script.strip().replace("\n", "\n        "))
            return subprocess.CompletedProcess([], 0, "", "")
        started = time.monotonic()
        result = subprocess.run(self.ssh_command(script), input=stdin, text=True, capture_output=True,
                                timeout=timeout)
        if step and changes:
            self.timings[step] = time.monotonic() - started
        if check and result.returncode != 0:
            detail = (result.stderr.strip() or result.stdout.strip())[-3000:]
            raise TargetError(f"{step or script.strip()[:80]} failed on {self.host} (exit {result.returncode}):\n{detail}")
        return result

    def read(self, script: str, step: str = "", check: bool = True, timeout: float = 120) -> str:
        return self.run(script, changes=False, step=step, check=check, timeout=timeout).stdout

    def push(self, local: Path, remote: str, step: str = "", link_dest: str | None = None) -> None:
        """rsync a folder into `remote` (created, root-owned) over the same ssh connection; files equal
        to those in `link_dest` (the running release) are hard-linked there instead of sent."""
        ssh = " ".join(shlex.quote(part) for part in ["ssh", *self.ssh_options()])
        cmd = ["rsync", "-a", "--delete", "--checksum", "--exclude", "venv", "-e", ssh,
               *([f"--link-dest={link_dest}"] if link_dest else []),
               "--rsync-path", f"sudo mkdir -p {shlex.quote(remote)} && sudo rsync",
               f"{local}/", f"{self.host}:{remote}/"]
        self.log(f"  {'[dry-run] would ' if self.dry_run else ''}{step or f'rsync {local} -> {remote}'}")
        if self.dry_run:
            self.log("      $ " + " ".join(shlex.quote(c) for c in cmd))
            return
        started = time.monotonic()
        result = subprocess.run(cmd, text=True, capture_output=True, timeout=900)
        self.timings[step or "rsync"] = time.monotonic() - started
        if result.returncode != 0:
            raise TargetError(f"rsync to {self.host}:{remote} failed ({result.returncode}): {result.stderr.strip()[-2000:]}")

    def report_timings(self) -> None:
        if self.timings:
            self.log("  time per step: " + ", ".join(f"{step.split(':')[0].split(' (')[0]} {t:.1f} s"
                                                     for step, t in self.timings.items()))

    def close(self) -> None:
        subprocess.run(["ssh", *self.ssh_options(), "-O", "exit", self.host], capture_output=True, timeout=30)
