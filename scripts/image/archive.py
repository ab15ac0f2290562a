"""Debian's archive as the lock sees it: three suites, pinned signing keys, dated indexes.

A build must carry Debian's security fixes, so the lock resolves against the release suite, its
point updates (``trixie-updates``) and the security suite (``trixie-security``) together; apt
takes the highest version of each package.  Index signatures are checked against the keys in
``board/common/archive-keys.asc`` (exported from the locked debian-archive-keyring package; the
fingerprints are listed in :data:`ARCHIVE_KEYS` and a test holds the two together), never
against whatever keyring the build host has.

Each suite's signed ``InRelease`` carries a ``Date``.  The lock records it with the file's
SHA-256 (:class:`Release`), and ``make lock`` refuses an index older than the recorded one: a
replayed but validly signed old index would otherwise pin older, vulnerable packages.  When the
archive has dropped a locked version (security updates replace packages about weekly), it can
still be fetched by its pool path from Debian's snapshot archive at the lock's date
(``COALMINE_SNAPSHOT``), and is checked against the lock's SHA-256 like any download.
"""

from __future__ import annotations

import calendar
import hashlib
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_tz
from pathlib import Path

from debian import deb822

from firmware.shared.errors import ConfigError, InputError, ToolError, TransportError
from firmware.shared.proc import output, run
from scripts.image.common import ARCH, BOARD_DIR, COMPONENTS, SUITE, host_mirror

SUITES = (SUITE, f"{SUITE}-updates", f"{SUITE}-security")
SECURITY = f"{SUITE}-security"
KEYS_FILE = BOARD_DIR / "common" / "archive-keys.asc"
ARCHIVE_KEYS = {  # primary key fingerprints allowed to sign the suites above
    "04B54C3CDCA79751B16BC6B5225629DF75B188BD": "Debian Archive Automatic Signing Key (13/trixie)",
    "41587F7DB8C774BCCF131416762F67A0B2C39DE4": "Debian Stable Release Key (13/trixie)",
    "5E04A1E3223A19A20706E20F9904613D4CCE68C6":
        "Debian Security Archive Automatic Signing Key (13/trixie)",
}
SNAPSHOT_HINT = (
    "the locked versions can still be fetched from Debian's snapshot archive: set "
    "COALMINE_SNAPSHOT to its base URL (the one whose archive/debian/<date>/ paths mirror the "
    "archive; it is not reachable from the project's own build machines) and build again, or "
    "re-pin with `make lock`, review `git diff board/common/packages.lock` and commit it"
)


@dataclass(frozen=True)
class Release:
    """One suite's signed index as the lock saw it: its ``Date`` and the InRelease SHA-256."""

    suite: str
    date: int  # seconds since the epoch, UTC
    sha256: str

    def line(self) -> str:
        return f"# release {self.suite} date={stamp(self.date)} sha256={self.sha256}"

    @classmethod
    def parse(cls, line: str) -> Release | None:
        m = re.fullmatch(r"# release (\S+) date=(\d{8}T\d{6}Z) sha256=([0-9a-f]{64})",
                         line.strip())
        if m is None:
            return None
        try:
            when = calendar.timegm(time.strptime(m.group(2), "%Y%m%dT%H%M%SZ"))
        except ValueError:  # 20261399T...: a malformed line, reported as such
            return None
        return cls(m.group(1), when, m.group(3))


def _rank(suite: str) -> int:
    return SUITES.index(suite) if suite in SUITES else len(SUITES)


def stamp(t: int) -> str:
    """The snapshot archive's timestamp form (also the lock's): 20261130T002233Z."""
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(t))


def security_mirror(main: str) -> str:
    """$COALMINE_SECURITY_MIRROR, else the host's ``/debian-security`` source, else the main
    mirror's sibling path (mirrors carry both under one host)."""
    env = os.environ.get("COALMINE_SECURITY_MIRROR")
    if env:
        return env.rstrip("/")
    try:
        return host_mirror(suffix="/debian-security")
    except ConfigError:
        return main + "-security"


