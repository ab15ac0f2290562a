"""``coalmine-sign`` (``make sign ARGS=...``): the offline signer a ceremony runs on a laptop
with no network (docs/ceremony.md).

Commands that touch a private key (keygen, init-root, rotate-root, sign-release, canary issue)
refuse to run while any network interface but loopback is up.  ``canary verify`` and ``canary
watch`` hold no key and may run anywhere.  Every step is logged to the work directory's
transcript, and each ceremony command ends by having the holders present sign what it did.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import json
import sys
import time
import urllib.request
from collections.abc import Collection, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey
from nacl.utils import random

from firmware.protocol import canary, trust
from firmware.protocol import envelope as env
from firmware.shared.atomic import write_atomic
from firmware.shared.cli import main_guard
from firmware.shared.errors import ConfigError, RefusedError, UsageError
from signing import airgap, keyfile, media
from signing.ceremony import Console, Holder, Session, Workdir

DAY = 86400
CHUNK = 1 << 20
WATCH_MAX_BYTES = env.MAX_ENVELOPE
LEGACY_EXIT = 3
FETCH_EXIT = 4


def main(argv: list[str] | None = None, *, udev: media.Udev | None = None,
         console: Console | None = None) -> int:
    args = parser().parse_args(argv)

    def work() -> int:
        return int(args.run(args, console or _tty_console(), udev) or 0)

    return main_guard(work)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="coalmine-sign", description=__doc__.splitlines()[0])
    p.add_argument("--workdir", type=Path, default=Path("ceremony"),
                   help="public keys, roots and the transcript (default ./ceremony)")
    sub = p.add_subparsers(required=True, metavar="COMMAND")
    k = sub.add_parser("keygen", help="make a holder's key on their removable medium")
    k.add_argument("--role", choices=trust.ROOT_ROLES, required=True)
    k.add_argument("--holder", required=True, help="the holder's name (letters, digits, -)")
    k.add_argument("--medium", type=Path, required=True, help="mount point of their medium")
    k.add_argument("--kdf-memory-mib", type=int, default=1024, help=argparse.SUPPRESS)
    k.set_defaults(run=keygen)
    r = sub.add_parser("init-root", help="the first trust root, signed by its root holders")
    r.add_argument("--expires-days", type=int, default=365)
    r.add_argument("--threshold", action="append", default=[], metavar="ROLE=K",
                   help="signatures each role needs (default: a majority of its keys)")
    r.set_defaults(run=init_root)
    rr = sub.add_parser("rotate-root", help="root N+1 from today's holders, signed by N and N+1")
    rr.add_argument("--expires-days", type=int, default=365)
    rr.add_argument("--threshold", action="append", default=[], metavar="ROLE=K")
    rr.set_defaults(run=rotate_root)
    s = sub.add_parser("sign-release", help="hash the artifacts, sign the manifest k of n")
    s.add_argument("--version", type=int, required=True)
    s.add_argument("--board", action="append", required=True)
    s.add_argument("--artifact", action="append", required=True, metavar="NAME=PATH")
    s.add_argument("--expires-days", type=int, default=90)
    s.add_argument("--out", type=Path, required=True)
    s.set_defaults(run=sign_release)
    _verify_release_parser(sub)
    c = sub.add_parser("canary", help="warrant-canary statements").add_subparsers(
        required=True, metavar="ACTION")
    ci = c.add_parser("issue", help="a new statement, signed k of n by the canary holders")
    ci.add_argument("--domain", required=True)
    ci.add_argument("--version", type=int, required=True)
    ci.add_argument("--expires-days", type=int, default=30)
    ci.add_argument("--freshness", required=True, help="e.g. a recent block hash")
    ci.add_argument("--withdraw", action="append", default=[], metavar="CODE",
                    help="a code the signers no longer affirm")
    ci.add_argument("--out", type=Path, required=True)
    ci.set_defaults(run=canary_issue)
    cp = c.add_parser("pin", help="a watcher's pin from the current trust root")
    cp.add_argument("--domain", required=True)
    cp.add_argument("--out", type=Path, required=True)
    cp.set_defaults(run=canary_pin)
    cv = c.add_parser("verify", help="check one statement against a pin (exit 0 = all clear)")
    cv.add_argument("--pin", type=Path, required=True)
    cv.add_argument("statement", help="file or http(s) URL")
    cv.set_defaults(run=canary_verify, every=0.0, count=1)
    cw = c.add_parser("watch", help="verify again on a schedule; alert on any change")
    cw.add_argument("--pin", type=Path, required=True)
    cw.add_argument("--every", type=float, default=3600.0, help="seconds between checks")
    cw.add_argument("--count", type=int, default=0, help="stop after N checks (0: never)")
    cw.add_argument("statement", help="file or http(s) URL")
    cw.set_defaults(run=canary_verify)
    return p


def _verify_release_parser(sub: Any) -> None:
    v = sub.add_parser("verify-release",
                       help="check downloaded files against a signed release (no key needed)")
    v.add_argument("--root", type=Path, action="append", required=True, metavar="FILE",
                   help="the trust root you trust (the one the image pins), then each newer "
                        "root in order (repeat)")
    v.add_argument("--release", type=Path, required=True, help="the signed release manifest")
    v.add_argument("--board", required=True, help="the board the files are for")
    v.add_argument("files", nargs="+", metavar="NAME=PATH",
                   help="a component of the release and the downloaded file (e.g. image=...)")
    v.set_defaults(run=verify_release)


# --- keys and roots ------------------------------------------------------------------------------


def keygen(args: argparse.Namespace, console: Console, udev: media.Udev | None) -> int:
    airgap.require_offline()
    if not args.holder.replace("-", "").isalnum():
        raise UsageError(f"holder name {args.holder!r}: letters, digits and - only")
    disk = media.check_medium(args.medium, udev or media.PyudevBackend())
    work = Workdir(args.workdir)
    console.say(f"making a {args.role} key for {args.holder} on {disk.devnode} "
                f"({disk.model or 'removable'})")
    first = console.ask_secret(f"{args.holder}: choose a passphrase (12 characters or more): ")
    if console.ask_secret(f"{args.holder}: the same passphrase again: ") != first:
        raise UsageError("the two passphrases differ; nothing was written")
    seed = random(32)
    params = keyfile.KdfParams(memlimit=args.kdf_memory_mib << 20)
    holder = Holder(args.role, args.holder, bytes(SigningKey(seed).verify_key))
    try:
        data = keyfile.seal(seed, args.role, args.holder, first, params)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    target = args.medium / holder.key_file_name()
    if target.exists():
        raise ConfigError(f"{target} exists", hint="one key per holder and role")
    write_atomic(target, data, 0o600)
    pub = work.add_holder(holder)
    work.log("keygen", role=args.role, holder=args.holder, keyid=holder.key_id,
             medium=disk.devnode)
    console.say(f"key {holder.key_id} written to {target}; public key in {pub}\n"
                "next: store the medium as docs/ceremony.md says; when every holder has a key, "
                "run init-root")
    return 0


def _root_payload(work: Workdir, version: int, days: int, thresholds: list[str]) -> bytes:
    wanted = dict(t.split("=", 1) for t in thresholds if "=" in t)
    keys, roles = {}, {}
    for role in trust.ROOT_ROLES:
        holders = work.holders(role)
        if not holders:
            raise ConfigError(f"no {role} key yet", hint=f"run keygen --role {role} first")
        k = int(wanted.get(role, len(holders) // 2 + 1))
        roles[role] = {"keyids": [h.key_id for h in holders], "threshold": k}
        keys.update({h.key_id: base64.b64encode(h.public).decode() for h in holders})
    return env.canonical({"type": "root", "version": version,
                          "expires": int(time.time()) + days * DAY, "keys": keys,
                          "roles": roles})


def _show_root(console: Console, root: trust.Root, work: Workdir) -> None:
    names = {h.key_id: h.name for h in work.holders()}
    console.say(f"trust root version {root.version}, expires {_date(root.expires)}")
    for role, spec in root.roles.items():
        who = ", ".join(sorted(names.get(k, k) for k in spec.keyids))
        console.say(f"  {role}: {spec.threshold} of {len(spec.keyids)} ({who})")


def init_root(args: argparse.Namespace, console: Console, udev: media.Udev | None) -> int:
    airgap.require_offline()
    work = Workdir(args.workdir)
    if work.roots():
        raise ConfigError("a trust root exists already", hint="use rotate-root")
    payload = _root_payload(work, 1, args.expires_days, args.threshold)
    root = trust.parse_root(payload)
    _show_root(console, root, work)
    session = Session(work, console, udev or media.PyudevBackend())
    signed = session.collect("root", env.Envelope("root", payload, ()),
                             work.holders("root"), root.roles["root"].threshold)
    trust.first_root(signed.encode())  # what a device will check
    return _finish_root(session, signed, root)


def rotate_root(args: argparse.Namespace, console: Console, udev: media.Udev | None) -> int:
    airgap.require_offline()
    work = Workdir(args.workdir)
    if not work.roots():
        raise ConfigError("no trust root yet", hint="use init-root")
    old = _current_root(work)
    payload = _root_payload(work, old.version + 1, args.expires_days, args.threshold)
    new = trust.parse_root(payload)
    _show_root(console, new, work)
    session = Session(work, console, udev or media.PyudevBackend())
    envelope = env.Envelope("root", payload, ())
    by_id = {h.key_id: h for h in work.holders("root")}
    for label, root in (("the current root", old), ("the new root", new)):
        have = env.signers(envelope, "root", root.keys, root.roles["root"].keyids)
        need = root.roles["root"].threshold - len(have)
        if need > 0:
            console.say(f"signatures from {label}'s root holders: {need} more")
            todo = sorted((by_id[k] for k in root.roles["root"].keyids
                           if k in by_id and root.keys[k] not in have), key=lambda h: h.name)
            envelope = session.collect("root", envelope, todo, need)
    trust.next_root(old, envelope.encode())
    return _finish_root(session, envelope, new)


def _finish_root(session: Session, signed: env.Envelope, root: trust.Root) -> int:
    path = session.workdir.path / "root" / f"{root.version}.json"
    data = signed.encode()
    write_atomic(path, data, 0o644, dir_mode=0o755)
    digest = hashlib.sha256(data).hexdigest()
    session.workdir.log("root", version=root.version, sha256=digest)
    transcript = session.sign_transcript()
    session.console.say(f"\ntrust root {root.version} written to {path}\n  sha256 {digest}\n"
                        f"  transcript signed: {transcript}\n"
                        "next: copy the root file to the build machine (scripts/image pins it)")
    return 0


def _current_root(work: Workdir) -> trust.Root:
    paths = work.roots()
    root = trust.first_root(paths[0].read_bytes())
    for path in paths[1:]:
        root = trust.next_root(root, path.read_bytes())
    return root


# --- releases -------------------------------------------------------------------------------------


def sign_release(args: argparse.Namespace, console: Console, udev: media.Udev | None) -> int:
    airgap.require_offline()
    work = Workdir(args.workdir)
    root = _current_root(work)
    components = {}
    for name, path in _named_files(args.artifact, "--artifact "):
        console.say(f"hashing {name}: {path}")
        h, length = hashlib.blake2b(digest_size=32), 0
        for chunk in _chunks(path):
            h.update(chunk)
            length += len(chunk)
        components[name] = {"length": length, trust.HASH: h.hexdigest()}
    payload = env.canonical({"type": "release", "version": args.version,
                             "expires": int(time.time()) + args.expires_days * DAY,
                             "boards": sorted(set(args.board)), "components": components})
    release = trust.parse_release(payload)
    console.say(f"\nrelease {release.version} for {', '.join(release.boards)}, expires "
                f"{_date(release.expires)}")
    for name, comp in release.components.items():
        console.say(f"  {name}: {comp.length:,} bytes, {trust.HASH} {comp.digest.hex()}")
    spec = root.roles["release"]
    session = Session(work, console, udev or media.PyudevBackend())
    signed = session.collect("release", env.Envelope("release", payload, ()),
                             [h for h in work.holders("release") if h.key_id in spec.keyids],
                             spec.threshold)
    data = signed.encode()
    for board in release.boards:
        trust.verify_release(root, data, board=board, now=int(time.time()), floor=trust.Floor())
    write_atomic(args.out, data, 0o644, dir_mode=0o755)
    work.log("release", version=release.version, sha256=hashlib.sha256(data).hexdigest())
    session.console.say(f"\nrelease manifest written to {args.out}; transcript signed: "
                        f"{session.sign_transcript()}")
    return 0


def verify_release(args: argparse.Namespace, console: Console, udev: media.Udev | None) -> int:
    """A user's check of downloaded files: signatures by the release threshold of the newest
    root reached from the pinned one, expiry, board, and every file's length and hash."""
    now = int(time.time())
    root = trust.newest_root(trust.first_root(args.root[0].read_bytes()),
                             [path.read_bytes() for path in args.root[1:]], now)
    release = trust.verify_release(root, args.release.read_bytes(), board=args.board, now=now,
                                   floor=trust.Floor())
    console.say(f"release {release.version} for {', '.join(release.boards)}: signed by the "
                f"release keys of trust root {root.version}, expires {_date(release.expires)}")
    given: set[str] = set()
    for name, path in _named_files(args.files, "", known=release.components):
        check = trust.ComponentCheck(name, release.components[name])
        for chunk in _chunks(path):
            check.update(chunk)
        check.finish()
        given.add(name)
        console.say(f"  {name}: {path} matches ({release.components[name].length:,} bytes)")
    left = sorted(set(release.components) - given)
    if left:
        console.say(f"  not checked (no file given): {', '.join(left)}")
    return 0


