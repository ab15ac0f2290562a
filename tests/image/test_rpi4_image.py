"""The Raspberry Pi 4 image, checked by inspecting the file (there is no Pi 4 here, and QEMU 7.2
has no raspi4b machine): partition table, boot files, config.txt/cmdline.txt consistency, the
A/B root slots and the data partition."""

from __future__ import annotations

import gzip
import re
import subprocess
from pathlib import Path

import pytest

from tests.image.conftest import cpio_files, extract, partitions

pytestmark = [pytest.mark.image, pytest.mark.timeout(3600)]  # builds take minutes
MTOOLS_ENV = {"MTOOLS_SKIP_CHECK": "1", "PATH": "/usr/bin:/bin"}


def fat_files(fat: Path) -> set[str]:
    out = subprocess.run(["mdir", "-/", "-b", "-i", str(fat), "::"], capture_output=True,
                         text=True, check=True, env=MTOOLS_ENV).stdout
    return {line.strip().removeprefix("::/") for line in out.splitlines() if line.strip()}


def fat_text(fat: Path, name: str) -> str:
    return subprocess.run(["mtype", "-i", str(fat), f"::{name}"], capture_output=True,
                          text=True, check=True, env=MTOOLS_ENV).stdout


@pytest.fixture(scope="module")
def image(rpi4_out: Path) -> Path:
    return rpi4_out / "coalmine-rpi4.img"


@pytest.fixture(scope="module")
def fat(image: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return extract(image, partitions(image)[0], tmp_path_factory.mktemp("fat") / "boot.vfat")


def test_partition_table(image: Path) -> None:
    parts = partitions(image)
    assert [p["type"] for p in parts] == ["c", "83", "83", "83"]
    assert parts[0].get("bootable") is True
    assert parts[0]["label-id"] == "0xc0a1f1e5"
    assert int(parts[0]["start"]) == 2048  # 1 MiB aligned
    slot_a, slot_b = parts[1], parts[2]
    assert slot_a["size"] == slot_b["size"], "A/B root slots must be the same size"
    with image.open("rb") as f:
        f.seek(int(slot_a["start"]) * 512)
        assert f.read(4) == b"hsqs", "slot A holds a squashfs root"
        f.seek(int(parts[3]["start"]) * 512)
        assert f.read(1 << 20) == bytes(1 << 20), "data partition starts zeroed (first boot)"
    end = int(parts[3]["start"]) + int(parts[3]["size"])
    assert end * 512 == image.stat().st_size, "data is the last partition (grows at first boot)"


def test_boot_files(fat: Path) -> None:
    files = fat_files(fat)
    for name in ("start4.elf", "fixup4.dat", "config.txt", "a/vmlinuz", "a/initrd.img",
                 "a/cmdline.txt", "a/bcm2711-rpi-4-b.dtb", "a/bcm2711-rpi-400.dtb"):
        assert name in files, f"{name} missing from the boot partition: {sorted(files)}"


def test_config_and_cmdline_are_consistent(fat: Path, image: Path) -> None:
    config = fat_text(fat, "config.txt")
    settings = dict(re.findall(r"(?m)^(\w+)=(\S+)$", config))
    assert settings["arm_64bit"] == "1"
    prefix = settings["os_prefix"]
    assert prefix == "a/"
    files = fat_files(fat)
    assert prefix + settings["kernel"] in files
    initramfs = re.search(r"(?m)^initramfs (\S+) followkernel$", config)
    assert initramfs and prefix + initramfs.group(1) in files
    cmdline = fat_text(fat, prefix + "cmdline.txt")
    assert cmdline.count("\n") == 1 and cmdline.endswith("\n"), "cmdline.txt is one line"
    args = dict(a.split("=", 1) for a in cmdline.split() if "=" in a)
    parts = partitions(image)
    disk_id = str(parts[0]["label-id"]).removeprefix("0x")
    assert args["root"] == f"PARTUUID={disk_id}-02", "slot a boots root partition 2"
    assert args["coalmine.slot"] == "a"
    assert "console=ttyS1,115200" in cmdline.split()
    assert "coalmine.debug" not in cmdline


def test_production_initramfs_offers_no_shell(fat: Path, tmp_path: Path) -> None:
    initrd = tmp_path / "initrd.img"
    subprocess.run(["mcopy", "-i", str(fat), "::a/initrd.img", str(initrd)], check=True,
                   env=MTOOLS_ENV)
    init = cpio_files(gzip.decompress(initrd.read_bytes()))["init"].decode()
    assert "switch_root /newroot /sbin/init" in init
    assert "exec sh" not in init and "coalmine.debug)" not in init


def test_outputs_and_checksums(rpi4_out: Path) -> None:
    names = {p.name for p in rpi4_out.iterdir()}
    assert {"coalmine-rpi4.img", "coalmine-rpi4.img.xz", "coalmine-rpi4.bmap",
            "coalmine-rpi4.spdx.json", "SHA256SUMS"} <= names
    subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=rpi4_out, check=True)
    assert (rpi4_out / "coalmine-rpi4.img.xz").stat().st_size <= 100 * 2**20


def test_the_block_map_flashes_the_image_with_the_real_bmaptool(rpi4_out: Path,
                                                                 tmp_path: Path) -> None:
    """Our .bmap (scripts/image/bmap.py) is read by Debian's bmaptool, which checks the file's
    own checksum and every range's: the copy is the image, byte for byte."""
    img, bmap = rpi4_out / "coalmine-rpi4.img", rpi4_out / "coalmine-rpi4.bmap"
    card = tmp_path / "card.img"
    subprocess.run(["bmaptool", "copy", "--bmap", str(bmap), str(img), str(card)],
                   check=True, capture_output=True, timeout=600)
    assert subprocess.run(["cmp", str(img), str(card)], check=False).returncode == 0
    forged = tmp_path / "forged.bmap"
    forged.write_text(bmap.read_text().replace("<MappedBlocksCount> ", "<MappedBlocksCount> 1"))
    bad = subprocess.run(["bmaptool", "copy", "--bmap", str(forged), str(img),
                          str(tmp_path / "x.img")], capture_output=True, text=True, check=False,
                         timeout=600)
    assert bad.returncode != 0, "bmaptool checks the block map's own checksum"
