"""The device commands deploy builds, run for real on this machine (root) against crafted device state.

`deploy.device.restart` runs its script through `bash` in a private mount namespace where /opt/edge-rnn
and /var/lib/edge-rnn are folders of the test (nothing of the host's is touched); `sudo` runs the command
(the test is root already) and `systemctl` does nothing. /var/lib/edge-rnn belongs to the service user
(`nobody` here), so its contents are the service's to craft; root must never be made to move a file out
of a root-owned folder, or into one, because of them.
"""
from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import python_env
from deploy.device import DeployError, plain_name, restart
from deploy.target import Target
from edge_runtime.service.snapshot import SNAPSHOT_NAME, read_snapshot, write_snapshot

SERVED = "a" * 64  # the bundle the release serves
OTHER = "b" * 64  # another bundle's identity
SERVICE_UID = 65534  # nobody: stands for the service user, who owns the state folder


def namespaces_work() -> bool:
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "mount", "-t", "tmpfs", "t", "/mnt"],
                           capture_output=True)
    return probe.returncode == 0


pytestmark = pytest.mark.skipif(not namespaces_work(), reason="needs root and mount namespaces (unshare)")


@dataclass
class LocalDevice(Target):
    """A Target whose 'ssh' is bash on this machine, with the device's folders mapped to the test's."""
    root: Path = Path()

    def ssh_command(self, script: str) -> list[str]:
        mapped = "\n".join([
            "set -e",
            "mount -t tmpfs device-opt /opt && mkdir /opt/edge-rnn",
            f"mount --bind {shlex.quote(str(self.root / 'opt'))} /opt/edge-rnn",
            "mount -t tmpfs device-var-lib /var/lib && mkdir /var/lib/edge-rnn",
            f"mount --bind {shlex.quote(str(self.root / 'state'))} /var/lib/edge-rnn",
            f"export PATH={shlex.quote(str(self.root / 'bin'))}:$PATH",
            f"export PYTHONPATH={shlex.quote(python_env()['PYTHONPATH'])}",
        ])
        return ["unshare", "--mount", "--propagation", "private", "bash", "-c", mapped + "\n" + script]

    def close(self) -> None:
        pass


def executable(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)


@pytest.fixture
def device(tmp_path) -> LocalDevice:
    """A release v1 (root-owned, with its edge.toml) as current, and an empty state folder of the service's."""
    executable(tmp_path / "bin" / "sudo", '#!/bin/bash\n# root already: drop the options, run the command\n'
                                          'while [[ "$1" == -* ]]; do shift; done\nexec "$@"\n')
    executable(tmp_path / "bin" / "systemctl", "#!/bin/sh\nexit 0\n")
    release = tmp_path / "opt" / "releases" / "v1"
    executable(release / "venv" / "bin" / "python", f'#!/bin/sh\nexec {shlex.quote(sys.executable)} "$@"\n')
    (release / "edge.toml").write_text("# root's file\n")
    (tmp_path / "opt" / "current").symlink_to("releases/v1")
    (tmp_path / "state").mkdir()
    return LocalDevice(host="local", log=lambda m: None, root=tmp_path)


def snapshot(path: Path, identity: str) -> None:
    write_snapshot(path, {"bundle_sha256": identity, "streams": []}, {})
    os.chown(path, SERVICE_UID, SERVICE_UID)


def owned_by_service(path: Path) -> Path:
    path.mkdir()
    os.chown(path, SERVICE_UID, SERVICE_UID)
    return path


def test_a_crafted_snapshot_identity_cannot_make_root_move_a_file(device):
    root_file = device.root / "opt" / "releases" / "v1" / "edge.toml"
    state = device.root / "state"
    loot = owned_by_service(state / "loot.npz")
    # before the fix, `mv $old.npz` split this into words: root moved edge.toml into the service's loot.npz/
    snapshot(state / SNAPSHOT_NAME, "x /opt/edge-rnn/current/edge.toml /var/lib/edge-rnn/loot")
    restart(device, SERVED)
    assert root_file.read_text() == "# root's file\n"
    assert list(loot.iterdir()) == []
    assert (state / SNAPSHOT_NAME).exists(), "a snapshot with no sha256 identity is left for the service to refuse"
    assert not (state / "snapshots").exists()


def test_a_symlinked_parking_folder_is_not_followed(device):
    releases = device.root / "opt" / "releases"
    state = device.root / "state"
    (releases / f"{SERVED}.npz").write_text("root's file, named as a parked snapshot")
    snapshot(state / SNAPSHOT_NAME, OTHER)
    (state / "snapshots").symlink_to("/opt/edge-rnn/releases")  # made by the service
    restart(device, SERVED)
    # before the fix: root wrote the service's file into /opt/edge-rnn/releases (and would have moved
    # root's <served>.npz out of there into the service's folder)
    assert sorted(p.name for p in releases.iterdir()) == sorted(["v1", f"{SERVED}.npz"])
    assert read_snapshot(state / SNAPSHOT_NAME)[0]["bundle_sha256"] == OTHER  # left in place


def test_another_bundles_snapshot_is_parked_and_the_served_ones_restored(device):
    state = device.root / "state"
    logged = []
    device.log = logged.append
    snapshot(state / SNAPSHOT_NAME, OTHER)
    parked = owned_by_service(state / "snapshots")
    snapshot(parked / f"{SERVED}.npz", SERVED)
    restart(device, SERVED)
    assert read_snapshot(state / SNAPSHOT_NAME)[0]["bundle_sha256"] == SERVED
    assert read_snapshot(parked / f"{OTHER}.npz")[0]["bundle_sha256"] == OTHER
    assert sorted(p.name for p in parked.iterdir()) == [f"{OTHER}.npz"]
    assert any("parked the snapshot of bundle bbbbbbbbbbbb" in line for line in logged), logged
    assert any("restored the parked snapshot of bundle aaaaaaaaaaaa" in line for line in logged), logged
    # the same bundle again: nothing moves
    restart(device, SERVED)
    assert sorted(p.name for p in parked.iterdir()) == [f"{OTHER}.npz"]
    assert np.isfinite(read_snapshot(state / SNAPSHOT_NAME)[0].get("format", 0))


def test_a_fifo_or_symlink_in_place_of_the_snapshot_is_neither_read_nor_moved(device):
    state = device.root / "state"
    os.mkfifo(state / SNAPSHOT_NAME)  # opening it for reading without O_NONBLOCK would hang the deploy
    restart(device, SERVED)
    assert (state / SNAPSHOT_NAME).is_fifo()
    (state / SNAPSHOT_NAME).unlink()
    (state / SNAPSHOT_NAME).symlink_to("/opt/edge-rnn/releases/v1/edge.toml")
    restart(device, SERVED)
    assert (state / SNAPSHOT_NAME).is_symlink() and not (state / "snapshots").exists()


@pytest.mark.parametrize("name", ["../x", "v1/../../etc", ".hidden", "", "v1;reboot", "$(id)", "v 1", "-rf"])
def test_release_names_from_the_device_or_the_build_must_be_plain(name):
    with pytest.raises(DeployError, match="not a plain name"):
        plain_name(name, "release version")


def test_restart_refuses_a_served_identity_that_is_not_a_sha256(device):
    with pytest.raises(DeployError, match="not a sha256"):
        restart(device, "x; reboot")
