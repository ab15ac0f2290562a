"""A whole coalmine on loopback: console, Debian's unbound as the recursive resolver between
device and console, and the device runtime (beacon agent + SSH honeypot) as ordinary processes.

``make demo``, the end-to-end tests and the latency benchmark all drive the same ``Lab``, so
what the demo shows is exactly what the tests check.  Everything listens on 127.0.0.1 high
ports chosen at start; every process is stopped when the ``with`` block ends.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import tomli_w

from firmware.agent.storage import load_or_create_key
from firmware.shared.errors import EnvironmentFault, ToolError
from firmware.shared.proc import run

REPO = Path(__file__).resolve().parent.parent
ZONE = "c.test"
HOST = "127.0.0.1"

UNBOUND_CONF = """server:
  interface: {host}@{port}
  port: {port}
  do-not-query-localhost: no
  use-caps-for-id: yes
  qname-minimisation: yes
  # After an outage unbound treats the console as down and, by default, stops asking it for
  # up to infra-host-ttl (900 s); keep probing so a recovered console is used again promptly.
  # The agent's persistent queue covers the default too, just more slowly.
  infra-keep-probing: yes
  local-zone: "test." nodefault
  username: ""
  chroot: ""
  directory: "{dir}"
  pidfile: "{dir}/unbound.pid"
  access-control: 127.0.0.0/8 allow
  module-config: "iterator"
  verbosity: {verbosity}
  logfile: ""
  use-syslog: no
stub-zone:
  name: "{zone}"
  stub-addr: {host}@{console_port}
