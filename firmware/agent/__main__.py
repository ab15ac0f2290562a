"""``python3 -m firmware.agent``: the DNS beacon agent of a coalmine device."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from firmware.agent.runner import Agent
from firmware.cli import add_config_argument, config_paths
from firmware.config import load
from firmware.shared.cli import main_guard, setup_logging


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m firmware.agent",
        description="Send this device's events and heartbeats to its console over DNS.")
    add_config_argument(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def work() -> int:
        agent = Agent(load(config_paths(args)))

        def on_signal(_sig: int, _frame: FrameType | None) -> None:
            agent.stop.set()
            agent.wake.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        agent.serve()
        return 0

    return main_guard(work)


if __name__ == "__main__":
    sys.exit(main())
