"""Settings at the console: `console settings` merges, validates (every problem at once),
versions and signs them with the settings key, and the device-side verifier accepts exactly
those (firmware.protocol.settings)."""

from __future__ import annotations

import base64
import time
from pathlib import Path

import pytest

from console import config, settings
from console.store import Store
from firmware.protocol import settings as signed
from firmware.protocol.keys import OwnPrivateKey
from tests.console.test_cli import console


@pytest.fixture
def state(tmp_path: Path) -> Path:
    state = tmp_path / "state"
    assert console("init", "--state", str(state), "--zone", "c.test").returncode == 0
    key = OwnPrivateKey.generate().public().text()
    console("enroll", "--state", str(state), "--name", "nas-1", "--public-key", key)
    return state


def test_settings_are_versioned_signed_and_verify_on_the_device(state: Path) -> None:
    out = console("settings", "--state", str(state), "--name", "nas-1", "--set",
                  "services.ssh.port=2222", "--set", "device.hostname=files-2").stdout
    assert "settings version 1, signed" in out and "services.ssh.port = 2222" in out
    out = console("settings", "--state", str(state), "--name", "nas-1", "--unset",
                  "device.hostname").stdout
    assert "settings version 2" in out and "hostname" not in out
    seed = base64.b64decode((state / "settings.key").read_text())
    assert (state / "settings.key").stat().st_mode & 0o777 == 0o600
    store = Store(config.load(state).db_path)
    device_id = store.device_id_of("nas-1")
    version, wire = store.settings_of(device_id) or (0, b"")
    got = signed.verify(signed.verify_key_of(seed), wire, device_id, current_version=1)
    assert got.version == version == 2 and dict(got.values) == {"services.ssh.port": 2222}


def test_bad_settings_change_nothing_and_name_every_problem(state: Path) -> None:
    bad = console("settings", "--state", str(state), "--name", "nas-1", "--set",
                  "services.ssh.port=70000", "--set", "shell=/bin/sh", check=False)
    assert bad.returncode == 78
    assert "shell: not a setting" in bad.stderr
    assert "settings" in bad.stderr and "hint:" in bad.stderr
    shown = console("settings", "--state", str(state), "--name", "nas-1").stdout
    assert "settings version 0" in shown
    unknown = console("settings", "--state", str(state), "--name", "nope", "--set",
                      "services.ssh.port=2", check=False)
    assert unknown.returncode == 64 and "no device named" in unknown.stderr


def test_assignments_are_read_as_toml_values() -> None:
    assert settings.parse_assignment("services.ssh.port=2222") == ("services.ssh.port", 2222)
    assert settings.parse_assignment("services.ssh.enabled=false") == (
        "services.ssh.enabled", False)
    assert settings.parse_assignment('network.dns=["10.0.0.1"]') == ("network.dns",
                                                                      ["10.0.0.1"])
    assert settings.parse_assignment("device.hostname=files-2") == ("device.hostname",
                                                                    "files-2")


def test_a_stale_version_never_overwrites_a_newer_one(tmp_path: Path) -> None:
    store = Store(tmp_path / "c.db")
    key = OwnPrivateKey.generate().public()
    store.enroll("d", key.text(), key.device_id(), time.time())
    store.put_settings(key.device_id(), 3, b"three", time.time())
    store.put_settings(key.device_id(), 2, b"two", time.time())
    assert store.settings_of(key.device_id()) == (3, b"three")
