"""``python3 -m firmware.button``: help, an error turned into a hint, SIGTERM ends it cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from firmware.button.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def config(tmp_path: Path, backend: str) -> Path:
    path = tmp_path / "device.toml"
    path.write_text(f'[device]\nrun_dir = "{tmp_path / "run"}"\n'
                    f'[button]\nbackend = "{backend}"\nled = "record"\n')
    return path


def test_help(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--help"])
    assert done.value.code == 0
    assert "--config FILE" in capsys.readouterr().out


def test_missing_gpio_library_is_a_message_a_hint_and_exit_69(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "gpiod", None)
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert main(["--config", str(config(tmp_path, "gpiod"))]) == 69
    err = capsys.readouterr().err
    assert "error: the gpiod button backend needs the Python module gpiod" in err
    assert "hint: install libgpiod's v2 Python bindings" in err
    assert not (tmp_path / "run" / "state" / "mode").exists()  # no mode claimed without a button


def test_runs_until_sigterm_and_leaves_the_led_dark(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    proc = subprocess.Popen([sys.executable, "-m", "firmware.button", "--config",
                             str(config(tmp_path, "none"))], cwd=ROOT, env=env,
                            stderr=subprocess.PIPE)
    mode = tmp_path / "run" / "state" / "mode"
    try:
        deadline = time.monotonic() + 30
        while not mode.exists() and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert mode.read_text() == "production\n"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
        assert proc.stderr is not None
        stderr = proc.stderr.read().decode()
        proc.stderr.close()
    assert "started in production mode" in stderr
    assert (tmp_path / "run" / "state" / "led").read_text() == "dark\n"
