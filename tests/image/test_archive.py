"""The lock against a real apt and a signed archive on loopback: suites, keys, dates, snapshots.

A throw-away archive (apt-ftparchive, signed with a key made for the test) is served over HTTP
on 127.0.0.1 with the three suites the lock reads; the pinned key file is pointed at the test
key for the duration of a test.  What is checked is what a build machine meets: an index signed
by another key is refused, each suite's date and hash are read from the signed InRelease, an
older archive state than the lock's is refused, and a locked package the archive has dropped
comes from the snapshot archive at the lock's date, checked against the lock's SHA-256.
"""

from __future__ import annotations

import functools
import hashlib
import http.server
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firmware.shared.errors import InputError, TransportError
from scripts.image import archive, lock
from scripts.image.archive import SUITES, Release, check_not_older, stamp

REPO = Path(__file__).resolve().parents[2]


def sh(*argv: str | Path, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    return subprocess.run([str(a) for a in argv], cwd=cwd, env=env, check=True,
                          capture_output=True, text=True, timeout=120).stdout


def gpg_home(tmp: Path, name: str) -> tuple[dict[str, str], Path]:
    home = tmp / f"gnupg-{name}"
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    sh("gpg", "--batch", "--passphrase", "", "--quick-gen-key", f"{name} <{name}@example.org>",
       "ed25519", "sign", "never", env=env)
    public = tmp / f"{name}.asc"
    public.write_text(sh("gpg", "--batch", "--armor", "--export", env=env))
    stop_agent(env)
    return env, public


def stop_agent(env: dict[str, str]) -> None:
    """gpg leaves an agent running per home: stop it (a test leaves no process behind)."""
    subprocess.run(["gpgconf", "--kill", "all"], env=env, check=False, timeout=30)


def make_deb(dest: Path, name: str, version: str, arch: str = "arm64") -> Path:
    root = dest.parent / f"build-{name}-{arch}"
    (root / "DEBIAN").mkdir(parents=True)
    (root / "DEBIAN/control").write_text(
        f"Package: {name}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: t <t@t>\n"
        f"Description: test\n")
    dest.parent.mkdir(parents=True, exist_ok=True)
    sh("dpkg-deb", "--root-owner-group", "-Zgzip", "-b", root, dest)
    return dest


def make_suite(top: Path, suite: str, env: dict[str, str], debs: list[Path]) -> None:
    """dists/<suite> of an archive rooted at ``top``, InRelease signed with the key in ``env``."""
    for comp, arch in [(c, a) for c in ("main", "non-free-firmware") for a in ("arm64", "amd64")]:
        d = top / "dists" / suite / comp / f"binary-{arch}"
        d.mkdir(parents=True)
        mine = [p for p in debs if comp == "main" and p.name.endswith((f"_{arch}.deb", "_all.deb"))]
        text = "".join(sh("apt-ftparchive", "packages", p.relative_to(top), cwd=top)
                       for p in mine)  # one file each: a second argument is an override file
        (d / "Packages").write_text(text)
    release = sh("apt-ftparchive", "-o", f"APT::FTPArchive::Release::Codename={suite}",
                 "-o", f"APT::FTPArchive::Release::Suite={suite}",
                 "-o", "APT::FTPArchive::Release::Architectures=arm64 amd64",
                 "-o", "APT::FTPArchive::Release::Components=main non-free-firmware",
                 "release", ".", cwd=top / "dists" / suite)
    (top / "dists" / suite / "Release").write_text(release)
    sh("gpg", "--batch", "--yes", "--clearsign", "-o", top / "dists" / suite / "InRelease",
       top / "dists" / suite / "Release", env=env)


class Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """An HTTP server on 127.0.0.1 over ``tmp_path/www``; yields (root, base URL)."""
    www = tmp_path / "www"
    www.mkdir()
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(www)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def mirror(tmp_path: Path, served: tuple[Path, str], monkeypatch: pytest.MonkeyPatch
           ) -> tuple[Path, str, dict[str, str], Path]:
    """The three suites on loopback, signed by a test key the lock is told to trust."""
    www, url = served
    env, public = gpg_home(tmp_path, "archive")
    deb = make_deb(www / "debian/pool/main/h/hello/hello_1.0-1_arm64.deb", "hello", "1.0-1")
    tools = [make_deb(www / "debian/pool/main/h/hello/hello_1.0-1_amd64.deb", "hello", "1.0-1",
                      "amd64"),
             make_deb(www / "debian/pool/main/c/common/common_2_all.deb", "common", "2", "all")]
    make_suite(www / "debian", "trixie", env, [deb, *tools])
    make_suite(www / "debian", "trixie-updates", env, [])
    make_suite(www / "debian-security", "trixie-security", env, [])
    stop_agent(env)
    monkeypatch.setattr(archive, "KEYS_FILE", public)
    monkeypatch.setenv("COALMINE_MIRROR", f"{url}/debian")
    monkeypatch.setenv("COALMINE_SECURITY_MIRROR", f"{url}/debian-security")
    return www, url, env, deb


def test_the_pinned_key_file_holds_exactly_the_listed_keys(tmp_path: Path) -> None:
    env = {**os.environ, "GNUPGHOME": str(tmp_path)}
    tmp_path.chmod(0o700)
    out = sh("gpg", "--batch", "--with-colons", "--show-keys", archive.KEYS_FILE, env=env)
    primaries, after_pub = set(), False  # the first fpr record after each pub record
    for line in out.splitlines():
        kind = line.split(":", 1)[0]
        if kind == "fpr" and after_pub:
            primaries.add(line.split(":")[9])
        after_pub = kind == "pub" or (after_pub and kind != "fpr")
    assert primaries == set(archive.ARCHIVE_KEYS)


def test_the_committed_lock_reads_all_three_suites() -> None:
    full = lock.read_full()
    assert set(full.releases) == set(SUITES)
    assert {p.suite for p in full.pins} <= set(SUITES)
    assert all(p.filename.startswith("pool/") for p in full.pins)


def test_indexes_are_read_with_dates_and_hashes(mirror: tuple[Path, str, dict[str, str], Path],
                                                tmp_path: Path) -> None:
    www, _, _, deb = mirror
    apt = archive.AptIndex(tmp_path / "apt")
    apt.update()
    releases = apt.releases()
    assert set(releases) == set(SUITES)
    inrelease = www / "debian-security/dists/trixie-security/InRelease"
    assert releases["trixie-security"].sha256 == hashlib.sha256(inrelease.read_bytes()).hexdigest()
    assert abs(releases["trixie"].date - time.time()) < 600
    fields = apt.stanzas()[("hello", "1.0-1")]
    assert fields["Suite"] == "trixie"
    assert fields["SHA256"] == hashlib.sha256(deb.read_bytes()).hexdigest()


def test_an_index_signed_by_another_key_is_refused(
        mirror: tuple[Path, str, dict[str, str], Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, other = gpg_home(tmp_path, "stranger")
    monkeypatch.setattr(archive, "KEYS_FILE", other)  # the archive's key is not the pinned one
    apt = archive.AptIndex(tmp_path / "apt")
    with pytest.raises(TransportError) as err:
        apt.update()
    assert "NO_PUBKEY" in err.value.message or "not signed" in err.value.message \
        or "signature" in err.value.message.lower()


def test_an_older_archive_state_than_the_locks_is_refused() -> None:
    now = Release("trixie-security", 1_796_000_000, "a" * 64)
    older = Release("trixie-security", now.date - 86400, "b" * 64)
    check_not_older({"trixie-security": now}, {"trixie-security": older})  # newer: fine
    with pytest.raises(InputError) as err:
        check_not_older({"trixie-security": older}, {"trixie-security": now})
    assert f"dated {stamp(older.date)}, older than the lock's {stamp(now.date)}" in \
        err.value.message
    assert "COALMINE_MIRROR" in err.value.hint
    same_day = Release("trixie-security", now.date, "c" * 64)
    with pytest.raises(InputError, match="other contents"):
        check_not_older({"trixie-security": same_day}, {"trixie-security": now})
    assert Release.parse(now.line()) == now


def test_relock_report_marks_security_updates() -> None:
    old = lock.Pin("root", "libzstd1", "1.5.7+dfsg-1", "arm64", 1, "a" * 64, "trixie",
                   "pool/main/libz/libzstd1.deb")
    new = lock.Pin("root", "libzstd1", "1.5.7+dfsg-1+deb13u1", "arm64", 1, "b" * 64,
                   "trixie-security", "pool/updates/main/libz/libzstd1.deb")
    assert lock.changes([old], [new]) == [
        "libzstd1: 1.5.7+dfsg-1 -> 1.5.7+dfsg-1+deb13u1 from trixie-security (security update)"]
    assert lock.changes([old], [old]) == []


def write_lock(path: Path, pins: list[lock.Pin], releases: list[Release]) -> None:
    path.write_text(lock.HEADER + "".join(r.line() + "\n" for r in releases)
                    + "".join(p.line() + "\n" for p in pins))


def test_a_dropped_package_comes_from_the_snapshot_archive(
        mirror: tuple[Path, str, dict[str, str], Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    www, url, _, deb = mirror
    # libold 1.0 was in trixie when the lock was made; the archive has dropped it since
    when = 1_790_000_000  # the snapshot imported it 12 h after the index's date
    pool = "pool/main/libo/libold_1.0_arm64.deb"
    gone = make_deb(www / f"snapshot/archive/debian/{stamp(when + 12 * 3600)}/{pool}",
                    "libold", "1.0")
    digest = hashlib.sha256(gone.read_bytes()).hexdigest()
    pins = [lock.Pin("root", "libold", "1.0", "arm64", gone.stat().st_size, digest, "trixie",
                     "pool/main/libo/libold_1.0_arm64.deb"),
            lock.Pin("root", "hello", "1.0-1", "arm64", deb.stat().st_size,
                     hashlib.sha256(deb.read_bytes()).hexdigest(), "trixie",
                     "pool/main/h/hello/hello_1.0-1_arm64.deb")]
    path = tmp_path / "packages.lock"
    write_lock(path, pins, [Release(s, when, "0" * 64) for s in SUITES])
    dl = tmp_path / "cache" / "dl"
    monkeypatch.setenv("COALMINE_LOCK", str(path))
    monkeypatch.setenv("COALMINE_DL", str(dl))
    monkeypatch.delenv("COALMINE_SNAPSHOT", raising=False)
    with pytest.raises(InputError) as err:  # without a snapshot archive: named, with the fix
        lock.fetch()
    assert "libold 1.0: not served" in err.value.message
    assert "COALMINE_SNAPSHOT" in err.value.hint and "snapshot archive" in err.value.hint
    monkeypatch.setenv("COALMINE_SNAPSHOT", f"{url}/snapshot")
    assert lock.fetch() == dl
    assert (dl / "libold_1.0_arm64.deb").read_bytes() == gone.read_bytes()
    assert (dl / "hello_1.0-1_arm64.deb").read_bytes() == deb.read_bytes()
    # a snapshot that serves other bytes than the lock's is refused, nothing is kept
    (dl / "libold_1.0_arm64.deb").unlink()
    gone.write_bytes(b"not the locked package")
    with pytest.raises(InputError, match=r"libold 1\.0 has SHA-256"):
        lock.fetch()
    assert not (dl / "libold_1.0_arm64.deb").exists()


def test_both_architectures_missing_from_an_empty_cache(
        mirror: tuple[Path, str, dict[str, str], Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The image's arm64 packages and the amd64 build tools share names (libc6, libzstd1 ...)
    and arch-all packages are in both roles: each file must land as itself."""
    www, _, _, _ = mirror
    pins = []
    for role, arch, rel in [("root", "arm64", "h/hello/hello_1.0-1_arm64.deb"),
                            ("build", "amd64", "h/hello/hello_1.0-1_amd64.deb"),
                            ("root", "all", "c/common/common_2_all.deb"),
                            ("build", "all", "c/common/common_2_all.deb")]:
        deb = www / "debian/pool/main" / rel
        name, version = deb.name.split("_")[:2]
        pins.append(lock.Pin(role, name, version, arch, deb.stat().st_size,
                             hashlib.sha256(deb.read_bytes()).hexdigest(), "trixie",
                             f"pool/main/{rel}"))
    path = tmp_path / "packages.lock"
    write_lock(path, pins, [Release(s, 1_790_000_000, "0" * 64) for s in SUITES])
    monkeypatch.setenv("COALMINE_LOCK", str(path))
    monkeypatch.setenv("COALMINE_DL", str(tmp_path / "dl"))
    dl = lock.fetch()
    for pin in pins:
        assert hashlib.sha256((dl / pin.deb).read_bytes()).hexdigest() == pin.sha256, pin
    assert lock.fetch() == dl  # all cached now: nothing is fetched again


def test_fetch_refuses_an_index_older_than_the_lock(
        mirror: tuple[Path, str, dict[str, str], Path], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    _, _, _, deb = mirror
    pin = lock.Pin("root", "hello", "1.0-1", "arm64", deb.stat().st_size,
                   hashlib.sha256(deb.read_bytes()).hexdigest(), "trixie",
                   "pool/main/h/hello/hello_1.0-1_arm64.deb")
    path = tmp_path / "packages.lock"
    future = int(time.time()) + 86400  # the lock saw a newer archive than the mirror serves
    write_lock(path, [pin], [Release(s, future, "0" * 64) for s in SUITES])
    monkeypatch.setenv("COALMINE_LOCK", str(path))
    monkeypatch.setenv("COALMINE_DL", str(tmp_path / "dl"))
    with pytest.raises(InputError, match="older than the lock's"):
        lock.fetch()
