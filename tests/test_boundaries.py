"""Architecture boundaries, checked on the source (AST), so a forbidden import anywhere fails,
executed or not; relative imports are resolved to the module they name.

* device code (firmware/) imports no console, signing, scripts or test code;
* the wire protocol does no I/O;
* services cannot reach the device key, frames or the agent;
* the shared helpers (firmware/shared) import only the standard library and each other;
* the console imports no device runtime internals (agent, services, event socket);
* the image build imports no console or signer code.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IO_MODULES = {"socket", "os", "subprocess", "sqlite3", "io", "pathlib", "shutil", "select",
              "asyncio", "selectors", "http", "urllib", "dns", "threading", "logging", "tempfile"}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def imports(path: Path, module: str | None = None) -> set[str]:
    """Every module ``path`` imports, relative imports resolved against its package."""
    tree = ast.parse(path.read_text(), str(path))
    package = (module or module_name(path)).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                stem = ".".join([*base, node.module] if node.module else base)
                found.add(stem)
                if not node.module:  # from . import x  -> the submodules named
                    found.update(f"{stem}.{alias.name}" for alias in node.names)
            elif node.module:
                found.add(node.module)
    return found


def top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def files(*parts: str) -> list[Path]:
    found = sorted(ROOT.joinpath(*parts).rglob("*.py"))
    assert found, f"no Python files under {'/'.join(parts)}: the check would be empty"
    return found


def violations(paths: list[Path], forbidden: tuple[str, ...]) -> dict[str, list[str]]:
    bad = {str(f): sorted(m for m in imports(f) if m.startswith(forbidden)) for f in paths}
    return {k: v for k, v in bad.items() if v}


def prefixes(*names: str) -> tuple[str, ...]:
    return tuple(p for n in names for p in (n, f"{n}."))


def test_firmware_imports_no_console_signing_scripts_or_tests():
    assert not violations(files("firmware"), prefixes("console", "signing", "scripts", "tests"))


def test_protocol_does_no_io():
    for f in files("firmware", "protocol"):
        used = {top(m) for m in imports(f)} & IO_MODULES
        assert not used, f"{f.relative_to(ROOT)} imports I/O modules {used}"
        assert "open(" not in f.read_text().replace("_open(", ""), f"{f} calls open()"


def test_services_cannot_reach_the_device_key():
    """Services only hand events to the agent's socket: no key, frame or agent code in them."""
    forbidden = prefixes("firmware.agent", "firmware.protocol.keys", "firmware.protocol.frame",
                         "nacl")
    assert not violations(files("firmware", "services"), forbidden)


def test_shared_helpers_need_only_the_standard_library():
    allowed = {"notify.py": {"systemd"}}  # sd_notify through python3-systemd, as the image has it
    for f in files("firmware", "shared"):
        outside = {m for m in imports(f) if top(m) not in sys.stdlib_module_names
                   and not m.startswith("firmware.shared")
                   and top(m) not in allowed.get(f.name, set())}
        assert not outside, f"{f.relative_to(ROOT)} imports {sorted(outside)}"


def test_console_imports_no_device_runtime_internals():
    forbidden = prefixes("firmware.agent", "firmware.services", "firmware.eventpath",
                         "firmware.config", "firmware.cli")
    assert not violations(files("console"), forbidden)


def test_image_build_imports_no_console_or_signer():
    assert not violations(files("scripts", "image"), prefixes("console", "signing", "tests"))


def test_the_checks_catch_violations_including_relative_imports(tmp_path):
    bad = tmp_path / "probe.py"  # read as if it were firmware/services/probe.py
    bad.write_text("from ..agent import runner\nfrom . import ssh\nimport console.server\n"
                   "from socket import socket\n")
    found = imports(bad, "firmware.services.probe")
    assert {"firmware.agent", "firmware.services.ssh", "console.server", "socket"} <= found
    forbidden = prefixes("firmware.agent", "console")
    assert sorted(m for m in found if m.startswith(forbidden)) == ["console.server",
                                                                  "firmware.agent"]
