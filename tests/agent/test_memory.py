"""The agent's memory report read from a cgroup v2 tree laid out as systemd and the kernel lay
it out (this host runs cgroup v1; the image's real tree is read in tests/image/test_qemu_boot.py).
"""

from __future__ import annotations

from pathlib import Path

from firmware.agent.memory import (
    MAX_UNITS,
    MemoryWatch,
    listed,
    read_units,
    report,
    short_name,
)

STAT = """anon {anon}
file 9162752
kernel 1327104
kernel_stack 65536
pagetables 229376
sec_pagetables 0
percpu 0
sock 0
vmalloc 0
shmem 0
zswap 0
zswapped 0
file_mapped {mapped}
file_dirty 0
file_writeback 0
swapcached 0
anon_thp 0
inactive_anon 8192000
active_anon 4096
"""
EVENTS = "low 0\nhigh 0\nmax {oom}\noom 0\noom_kill {oom}\noom_group_kill 0\n"


def unit(root: Path, path: str, *, current: int, anon: int, mapped: int, oom: int = 0) -> None:
    d = root / path
    d.mkdir(parents=True)
    (d / "memory.current").write_text(f"{current}\n")
    (d / "memory.stat").write_text(STAT.format(anon=anon, mapped=mapped))
    (d / "memory.events").write_text(EVENTS.format(oom=oom))


def tree(root: Path) -> Path:
    unit(root, "coalmine-agent.service", current=30 << 20, anon=12 << 20, mapped=6 << 20)
    unit(root, "coalmine-button.service", current=20 << 20, anon=8 << 20, mapped=2 << 20)
    unit(root, "system-coalmine\\x2dlistener.slice/coalmine-listener@ssh.service",
         current=40 << 20, anon=20 << 20, mapped=4 << 20)
    unit(root, "systemd-journald.service", current=9 << 20, anon=1 << 20, mapped=1 << 20)
    unit(root, "system-getty.slice/getty@tty1.service", current=1 << 20, anon=1, mapped=1)
    (root / "system-coalmine\\x2dlistener.slice" / "memory.current").write_text("1\n")
    return root


def test_every_coalmine_unit_and_template_instance_is_read_and_nothing_else(tmp_path: Path
                                                                           ) -> None:
    units = read_units(tree(tmp_path))
    assert sorted(units) == ["agent", "button", "listener@ssh"]
    assert units["listener@ssh"].resident == 24 << 20 and units["agent"].charged == 30 << 20
    data = report(units)
    assert data == {"RESIDENT_KB": (18 + 10 + 24) << 10, "CHARGED_KB": 90 << 10,
                    "UNITS": f"listener@ssh={24 << 10} agent={18 << 10} button={10 << 10}",
                    "OOM_KILLS": 0}
    assert listed(str(data["UNITS"])) == {"listener@ssh": 24 << 10, "agent": 18 << 10,
                                          "button": 10 << 10}
    assert short_name("coalmine-cert@rdp.service") == "cert@rdp"


def test_a_unit_that_stops_while_it_is_read_and_junk_files_are_skipped(tmp_path: Path) -> None:
    root = tree(tmp_path)
    (root / "coalmine-button.service" / "memory.current").unlink()  # gone mid-walk
    (root / "coalmine-agent.service" / "memory.stat").write_bytes(b"\xff\xfeanon x\n" * 900)
    units = read_units(root)
    assert sorted(units) == ["agent", "listener@ssh"] and units["agent"].resident == 0
    assert read_units(tmp_path / "missing") == {}
    for i in range(MAX_UNITS + 5):
        unit(root, f"coalmine-many{i}.service", current=1 << 20, anon=1 << 20, mapped=0)
    data = report(read_units(root))
    assert len(str(data["UNITS"])) <= 1000 and data["RESIDENT_KB"] == (24 + MAX_UNITS + 5) << 10


def test_reports_come_at_the_first_check_on_schedule_and_at_once_after_an_oom_kill(
        tmp_path: Path) -> None:
    root = tree(tmp_path)
    watch = MemoryWatch(every=3600, root=root)
    assert watch.check(100.0) is not None
    assert watch.check(200.0) is None
    (root / "coalmine-agent.service" / "memory.events").write_text(EVENTS.format(oom=1))
    killed = watch.check(300.0)
    assert killed is not None and killed["OOM_KILLS"] == 1
    assert watch.check(400.0) is None, "the same kill is reported once"
    assert watch.check(3900.0) is not None
    assert MemoryWatch(every=60, root=tmp_path / "none").check(0.0) is None
