"""The console's command line: init, serve, pending, approve, reject, revoke, settings, enroll,
devices, events, stats.

The only place in the console that prints and exits: library code raises ``CoalmineError``
subclasses, ``main`` turns them into a message, a hint and the subclass's exit code.  Event
passwords are stored as sent and masked here unless ``--show-passwords`` is given.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from console import config, pairing, settings
from console.core import Console, Limits
from console.handler import Responder
from console.server import Server, bind_or_inherit
from console.store import Store
from firmware.protocol.keys import PeerPublicKey
from firmware.protocol.pairing import shown
from firmware.protocol.settings import verify_key_of
from firmware.protocol.text import inert
from firmware.shared.cli import main_guard, module_command
from firmware.shared.errors import DecodeError, UsageError


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=module_command("console"),
                                description="coalmine companion console: the devices' DNS "
                                "endpoint, device registry and event store")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def cmd(name: str, text: str) -> argparse.ArgumentParser:
        s = sub.add_parser(name, help=text, description=text)
        s.add_argument("--state", type=Path, required=True, help="the console's state directory")
        return s

    s = cmd("init", "create the state directory, the console key and console.toml")
    s.add_argument("--zone", required=True, help="DNS zone delegated to this console")
    s = cmd("serve", "serve the zone over UDP and TCP until SIGTERM/SIGINT")
    s.add_argument("--listen", default="127.0.0.1:5353",
                   help="HOST:PORT, or systemd for socket activation (default %(default)s)")
    s.add_argument("--verbose", action="store_true", help="log every flush")
    s = cmd("enroll", "add a device to the registry by its public key")
    s.add_argument("--name", required=True, help="a name for the device (used as node_id)")
    s.add_argument("--public-key", required=True, help="the device's X25519 public key, base64")
    cmd("pending", "list devices that asked to be paired, with the code each one shows")
    s = cmd("approve", "pair the device whose code is CODE (it shows the same on its serial "
                       "console and LED)")
    s.add_argument("code", metavar="CODE", help="the six-digit pairing code, e.g. 042917")
    s.add_argument("--name", help="a name for the device (default: its suggestion + id)")
    s = cmd("reject", "refuse the pairing request with code CODE")
    s.add_argument("code", metavar="CODE")
    s = cmd("revoke", "end a device: its beacons are dropped from now on")
    s.add_argument("--name", required=True, help="the device's name (see `devices`)")
    s = cmd("settings", "show or change a device's signed settings (it takes them in config "
                        "mode)")
    s.add_argument("--name", required=True, help="the device's name (see `devices`)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="e.g. services.ssh.port=2222, device.hostname=files-2 (repeatable)")
    s.add_argument("--unset", action="append", default=[], metavar="KEY",
                   help="back to the device's own default (repeatable)")
    cmd("devices", "list enrolled devices")
    s = cmd("events", "list stored events, newest last")
    s.add_argument("--json", action="store_true", help="one OpenCanary JSON object per line")
    s.add_argument("--show-passwords", action="store_true", help="do not mask passwords")
    s.add_argument("--limit", type=int, default=None, help="only the newest N events")
    cmd("stats", "query counters of the server (as of its last flush) and store sizes")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    os.umask(0o077)  # the state holds keys and the passwords attackers typed: private files
    return main_guard(lambda: int(_COMMANDS[args.command](args) or 0))


def _init(args: argparse.Namespace) -> None:
    key = config.init_state(args.state, args.zone)
    cfg = config.load(args.state)
    print(f"console initialised in {args.state} for zone {cfg.zone}")
    print(f"console public key: {key.public().text()}")
    print("next:")
    print(f"  1. delegate {cfg.zone} to this host (NS record pointing at {cfg.soa_mname}),")
    print("  2. give each device the zone and the console public key above,")
    run = module_command("console")
    print(f"  3. pair each device: hold its config button 3 s, then {run} pending --state "
          f"{args.state} and {run} approve --state {args.state} CODE")
    print(f"  4. serve: {run} serve --state {args.state} --listen 0.0.0.0:53")


def _serve(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = config.load(args.state)
    sockets = bind_or_inherit(args.listen)
    store = Store(cfg.db_path)
    core = Console(cfg.zone, cfg.private_key, store, Limits(health=cfg.health),
                   state_dir=cfg.state, settings_key=verify_key_of(cfg.settings_seed()))
    if core.restored:
        print(f"warning: the database's replay floors were behind the floors file for "
              f"{len(core.restored)} devices (restored from a backup?); the floors file wins",
              flush=True)
    responder = Responder(core, cfg.zone, cfg.soa_mname, cfg.soa_rname)
    server = Server(responder, sockets, cfg.limits, core.flush, commit=core.commit)
    server.install_signal_handlers()
    bound_host, bound_port = server.address
    print(f"serving zone {cfg.zone} on {bound_host}:{bound_port} (udp+tcp)", flush=True)
    try:
        server.serve_forever()
    finally:
        core.close()
        store.close()
    print("stopped; state flushed", flush=True)


def _enroll(args: argparse.Namespace) -> None:
    try:
        peer = PeerPublicKey.from_text(args.public_key)
    except DecodeError as exc:
        raise UsageError(f"bad --public-key: {exc.message}",
                         hint="pass the device's 32-byte X25519 public key in base64") from None
    name = _name(args.name)
    store = Store(config.load(args.state).db_path)
    store.enroll(name, peer.text(), peer.device_id(), time.time())
    print(f"enrolled {name} (device id {peer.device_id().hex()}); a running console picks it "
          "up within a second")


def _pending(args: argparse.Namespace) -> None:
    store = Store(config.load(args.state).db_path)
    rows = store.pending_rows()
    if not rows:
        print("no pairing requests (a device asks while it is in config mode: hold its button "
              "for 3 seconds)")
    for r in rows:
        print(f"code={shown(r.code)}	id={r.device_id.hex()}	suggests={inert(r.name, 32)!r}	"
              f"state={r.state}	first_seen={_when(r.first_seen)}	last_seen={_when(r.last_seen)}")
    if any(r.state == "pending" for r in rows):
        print(f"approve only a code the device itself shows: {module_command('console')} "
              f"approve --state {args.state} CODE")


def _approve(args: argparse.Namespace) -> None:
    store = Store(config.load(args.state).db_path)
    name = pairing.approve(store, args.code, _name(args.name) if args.name else None,
                           time.time())
    print(f"paired {name}; the device learns it at its next request (a few seconds) and starts "
          "sending")


def _reject(args: argparse.Namespace) -> None:
    pairing.reject(Store(config.load(args.state).db_path), args.code)
    print(f"rejected the request with code {args.code}; the device is told so")


def _revoke(args: argparse.Namespace) -> None:
    pairing.revoke(Store(config.load(args.state).db_path), _name(args.name), time.time())
    print(f"revoked {args.name}; its beacons are dropped from now on. To pair that box again, "
          "put it in config mode: it needs a new key and a new approval")


def _settings(args: argparse.Namespace) -> None:
    cfg = config.load(args.state)
    store = Store(cfg.db_path)
    device_id = store.device_id_of(_name(args.name))
    if not args.set and not args.unset:
        version, values = settings.current(store, device_id)
        print(f"{args.name}: settings version {version}\n{settings.describe(values)}")
        return
    new = settings.change(store, cfg.settings_seed(), _name(args.name), assignments=args.set,
                          unset=args.unset, now=time.time())
    print(f"{args.name}: settings version {new.version}, signed\n{settings.describe(new.values)}")
    print("the device takes them the next time it is in config mode (hold its button 3 s)")


def _name(text: str) -> str:
    name = text.strip()
    if not name or len(name) > 64 or not name.isprintable():
        raise UsageError("bad --name", hint="use 1-64 printable characters")
    return name


def _devices(args: argparse.Namespace) -> None:
    store = Store(config.load(args.state).db_path)
    rows = store.devices()
    if not rows:
        print("no devices enrolled")
    for d in rows:
        seen = _when(d.last_heartbeat) if d.last_heartbeat else "never"
        status = "revoked" if d.revoked is not None else (
            d.status or ("never seen" if d.last_heartbeat is None else "ok"))
        print(f"{inert(d.name, 64)}\tid={d.device_id.hex()}\tstatus={status}\t"
              f"last_heartbeat={seen}\tinterval={d.interval}\tuptime={d.uptime}\t"
              f"queue={d.queue_depth}\toldest_age={d.oldest_age}\trejected={d.rejected}\t"
              f"dropped={d.dropped}\tstore_failed={d.store_failed}\t"
              f"counter={d.highest_counter}")


def _events(args: argparse.Namespace) -> None:
    store = Store(config.load(args.state).db_path)
    for row in store.events(args.limit):
        try:
            record = row.record(mask_secrets=not args.show_passwords)
        except DecodeError as exc:  # one unreadable row never hides the others
            print(f"{_when(row.received)} {row.device} event {row.id} cannot be shown: "
                  f"{exc.message}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps(record, sort_keys=True, ensure_ascii=True))
        else:
            data = " ".join(f"{k}={v!r}" for k, v in record.get("logdata", {}).items())
            print(f"{_when(row.received)} {row.device} logtype={row.logtype} "
                  f"src={record.get('src_host')!r}:{record.get('src_port')} {data}")


def _stats(args: argparse.Namespace) -> None:
    store = Store(config.load(args.state).db_path)
    devices, events = store.counts()
    print(f"devices\t{devices}\nevents\t{events}")
    for name, value in store.stats().items():
        print(f"{name}\t{value}")


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


_COMMANDS = {
    "init": _init, "serve": _serve, "enroll": _enroll, "devices": _devices,
    "pending": _pending, "approve": _approve, "reject": _reject, "revoke": _revoke,
    "settings": _settings,
    "events": _events, "stats": _stats,
}
