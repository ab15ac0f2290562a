"""The image's block map (bmaptool's format 2.0), written by us rather than by the host's bmaptool.

`bmaptool create` is a host tool whose output format and comments change between releases
(3.6 on Debian 12, 3.9 on Debian 13 give different files for the same image), and the .bmap is
one of the outputs every builder must give byte for byte.  The format is small: the image size,
the block size, the mapped ranges (found with SEEK_DATA/SEEK_HOLE, as bmaptool does) with the
SHA-256 of each, and the SHA-256 of the file itself computed with that field all zeros.
`bmaptool copy` reads it and checks every range (tests/image/test_rpi4_image.py).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

BLOCK = 4096
ZERO = "0" * 64


def ranges(image: Path) -> list[tuple[int, int]]:
    """(first, last) block numbers of the data the file holds (its holes left out)."""
    out: list[tuple[int, int]] = []
    size = image.stat().st_size
    fd = os.open(image, os.O_RDONLY)
    try:
        pos = 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError:  # ENXIO: no data after pos
                break
            end = os.lseek(fd, start, os.SEEK_HOLE)
            first, last = start // BLOCK, (min(end, size) - 1) // BLOCK
            if out and first <= out[-1][1] + 1:
                out[-1] = (out[-1][0], max(out[-1][1], last))
            else:
                out.append((first, last))
            pos = (last + 1) * BLOCK
    finally:
        os.close(fd)
    return out


def write(image: Path, dest: Path) -> None:
    """Write ``dest``, the block map of ``image``."""
    size = image.stat().st_size
    found = ranges(image)
    lines = []
    with image.open("rb") as f:
        for first, last in found:
            h = hashlib.sha256()
            f.seek(first * BLOCK)
            left = min((last + 1) * BLOCK, size) - first * BLOCK
            while left:
                chunk = f.read(min(left, 1 << 20))
                h.update(chunk)
                left -= len(chunk)
            span = f"{first}" if first == last else f"{first}-{last}"
            lines.append(f'        <Range chksum="{h.hexdigest()}"> {span} </Range>\n')
    mapped = sum(last - first + 1 for first, last in found)
    text = (
        '<?xml version="1.0" ?>\n'
        "<!-- The block map of a coalmine image (scripts/image/bmap.py): the blocks that hold\n"
        "     data, to be copied by `bmaptool copy`; the others are zeros. -->\n"
        '<bmap version="2.0">\n'
        f"    <ImageSize> {size} </ImageSize>\n"
        f"    <BlockSize> {BLOCK} </BlockSize>\n"
        f"    <BlocksCount> {(size + BLOCK - 1) // BLOCK} </BlocksCount>\n"
        f"    <MappedBlocksCount> {mapped} </MappedBlocksCount>\n"
        "    <ChecksumType> sha256 </ChecksumType>\n"
        f"    <BmapFileChecksum> {ZERO} </BmapFileChecksum>\n"
        "    <BlockMap>\n" + "".join(lines) + "    </BlockMap>\n"
        "</bmap>\n")
    digest = hashlib.sha256(text.encode()).hexdigest()
    dest.write_text(text.replace(ZERO, digest, 1))