def _named_files(items: list[str], flag: str, known: Collection[str] | None = None
                 ) -> list[tuple[str, Path]]:
    """NAME=PATH arguments; with ``known``, NAME must be one of them."""
    out = []
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or (known is not None and name not in known):
            raise UsageError(f"{flag}{item!r}: NAME=PATH" + (
                f" with NAME one of {', '.join(sorted(known))}" if known is not None else ""))
        out.append((name, Path(path)))
    return out


def _chunks(path: Path) -> Iterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk


# --- warrant canaries -----------------------------------------------------------------------------


def _keyset(root: trust.Root, role: str) -> canary.KeySet:
    spec = root.roles[role]
    return canary.KeySet({k: root.keys[k] for k in spec.keyids}, spec.threshold)


def canary_issue(args: argparse.Namespace, console: Console, udev: media.Udev | None) -> int:
    airgap.require_offline()
    work = Workdir(args.workdir)
    root = _current_root(work)
    unknown = set(args.withdraw) - set(canary.CODES)
    if unknown:
        raise UsageError(f"unknown codes {', '.join(sorted(unknown))} (codes: "
                         f"{' '.join(canary.CODES)})")
    keys, panic = _keyset(root, "canary"), _keyset(root, "panic")
    now = int(time.time())
    payload = canary.statement(
        domain=args.domain, canary=keys, new_canary=keys, panic=panic, new_panic=panic,
        version=args.version, release=now, expiry=now + args.expires_days * DAY,
        freshness=args.freshness,
        codes=[c for c in canary.CODES if c not in args.withdraw])
    console.say(f"canary statement {args.version} for {args.domain}, expires "
                f"{_date(now + args.expires_days * DAY)}; withdrawn: "
                f"{' '.join(args.withdraw) or 'none'}")
    session = Session(work, console, udev or media.PyudevBackend())
    spec = root.roles["canary"]
    signed = session.collect("canary", env.Envelope("canary", payload, ()),
                             [h for h in work.holders("canary") if h.key_id in spec.keyids],
                             spec.threshold)
    write_atomic(args.out, signed.encode(), 0o644, dir_mode=0o755)
    work.log("canary", version=args.version, domain=args.domain)
    console.say(f"statement written to {args.out}; transcript signed: "
                f"{session.sign_transcript()}")
    return 0


