"""The floors file: written off the serving thread, newest snapshot wins, failures counted."""

from __future__ import annotations

from pathlib import Path

from console import floors


def test_writer_writes_the_newest_snapshot_and_stops(tmp_path: Path) -> None:
    path = tmp_path / "floors"
    writer = floors.Writer(path)
    for counter in range(50):
        writer.submit({b"\x01" * 8: (counter, 0xABCD, counter - 1)})
    writer.close()
    assert floors.read(path) == {b"\x01" * 8: (49, 0xABCD, 48)}
    assert oct(path.stat().st_mode & 0o777) == "0o600"


def test_a_failed_write_is_counted_and_the_next_one_tried(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")
    writer = floors.Writer(blocker / "floors")  # its directory is a file: every write fails
    writer.submit({b"\x02" * 8: (1, 1, 1)})
    writer.close()
    assert writer.failures == 1


def test_damaged_lines_are_skipped_and_old_lines_read(tmp_path: Path) -> None:
    path = tmp_path / "floors"
    path.write_text("0102030405060708 12 0000beef\nnot a line\n0202030405060708 9 0000000a 7\n")
    assert floors.read(path) == {bytes.fromhex("0102030405060708"): (12, 0xBEEF, -1),
                                 bytes.fromhex("0202030405060708"): (9, 10, 7)}