"""


def write_unbound_conf(path: Path, *, port: int, console_port: int, zone: str = ZONE,
                       verbosity: int = 1) -> Path:
    """An unbound config on 127.0.0.1:``port`` that resolves ``zone`` from the console."""
    path.write_text(UNBOUND_CONF.format(host=HOST, port=port, dir=path.parent, zone=zone,
                                        console_port=console_port, verbosity=verbosity))
    return path


def device_toml(lab: Lab, *, node: str, resolver: str, heartbeat: float,
                device: dict[str, Any] | None = None, ssh: dict[str, Any] | None = None,
                enrolled: bool = True, listeners: dict[str, dict[str, Any]] | None = None,
                limits: dict[str, Any] | None = None) -> str:
    """The one writer of device settings for a device that talks to ``lab`` (lab and QEMU).

    ``enrolled``: the lab enrolls the device's key by hand (``console enroll``); False makes
    the device pair over DNS in config mode instead."""
    doc: dict[str, Any] = {
        "device": {"node_name": node, **(device or {})},
        "console": {"zone": ZONE, "public_key": lab.console_key, "resolver": resolver,
                    "heartbeat_interval": heartbeat, "max_backoff": 2.0, "enrolled": enrolled},
    }
    services = {**({"ssh": ssh} if ssh else {}), **(listeners or {})}
    if services:
        doc["services"] = services
    if limits:
        doc["limits"] = limits
    return tomli_w.dumps(doc)


def listener_files(data: Path) -> dict[str, dict[str, str]]:
    """Where the lab puts what `--make-host-key` makes for a listener (the TLS certificates)."""
    return {name: {"certificate": str(data / name / "tls.pem")} for name in ("https", "rdp")}


def free_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            t.bind((HOST, 0))
            port = int(t.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                try:
                    u.bind((HOST, port))
                except OSError:
                    continue
            return port
    raise EnvironmentFault("no free loopback port")


def need(tool: str) -> str:
    path = shutil.which(tool) or (f"/usr/sbin/{tool}" if os.path.exists(f"/usr/sbin/{tool}")
                                  else None)
    if path is None:
        raise ToolError(f"{tool} is not installed", hint="run: make deps")
    return path


class Lab:
    """Console + unbound + device runtime on loopback; use as a context manager.

    ``listeners``: more honeypot services to run beside SSH (``ftp``, ``https``, ``redis`` ...),
    each on a free port of its own (``listener_ports``); ``service_settings`` adds to a
    service's ``[services.NAME]`` table (e.g. the SMB share's honey credential).
    ``with_device=False`` starts only the network side (console and unbound) for a device that
    runs elsewhere, e.g. an emulated one: it reaches unbound on ``resolver_port`` and is enrolled
    with :meth:`enroll`; ``console_key`` is what the device must be given.
    """

    def __init__(self, workdir: Path | None = None, *, heartbeat: float = 60.0,
                 with_ssh: bool = True, with_device: bool = True, pair: bool = False,
                 health: dict[str, float] | None = None,
                 listeners: Sequence[str] = (),
                 service_settings: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="coalmine-lab-")
        self.dir = workdir or Path(self._tmp.name)  # type: ignore[union-attr]
        self.heartbeat = heartbeat
        self.with_ssh = with_ssh
        self.with_device = with_device
        self.pair = pair  # the device pairs over DNS in config mode instead of being enrolled
        self.health = health or {}  # console.toml [health], e.g. a short offline_grace
        self.console_key = ""
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.state = self.dir / "console"
        self.console_port = free_port()
        self.resolver_port = free_port()
        self.ssh_port = free_port()
        self.listener_ports = {name: free_port() for name in listeners}
        self.service_settings = service_settings or {}
        self.device_conf = self.dir / "device.toml"

    # -- lifecycle ---------------------------------------------------------------------------

    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, t: type[BaseException] | None, e: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        out = self.console("init", "--zone", ZONE)
        console_key = next(line.split(":", 1)[1].strip() for line in out.splitlines()
                           if line.startswith("console public key:"))
        self.console_key = console_key
        if self.health:
            with (self.state / "console.toml").open("a") as conf:
                conf.write(tomli_w.dumps({"health": self.health}))
        self.start_console()
        self.start_unbound()
        if not self.with_device:
            return
        data = self.dir / "device"
        if self.pair:  # as the button daemon leaves it after a long press
            self.set_mode("config")
        else:
            device_key, _ = load_or_create_key(data)
            self.enroll("lab-device", device_key.public().text())
        self.device_conf.write_text(device_toml(
            self, node="lab-device", resolver=f"{HOST}:{self.resolver_port}",
            heartbeat=self.heartbeat, device={"data_dir": str(data),
                                              "run_dir": str(self.dir / "run"),
                                              "settings_dir": str(self.dir / "settings")},
            ssh={"host": HOST, "port": self.ssh_port, "host_key": str(data / "ssh_host_key")},
            enrolled=not self.pair,
            listeners={name: {"enabled": True, "host": HOST, "port": port,
                              **listener_files(data).get(name, {}),
                              **self.service_settings.get(name, {})}
                       for name, port in self.listener_ports.items()}))
        self.start_agent()
        for name, port in self.listener_ports.items():
            argv = [sys.executable, "-m", "firmware.services", name, "--config",
                    str(self.device_conf)]
            if name in listener_files(data):  # made beforehand, as the device's oneshot does
                run([*argv, "--make-host-key"], cwd=REPO, quiet=True, timeout=60,
                    env={"PYTHONPATH": str(REPO)})
            self.spawn(name, argv)
            self.wait_port(port, "tcp")
        if self.with_ssh:
            ssh = [sys.executable, "-m", "firmware.services", "ssh", "--config",
                   str(self.device_conf)]
            run([*ssh, "--make-host-key"], cwd=REPO, quiet=True, timeout=60,
                env={"PYTHONPATH": str(REPO)})
            self.spawn("ssh", ssh)
            self.wait_port(self.ssh_port, "tcp")

    def enroll(self, name: str, public_key: str) -> None:
        """Register a device key; the running console picks it up at its next flush."""
        self.console("enroll", "--name", name, "--public-key", public_key)

    def set_mode(self, mode: str) -> None:
        """What the button daemon writes: "config" or "production"."""
        path = self.dir / "run" / "state" / "mode"  # DeviceConfig.mode_file
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(mode + "\n")

    def start_console(self) -> None:
        self.spawn("console", [sys.executable, "-m", "console", "serve", "--state",
                               str(self.state), "--listen", f"{HOST}:{self.console_port}"])
        self.wait_port(self.console_port, "udp")

    def start_agent(self) -> None:
        self.spawn("agent", [sys.executable, "-m", "firmware.agent", "--config",
                             str(self.device_conf)])
        self.wait_for((self.dir / "run" / "ssh" / "events.sock").exists, 15, "agent socket")

    def start_unbound(self) -> None:
        conf = write_unbound_conf(self.dir / "unbound.conf", port=self.resolver_port,
                                  console_port=self.console_port)
        self.spawn("unbound", [need("unbound"), "-d", "-c", str(conf)])
        self.wait_port(self.resolver_port, "udp")

    def stop(self) -> None:
        for name in reversed(list(self.procs)):
            self.kill(name)
        if self._tmp is not None:
            self._tmp.cleanup()

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    # -- helpers -----------------------------------------------------------------------------

    def spawn(self, name: str, argv: list[str]) -> None:
        log = (self.dir / f"{name}.log").open("ab")
        self.procs[name] = subprocess.Popen(argv, cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, "PYTHONPATH": str(REPO)})

    def log(self, name: str) -> str:
        path = self.dir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def console(self, *args: str) -> str:
        proc = run([sys.executable, "-m", "console", args[0], "--state", str(self.state),
                    *args[1:]], cwd=REPO, capture=True, quiet=True, check=False, timeout=120)
        if proc.returncode:
            raise ToolError(f"console {args[0]} failed: {proc.stderr.decode().strip()}")
        return proc.stdout.decode()

    def events(self, *, show_passwords: bool = True) -> list[dict[str, Any]]:
        flags = ["--show-passwords"] if show_passwords else []
        return [json.loads(line) for line in self.console("events", "--json", *flags).splitlines()
                if line.strip()]

    def wait_event(self, match: Callable[[dict[str, Any]], bool], timeout: float = 30
                   ) -> dict[str, Any]:
        found: list[dict[str, Any]] = []

        def seen() -> bool:
            found[:] = [e for e in self.events() if match(e)]
            return bool(found)

        self.wait_for(seen, timeout, "event at the console", poll=0.05)
        return found[0]

    def wait_for(self, cond: Callable[[], bool], timeout: float, what: str,
                 poll: float = 0.1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if cond():
                return
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise EnvironmentFault(f"{name} exited ({proc.returncode}) waiting for "
                                           f"{what}:\n{self.log(name)[-2000:]}")
            time.sleep(poll)
        tails = "".join(f"\n--- {name} log ---\n{self.log(name)[-1500:]}" for name in self.procs)
        raise EnvironmentFault(f"timed out after {timeout}s waiting for {what}{tails}")

    def wait_port(self, port: int, proto: str) -> None:
        def bound() -> bool:
            kind = socket.SOCK_DGRAM if proto == "udp" else socket.SOCK_STREAM
            with socket.socket(socket.AF_INET, kind) as s:
                try:
                    s.bind((HOST, port))
                except OSError:
                    return True
                return False

        self.wait_for(bound, 20, f"{proto} port {port}")

    def ssh_attempt(self, user: str, password: str, timeout: float = 20,
                    port: int | None = None, source: str | None = None) -> int:
        """One real OpenSSH password login attempt (it must fail) on ``port`` (default: the
        lab's honeypot), from loopback address ``source`` if given; returns ssh's exit code."""
        bind = ["-o", f"BindAddress={source}"] if source else []
        argv = [need("sshpass"), "-p", password, need("ssh"), *bind,
                "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "PreferredAuthentications=password",
                "-o", "PubkeyAuthentication=no", "-o", "NumberOfPasswordPrompts=1",
                "-o", f"ConnectTimeout={int(timeout)}", "-p", str(port or self.ssh_port),
                f"{user}@{HOST}", "true"]
        return run(argv, capture=True, quiet=True, check=False, timeout=timeout + 10).returncode
