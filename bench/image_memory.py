"""Device runtime memory in the image, where it runs: the qemu-arm64 board, Debian's Python 3.13.

bench/services_load.py measures the runtime on the build host; this one boots the real image
under QEMU (TCG) against a host console (scripts/image/armed.py, as the image tests do) and
reads what the device itself reports: event 1115 MEMORY, the agent's reading of each coalmine
unit's cgroup (firmware/agent/memory.py: resident = anon + file_mapped, a shared page counted
once, in the unit that touched it first; charged = memory.current, page cache included).  The
agent reports every 15 s here (``limits.memory_report``; shipped: 3600 s) and honeypots exit
after 60 s without a connection (``limits.idle_exit``; shipped: 300 s).

Four moments:

1. paired, config mode left: only what always runs (agent, button daemon, SSH socket unit);
2. signed settings turn on every honeypot (ftp, http, https, telnet, redis, mysql, vnc, rdp,
   smb beside ssh: ten) and the port-scan detector, applied in config mode as an operator does
   it, config mode left again: enabled, nobody connected yet (socket activation);
3. ``nmap -sV`` from the host through QEMU's forwards against the ten ports: every honeypot has
   started and answered a real scanner's probes (and the SSH honeypot one OpenSSH login);
4. ``idle_exit`` later: the honeypots have exited again.

Printed: each unit's resident KiB and the totals at each moment, beside the issue's figures
(SSH alone 43 MB and the agent 31 MB on the host before socket activation; OpenCanary's ten
services in one 67 MB process) and its goal (the whole runtime with ten services <= 100 MB
when idle).  Slow (a warm image build, a boot under emulation: ~15 minutes), so ``make bench``
skips it: ``make bench BENCH=image_memory``; ``--image DIR`` reuses a built out/qemu-arm64.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench._common import table
from bench.image_build import timed_build
from firmware.agent import memory
from firmware.shared.cli import main_guard
from firmware.shared.proc import run
from scripts.image import armed
from scripts.lab import Lab

REPORT_EVERY, IDLE_EXIT = 15.0, 60.0
HONEY_USER = "svc_scan"
HONEY_NT_HASH = "9b8ef0c0b6ba1c2de5e5e2f3f43e0b1f"  # any 32 hex digits: no login is made here
PORTS = {"ftp": 21, "telnet": 23, "http": 80, "https": 443, "smb": 445, "mysql": 3306,
         "rdp": 3389, "vnc": 5900, "redis": 6379}  # ssh: the lab's own forward to port 22
ISSUE_MB = {"ssh honeypot alone (host, before)": 43, "agent (host, before)": 31,
            "OpenCanary, ten services, one process": 67}
GOAL_MB = 100


def after(lab: Lab, before: list[dict[str, Any]], code: int, timeout: float
          ) -> dict[str, Any]:
    """The first event of ``code`` the console stored that is not in ``before``."""
    return lab.wait_event(lambda e: e["logtype"] == code and e not in before, timeout)


def press(lab: Lab, guest: armed.Guest, seconds: float, code: int) -> None:
    """Press the button and wait for the event ``code`` it leads to."""
    before = lab.events()
    guest.press(seconds)
    after(lab, before, code, 300)


def report(lab: Lab) -> dict[str, Any]:
    """The device's next memory report (1115) from now on."""
    data: dict[str, Any] = after(lab, lab.events(), 1115, 6 * REPORT_EVERY + 60)["logdata"]
    return data


def scan(guest: armed.Guest, lab: Lab) -> str:
    """nmap -sV against every forwarded honeypot port, and one OpenSSH login attempt."""
    ports = ",".join(str(guest.forwards[p]) for p in PORTS.values())
    start = time.monotonic()
    out = run(["nmap", "-sV", "-Pn", "-n", "--version-light", "-p", ports, "127.0.0.1"],
              capture=True, timeout=900, check=False)
    lab.ssh_attempt("root", "letmein", timeout=120)
    open_ports = sum(" open " in line for line in out.stdout.decode().splitlines())
    return f"nmap -sV: {open_ports} of {len(PORTS)} ports open, {time.monotonic() - start:.0f} s"


def measure(out: Path, work: Path) -> None:
    (work / "lab").mkdir(parents=True, exist_ok=True)
    with Lab(work / "lab", with_device=False) as lab:
        guest = armed.boot(lab, out, work, guest_ports=tuple(PORTS.values()),
                           limits={"memory_report": REPORT_EVERY, "idle_exit": IDLE_EXIT})
        try:
            armed.arm(lab, guest)
            press(lab, guest, 0.3, 1105)  # the fresh card's config mode: left
            moments = [("paired, always running", report(lab))]
            lab.console("settings", "--name", "qemu-device",
                        *(a for name in [*PORTS, "portscan"]
                          for a in ("--set", f"services.{name}.enabled=true")),
                        "--set", f"services.smb.honey_user={HONEY_USER}",
                        "--set", f'services.smb.honey_nt_hash="{HONEY_NT_HASH}"')
            press(lab, guest, 3.6, 1111)  # config mode: fetched, verified, applied
            press(lab, guest, 0.3, 1105)
            moments.append(("ten honeypots + portscan enabled, idle", report(lab)))
            scanned = scan(guest, lab)
            moments.append(("each has served a scanner", report(lab)))
            time.sleep(IDLE_EXIT)
            moments.append((f"{IDLE_EXIT:.0f} s later (idle exit)", report(lab)))
        finally:
            guest.stop()
    print_table(moments)
    print(f"   {scanned}")


def print_table(moments: list[tuple[str, dict[str, Any]]]) -> None:
    held = [memory.listed(str(data.get("UNITS", ""))) for _, data in moments]
    names = sorted({n for units in held for n in units},
                   key=lambda n: (-max(units.get(n, 0) for units in held), n))
    rows = [[f"  {n}", *(f"{units[n] / 1024:.1f}" if n in units else "-" for units in held)]
            for n in names]
    rows.append(["  RESIDENT (sum, MiB)", *(f"{d['RESIDENT_KB'] / 1024:.1f}" for _, d in moments)])
    rows.append(["  charged incl. page cache (MiB)",
                 *(f"{d['CHARGED_KB'] / 1024:.1f}" for _, d in moments)])
    rows.append(["  processes killed at MemoryMax", *(str(d["OOM_KILLS"]) for _, d in moments)])
    print("   qemu-arm64 image (TCG), resident MiB per coalmine unit, from its cgroup:")
    print(table(["unit", *(m for m, _ in moments)], rows))
    print("   the issue's figures: " + "; ".join(f"{k} {v} MB" for k, v in ISSUE_MB.items())
          + f"; goal: the runtime with ten services enabled <= {GOAL_MB} MB resident when idle")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--image", type=Path, help="a built out/qemu-arm64 (default: build one)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="coalmine-bench-") as tmp:
        base = Path(tmp)
        out = args.image
        if out is None:
            minutes, _ = timed_build("qemu-arm64", base / "image", dict(os.environ))
            print(f"   image built in {minutes:.1f} min", flush=True)
            out = base / "image"
        measure(out, base / "boot")


if __name__ == "__main__":
    sys.exit(main_guard(lambda: main(sys.argv[1:])))
