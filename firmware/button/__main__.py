"""``python3 -m firmware.button``: the config-mode button daemon of a coalmine device."""

from __future__ import annotations

import argparse
import signal
import sys
from types import FrameType

from firmware.button.daemon import ButtonDaemon
from firmware.cli import add_config_argument, config_paths
from firmware.config import load
from firmware.eventpath import SocketSink
from firmware.shared.cli import main_guard, setup_logging
from firmware.shared.notify import systemd_notify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python3 -m firmware.button",
        description="Watch the config button: a long press enters config mode, a short press "
                    "leaves it; write the mode to <run_dir>/mode and drive the status LED.")
    add_config_argument(parser)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    setup_logging(args.verbose)

    def work() -> int:
        cfg = load(config_paths(args))
        sink = SocketSink(cfg.event_socket("button"))
        try:
            daemon = ButtonDaemon.from_config(cfg, sink, systemd_notify())

            def on_signal(_sig: int, _frame: FrameType | None) -> None:
                daemon.stop.set()

            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            daemon.serve()
        finally:
            sink.close()
        return 0

    return main_guard(work)


if __name__ == "__main__":
    sys.exit(main())
