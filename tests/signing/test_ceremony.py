"""The ceremony end to end, scripted: key generation onto each holder's medium, the first
trust root, a 3-of-5 release, a root rotation, a warrant canary and its verification; all of
it offline in a network namespace of the test's own, with passphrases typed on stdin.

Each holder's "USB stick" is a tmpfs mounted in a private mount namespace, reported removable
by a fake of the pyudev interface (tests/signing/harness.py); the system disk is reported as
such.  What is checked afterwards uses the pure verification library, as a device would."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from firmware.protocol import canary, trust
from firmware.protocol import envelope as env
from signing.cli import _read_pin

REPO = Path(__file__).resolve().parents[2]
ROOTS, RELEASE, CANARY, PANIC = ["r1", "r2", "r3"], ["a", "b", "c", "d", "e"], ["c1", "c2"], ["p1"]
HOLDERS = {"root": ROOTS, "release": RELEASE, "canary": CANARY, "panic": PANIC}


def secret(name: str) -> str:
    return f"{name} correct horse battery staple"


def run_steps(tmp: Path, steps: list[dict[str, Any]], media: list[str],
              setup: str = "ip link set lo up") -> list[dict[str, Any]]:
    """The steps inside `unshare -n -m`, one tmpfs per medium; each step's rc and output."""
    plan, result = tmp / "plan.json", tmp / "result.json"
    plan.write_text(json.dumps(steps))
    dirs = [str(tmp / "media" / m) for m in media]
    for d in dirs:
        Path(d).mkdir(parents=True, exist_ok=True)
    mounts = " && ".join(f"mount -t tmpfs -o size=1m tmpfs {shlex.quote(d)}" for d in dirs)
    script = (f"{setup} && {mounts or 'true'} && {shlex.quote(sys.executable)} -m "
              f"tests.signing.harness {plan} {result} {' '.join(map(shlex.quote, dirs))}")
    proc = subprocess.run(["unshare", "-n", "-m", "sh", "-c", script], cwd=REPO,
                          capture_output=True, text=True, check=False, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out: list[dict[str, Any]] = json.loads(result.read_text())
    return out


def medium(tmp: Path, name: str) -> str:
    return str(tmp / "media" / name)


def keygen(tmp: Path, role: str, name: str) -> dict[str, Any]:
    return {"argv": ["--workdir", str(tmp / "w"), "keygen", "--role", role, "--holder", name,
                     "--medium", medium(tmp, name), "--kdf-memory-mib", "8"],
            "stdin": [secret(name), secret(name)]}


def signs(tmp: Path, *names: str) -> list[str]:
    """The answers of holders who sign: the mount point of their medium, their passphrase."""
    return [a for n in names for a in (medium(tmp, n), secret(n))]


@pytest.fixture(scope="module")
def ceremony(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("ceremony")
    w = str(tmp / "w")
    (tmp / "slot.img").write_bytes(b"\x5a" * 100_000)
    (tmp / "vmlinuz").write_bytes(b"kernel" * 1000)
    steps = [keygen(tmp, role, n) for role, names in HOLDERS.items() for n in names]
    steps += [
        {"argv": ["--workdir", w, "init-root", "--threshold", "release=3"],
         # r1 mistypes once, r2 signs: 2 of 3
         "stdin": [medium(tmp, "r1"), "wrong passphrase here", secret("r1"),
                   *signs(tmp, "r2")]},
        {"argv": ["--workdir", w, "sign-release", "--version", "7", "--board", "rpi4",
                  "--artifact", f"root={tmp / 'slot.img'}",
                  "--artifact", f"boot/vmlinuz={tmp / 'vmlinuz'}",
                  "--out", str(tmp / "release.json")],
         # a is away; b's medium is c's (wrong key: refused); c, d, e sign
         "stdin": ["skip", medium(tmp, "c"), *signs(tmp, "c", "d", "e")]},
        keygen(tmp, "root", "r4"),
        {"argv": ["--workdir", w, "rotate-root", "--threshold", "release=3"],
         # root 1's holders in turn: r1, r2 (away), r3; then one more of root 2's: r2 (still
         # away), the new r4
         "stdin": [*signs(tmp, "r1"), "skip", *signs(tmp, "r3"), "skip", *signs(tmp, "r4")]},
        {"argv": ["--workdir", w, "canary", "issue", "--domain", "example.org", "--version",
                  "1", "--freshness", "block 00000000000000000001a2b3", "--out",
                  str(tmp / "canary.json")],
         "stdin": signs(tmp, "c1", "c2")},
        {"argv": ["--workdir", w, "canary", "pin", "--domain", "example.org", "--out",
                  str(tmp / "pin.json")]},
    ]
    media = [*(n for names in HOLDERS.values() for n in names), "r4"]
    return tmp, run_steps(tmp, steps, media)


def test_every_step_of_the_ceremony_succeeds(ceremony: tuple[Path, list[dict[str, Any]]]
                                             ) -> None:
    _, results = ceremony
    for step in results[:-1]:
        assert step["rc"] == 0, (step["argv"], step["out"][-2000:], step["err"])
    out = {step["argv"][2]: step["out"] for step in results[:-1]}
    init = out["init-root"]
    assert "trust root version 1" in init and "release: 3 of 5" in init
    assert "wrong passphrase, or the key file was altered (try 1 of 3)" in init
    release = out["sign-release"]
    assert "skipped a" in release and "no key coalmine-release-b.key on /dev/fake-c" in release
    assert "root: 100,000 bytes, blake2b-256" in release
    assert "verified: e's signature (3 of 3)" in release


def test_keys_live_only_on_their_holders_media(ceremony: tuple[Path, list[dict[str, Any]]]
                                               ) -> None:
    tmp, results = ceremony
    on_media = results[-1]["media"]
    assert on_media[medium(tmp, "a")] == ["coalmine-release-a.key 0o600"]
    assert not list((tmp / "w").rglob("*.key"))
    for path in (tmp / "w").rglob("*"):
        if path.is_file():
            assert b'"sealed"' not in path.read_bytes(), path


def test_what_the_ceremony_made_verifies_as_a_device_would(
        ceremony: tuple[Path, list[dict[str, Any]]]) -> None:
    tmp, _ = ceremony
    now = int(time.time())
    root1 = trust.first_root((tmp / "w/root/1.json").read_bytes())
    root2 = trust.newest_root(root1, [(tmp / "w/root/2.json").read_bytes()], now)
    assert root2.roles["root"].threshold == 3 and len(root2.roles["root"].keyids) == 4
    release = trust.verify_release(root2, (tmp / "release.json").read_bytes(), board="rpi4",
                                   now=now, floor=trust.Floor())
    assert release.components["root"].length == 100_000
    verdict = canary.verify(_read_pin(tmp / "pin.json"), (tmp / "canary.json").read_bytes(), now)
    assert verdict.status == "ok"


def test_transcripts_are_signed_by_the_holders_present(
        ceremony: tuple[Path, list[dict[str, Any]]]) -> None:
    tmp, _ = ceremony
    lines = (tmp / "w/transcript.jsonl").read_text().splitlines()
    assert any('"step": "skipped"' in line for line in lines)
    first = env.parse((tmp / "w/transcript/1.json").read_bytes())
    steps = json.loads(first.payload)["steps"]
    assert [s["holder"] for s in steps if s["step"] == "signed"] == ["r1", "r2"]
    holders = {json.loads(p.read_text())["keyid"]: env.b64(json.loads(p.read_text())["public"],
                                                            "k")
               for p in (tmp / "w/keys").glob("*.pub")}
    assert len(env.signers(first, "transcript", holders, list(holders))) == 2


def test_canary_verify_exits_non_zero_with_the_reason(
        ceremony: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    tmp, _ = ceremony
    pin = tmp_path / "pin.json"
    pin.write_bytes((tmp / "pin.json").read_bytes())
    doc = json.loads((tmp / "canary.json").read_text())
    doc["signatures"] = doc["signatures"][:1]  # one of the two canary keys
    bad = tmp_path / "one-signature.json"
    bad.write_text(json.dumps(doc))
    cmd = [sys.executable, "-m", "signing", "canary", "verify", "--pin", str(pin)]
    refused = subprocess.run([*cmd, str(bad)], cwd=REPO, capture_output=True, text=True,
                             check=False)
    assert refused.returncode == 65
    assert "ALERT" in refused.stdout and "1 valid canary signature(s) of the 2" in refused.stdout
    ok = subprocess.run([*cmd, str(tmp / "canary.json")], cwd=REPO, capture_output=True,
                        text=True, check=False)
    assert ok.returncode == 0 and ok.stdout.startswith("ok ")
    again = subprocess.run([*cmd, str(tmp / "canary.json")], cwd=REPO, capture_output=True,
                           text=True, check=False)
    assert again.returncode == 65 and "not newer than 1" in again.stdout, "replay: pin moved"
    watch = subprocess.run([sys.executable, "-m", "signing", "canary", "watch", "--pin", str(pin),
                            "--every", "0.1", "--count", "2", str(tmp_path / "gone.json")],
                           cwd=REPO, capture_output=True, text=True, check=False)
    assert watch.returncode == 4 and watch.stdout.count("cannot fetch the statement") == 2


def test_key_commands_refuse_while_a_network_is_up(tmp_path: Path) -> None:
    (results, _media) = (run_steps(tmp_path, [keygen(tmp_path, "release", "zed")], ["zed"],
                                   setup="ip link add v0 type veth peer name v1 && "
                                         "ip link set v0 up"), None)
    assert results[0]["rc"] == 69
    assert "network interface(s) up: v0; private keys are used only offline" in \
        results[0]["err"]
    assert results[-1]["media"][medium(tmp_path, "zed")] == [], "nothing written"


def test_a_user_verifies_downloaded_files_against_the_release(
        ceremony: tuple[Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    """`verify-release`, as a user runs it on any machine: no key, no air gap; the pinned root,
    the newer root, the manifest and the files."""
    tmp, _ = ceremony
    cmd = [sys.executable, "-m", "signing", "verify-release", "--root", str(tmp / "w/root/1.json"),
           "--root", str(tmp / "w/root/2.json"), "--release", str(tmp / "release.json")]

    def verify(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*cmd, *extra], cwd=REPO, capture_output=True, text=True,
                              check=False, timeout=60)

    ok = verify("--board", "rpi4", f"root={tmp / 'slot.img'}", f"boot/vmlinuz={tmp / 'vmlinuz'}")
    assert ok.returncode == 0, ok.stderr
    assert "release 7 for rpi4: signed by the release keys of trust root 2" in ok.stdout
    assert "root: " in ok.stdout and "matches (100,000 bytes)" in ok.stdout
    partial = verify("--board", "rpi4", f"root={tmp / 'slot.img'}")
    assert partial.returncode == 0 and "not checked (no file given): boot/vmlinuz" in partial.stdout
    altered = tmp_path / "slot.img"
    altered.write_bytes(b"\x5a" * 99_999 + b"\x00")
    bad = verify("--board", "rpi4", f"root={altered}")
    assert bad.returncode != 0 and "root: content differs from the signed release" in bad.stderr
    other = verify("--board", "qemu-arm64", f"root={tmp / 'slot.img'}")
    assert other.returncode != 0 and "not qemu-arm64" in other.stderr
    wrong_name = verify("--board", "rpi4", f"image={tmp / 'slot.img'}")
    assert wrong_name.returncode != 0 and "boot/vmlinuz, root" in wrong_name.stderr
