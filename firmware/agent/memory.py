"""What the device runtime holds in memory, as the kernel charges it to each coalmine unit.

A canary that runs out of memory loses events: a honeypot killed at its ``MemoryMax=`` drops
the connection it was recording, an agent that cannot allocate stops sending.  The operator
must see that coming, and the benchmark of the image must measure the runtime where it runs,
not on the build host.  Each systemd unit is a cgroup (v2, /sys/fs/cgroup, read-only for the
agent under ``ProtectControlGroups=``), so the agent reads, for every unit whose name starts
with ``coalmine`` (the agent, the button daemon, each honeypot instance, the settings applier):

* ``memory.current``: everything charged to the unit, page cache included: what
  ``MemoryMax=`` limits;
* ``memory.stat`` ``anon`` + ``file_mapped``: what its processes hold resident (private pages
  plus the file pages they map: the interpreter and libraries).  A shared page is charged to the
  unit that touched it first, so the sum over units counts it once, like a sum of Pss;
* ``memory.events`` ``oom_kill``: processes the kernel killed at the unit's limit.

The agent reports these (event 1115 MEMORY) at start, every ``limits.memory_report`` seconds,
and at once when a unit had a process killed for memory.  Socket-activated honeypots have no
cgroup while nobody is connected: an idle device shows only what always runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from firmware.shared.readfile import read_bounded

CGROUP = Path("/sys/fs/cgroup/system.slice")
PREFIX = "coalmine"
MAX_UNITS = 48  # units reported (a device runs about a dozen); the rest are summed only
STAT_BYTES = 8192  # memory.stat is ~1.5 KiB


@dataclass(frozen=True)
class UnitMemory:
    charged: int  # bytes: memory.current
    resident: int  # bytes: anon + file_mapped
    oom_kills: int


def _fields(text: bytes) -> dict[str, int]:
    out: dict[str, int] = {}
    for line in text.decode("ascii", "replace").splitlines():
        name, _, value = line.partition(" ")
        if value.strip().isdigit():
            out[name] = int(value)
    return out


def short_name(unit: str) -> str:
    """``coalmine-listener@ssh.service`` -> ``listener@ssh``; ``coalmine-agent.service`` ->
    ``agent``."""
    return unit.removesuffix(".service").removeprefix(PREFIX).lstrip("-") or PREFIX


def read_unit(path: Path) -> UnitMemory | None:
    """One unit's cgroup; None when it is gone or unreadable (it stopped while we looked)."""
    current = read_bounded(path / "memory.current", 32).strip()
    if not current.isdigit():
        return None
    stat = _fields(read_bounded(path / "memory.stat", STAT_BYTES))
    events = _fields(read_bounded(path / "memory.events", 512))
    return UnitMemory(int(current), stat.get("anon", 0) + stat.get("file_mapped", 0),
                      events.get("oom_kill", 0))


def read_units(root: Path = CGROUP) -> dict[str, UnitMemory]:
    """Every running coalmine unit under ``root`` and the slices in it (templates' instances
    live in ``system-coalmine\\x2d<template>.slice``), by short name."""
    found: dict[str, UnitMemory] = {}
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return found
    for entry in entries:
        if entry.name.endswith(".slice") and PREFIX in entry.name:
            try:
                inner = sorted(entry.iterdir())
            except OSError:
                continue
            candidates = [e for e in inner if e.name.startswith(PREFIX)]
        elif entry.name.startswith(PREFIX):
            candidates = [entry]
        else:
            continue
        for unit in candidates:
            if unit.name.endswith(".service"):
                memory = read_unit(unit)
                if memory is not None:
                    found[short_name(unit.name)] = memory
    return found


def report(units: dict[str, UnitMemory]) -> dict[str, str | int]:
    """The event's data: totals in KiB and each unit's resident KiB, largest first."""
    ranked = sorted(units.items(), key=lambda kv: (-kv[1].resident, kv[0]))
    listed = " ".join(f"{name}={m.resident >> 10}" for name, m in ranked[:MAX_UNITS])
    return {"RESIDENT_KB": sum(m.resident for m in units.values()) >> 10,
            "CHARGED_KB": sum(m.charged for m in units.values()) >> 10,
            "UNITS": listed[:1000], "OOM_KILLS": sum(m.oom_kills for m in units.values())}


def listed(units: str) -> dict[str, int]:
    """The UNITS field of a report read back: unit name -> resident KiB (the console's and the
    benchmarks' view of what ``report`` wrote)."""
    pairs = (item.partition("=") for item in units.split())
    return {name: int(kib) for name, _, kib in pairs if kib.isdigit()}


class MemoryWatch:
    """When to report: at the first check, every ``every`` seconds, and when OOM kills grow."""

    def __init__(self, every: float, root: Path = CGROUP) -> None:
        self.every, self.root = every, root
        self.last: float | None = None
        self.kills = 0

    def check(self, now: float) -> dict[str, str | int] | None:
        """The data of a report due at ``now`` (monotonic seconds), or None."""
        units = read_units(self.root)
        kills = sum(m.oom_kills for m in units.values())
        due = self.last is None or now - self.last >= self.every or kills > self.kills
        self.kills = max(self.kills, kills)
        if not due or not units:
            return None
        self.last = now
        return report(units)
