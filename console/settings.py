"""Device settings as the operator edits them: merged, validated, versioned, signed, stored.

The console keeps each device's newest signed settings (``settings`` table); the device takes
them only in config mode (docs/pairing.md, "Settings"), verifying them against the settings key
it pinned when it was paired (:mod:`firmware.protocol.settings`).  The signing key
(``settings.key`` in the state directory) signs nothing else.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping, Sequence
from typing import Any

from console.store import Store
from firmware.protocol import settings as signed
from firmware.shared.errors import ConfigError, UsageError


def parse_assignment(text: str) -> tuple[str, Any]:
    """``services.ssh.port=2222`` -> (key, 2222): the value read as TOML (numbers, true/false,
    ["lists"]), else taken as a plain string."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"bad --set {text!r}", hint="use KEY=VALUE, e.g. services.ssh.port=2222")
    try:
        parsed = tomllib.loads(f"v = {value.strip()}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value.strip()
    return key.strip(), parsed


def current(store: Store, device_id: bytes) -> tuple[int, dict[str, Any]]:
    """(version, values) of the device's newest settings; (0, {}) before the first change."""
    held = store.settings_of(device_id)
    return (0, {}) if held is None else signed.kept(held[1])


def change(store: Store, seed: bytes, name: str, *, assignments: Sequence[str],
           unset: Sequence[str], now: float) -> signed.Settings:
    """Apply ``assignments`` (KEY=VALUE) and ``unset`` (KEY) to the device's settings, then sign
    and store them as the next version.  Every problem is reported at once; nothing is stored
    unless all of them are valid."""
    device_id = store.device_id_of(name)
    version, values = current(store, device_id)
    merged: dict[str, Any] = dict(values)
    for key in unset:
        merged.pop(key, None)
    merged.update(parse_assignment(a) for a in assignments)
    problems = signed.validate(merged)
    if problems:
        raise ConfigError(f"settings for {name} not changed", problems=problems,
                          hint="see docs/pairing.md for the settings a device takes")
    new = signed.Settings(device_id, version + 1, merged)
    store.put_settings(device_id, new.version, signed.sign(seed, new), now)
    return new


def describe(values: Mapping[str, Any]) -> str:
    return "\n".join(f"  {k} = {json.dumps(v)}" for k, v in sorted(values.items())) or "  (none)"
