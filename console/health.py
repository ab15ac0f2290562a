"""What the console concludes from a device's heartbeats, or from their absence (pure).

A device that looks healthy must be: a heartbeat alone proves only that the agent's sender
runs.  Each heartbeat therefore carries the agent's own account (receiver alive, datagrams
refused, queue depth and the age of its oldest event, events dropped or not stored) and its
interval, and the console turns what changed into events of its own, once per episode:

* DEVICE_OFFLINE when no heartbeat came for three of the device's own intervals (+30 s), and
  DEVICE_ONLINE when one comes again;
* DEVICE_STALLED when the oldest queued event waits longer than ``stall_after``;
* DEVICE_UNHEALTHY when the receiver is down, the queue was reset, or refusals, drops or store
  failures grew since the previous heartbeat (repeated at most every ``repeat_after`` while the
  counts keep growing, with the counts since the last report).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from firmware.protocol.catalogue import EventCode
from firmware.protocol.messages import HB_QUEUE_RESET, HB_RECEIVER_ALIVE, Heartbeat

Raised = tuple[EventCode, dict[str, str | int]]
EMITS = frozenset({EventCode.DEVICE_OFFLINE, EventCode.DEVICE_ONLINE, EventCode.DEVICE_STALLED,
                   EventCode.DEVICE_UNHEALTHY})
_COUNTS = ("rejected", "dropped", "store_failed")


@dataclass(frozen=True)
class HealthLimits:
    stall_after: float = 600.0
    repeat_after: float = 600.0
    offline_grace: float = 30.0
    offline_intervals: int = 3


@dataclass
class DeviceHealth:
    """The console's view of one device's health; ``baseline`` holds the last reported counts."""

    last_heartbeat: float | None = None
    interval: int | None = None
    beat: Heartbeat | None = None
    baseline: dict[str, int] = field(default_factory=dict)
    offline: bool = False
    stalled: bool = False
    unhealthy: bool = False
    unhealthy_since_report: dict[str, int] = field(default_factory=dict)
    last_unhealthy_report: float = 0.0

    @property
    def status(self) -> str:
        if self.last_heartbeat is None:
            return "never seen"
        flags = [name for name in ("offline", "stalled", "unhealthy") if getattr(self, name)]
        return ",".join(flags) or "ok"

    def restore(self, status: str, last_heartbeat: float | None, interval: int | None,
                counts: dict[str, int]) -> None:
        """Resume from what the store kept (a console restart keeps episodes open)."""
        self.last_heartbeat, self.interval = last_heartbeat, interval
        self.baseline = dict(counts)
        for name in ("offline", "stalled", "unhealthy"):
            setattr(self, name, name in status.split(","))


def on_heartbeat(h: DeviceHealth, beat: Heartbeat, now: float,
                 limits: HealthLimits) -> list[Raised]:
    """Record ``beat``; return the events it raises."""
    out: list[Raised] = []
    if h.offline and h.last_heartbeat is not None:
        out.append((EventCode.DEVICE_ONLINE, {"SILENT_FOR": int(now - h.last_heartbeat)}))
        h.offline = False
    previous = h.beat
    h.last_heartbeat, h.interval, h.beat = now, beat.interval, beat

    if beat.oldest_age > limits.stall_after and not h.stalled:
        h.stalled = True
        out.append((EventCode.DEVICE_STALLED, {"QUEUE": beat.queue_depth,
                                               "OLDEST_AGE": beat.oldest_age}))
    elif beat.oldest_age <= limits.stall_after:
        h.stalled = False

    grown = {}
    for name in _COUNTS:
        value, before = getattr(beat, name), h.baseline.get(name, 0)
        delta = value - before if value >= before else value  # smaller: the agent restarted
        if delta > 0:
            grown[name] = delta
        h.baseline[name] = value
    reasons = [f"{n.replace('_', ' ')} +{d}" for n, d in grown.items()]
    if not beat.flags & HB_RECEIVER_ALIVE:
        reasons.insert(0, "event receiver down")
    if beat.flags & HB_QUEUE_RESET and (previous is None or not previous.flags & HB_QUEUE_RESET):
        reasons.insert(0, "queue reset at start")  # reported once per agent run
    if not reasons:
        h.unhealthy = False
        return out
    for name, delta in grown.items():
        h.unhealthy_since_report[name] = h.unhealthy_since_report.get(name, 0) + delta
    if not h.unhealthy or now - h.last_unhealthy_report >= limits.repeat_after:
        data: dict[str, str | int] = {"REASONS": "; ".join(reasons)}
        data.update({k.upper(): v for k, v in h.unhealthy_since_report.items()})
        out.append((EventCode.DEVICE_UNHEALTHY, data))
        h.unhealthy_since_report = {}
        h.last_unhealthy_report = now
    h.unhealthy = True
    return out


def on_tick(h: DeviceHealth, now: float, limits: HealthLimits) -> list[Raised]:
    """Check for silence; return DEVICE_OFFLINE once when the heartbeats stopped."""
    if h.offline or h.last_heartbeat is None or not h.interval:
        return []
    allowed = limits.offline_intervals * h.interval + limits.offline_grace
    if now - h.last_heartbeat <= allowed:
        return []
    h.offline = True
    return [(EventCode.DEVICE_OFFLINE, {"LAST_SEEN_AGO": int(now - h.last_heartbeat),
                                        "INTERVAL": h.interval})]
