"""The event catalogue is closed: emitted codes == catalogue == docs/events.md.

Emitters declare what they emit (``EMITS`` on agent classes, ``event_codes`` on services); an
AST scan checks that no module references an EventCode it has not declared."""

import ast
import re
from pathlib import Path

from firmware.protocol.catalogue import DESCRIPTIONS, EventCode

ROOT = Path(__file__).resolve().parent.parent
DECLARATIONS = {"EMITS", "event_codes"}


def scan(path: Path) -> tuple[set[str], set[str]]:
    """(codes declared in EMITS/event_codes, codes referenced anywhere) in one module."""
    tree = ast.parse(path.read_text(), str(path))
    declared: set[str] = set()
    referenced: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) \
                and node.value.id == "EventCode":
            referenced.add(node.attr)
        if isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id in DECLARATIONS for t in targets):
                declared |= {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)
                             and isinstance(n.value, ast.Name) and n.value.id == "EventCode"}
    return declared, referenced


def emitters() -> dict[str, tuple[set[str], set[str]]]:
    """Device code emits device events; the console raises its own about devices."""
    files = [*(ROOT / "firmware").rglob("*.py"), *(ROOT / "console").rglob("*.py")]
    return {str(p.relative_to(ROOT)): scan(p) for p in files if p.name != "catalogue.py"}


def documented() -> dict[int, str]:
    rows = re.findall(r"^\| (\d+) \| ([A-Z_]+) \|", (ROOT / "docs/events.md").read_text(), re.M)
    return {int(code): name for code, name in rows}


def test_docs_match_catalogue():
    assert documented() == {int(c): c.name for c in EventCode}
    assert set(DESCRIPTIONS) == set(EventCode)


def test_every_reference_is_declared_and_every_code_is_emitted():
    declared_all: set[str] = set()
    for name, (declared, referenced) in emitters().items():
        assert referenced <= declared, f"{name} uses undeclared codes {referenced - declared}"
        declared_all |= declared
    assert declared_all == {c.name for c in EventCode}


def test_scan_detects_undeclared_use(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("EMITS = frozenset({EventCode.BOOT})\nx = EventCode.SSH_LOGIN_ATTEMPT\n")
    declared, referenced = scan(f)
    assert declared == {"BOOT"} and referenced - declared == {"SSH_LOGIN_ATTEMPT"}


def test_each_service_declares_exactly_the_codes_the_agent_accepts_from_it():
    from firmware.protocol.catalogue import SOURCES
    from firmware.services.base import discover

    services = discover()
    # not honeypots: the button daemon (tests/button) and the settings applier (tests/applier)
    assert set(services) == set(SOURCES) - {"button", "settings"}
    for name, cls in services.items():
        assert cls.event_codes == SOURCES[name], name


def test_device_level_codes_come_from_no_service():
    from firmware.protocol.catalogue import SOURCES

    device_level = {c for c in EventCode if c < 2000}
    own = {"button": {EventCode.CONFIG_MODE_ENTERED, EventCode.CONFIG_MODE_LEFT,
                      EventCode.BUTTON_PRESSED},
           "settings": {EventCode.SETTINGS_APPLIED, EventCode.SETTINGS_NOT_APPLIED}}
    for source, codes in SOURCES.items():
        if source in own:  # device daemons, not honeypots: their own device-level codes only
            assert codes == own[source], source
        else:
            assert not codes & device_level, source
