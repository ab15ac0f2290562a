"""The ceremony's moving parts: the signer's work directory, the holders, their signatures.

The work directory (on the air-gapped laptop, public material only) holds each holder's public
key (``keys/<role>-<holder>.pub``, written by ``keygen``), the trust roots (``root/<N>.json``),
and the transcript (``transcript.jsonl``, one line per step, plus ``transcript/<n>.json``: the
session's lines signed by the holders present).  Private keys never touch it: each holder's key
file lives on their own removable medium, is opened with their passphrase for one signature
and is dropped again.  Everything a person must do is asked for by name, one holder at a time.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from nacl.signing import SigningKey

from firmware.protocol import envelope as env
from firmware.shared.atomic import write_atomic
from firmware.shared.errors import AuthenticationError, CoalmineError, ConfigError
from signing import keyfile, media

PASSPHRASE_TRIES = 3


@dataclass(frozen=True)
class Holder:
    role: str
    name: str
    public: bytes

    @property
    def key_id(self) -> str:
        return env.key_id(self.public)

    def key_file_name(self) -> str:
        return f"coalmine-{self.role}-{self.name}.key"


@dataclass
class Console:
    """Where the ceremony talks to people: prompts out, answers (and passphrases) in."""

    out: TextIO
    ask_line: Callable[[str], str]
    ask_secret: Callable[[str], str]

    def say(self, text: str) -> None:
        print(text, file=self.out, flush=True)


@dataclass
class Workdir:
    path: Path
    session: list[dict[str, object]] = field(default_factory=list)

    @property
    def keys(self) -> Path:
        return self.path / "keys"

    def holders(self, role: str | None = None) -> list[Holder]:
        out = []
        for pub in sorted(self.keys.glob("*.pub")) if self.keys.is_dir() else []:
            doc = json.loads(pub.read_text())
            holder = Holder(doc["role"], doc["holder"], env.b64(doc["public"], "public key"))
            if holder.key_id != doc["keyid"]:
                raise ConfigError(f"{pub}: key id does not match its key")
            if role is None or holder.role == role:
                out.append(holder)
        return out

    def add_holder(self, holder: Holder) -> Path:
        path = self.keys / f"{holder.role}-{holder.name}.pub"
        if path.exists():
            raise ConfigError(f"{path} exists: {holder.name} already holds a {holder.role} key",
                              hint="a lost key is replaced by a new root (docs/ceremony.md)")
        doc = {"role": holder.role, "holder": holder.name, "keyid": holder.key_id,
               "public": base64.b64encode(holder.public).decode()}
        write_atomic(path, (json.dumps(doc, indent=1) + "\n").encode(), 0o644, dir_mode=0o755)
        return path

    def roots(self) -> list[Path]:
        d = self.path / "root"
        return sorted(d.glob("*.json"), key=lambda p: int(p.stem)) if d.is_dir() else []

    def log(self, step: str, **detail: object) -> None:
        """One transcript line, kept at once (a ceremony cut short still shows what happened)."""
        line = {"time": int(time.time()), "step": step, **detail}
        self.session.append(line)
        with (self.path / "transcript.jsonl").open("a") as fh:
            fh.write(json.dumps(line, sort_keys=True) + "\n")


@dataclass
class Session:
    """One ceremony command: who is asked, how media are checked, which keys were opened."""

    workdir: Workdir
    console: Console
    udev: media.Udev
    unlocked: dict[str, bytes] = field(default_factory=dict)  # key id -> seed, this session

    def collect(self, role: str, envelope: env.Envelope, holders: Iterable[Holder],
                needed: int) -> env.Envelope:
        """Ask the holders in turn until ``needed`` of them signed; every signature is
        verified as it is made."""
        done: list[Holder] = []
        for holder in holders:
            if len(done) >= needed:
                break
            self.console.say(f"\n== {role} signature {len(done) + 1} of {needed}: "
                             f"{holder.name}")
            answer = self.console.ask_line(f"{holder.name}: insert your medium and type its "
                                           "mount point (or 'skip'): ").strip()
            if answer in ("", "skip"):
                self.console.say(f"   skipped {holder.name}")
                self.workdir.log("skipped", role=role, holder=holder.name)
                continue
            try:
                seed = self.unlock(Path(answer), holder)
            except CoalmineError as exc:
                self.console.say(f"   {holder.name} did not sign: {exc.message}")
                self.workdir.log("not signed", role=role, holder=holder.name,
                                 reason=exc.message)
                continue
            envelope = envelope.signed_by([seed])
            if not env.signers(envelope, role, {holder.key_id: holder.public},
                               [holder.key_id]):
                raise AuthenticationError(f"{holder.name}'s signature does not verify")
            self.unlocked[holder.key_id] = seed
            done.append(holder)
            self.console.say(f"   verified: {holder.name}'s signature ({len(done)} of {needed})")
            self.workdir.log("signed", role=role, holder=holder.name, keyid=holder.key_id)
        if len(done) < needed:
            raise AuthenticationError(f"only {len(done)} of the {needed} {role} signatures "
                                      "needed",
                                      hint="run the command again when enough holders are here")
        return envelope

    def unlock(self, mount: Path, holder: Holder) -> bytes:
        disk = media.check_medium(mount, self.udev)
        path = mount / holder.key_file_name()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"no key {path.name} on {disk.devnode} ({exc.strerror})") from None
        if keyfile.describe(data).public != holder.public:
            raise ConfigError(f"{path.name} on {disk.devnode} is not the key listed for "
                              f"{holder.name}")
        self.console.say(f"   found {path.name} on {disk.devnode} (removable)")
        for attempt in range(1, PASSPHRASE_TRIES + 1):
            try:
                _, seed = keyfile.unseal(data, self.console.ask_secret(
                    f"{holder.name}'s passphrase: "))
            except AuthenticationError as exc:
                self.console.say(f"   {exc.message} (try {attempt} of {PASSPHRASE_TRIES})")
                continue
            if bytes(SigningKey(seed).verify_key) != holder.public:
                raise AuthenticationError("the key file opened to another key")
            return seed
        raise AuthenticationError(f"{holder.name}: passphrase refused {PASSPHRASE_TRIES} times")

    def sign_transcript(self) -> Path | None:
        """This session's transcript lines, signed by every holder whose key was opened."""
        if not self.unlocked or not self.workdir.session:
            return None
        payload = env.canonical({"type": "transcript", "steps": self.workdir.session})
        signed = env.Envelope("transcript", payload, ()).signed_by(list(self.unlocked.values()))
        d = self.workdir.path / "transcript"
        n = len(list(d.glob("*.json"))) + 1 if d.is_dir() else 1
        path = d / f"{n}.json"
        write_atomic(path, signed.encode(), 0o644, dir_mode=0o755)
        return path
