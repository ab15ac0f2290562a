"""Command-line plumbing the device runtime's entry points share: the layered ``--config``.

The error guard and logging setup every entry point uses live in :mod:`firmware.shared.cli`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from firmware.config import DEFAULT_PATH


def add_config_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", type=Path, metavar="FILE",
                        help=f"device.toml; repeat to layer overrides (default {DEFAULT_PATH})")


def config_paths(args: argparse.Namespace) -> list[Path]:
    return list(args.config or [DEFAULT_PATH])
