"""``python3 -m firmware.applier boot|serve``: the device's settings applier (root, no network).

``boot`` puts the applied signed settings in effect at boot, before the units they change start
(coalmine-settings-boot.service); ``serve`` runs for the length of a config-mode session
(coalmine-settings.service, bound to coalmine-config.target) and applies what the agent fetches.
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path
from types import FrameType

from firmware.applier.applier import ROLLBACK_AFTER, Applier
from firmware.applier.system import RealSystem
from firmware.cli import add_config_argument, config_paths
from firmware.config import load
from firmware.eventpath import SocketSink
from firmware.shared.cli import main_guard, setup_logging
from firmware.shared.notify import systemd_notify

DRAIN_TIMEOUT = 45.0  # the agent restarts within RestartSec=15 plus its start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m firmware.applier",
        description="Put the device's signed settings in effect: at boot (boot), or while in "
                    "config mode, applying what the agent fetched from the console (serve).")
    parser.add_argument("command", choices=("boot", "serve"))
    add_config_argument(parser)
    parser.add_argument("--runtime-root", type=Path, default=Path("/run/systemd"),
                        help="where run-time unit and network files go (default %(default)s)")
    parser.add_argument("--rollback-after", type=float, default=ROLLBACK_AFTER, metavar="S",
                        help="seconds for the console to answer after a network change before "
                             "it is rolled back (default %(default).0f)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def work() -> int:
        cfg = load(config_paths(args))
        sink = SocketSink(cfg.event_socket("settings"))
        try:
            applier = Applier(cfg, RealSystem(), sink, runtime_root=args.runtime_root,
                              rollback_after=args.rollback_after)
            if args.command == "boot":
                applier.boot()
                return 0

            def on_signal(_sig: int, _frame: FrameType | None) -> None:
                applier.stop.set()

            signal.signal(signal.SIGTERM, on_signal)
            systemd_notify()("READY=1\nSTATUS=applying settings while in config mode")
            applier.serve()
        finally:
            sink.drain(DRAIN_TIMEOUT)  # outcomes wait for an agent that is restarting
            sink.close()
        return 0

    return main_guard(work)


if __name__ == "__main__":
    sys.exit(main())
