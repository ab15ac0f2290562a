"""Where keys may go: only a holder's own removable medium, never the system disk; and only
while the machine is offline (checked in a network namespace of the test's own)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from firmware.shared.errors import ConfigError
from signing import media

REPO = Path(__file__).resolve().parents[2]


class FakeUdev:
    """The pyudev interface the signer uses, answering for device numbers the test picks."""

    def __init__(self, disks: dict[int, media.Disk]) -> None:
        self.disks = disks

    def disk_of(self, device_number: int) -> media.Disk | None:
        return self.disks.get(device_number)


def dev(path: Path) -> int:
    return os.stat(path).st_dev


def test_a_removable_medium_is_taken_and_everything_else_refused(tmp_path: Path) -> None:
    mount = Path("/proc")  # a real mount point on its own device number, standing in
    stick = media.Disk("/dev/sdb", removable=True, model="Cruzer")
    system = media.Disk("/dev/vda", removable=False, model="")
    assert media.check_medium(mount, FakeUdev({dev(mount): stick, dev(Path("/")): system})) \
        == stick
    with pytest.raises(ConfigError, match="is not removable"):
        media.check_medium(mount, FakeUdev({dev(mount): media.Disk("/dev/sdc", False, "HDD")}))
    with pytest.raises(ConfigError, match="on the system disk"):
        media.check_medium(mount, FakeUdev({dev(mount): system, dev(Path("/")): system}))
    with pytest.raises(ConfigError, match="not on a disk"):
        media.check_medium(mount, FakeUdev({}))
    with pytest.raises(ConfigError, match="not a mount point"):
        media.check_medium(tmp_path, FakeUdev({}))


def test_the_real_pyudev_backend_refuses_the_system_disk() -> None:
    """No removable disk exists here; the real backend must still see that / is not one."""
    with pytest.raises(ConfigError, match=r"system disk|not removable|not on a disk"):
        media.check_medium(Path("/"), media.PyudevBackend())


OFFLINE_CHECK = "from signing import airgap; airgap.require_offline(); print('offline')"


def in_namespace(setup: str) -> subprocess.CompletedProcess[str]:
    """The air-gap check in a network namespace of its own, after ``setup`` (ip commands)."""
    script = f"{setup} {sys.executable} -c \"{OFFLINE_CHECK}\""
    return subprocess.run(["unshare", "-n", "sh", "-c", script], cwd=REPO, capture_output=True,
                          text=True, check=False, timeout=60)


def test_keys_are_touched_only_offline() -> None:
    alone = in_namespace("ip link set lo up &&")  # loopback is not a network
    assert alone.returncode == 0 and alone.stdout.strip() == "offline", alone.stderr
    cabled = in_namespace("ip link add v0 type veth peer name v1 && ip link set v0 up &&")
    assert cabled.returncode != 0
    assert "network interface(s) up: v0; private keys are used only offline" in cabled.stderr
    down = in_namespace("ip link add v0 type veth peer name v1 &&")  # there, but down
    assert down.returncode == 0, down.stderr