def check_not_older(new: Mapping[str, Release], old: Mapping[str, Release]) -> None:
    """Refuse an archive state older than the lock's (a stale mirror or a replayed index)."""
    bad: list[str] = []
    for suite, before in sorted(old.items()):
        now = new.get(suite)
        if now is None:
            continue
        if now.date < before.date:
            bad.append(f"{suite}: the archive's index is dated {stamp(now.date)}, older than "
                       f"the lock's {stamp(before.date)}")
        elif now.date == before.date and now.sha256 != before.sha256:
            bad.append(f"{suite}: an index dated {stamp(now.date)} like the lock's, but with "
                       f"other contents (SHA-256 {now.sha256[:16]}... != {before.sha256[:16]}...)")
    if bad:
        raise InputError(
            "refusing an archive state older than the one the lock was made from:\n  "
            + "\n  ".join(bad),
            hint="a mirror that lags behind, or a replayed index; use an up-to-date mirror "
                 "(COALMINE_MIRROR, COALMINE_SECURITY_MIRROR) and run `make lock` again")


class AptIndex:
    """A throw-away apt root for one architecture (the image's arm64 unless told otherwise):
    signed index download and dependency resolution."""

    def __init__(self, workdir: Path, mirror: str | None = None, arch: str = ARCH) -> None:
        self.root = workdir
        self.arch = arch
        mirror = mirror or host_mirror()
        for d in ("etc/apt/apt.conf.d", "etc/apt/preferences.d", "etc/apt/sources.list.d",
                  "var/lib/apt/lists/partial", "var/cache/apt/archives/partial", "var/lib/dpkg"):
            (workdir / d).mkdir(parents=True, exist_ok=True)
        (workdir / "var/lib/dpkg/status").write_text("")
        signed = f"[signed-by={KEYS_FILE}]"
        (workdir / "etc/apt/sources.list").write_text(
            f"deb {signed} {mirror} {SUITE} {COMPONENTS}\n"
            f"deb {signed} {mirror} {SUITE}-updates {COMPONENTS}\n"
            f"deb {signed} {security_mirror(mirror)} {SECURITY} {COMPONENTS}\n")
        conf = workdir / "apt.conf"
        conf.write_text(
            f'Dir "{workdir}/";\n'
            f'Dir::State::status "{workdir}/var/lib/dpkg/status";\n'
            'Dir::Etc::TrustedParts "/nonexistent";\n'  # no host keys, only the pinned ones
            f'APT::Architecture "{arch}";\nAPT::Architectures "{arch}";\n'
            'APT::Install-Recommends "false";\nAcquire::Languages "none";\n'
        )
        self.env = {"APT_CONFIG": str(conf), "LC_ALL": "C"}

    def update(self) -> None:
        try:
            run(["apt-get", "update", "-q", "-o", "APT::Update::Error-Mode=any"],
                env=self.env, quiet=True)
        except ToolError as exc:
            raise TransportError(f"reading the archive's indexes failed: {exc.message}",
                                 hint="check the network and the mirror (COALMINE_MIRROR, "
                                      "COALMINE_SECURITY_MIRROR)") from None

    def _lists(self, pattern: str) -> list[Path]:
        return sorted((self.root / "var/lib/apt/lists").glob(pattern))

    def stanzas(self) -> dict[tuple[str, str], dict[str, str]]:
        """(name, version) -> Packages stanza fields (plus ``Suite``), from the signed indexes.
        The same version in two suites is one file; the release suite is kept."""
        index: dict[tuple[str, str], dict[str, str]] = {}
        for path in self._lists("*_Packages"):
            m = re.search(r"_dists_([^_]+)_", path.name)
            suite = m.group(1) if m else SUITE
            with path.open(encoding="utf-8", errors="replace") as fh:
                for para in deb822.Packages.iter_paragraphs(fh, use_apt_pkg=False):
                    key = (para.get("Package", ""), para.get("Version", ""))
                    if all(key) and (key not in index or _rank(suite) <
                                     _rank(index[key]["Suite"])):
                        index[key] = {**dict(para), "Suite": suite}
        return index

    def releases(self) -> dict[str, Release]:
        """suite -> the Date and SHA-256 of its InRelease (apt has checked the signature)."""
        out: dict[str, Release] = {}
        for path in self._lists("*_InRelease"):
            raw = path.read_bytes()
            fields = deb822.Release(raw.decode("utf-8", "replace"))
            parsed = parsedate_tz(fields.get("Date", ""))
            suite = fields.get("Codename", "")
            if parsed is None or suite not in SUITES:
                raise InputError(f"{path.name}: no Codename or Date in the signed index")
            out[suite] = Release(suite, calendar.timegm(parsed[:9]) - (parsed[9] or 0),
                                 hashlib.sha256(raw).hexdigest())
        missing = sorted(set(SUITES) - set(out))
        if missing:
            raise TransportError(f"the archive served no index for {', '.join(missing)}",
                                 hint="check the mirror (COALMINE_MIRROR, "
                                      "COALMINE_SECURITY_MIRROR)")
        return out

    def resolve(self, names: list[str], *, essential: bool = True) -> list[tuple[str, str]]:
        """What apt would install into an empty system: (the essential set +) names + deps."""
        out = output(["apt-get", "install", "-s", "-y", "-q",
                      *(["?essential"] if essential else []), *names], env=self.env)
        return sorted(set(re.findall(r"^Inst (\S+) \((\S+) ", out, flags=re.M)))

    def candidate(self, name: str) -> str:
        out = output(["apt-cache", "policy", name], env=self.env)
        m = re.search(r"Candidate: (\S+)", out)
        if not m or m.group(1) == "(none)":
            raise ConfigError(f"package {name!r} does not exist in {SUITE}/{self.arch}")
        return m.group(1)

    def download(self, specs: list[str], into: Path) -> None:
        """apt-get download ``name:arch=version`` specs (checked against the signed index)."""
        into.mkdir(parents=True, exist_ok=True)
        try:
            run(["apt-get", "download", "-q", *specs], env=self.env, cwd=into, quiet=True)
        except ToolError as exc:
            raise TransportError(f"downloading the locked packages failed: {exc.message}",
                                 hint="check the network, or set COALMINE_MIRROR") from None