def canary_pin(args: argparse.Namespace, console: Console, udev: media.Udev | None) -> int:
    root = _current_root(Workdir(args.workdir))
    pin = canary.Pin(args.domain, _keyset(root, "canary"), _keyset(root, "panic"))
    write_atomic(args.out, _pin_text(pin), 0o644, dir_mode=0o755)
    console.say(f"pin for {args.domain} written to {args.out} (from trust root {root.version})")
    return 0


def canary_verify(args: argparse.Namespace, console: Console, udev: media.Udev | None) -> int:
    """Exit 0 all clear; 1 failed or panic (the reason on stdout); 3 a legacy-layout statement
    whose signatures verify field by field (never fully valid); 4 the statement could not be
    fetched; 65 refused."""
    checks, status = 0, 0
    while True:
        pin = _read_pin(args.pin)
        try:
            data = _fetch(args.statement)
            verdict = (canary.verify_legacy if _legacy(data) else canary.verify)(
                pin, data, int(time.time()))
        except RefusedError as exc:
            console.say(f"ALERT {args.statement}: refused: {exc.message}")
            status = exc.exit_code
        except OSError as exc:  # unreachable or missing: a watcher says so and goes on
            console.say(f"ALERT {args.statement}: cannot fetch the statement: {exc}")
            status = FETCH_EXIT
        else:
            if verdict.status == "ok":
                console.say(f"ok {args.statement}: statement {verdict.pin.version}, all codes "
                            "affirmed")
                write_atomic(args.pin, _pin_text(verdict.pin), 0o644, dir_mode=0o755)
                status = 0
            elif verdict.status == "legacy":  # all signatures good, but field by field
                console.say(f"legacy {args.statement}: " + "; ".join(verdict.reasons))
                status = LEGACY_EXIT
            else:
                console.say(f"ALERT {args.statement}: {verdict.status}: "
                            + "; ".join(verdict.reasons))
                status = 1
        checks += 1
        if not args.every or (args.count and checks >= args.count):
            return status
        time.sleep(args.every)


