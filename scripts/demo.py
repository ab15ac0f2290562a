"""``make demo``: one real SSH login attempt on the device, shown as the console received it.

Starts the ``Lab`` (console, unbound with 0x20 case randomisation and QNAME minimisation, beacon
agent, SSH honeypot) on loopback, runs OpenSSH's client against the honeypot with a password,
waits for the event to arrive at the console through the resolver and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from firmware.shared.cli import main_guard, module_command
from scripts.lab import Lab


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--user", default="admin", help="user name to try (default admin)")
    parser.add_argument("--password", default="Winter2026!", help="password to try")
    args = parser.parse_args(argv)

    def work() -> int:
        print("[1/4] starting console, unbound (resolver) and the device runtime on loopback")
        with Lab() as lab:
            print(f"      console  udp+tcp 127.0.0.1:{lab.console_port}  zone c.test")
            print(f"      resolver unbound 127.0.0.1:{lab.resolver_port}  (use-caps-for-id, "
                  "qname-minimisation)")
            print(f"      device   SSH honeypot 127.0.0.1:{lab.ssh_port}, beacon agent")
            print(f"[2/4] ssh {args.user}@127.0.0.1 -p {lab.ssh_port}  (password "
                  f"{args.password!r})")
            start = time.monotonic()
            code = lab.ssh_attempt(args.user, args.password)
            print(f"      ssh exited with {code}: the honeypot never lets a login succeed")
            print("[3/4] waiting for the alert to arrive at the console over DNS ...")
            event = lab.wait_event(lambda e: e["logtype"] == 4002
                                   and e["logdata"].get("USERNAME") == args.user)
            print(f"      arrived after {time.monotonic() - start:.2f}s")
            print("[4/4] the alert as stored by the console (OpenCanary JSON):")
            print(json.dumps(event, indent=2, sort_keys=True))
            print(f"\nnext: `{module_command('console')} --help` to run a console of your own; "
                  "`make test` runs the test suite.")
        return 0

    return main_guard(work)


if __name__ == "__main__":
    sys.exit(main())
