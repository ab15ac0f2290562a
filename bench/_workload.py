"""Console workloads built by one checkout's own code: run as a script with PYTHONPATH=<checkout>.

bench/console_ingest.py measures the old console (protocol v1, an older checkout) and the new
one side by side.  The two protocol generations share module names (``firmware.protocol``,
``console``), so they cannot live in one process: this script is started once per checkout and
imports only that checkout's modules, by name at run time.  It makes a state directory with
enrolled devices and writes the queries a real device of that generation would send (dnsperf's
"name type" lines), or pushes them through that checkout's console in process for a profile.

Events are SSH password login attempts as the honeypot reports them: a user name, a 40-character
random (incompressible) password, the honeypot's and the client's version strings, addresses and
ports; two or three fragments in v1, one or two in v2 (the summary says how many).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import importlib
import json
import random
import statistics
import string
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

# bench/_reference.py: this script's own directory is the first entry of sys.path
_reference = importlib.import_module("_reference")

ZONE = "c.test"
TXT = 16
USERS = ("root", "admin", "ubuntu", "pi", "oracle", "postgres", "git", "deploy", "test",
         "support", "administrator", "guest", "ftpuser", "user", "nagios", "hadoop")
CLIENTS = ("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3", "SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6",
           "SSH-2.0-libssh_0.10.6", "SSH-2.0-Go", "SSH-2.0-PuTTY_Release_0.80",
           "SSH-2.0-paramiko_3.4.0", "SSH-2.0-AsyncSSH_2.14.2", "SSH-2.0-libssh2_1.11.0")
HONEYPOT_VERSION = "SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"  # the honeypot's default banner
PASSWORD_CHARS = string.ascii_letters + string.digits + string.punctuation
PASSWORD_LEN = 40


def _m(name: str) -> ModuleType:
    return importlib.import_module(name)


class Generation:
    """What differs between protocol v1 and v2 when a device builds frames."""

    def __init__(self) -> None:
        self.frame, self.msgs = _m("firmware.protocol.frame"), _m("firmware.protocol.messages")
        self.names, self.event = _m("firmware.protocol.names"), _m("firmware.protocol.event")
        self.fragment = _m("firmware.protocol.fragment")
        self.replay = _m("firmware.protocol.replay")
        self.v2 = hasattr(self.frame, "KIND_DEVICE")
        self.version = "v2" if self.v2 else "v1"
        if self.v2:
            self.room = int(self.frame.body_size(ZONE))
        else:
            self.room = int(self.names.max_frame_bytes(ZONE)) - int(self.frame.OVERHEAD)

    def seal(self, dev: Device, body: Any) -> bytes:
        dev.seq += 1
        counter = self.replay.make_counter(1, dev.seq)
        if self.v2:
            header = self.frame.Header(dev.device_id, dev.session, counter)
            sealed = self.frame.seal(dev.shared, header, self.msgs.encode_body(body, self.room))
        else:
            sealed = self.frame.seal(dev.shared, dev.device_id, counter,
                                     self.msgs.encode_body(body))
        return bytes(sealed)

    def heartbeat(self, dev: Device, uptime: int) -> bytes:
        if self.v2:
            return self.seal(dev, self.msgs.Heartbeat(uptime, 60))
        return self.seal(dev, self.msgs.Heartbeat(uptime, 0))

    def event_frames(self, dev: Device, event: Any, rng: random.Random) -> list[bytes]:
        msg_id = rng.getrandbits(63) if self.v2 else rng.getrandbits(32)
        message = self.event.encode_message(event)
        return [self.seal(dev, f) for f in self.fragment.split(message, msg_id, self.room)]

    def ssh_event(self, rng: random.Random, when: float) -> Any:
        code = _m("firmware.protocol.catalogue").EventCode.SSH_LOGIN_ATTEMPT
        password = "".join(rng.choice(PASSWORD_CHARS) for _ in range(PASSWORD_LEN))
        return self.event.Event(
            code, when, src_host=f"203.0.113.{rng.randrange(1, 255)}",
            src_port=rng.randrange(1024, 65536), dst_host="192.0.2.10", dst_port=22,
            data={"USERNAME": rng.choice(USERS), "PASSWORD": password,
                  "LOCALVERSION": HONEYPOT_VERSION, "REMOTEVERSION": rng.choice(CLIENTS)})

    def name(self, frame: bytes) -> str:
        return ".".join([*self.names.encode_frame(frame), ZONE])


class Device:
    def __init__(self, gen: Generation, console_public: Any, rng: random.Random) -> None:
        keys = _m("firmware.protocol.keys")
        self.key = keys.OwnPrivateKey.generate()
        self.public_text = str(self.key.public().text())
        self.device_id = bytes(self.key.public().device_id())
        self.shared = bytes(self.key.shared_key(console_public))
        self.session = rng.getrandbits(32)
        self.seq = 0
        self.gen = gen


def prepare(state: Path, devices: int, seed: int) -> tuple[Generation, list[Device]]:
    """A fresh console state directory with ``devices`` enrolled devices."""
    config, store_mod = _m("console.config"), _m("console.store")
    gen, rng = Generation(), random.Random(seed)
    console_public = config.init_state(state, ZONE).public()
    devs = [Device(gen, console_public, rng) for _ in range(devices)]
    store = store_mod.Store(state / config.DB_FILE)
    for i, d in enumerate(devs):
        store.enroll(f"bench-{i}", d.public_text, d.device_id, time.time())
    store.close()
    return gen, devs


def queries(gen: Generation, devs: list[Device], kind: str, count: int,
            seed: int) -> tuple[list[str], dict[str, Any]]:
    """Query names for ``count`` heartbeats or ``count`` events, round robin over devices.

    The fragments of one event are adjacent, as a device sends them.
    """
    rng, out, starts = random.Random(seed + 1), [], []
    per_event: collections.Counter[int] = collections.Counter()
    message_bytes = 0
    for i in range(count):
        dev = devs[i % len(devs)]
        if kind == "heartbeats":
            out.append(gen.name(gen.heartbeat(dev, i)))
            continue
        starts.append(len(out))
        event = gen.ssh_event(rng, time.time())
        message_bytes += len(gen.event.encode_message(event))
        frames = gen.event_frames(dev, event, rng)
        per_event[len(frames)] += 1
        out.extend(gen.name(f) for f in frames)
    summary = {"protocol": gen.version, "queries": len(out), "items": count,
               "devices": len(devs), "fragment_room": gen.room,
               "fragments_per_event": dict(sorted(per_event.items())),
               "message_bytes": message_bytes / count if per_event else 0,
               "name_chars": sum(map(len, out)) / max(1, len(out)), "starts": starts}
    return out, summary


def _py_ref_between() -> float:
    """py-ref timed between two rounds (two units: short, so it sees the rounds' moment)."""
    return float(_reference.cpu_us_per_call(_reference.py_unit, 2, batches=1))


def _console(state: Path, names: list[str]) -> tuple[Any, Any, Any, ModuleType, list[bytes]]:
    """(core, responder, commit, dnswire, wire queries) of this checkout's console on ``state``."""
    config, store_mod, core_mod = _m("console.config"), _m("console.store"), _m("console.core")
    handler, dnswire = _m("console.handler"), _m("console.dnswire")
    cfg = config.load(state)
    core = core_mod.Console(cfg.zone, cfg.private_key, store_mod.Store(cfg.db_path))
    responder = handler.Responder(core, cfg.zone, cfg.soa_mname, cfg.soa_rname)
    commit = getattr(core, "commit", lambda: True)
    wire = [dnswire.build_query([x.encode() for x in n.split(".")], TXT, qid=i & 0xFFFF)
            for i, n in enumerate(names)]
    return core, responder, commit, dnswire, wire


def paired(state: Path, names: list[str], starts: list[int], per_round: int) -> None:
    """Rounds of ``per_round`` whole events, each when stdin says ``go``: one JSON line back per
    round (its CPU seconds, events stored, py-ref).  bench/console_ingest.py alternates the
    rounds of two checkouts, so the two consoles meet the same moments of a machine whose speed
    swings by 2x within seconds; ``starts`` holds the first query of every event."""
    core, responder, commit, _, wire = _console(state, names)
    starts = [*starts, len(wire)]
    print(json.dumps({"ready": len(starts) - 1}), flush=True)
    event = 0
    for line in sys.stdin:
        if line.strip() != "go" or event >= len(starts) - 1:
            break
        end = min(event + per_round, len(starts) - 1)
        before = core.stats.get("events_stored", 0)
        cpu0 = time.process_time()
        for q in wire[starts[event]:starts[end]]:
            responder.respond(q)
        commit()
        cpu = time.process_time() - cpu0
        print(json.dumps({"cpu": cpu, "stored": core.stats.get("events_stored", 0) - before,
                          "py_ref": _py_ref_between()}), flush=True)
        event = end
    core.flush()
    core.store.close()


def in_process(state: Path, names: list[str], per_round: int, profile: Path | None
               ) -> dict[str, float]:
    """Push the queries through this checkout's Responder and console core without sockets.

    Like the server: answers are built in rounds of ``per_round`` queries and the new console
    commits each round once (the old one commits inside every stored event).  py-ref is timed
    between the rounds (not counted in ``cpu``), so it sees the same moments of the machine.
    """
    core, responder, commit, dnswire, wire = _console(state, names)
    prof = cProfile.Profile(time.process_time) if profile else None
    cpu = wall = 0.0
    py_ref: list[float] = []
    for start in range(0, len(wire), per_round):
        cpu0, wall0 = time.process_time(), time.perf_counter()
        if prof:
            prof.enable()
        for q in wire[start:start + per_round]:
            responder.respond(q)
        commit()
        if prof:
            prof.disable()
        cpu, wall = cpu + time.process_time() - cpu0, wall + time.perf_counter() - wall0
        py_ref.append(_py_ref_between())
    cpu0, wall0 = time.process_time(), time.perf_counter()
    core.flush()
    cpu, wall = cpu + time.process_time() - cpu0, wall + time.perf_counter() - wall0
    if prof:
        prof.dump_stats(str(profile))
    stats = dict(core.stats)
    core.store.close()
    return {**codec_costs(dnswire, wire[:2000]),
            "cpu": cpu, "wall": wall, "queries": len(wire), "py_ref": statistics.median(py_ref),
            "accepted": stats.get("accepted", 0), "events_stored": stats.get("events_stored", 0)}


def codec_costs(dnswire: ModuleType, wire: list[bytes]) -> dict[str, float]:
    """CPU µs per query: the console's own DNS codec, and dnslib, on the same queries.

    Parse the query, build a response with one TXT answer of a sealed reply's size.
    """
    import dnslib

    answer = dnswire.txt_answer(bytes(64))
    start = time.process_time()
    for q in wire:
        dnswire.build_response(dnswire.parse_query(q), answers=(answer,))
    codec = time.process_time() - start
    start = time.process_time()
    for q in wire:
        record = dnslib.DNSRecord.parse(q)
        reply = record.reply()
        reply.add_answer(dnslib.RR(record.q.qname, dnslib.QTYPE.TXT, ttl=0,
                                   rdata=dnslib.TXT(bytes(64))))
        reply.pack()
    other = time.process_time() - start
    return {"codec_us": codec / len(wire) * 1e6, "dnslib_us": other / len(wire) * 1e6}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--state", type=Path, required=True)
    ap.add_argument("--kind", choices=("heartbeats", "events"), required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--devices", type=int, default=64)
    ap.add_argument("--seed", type=int, default=8)
    ap.add_argument("--queries-out", type=Path, help="write dnsperf input here")
    ap.add_argument("--in-process", action="store_true", help="run the queries in process")
    ap.add_argument("--paired", action="store_true",
                    help="serve rounds of --per-round events on request (stdin: go)")
    ap.add_argument("--per-round", type=int, default=100, help="queries (events with --paired)")
    ap.add_argument("--profile", type=Path)
    args = ap.parse_args()
    gen, devs = prepare(args.state, args.devices, args.seed)
    names, summary = queries(gen, devs, args.kind, args.count, args.seed)
    if args.queries_out:
        args.queries_out.write_text("".join(f"{n} TXT\n" for n in names))
    starts = summary.pop("starts")
    if args.paired:
        paired(args.state, names, starts, args.per_round)
        return
    if args.in_process:
        summary["in_process"] = in_process(args.state, names, args.per_round, args.profile)
    json.dump(summary, sys.stdout)


if __name__ == "__main__":
    main()