def _legacy(data: bytes) -> bool:
    """Whether a statement is in the standard's own layout (a "canary" table) rather than ours."""
    try:
        doc = json.loads(data[:WATCH_MAX_BYTES])
    except (ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and "canary" in doc


def _fetch(source: str) -> bytes:
    if source.startswith(("http://", "https://")):
        with urllib.request.urlopen(source, timeout=30) as resp:  # noqa: S310 - http(s) only
            return bytes(resp.read(WATCH_MAX_BYTES + 1))
    with Path(source).open("rb") as fh:
        return fh.read(WATCH_MAX_BYTES + 1)


def _pin_text(pin: canary.Pin) -> bytes:
    doc: dict[str, Any] = asdict(pin)
    doc["canary"], doc["panic"] = pin.canary.doc(), pin.panic.doc()
    return (json.dumps(doc, indent=1, sort_keys=True) + "\n").encode()


def _read_pin(path: Path) -> canary.Pin:
    try:
        doc = json.loads(path.read_text())
        return canary.Pin(doc["domain"], canary.keyset(doc["canary"], "pin"),
                          canary.keyset(doc["panic"], "pin"), int(doc["version"]),
                          tuple(doc["history"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"cannot read the pin {path}: {exc}",
                          hint="make one with: coalmine-sign canary pin") from None


def _date(t: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t))


def _tty_console() -> Console:
    """People at a terminal; scripted ceremonies (tests) answer on stdin, one line each."""
    if sys.stdin.isatty():
        return Console(sys.stdout, input, getpass.getpass)

    def line(prompt: str) -> str:
        print(prompt, end="", flush=True)
        return sys.stdin.readline().rstrip("\n")

    return Console(sys.stdout, line, line)


if __name__ == "__main__":
    sys.exit(main())
