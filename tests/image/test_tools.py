"""The pinned build environment: the image's bytes come from the locked tools, not the host's."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from scripts.image import lock, tools
from scripts.image.build import used_pins

pytestmark = pytest.mark.skipif(tools.builder_arch() is None,
                                reason="no build tools are locked for this architecture")


@pytest.fixture(scope="module")
def wrappers(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pins = [p for p in used_pins(lock.read_lock(), "qemu-arm64") if p.role == "build"]
    debs = lock.fetch(pins)
    saved = os.environ["PATH"]
    try:
        out = tools.install([debs / p.deb for p in pins], tmp_path_factory.mktemp("work"))
    finally:
        os.environ["PATH"] = saved
    assert out is not None
    return out


def locked_version(name: str) -> str:
    pin = next(p for p in lock.read_lock() if p.role == "build" and p.name == name)
    return pin.version.split(":")[-1].split("-")[0].split("+")[0]


def test_every_program_is_the_locked_version(wrappers: Path) -> None:
    def first_line(*argv: str) -> str:
        proc = subprocess.run([str(wrappers / argv[0]), *argv[1:]], capture_output=True,
                              text=True, timeout=30, check=False)
        return (proc.stdout + proc.stderr).strip().splitlines()[0]

    assert locked_version("squashfs-tools") in first_line("mksquashfs", "-version")
    assert locked_version("xz-utils") in first_line("xz", "--version")
    assert locked_version("mtools") in first_line("mcopy", "--version")
    assert locked_version("kmod") in first_line("depmod", "--version")
    assert locked_version("cpio") in first_line("cpio", "--version")
    assert locked_version("fdisk") in first_line("sfdisk", "--version")
    assert set(tools.PROGRAMS) == {p.name for p in wrappers.iterdir()}


def test_no_library_comes_from_the_host(wrappers: Path) -> None:
    """The loader of the tree resolves every library of mksquashfs (libzstd above all) inside
    the tree: the host's libzstd never compresses the root."""
    tree = wrappers.parent / "tree"
    script = (wrappers / "mksquashfs").read_text().splitlines()[-1]
    argv = script.split()  # GCONV_PATH=.. exec LOADER --library-path LIBS --argv0 NAME REAL "$@"
    loader, libs, real = argv[2], argv[4], argv[7]
    listed = subprocess.run([loader, "--library-path", libs, "--list", real],
                            capture_output=True, text=True, check=True, timeout=30).stdout
    paths = [line.split("=>")[1].split()[0] for line in listed.splitlines() if "=>" in line]
    assert any("libzstd" in p for p in paths)
    outside = [p for p in paths if not Path(p).resolve().is_relative_to(tree.resolve())]
    assert not outside, outside


def test_the_squashfs_is_made_by_the_tree(wrappers: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(os.urandom(1 << 16) + bytes(1 << 16))
    env = {**os.environ, "PATH": f"{wrappers}:{os.environ['PATH']}", "SOURCE_DATE_EPOCH": "0"}
    for out in ("a.sqfs", "b.sqfs"):
        subprocess.run(["mksquashfs", str(src), str(tmp_path / out), "-noappend", "-quiet",
                        "-no-progress", "-reproducible", "-comp", "zstd", "-Xcompression-level",
                        "19"], env=env, check=True, timeout=60)
    assert (tmp_path / "a.sqfs").read_bytes() == (tmp_path / "b.sqfs").read_bytes()


def test_a_program_that_would_load_a_host_library_is_refused(wrappers: Path,
                                                              tmp_path: Path) -> None:
    """A library missing from the tree: ld.so would quietly take the host's copy."""
    from firmware.shared.errors import InputError

    tree = wrappers.parent / "tree"
    partial = tmp_path / "tree"
    shutil.copytree(tree, partial, symlinks=True)
    for lib in partial.rglob("libzstd.so*"):
        lib.unlink()
    script = (wrappers / "mksquashfs").read_text().splitlines()[-1].split()
    libs = script[4].replace(str(tree), str(partial))
    loader = Path(script[2].replace(str(tree), str(partial)))
    real = Path(script[7].replace(str(tree), str(partial)))
    with pytest.raises(InputError, match="would load the host's"):
        tools._only_from_tree(loader, libs, real, partial)
    assert "GCONV_PATH=" in (wrappers / "mcopy").read_text()
