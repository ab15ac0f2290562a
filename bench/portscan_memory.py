"""Resident memory of the port-scan detector's scapy: what importing only its layers costs.

Issue 12 measured ~53 MB for scapy's layers on the build host, and the device runtime has a
budget (the whole runtime with ten services <= 100 MB idle).  Each row is a fresh interpreter
(this one, PYTHONDONTWRITEBYTECODE=1 so no row pays for compiling) reporting its peak resident
set (``ru_maxrss``) after its imports and, where it can, after dissecting one packet (scapy
loads some things at first use):

- a bare interpreter, the baseline every service pays anyway;
- the detector's module as every service process imports it (``discover`` imports every
  service module): scapy must not be in it;
- the detector with its decoder made, i.e. what it imports when it starts (scapy.layers.inet,
  scapy.layers.inet6);
- ``from scapy.all import *``, what a scapy tutorial would import.

The image's figure (Debian's python3-scapy on the board's Python) is measured on the device;
this is the build host's.

Run: python3 -m bench.portscan_memory
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKET = ("p = IP(bytes(IP(dst='192.0.2.1') / TCP(flags='S', options=[('MSS', 1460)])))\n"
          "assert p.haslayer(TCP)\n")
ROWS = {
    "bare python": "",
    "firmware.services.portscan imported (every service)":
        "import firmware.services.portscan\n"
        "import sys\nassert not any(m.startswith('scapy') for m in sys.modules)\n",
    "the detector's decoder (scapy.layers.inet + inet6)":
        "from firmware.services.portscan import ETH_P_IP, make_decoder\n"
        "from scapy.layers.inet import IP, TCP\n"
        "d = make_decoder()\n" + PACKET + "assert d(bytes(p), ETH_P_IP) is not None\n",
    "from scapy.all import *": "from scapy.all import IP, TCP\nimport scapy.all\n" + PACKET,
}


def peak_kib(code: str) -> int:
    probe = code + "import resource\nprint(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                         text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT),
                              "PYTHONDONTWRITEBYTECODE": "1"}).stdout
    return int(out.split()[-1])


def main(argv: Sequence[str] | None = None) -> int:
    figures = {name: min(peak_kib(code) for _ in range(3)) for name, code in ROWS.items()}
    bare = figures["bare python"]
    print(f"   {'peak resident set (ru_maxrss), best of 3':<56} {'MiB':>7} {'+ bare':>8}")
    for name, kib in figures.items():
        print(f"   {name:<56} {kib / 1024:7.1f} {(kib - bare) / 1024:+8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
