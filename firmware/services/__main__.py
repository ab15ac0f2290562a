"""Command line: run one honeypot service as a process (one systemd unit per service).

``python3 -m firmware.services NAME --config FILE [--config FILE ...]`` loads the layered device
configuration, starts the named service with a sink to the agent's event socket and serves until
SIGTERM or SIGINT.  ``NAME --make-host-key [--key-group GROUP]`` instead creates what the
service reads but may not write (the SSH host key) and exits: on the device a root oneshot runs
it before the service, which itself gets no writable storage.  Errors become a message, a hint
and an exit code here only (through ``firmware.shared.cli.main_guard``, like the agent).
Logs go to stderr (the journal); they never contain passwords.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence

from firmware import config
from firmware.cli import add_config_argument, config_paths
from firmware.eventpath import SocketSink
from firmware.services.base import Service, discover, load
from firmware.shared.cli import main_guard, setup_logging
from firmware.shared.errors import UsageError

log = logging.getLogger("firmware.services")
PROG = "python3 -m firmware.services"


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Run one coalmine honeypot service until SIGTERM.")
    parser.add_argument("name", nargs="?", help="service to run (see --list)")
    add_config_argument(parser)
    parser.add_argument("--list", action="store_true", help="list the services and exit")
    parser.add_argument("--make-host-key", action="store_true",
                        help="create the service's host key if missing, then exit (run as root "
                             "before the service starts; the service never writes it)")
    parser.add_argument("--key-group", metavar="GROUP",
                        help="with --make-host-key: the group that may read the key")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


async def serve(service: Service) -> None:
    """Start ``service`` and run it until SIGTERM/SIGINT, then stop it cleanly."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await service.start()
    try:
        await service.serve_until(stop)
        log.info("%s stopping", service.name)
    finally:
        await service.stop()


def run(args: argparse.Namespace) -> int:
    if args.list:
        services = discover()
        for name in sorted(services):
            print(f"{name}\tdefault port {services[name].default_port}")
        return 0
    if not args.name:
        raise UsageError("no service named", hint=f"run {PROG} --list to see the services")
    cls = load(args.name)
    if cls is None:
        raise UsageError(f"unknown service {args.name!r}",
                         hint=f"known services: {', '.join(sorted(discover()))}")
    cfg = config.load(config_paths(args))
    if args.make_host_key:
        print(cls.make_host_key(cfg, args.key_group), flush=True)
        return 0
    if args.key_group:
        raise UsageError("--key-group needs --make-host-key")
    if not cls.enabled(cfg):
        log.info("%s is disabled in the configuration; nothing to do", cls.name)
        return 0
    sink = SocketSink(cfg.event_socket(cls.name))
    try:
        asyncio.run(serve(cls(cfg, [sink])))
    finally:
        sink.close()
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.verbose)
    logging.getLogger("asyncssh").setLevel(logging.WARNING)  # it logs every auth at INFO
    return main_guard(lambda: run(args))


if __name__ == "__main__":
    sys.exit(main())
