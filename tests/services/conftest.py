"""Shared helpers: a service running on its own event loop thread, collecting into a MemorySink.

The tests drive services with real clients (OpenSSH, raw sockets) from the test thread, so the
service needs a loop of its own; events land in a MemorySink the tests poll.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from firmware.config import LISTENER_PORTS, DeviceConfig, Limits, Listener, SSHService, parse
from firmware.eventpath import EventSink
from firmware.protocol.event import Event
from firmware.services.base import Service


class MemorySink:
    """Test double of ``SocketSink``: same interface, keeps the events in a list."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def emit(self, event: Event) -> None:
        self.events.append(event)


def make_config(tmp_path: Path, **limits: Any) -> DeviceConfig:
    base = parse({})
    return dataclasses.replace(
        base, data_dir=tmp_path, run_dir=tmp_path / "run",
        ssh=SSHService(host="127.0.0.1", port=0, host_key=tmp_path / "ssh" / "host_key"),
        listeners={name: Listener(enabled=True, host="127.0.0.1", port=0)
                   for name in LISTENER_PORTS},
        limits=dataclasses.replace(Limits(), **limits))


class Running:
    """A service started on a background loop; ``stop()`` ends both."""

    def __init__(self, service: Service, sink: MemorySink) -> None:
        self.service = service
        self.sink = sink
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.call(service.start())

    def call(self, coro: object) -> object:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)  # type: ignore[arg-type]

    @property
    def port(self) -> int:
        return self.service.port

    def wait_for(self, pred: Callable[[Event], bool], timeout: float = 10.0) -> Event:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for ev in list(self.sink.events):
                if pred(ev):
                    return ev
            time.sleep(0.02)
        raise AssertionError(f"no matching event; got {self.sink.events!r}")

    def stop(self) -> None:
        self.call(self.service.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Running]]:
    """``start(ServiceClass, extra_sinks=(), **limits)`` -> Running; stopped after the test."""
    running: list[Running] = []

    def _start(cls: type[Service], extra_sinks: tuple[EventSink, ...] = (),
               **limits: float | int) -> Running:
        sink = MemorySink()
        r = Running(cls(make_config(tmp_path, **limits), [*extra_sinks, sink]), sink)
        running.append(r)
        return r

    yield _start
    for r in running:
        r.stop()
