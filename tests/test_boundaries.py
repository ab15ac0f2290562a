"""Architecture boundaries: device code imports no console or signing code; the wire protocol
does no I/O.  Checked on the source (AST), so a forbidden import anywhere fails, executed or not."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
IO_MODULES = {"socket", "os", "subprocess", "sqlite3", "io", "pathlib", "shutil", "select",
              "asyncio", "selectors", "http", "urllib", "dns", "threading", "logging", "tempfile"}


def imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def top(name: str) -> str:
    return name.split(".", maxsplit=1)[0]


def test_firmware_imports_no_console_or_signing():
    files = list((ROOT / "firmware").rglob("*.py"))
    assert len(files) > 10
    bad = {str(f.relative_to(ROOT)): sorted(m for m in imports(f) if top(m) in {"console",
                                                                              "signing"})
           for f in files}
    assert not {k: v for k, v in bad.items() if v}


def test_protocol_does_no_io():
    files = list((ROOT / "firmware" / "protocol").rglob("*.py"))
    assert files
    for f in files:
        used = {top(m) for m in imports(f)} & IO_MODULES
        assert not used, f"{f.relative_to(ROOT)} imports I/O modules {used}"
        assert "open(" not in f.read_text().replace("_open(", ""), f"{f} calls open()"


def test_the_check_itself_catches_a_violation(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import console.server\nfrom socket import socket\n")
    assert {top(m) for m in imports(bad)} == {"console", "socket"}


def test_services_cannot_reach_the_device_key():
    """Services only hand events to the agent's socket: no key, frame or agent code in them."""
    files = list((ROOT / "firmware" / "services").rglob("*.py"))
    assert files
    forbidden = ("firmware.agent", "firmware.protocol.keys", "firmware.protocol.frame", "nacl")
    for f in files:
        bad = sorted(m for m in imports(f) if m.startswith(forbidden))
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"