SNAPSHOT_LAG = (6 * 3600, 12 * 3600, 24 * 3600, 3 * 24 * 3600)  # after the index's date


def snapshot_url(base: str, suite: str, when: int, pool_path: str) -> str:
    """Where Debian's snapshot archive keeps ``pool_path`` as the archive served it at ``when``."""
    archive = "debian-security" if suite == SECURITY else "debian"
    return f"{base.rstrip('/')}/archive/{archive}/{stamp(when)}/{pool_path}"


def fetch_snapshot(base: str, suite: str, date: int, pool_path: str, dest: Path, *,
                   limit: int) -> Path:
    """``pool_path`` from the snapshot archive.  A timestamp there means the newest import at
    or before it, and the import holding an index comes some hours after the index's date, so
    a few later times are tried (the caller checks the SHA-256 whatever comes)."""
    failures: list[str] = []
    for lag in SNAPSHOT_LAG:
        try:
            fetch_url(snapshot_url(base, suite, date + lag, pool_path), dest, limit=limit)
            return dest
        except TransportError as exc:
            failures.append(exc.message)
    raise TransportError(f"the snapshot archive does not have {pool_path}: {failures[-1]}",
                         hint="check COALMINE_SNAPSHOT and the network, or run `make lock`")


def fetch_url(url: str, dest: Path, *, limit: int, timeout: float = 120.0) -> None:
    """Download ``url`` to ``dest`` (the caller checks the hash), at most ``limit`` bytes; a
    clear error on failure."""
    if not url.startswith(("https://", "http://")):
        raise TransportError(f"not an http(s) URL: {url}", hint="check COALMINE_SNAPSHOT")
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp, \
                dest.open("wb") as out:  # noqa: S310 (http(s) only, checked above)
            left = limit + 1
            while left > 0 and (block := resp.read(min(1 << 20, left))):
                out.write(block)
                left -= len(block)
    except (urllib.error.URLError, OSError) as exc:
        dest.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise TransportError(f"cannot fetch {url}: {reason}",
                             hint="check COALMINE_SNAPSHOT and the network") from None
