"""coalmine.toml as a defender writes it: every problem at once, each with its file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from firmware.config import load, parse
from firmware.shared.errors import ConfigError


def test_every_problem_at_once_with_the_line_that_set_it(tmp_path: Path) -> None:
    shipped = tmp_path / "device.toml"
    shipped.write_text('[button]\nline = 3\n')
    card = tmp_path / "coalmine.toml"
    card.write_text('# from the card\n[console]\nzone = "c.test"\npublic_key = "AAAA"\n\n'
                    '[button]\nbackend = "magic"\nline = -1\n\n[services.ssh]\nport = 70000\n')
    with pytest.raises(ConfigError) as err:
        load([shipped, card])
    problems = err.value.problems
    assert len(problems) == 4, problems
    assert any(p.startswith(f"{card}:4: console.public_key:") for p in problems)
    assert any(p.startswith(f"{card}:7: button.backend:") for p in problems)
    assert any(p.startswith(f"{card}:8: button.line:") for p in problems), "the later file wins"
    assert any(p.startswith(f"{card}:11: services.ssh.port:") for p in problems)


def test_a_toml_syntax_error_names_its_line(tmp_path: Path) -> None:
    card = tmp_path / "coalmine.toml"
    card.write_text('[console]\nzone = c.test\n')
    with pytest.raises(ConfigError, match="line 2"):
        load([card])


def test_a_wrong_console_key_is_refused_before_anything_is_sent(tmp_path: Path) -> None:
    card = tmp_path / "coalmine.toml"
    card.write_text('[console]\nzone = "c.test"\npublic_key = "' + "A" * 43 + '="\n')
    with pytest.raises(ConfigError, match="low-order"):  # 32 zero bytes: every shared key alike
        load([card])


def test_smb_settings_and_numbers_that_never_end_are_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        parse({"limits": {"flood_window": float("inf"), "connection_timeout": float("nan")},
               "services": {"smb": {"honey_user": "ops", "honey_nt_hash": "xyz",
                                    "server_name": "A" * 16, "share": "a b"}}})
    text = str(caught.value)
    for problem in ("limits.flood_window: inf is not a finite number",
                    "limits.connection_timeout: nan is not a finite number",
                    "honey_nt_hash: not 32 hex digits", "services.smb.server_name",
                    "services.smb.share"):
        assert problem in text, text
    ok = parse({"services": {"smb": {"honey_user": "ops", "honey_nt_hash": "a" * 32}}})
    assert ok.smb.honey_user == "ops" and not ok.smb.enabled


def test_two_enabled_services_may_not_share_a_port() -> None:
    with pytest.raises(ConfigError) as caught:
        parse({"services": {"ftp": {"enabled": True, "port": 22},
                            "vnc": {"enabled": True, "port": 445},
                            "smb": {"enabled": True}}})
    assert str(caught.value).count("give each enabled service a port of its own") == 2
    assert "services.ftp.port and services.ssh.port: both 22" in str(caught.value)
    assert "services.smb.port and services.vnc.port: both 445" in str(caught.value)
    # a service that is off holds no port
    assert parse({"services": {"ftp": {"port": 22}}}).listeners["ftp"].port == 22
