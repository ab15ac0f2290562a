"""Build caches nobody else can poison: ownership, modes, symlinks and digests are checked."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from firmware.shared.errors import EnvironmentFault
from scripts.image import cache

OTHER_UID = 4242  # a user who is not the builder


@pytest.fixture
def root(tmp_path: Path) -> Path:
    tmp_path.chmod(0o755)
    return tmp_path


def test_a_new_cache_is_private_and_round_trips(root: Path) -> None:
    src = root / "base.tar"
    src.write_bytes(b"tarball" * 1000)
    entry = root / "cache" / "stage" / "rootfs-base-x.tar"
    assert not cache.lookup(entry)
    cache.store(src, entry)
    assert (entry.stat().st_mode & 0o777) == 0o600
    assert (entry.parent.stat().st_mode & 0o777) == 0o700
    assert cache.lookup(entry)


def test_an_altered_or_torn_entry_is_not_used(root: Path) -> None:
    src = root / "base.tar"
    src.write_bytes(b"tarball")
    entry = root / "c" / "e.tar"
    cache.store(src, entry)
    entry.write_bytes(b"tarbal")  # truncated, or changed by hand
    assert not cache.lookup(entry)
    entry.with_name("e.tar.sha256").unlink()
    assert not cache.lookup(entry)


def test_a_directory_of_another_user_is_refused(root: Path) -> None:
    d = root / "c"
    d.mkdir(mode=0o700)
    os.chown(d, OTHER_UID, -1)
    with pytest.raises(EnvironmentFault) as err:
        cache.trusted_dir(d)
    assert f"belongs to uid {OTHER_UID}" in err.value.message
    assert "optional" in err.value.hint


def test_a_parent_others_can_write_is_refused_unless_sticky(root: Path) -> None:
    parent = root / "shared"
    parent.mkdir()
    parent.chmod(0o777)
    with pytest.raises(EnvironmentFault, match="writable by others"):
        cache.trusted_dir(parent / "dl")
    parent.chmod(0o1777)  # like /tmp: others cannot rename our directory away
    assert cache.trusted_dir(parent / "dl2") == parent / "dl2"
    group = root / "g"
    group.mkdir()
    group.chmod(0o770)
    with pytest.raises(EnvironmentFault, match="writable by others"):
        cache.trusted_dir(group)


def test_symlinks_are_refused_on_the_way_and_as_entries(root: Path) -> None:
    real = root / "real"
    real.mkdir(mode=0o700)
    (root / "link").symlink_to(real)
    with pytest.raises(EnvironmentFault, match="not a plain directory"):
        cache.trusted_dir(root / "link" / "dl")
    d = cache.trusted_dir(root / "dl")
    target = root / "elsewhere.tar"
    target.write_bytes(b"x")
    (d / "e.tar").symlink_to(target)
    with pytest.raises(EnvironmentFault, match="not a regular file"):
        cache.lookup(d / "e.tar")


def test_a_file_of_another_user_is_refused(root: Path) -> None:
    d = cache.trusted_dir(root / "dl")
    planted = d / "pkg.deb"
    planted.write_bytes(b"x")
    os.chown(planted, OTHER_UID, -1)
    with pytest.raises(EnvironmentFault, match=f"belongs to uid {OTHER_UID}"):
        cache.trusted_file(planted)


def test_store_never_writes_through_a_planted_symlink(root: Path) -> None:
    src = root / "base.tar"
    src.write_bytes(b"new")
    d = cache.trusted_dir(root / "c")
    victim = root / "victim"
    victim.write_bytes(b"keep")
    (d / ".e.tar.tmp").symlink_to(victim)  # the temporary name, planted in advance
    cache.store(src, d / "e.tar")
    assert victim.read_bytes() == b"keep"
    assert (d / "e.tar").read_bytes() == b"new"


def test_the_build_reads_only_its_private_copies(root: Path) -> None:
    """A .deb swapped in the cache after its check never reaches the build: the copies in the
    work directory are hashed as they are written."""
    import hashlib

    from firmware.shared.errors import InputError
    from scripts.image import lock

    cache_dir = root / "dl"
    cache_dir.mkdir()
    (cache_dir / "a_1_arm64.deb").write_bytes(b"locked bytes")
    pin = lock.Pin("root", "a", "1", "arm64", 12, hashlib.sha256(b"locked bytes").hexdigest(),
                   "trixie", "pool/main/a/a_1_arm64.deb")
    work = lock.private_copies([pin, pin], cache_dir, root / "work" / "debs")  # once
    assert (work / pin.deb).read_bytes() == b"locked bytes"
    assert (work.stat().st_mode & 0o777) == 0o700
    (cache_dir / "a_1_arm64.deb").write_bytes(b"swapped later")  # after fetch() checked it
    with pytest.raises(InputError, match="changed after it was checked"):
        lock.private_copies([pin], cache_dir, root / "work" / "debs")
    assert not (root / "work" / "debs" / pin.deb).exists()
