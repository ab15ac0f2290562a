"""Linters are tests: ruff, mypy (strict) and shellcheck over the whole tree."""

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(argv: list[str]) -> None:
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"{' '.join(argv)} failed:\n{proc.stdout}\n{proc.stderr}"


def test_ruff():
    run([sys.executable, "-m", "ruff", "check", "."])


def test_mypy():
    run([sys.executable, "-m", "mypy"])


def shell_scripts() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
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
