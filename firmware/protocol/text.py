"""Attacker text made inert and bounded: the one rule every part applies to strings it shows.

Whatever an attacker typed (a user name, a version line, a path) passes through ``inert`` at the
service that saw it, again at the agent (a compromised service is still attacker input) and
again at the console (a compromised device is too): bytes are decoded with replacement, every
control, format, surrogate, private-use and unassigned character and every line or paragraph
separator is written as a visible escape (``\\x1b``, ``\\u202e``), and the result is cut to a
bound.  Applying it twice changes nothing, so each layer can apply it without knowing the others.
"""

from __future__ import annotations

import unicodedata

MAX_VALUE_CHARS = 1024
_INERT_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"})
ELLIPSIS = "\u2026"


def bound(text: str, limit: int = MAX_VALUE_CHARS) -> str:
    """Cut ``text`` to ``limit`` characters, marking the cut."""
    return text if len(text) <= limit else text[: limit - 1] + ELLIPSIS


def inert(value: str | bytes, limit: int = MAX_VALUE_CHARS) -> str:
    """Attacker text as a bounded string with every control/format character escaped."""
    if isinstance(value, bytes):
        value = value[: 4 * limit].decode("utf-8", errors="replace")
    value = value[: 4 * limit]
    if value.isprintable():  # no Cc/Cf/Cs/Co/Cn/Zl/Zp character: nothing to escape (~15x faster)
        return bound(value, limit)
    out = "".join(
        _escape(ch) if unicodedata.category(ch) in _INERT_CATEGORIES else ch for ch in value)
    return bound(out, limit)


def _escape(ch: str) -> str:
    n = ord(ch)
    return f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000 else f"\\U{n:08x}"
