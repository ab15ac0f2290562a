"""Filesystem images and the disk image, every byte a function of the inputs.

* boot partition: ``mkfs.vfat --invariant -i <id>`` (the -i after --invariant, else it is
  silently ignored), files copied in sorted order by mtools with a fixed timestamp;
* root slot: ``mksquashfs -reproducible`` with SOURCE_DATE_EPOCH (squashfs-tools then sets
  the filesystem time and clamps every inode time to it);
* partition table: ``sfdisk`` from board/common/layout.sfdisk (fixed disk id, so fixed PARTUUIDs);
* data partition: left unformatted with its first MiB written as zeros (so a flashed card never
  shows an old filesystem there); first boot formats and grows it.

Partitions are written without holes: bmaptool skips holes when flashing, so a hole inside a
filesystem would leave stale bytes from the card's previous life.  Holes remain only where
nothing is expected (slot B, the unused tail of the slots and of the data partition).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from firmware.shared.errors import ConfigError
from firmware.shared.proc import output, run
from scripts.image.common import BOARD_DIR, stage

MIB = 1 << 20
SECTOR = 512


@dataclass(frozen=True)
class Partition:
    number: int
    start: int  # bytes
    size: int  # bytes
    type: str


def layout_file(board: str) -> Path:
    own = BOARD_DIR / board / "layout.sfdisk"
    return own if own.is_file() else BOARD_DIR / "common" / "layout.sfdisk"


def disk_id(board: str) -> str:
    for line in layout_file(board).read_text().splitlines():
        if line.startswith("label-id:"):
            return line.split(":", 1)[1].strip().lower().removeprefix("0x")
    raise ConfigError(f"{layout_file(board)} has no label-id (the fixed disk id)")


def partuuid(board: str, number: int) -> str:
    return f"{disk_id(board)}-{number:02d}"


def fat_image(path: Path, size_bytes: int, files: dict[str, Path], *, volume_id: str,
              label: str, sde: int) -> None:
    """A FAT filesystem holding ``files`` (destination path -> source), reproducibly."""
    path.unlink(missing_ok=True)
    with path.open("wb") as f:
        f.truncate(size_bytes)
    run(["mkfs.vfat", "--invariant", "-i", volume_id, "-n", label, "-S", str(SECTOR), path],
        env={"SOURCE_DATE_EPOCH": str(sde)}, quiet=True)
    env = {"MTOOLS_SKIP_CHECK": "1", "SOURCE_DATE_EPOCH": str(sde), "TZ": "UTC"}
    made: set[str] = set()
    for dest in sorted(files):
        parts = dest.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            d = "/".join(parts[:i])
            if d not in made:
                run(["mmd", "-i", path, f"::{d}"], env=env, quiet=True)
                made.add(d)
        src = files[dest]
        os.utime(src, (sde, sde))
        run(["mcopy", "-m", "-i", path, src, f"::{dest}"], env=env, quiet=True)


def squashfs(root: Path, out: Path, sde: int) -> None:
    """The read-only root slot (zstd; every timestamp clamped; reproducible)."""
    out.unlink(missing_ok=True)
    run(["mksquashfs", root, out, "-noappend", "-no-progress", "-quiet", "-reproducible",
         "-comp", "zstd", "-Xcompression-level", "19", "-b", "256K", "-no-xattrs"],
        env={"SOURCE_DATE_EPOCH": str(sde)}, quiet=True)


def partition_table(img: Path, board: str, total: int) -> list[Partition]:
    """Create the image file of ``total`` bytes (sparse) and write the MBR from the layout."""
    img.unlink(missing_ok=True)
    with img.open("wb") as f:
        f.truncate(total)
    script = layout_file(board).read_bytes()
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", img], stdin=script, quiet=True)
    return partitions(img)


def partitions(img: Path) -> list[Partition]:
    table = json.loads(output(["sfdisk", "--json", img]))["partitiontable"]
    out = []
    for i, p in enumerate(table["partitions"], 1):
        out.append(Partition(i, p["start"] * SECTOR, p["size"] * SECTOR, p["type"]))
    return out


def layout_parts(board: str) -> list[tuple[int, int]]:
    """(start, size) in bytes of each partition of the layout, in order."""
    parts: list[tuple[int, int]] = []
    end = 0
    for line in layout_file(board).read_text().splitlines():
        if line.startswith(("#", "label", "unit", "sector")) or "size=" not in line:
            continue
        fields = dict(f.strip().split("=", 1) for f in line.split(",") if "=" in f)
        start = _sectors(fields["start"]) * SECTOR if "start" in fields else end
        size = _sectors(fields["size"]) * SECTOR
        parts.append((start, size))
        end = start + size
    return parts


def layout_size(board: str) -> int:
    """Disk size: the end of the last partition."""
    start, size = layout_parts(board)[-1]
    return start + size


def _sectors(text: str) -> int:
    text = text.strip()
    if text.endswith("MiB"):
        return int(text[:-3]) * MIB // SECTOR
    return int(text)


def write_at(img: Path, offset: int, data_file: Path | None, limit: int,
             zeros: int = 0) -> None:
    """Copy a partition image (or ``zeros`` zero bytes) into the disk image at ``offset``."""
    with img.open("r+b") as out:
        out.seek(offset)
        if data_file is None:
            out.write(b"\0" * zeros)
            return
        size = data_file.stat().st_size
        if size > limit:
            raise ConfigError(f"{data_file.name} is {size // MIB} MiB, its partition only "
                              f"{limit // MIB} MiB", hint="enlarge it in board/*/layout.sfdisk")
        with data_file.open("rb") as src:
            while block := src.read(4 * MIB):
                out.write(block)


def assemble(img: Path, board: str, boot: Path, root: Path) -> list[Partition]:
    parts = partition_table(img, board, layout_size(board))
    if len(parts) != 4:
        raise ConfigError(f"{layout_file(board)} must define 4 partitions (boot, root_a, "
                          f"root_b, data), found {len(parts)}")
    write_at(img, parts[0].start, boot, parts[0].size)
    write_at(img, parts[1].start, root, parts[1].size)
    write_at(img, parts[3].start, None, parts[3].size, zeros=MIB)
    stage(f"disk: {img.name} {img.stat().st_size // MIB} MiB "
          f"(boot {boot.stat().st_size // MIB} MiB, root {root.stat().st_size // MIB} MiB)")
    return parts
