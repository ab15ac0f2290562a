"""The closed event catalogue: every event type coalmine can emit, with a stable integer code.

Codes follow OpenCanary's ``logtype`` numbers wherever OpenCanary has the event, so SIEM
pipelines built for OpenCanary keep working; coalmine's own events take numbers OpenCanary does
not use.  Codes are never renumbered or reused.  ``docs/events.md`` lists the same table and a
test keeps code, docs and emitters in step.
"""

from __future__ import annotations

import enum


class EventCode(enum.IntEnum):
    """Stable event type codes (OpenCanary ``logtype`` compatible)."""

    BOOT = 1000  # device runtime started (agent start after boot or restart)
    HEARTBEAT = 1004  # device alive; kept as the device's last-seen time, not stored per beat
    EVENTS_DROPPED = 1101  # the persistent queue was full and the oldest events were dropped
    SSH_NEW_CONNECTION = 4000
    SSH_REMOTE_VERSION = 4001
    SSH_LOGIN_ATTEMPT = 4002
    SSH_PUBKEY_ATTEMPT = 4003  # coalmine: public-key attempt with key type and fingerprint


DESCRIPTIONS: dict[EventCode, str] = {
    EventCode.BOOT: "device runtime started",
    EventCode.HEARTBEAT: "device heartbeat",
    EventCode.EVENTS_DROPPED: "events dropped: device queue was full",
    EventCode.SSH_NEW_CONNECTION: "SSH new connection",
    EventCode.SSH_REMOTE_VERSION: "SSH remote version",
    EventCode.SSH_LOGIN_ATTEMPT: "SSH password login attempt",
    EventCode.SSH_PUBKEY_ATTEMPT: "SSH public key login attempt",
}

# logdata keys that hold secrets: masked by default wherever events are shown to people.
SECRET_KEYS = frozenset({"PASSWORD"})


def lookup(code: int) -> EventCode | None:
    """Return the catalogue entry for ``code``, or None when the code is not in the catalogue."""
    try:
        return EventCode(code)
    except ValueError:
        return None
