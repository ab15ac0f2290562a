"""The README's commands on a fresh Debian machine: a minbase chroot with only make and git.

Issue 8: `make image` died on a fresh Debian 12 with "No module named 'nacl'" because the
Python packages were pip-installed into whatever python3 was (on Debian: externally managed, no
pip), and mmdebstrap lacked arch-test.  A developer machine has everything already, so only a
machine that starts empty catches this.  The test builds one with mmdebstrap (the host's own
suite and mirror, read at run time), copies the working tree in (uncommitted work included) and
runs the install steps and the first commands as root inside it (tests/chroot.py: each step in
namespaces of its own, caches shared with the host).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chroot import Chroot, host_codename, made


def host_suite() -> str:
    suite = host_codename()
    if suite is None:
        pytest.skip("no VERSION_CODENAME in /etc/os-release: not a Debian release")
    return suite


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Chroot]:
    with made(tmp_path, host_suite()) as chroot:
        yield chroot


@pytest.mark.fresh
@pytest.mark.timeout(1800)
def test_readme_commands_on_a_fresh_machine(fresh: Chroot) -> None:
    # a clone, as the README's reader has one
    fresh.ok("git init -q && git add -A && "
             "git -c user.name=t -c user.email=t@localhost commit -qm snapshot")
    fresh.ok("make help")  # before any install: needs nothing but make
    # `make image` alone first, as the README's reader runs it: its own install step must bring
    # everything every build module imports (the original bug: firmware code needs nacl)
    fresh.ok("make image-deps", timeout=1200)
    fresh.ok(".venv/bin/python -m scripts.image.build --help")
    fresh.ok(".venv/bin/python -c " + shlex.quote(
        "import importlib, pkgutil, scripts.image as p\n"
        "for m in pkgutil.iter_modules(p.__path__):\n"
        "    importlib.import_module('scripts.image.' + m.name)"))
    fresh.ok("make deps", timeout=1200)
    fresh.ok("make help")

    bad = fresh.run("make image BOARD=nope")
    assert bad.returncode != 0, fresh.log[-1]
    assert "unknown BOARD='nope'" in bad.stderr, fresh.log[-1]
    assert "Traceback" not in bad.stdout + bad.stderr, fresh.log[-1]

    collected = fresh.ok(".venv/bin/python -m pytest --collect-only -q -p no:cacheprovider")
    m = re.search(r"^(\d+) tests? collected", collected.stdout, re.MULTILINE)
    assert m and int(m.group(1)) > 100, fresh.log[-1]

    fresh.ok(".venv/bin/python -c 'from systemd import daemon'")
