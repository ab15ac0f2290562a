"""Linters are tests: ruff, mypy (strict) and shellcheck over the whole tree."""

import shutil
import sys
from pathlib import Path

import pytest

from firmware.shared.proc import output
from firmware.shared.proc import run as proc_run

ROOT = Path(__file__).resolve().parent.parent


def run(argv: list[str]) -> None:
    proc = proc_run(argv, cwd=ROOT, capture=True, quiet=True, check=False, timeout=900)
    assert proc.returncode == 0, (f"{' '.join(argv)} failed:\n{proc.stdout.decode()}\n"
                                  f"{proc.stderr.decode()}")


def test_ruff():
    run([sys.executable, "-m", "ruff", "check", "."])


def test_mypy():
    run([sys.executable, "-m", "mypy"])


def shell_scripts() -> list[str]:
    out = output(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, timeout=60).split()
    found = []
    for name in out:
        path = ROOT / name
        if not path.is_file() or name.startswith("out/"):
            continue
        if name.endswith(".sh") or path.read_bytes()[:40].startswith((b"#!/bin/sh",
                                                                      b"#!/usr/bin/env bash",
                                                                      b"#!/bin/bash")):
            found.append(name)
    return found


def test_shellcheck():
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck missing: run `make deps`")
    scripts = shell_scripts()
    assert ".ci/run" in scripts
    run(["shellcheck", "-x", *scripts])
