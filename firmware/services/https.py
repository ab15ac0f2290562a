"""The HTTPS honeypot: the HTTP honeypot's login pages over TLS, with the client's JA3 and JA4.

Web interfaces of NAS boxes and routers answer on 443 with a self-signed certificate; an
intruder who finds one tries passwords there as on port 80, and the way its TLS stack says hello
tells a defender which tool it was.  This service is :mod:`firmware.services.http` unchanged
(skins, banner, limits, events 3000-3002) behind TLS 1.2/1.3 from the ssl module, run in memory
(``ssl.MemoryBIO``) so that the guard still sees the raw bytes: its byte and time limits bound
the handshake too (a slow or stalled handshake is cut at ``connection_timeout``; the TLS
machinery is :mod:`firmware.services.tlsmem`'s, which RDP shares), and its ``head`` keeps the
client's first record, which :mod:`firmware.services.tlswire` reads.  Every event carries
``JA3`` (and ``JA3_STRING``), ``JA4``, ``SNI`` and ``ALPN`` when the client sent them, or
``TLS_UNPARSED`` saying why the ClientHello could not be read.

A connection that never gets to a request (it is not TLS, its handshake fails, or it ends or is
cut before a request) is recorded once as 3002 with an empty ``METHOD``, ``TLS_ERROR`` saying
what happened and, for bytes that are no TLS at all, ``SEEN_HEX`` (the first 64 bytes in hex);
plain HTTP sent to this port gets nginx's answer to that and is recorded with its method, path,
host and user agent.  The certificate (subject ``[services.https] cert_subject``, default per
skin) is made beforehand by ``--make-host-key`` (:mod:`firmware.services.tlscert`, a root
oneshot on the device); the service only reads it.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path
from typing import Any, cast

from firmware.config import DeviceConfig, Listener
from firmware.protocol.catalogue import EventCode
from firmware.services import tlscert, tlsmem, tlswire
from firmware.services.guard import Guard
from firmware.services.http import BadRequest, HTTPHoneypot, HTTPSession, parse_request
from firmware.services.lines import ListenerService
from firmware.services.tlsmem import MemoryTLS, TLSError, fingerprint_fields
from firmware.shared.errors import DecodeError

log = logging.getLogger(__name__)

DEFAULT_SUBJECTS = {
    "nas": (("CN", "synology"), ("O", "Synology Inc."), ("L", "Taipei"), ("C", "TW")),
    "router": (("CN", "router.asus.com"), ("O", "ASUSTeK Computer Inc."), ("C", "TW")),
    "basic": (("CN", "intranet"),),
}
SEEN_BYTES = 64
MAKE_CERT = ("python3 -m firmware.services https --make-host-key (as root; on the device "
             "coalmine-cert@https.service runs it before the honeypot starts)")
_PLAIN_HTTP = (b"HTTP/1.1 400 Bad Request\r\nServer: %s\r\nContent-Type: text/html\r\n"
               b"Connection: close\r\n\r\n<html><head><title>400 The plain HTTP request was sent "
               b"to HTTPS port</title></head><body><center><h1>400 Bad Request</h1></center>"
               b"<center>The plain HTTP request was sent to HTTPS port</center></body></html>\n")


class HTTPSHoneypot(HTTPHoneypot):
    name = "https"
    default_port = 443
    event_codes = frozenset({EventCode.HTTP_GET, EventCode.HTTP_POST_LOGIN,
                             EventCode.HTTP_UNIMPLEMENTED_METHOD})
    sniff_bytes = tlswire.RECORD_HEADER + tlswire.MAX_RECORD  # the client's whole first record

    context: ssl.SSLContext | None = None

    @staticmethod
    def subject(settings: Listener) -> tuple[tuple[str, str], ...]:
        return settings.cert_subject or DEFAULT_SUBJECTS.get(settings.skin, DEFAULT_SUBJECTS["nas"])

    @classmethod
    def make_host_key(cls, cfg: DeviceConfig, group: str | None = None) -> str:
        settings = cfg.listeners[cls.name]
        cert, done = tlscert.make_certificate(settings.certificate, cls.subject(settings), group)
        return (f"coalmine: HTTPS certificate {cert.subject.rfc4514_string()} SHA256 "
                f"{tlscert.fingerprint(cert)} ({done}) in {settings.certificate}")

    async def start(self) -> None:
        self.context = server_context(self.settings.certificate)
        await super().start()

    def session(self) -> asyncio.Protocol:
        assert self.context is not None, "start() makes the context"
        return TLSConnection(self, self.context)


def server_context(path: Path) -> ssl.SSLContext:
    """TLS 1.2 and 1.3 with the certificate and key of the one PEM file at ``path``."""
    return tlsmem.server_context(path, what="HTTPS", make=MAKE_CERT, alpn=("http/1.1",))


class TLSConnection(asyncio.Protocol):
    """One connection: TLS in memory between the guard (raw bytes) and :class:`HTTPSession`."""

    def __init__(self, service: HTTPSHoneypot, context: ssl.SSLContext) -> None:
        self.service = service
        self.tls = MemoryTLS(context)
        self.http = _HTTPSOverTLS(service, self)
        self.raw: asyncio.Transport | None = None
        self.guard: Guard | None = None
        self.hello: dict[str, str | bytes | int] | None = None  # fingerprint, once read
        self.reported = self.closing = False

    # --- the raw side (the guard calls these) -------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.raw = cast(asyncio.Transport, transport)
        self.guard = self.service.guard_of(transport)

    def data_received(self, data: bytes) -> None:
        if self.closing or (self.hello is None and not self.sniff()):
            return
        self.tls.receive(data)
        self.pump()

    def resume_writing(self) -> None:  # the client takes its replies again
        if self.tls.handshaken:
            self.http.resume_writing()

    def eof_received(self) -> bool | None:
        if self.closing:
            return None
        self.tls.receive_eof()
        self.pump()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        cut = self.guard.cut_reason if self.guard is not None else ""
        self.report(cut or ("no request after the handshake" if self.tls.handshaken
                            else "closed during the handshake"))
        if self.tls.handshaken:
            self.http.connection_lost(exc)

    # --- TLS ------------------------------------------------------------------------------------

    def sniff(self) -> bool:
        """Read the ClientHello from the guard's head; False when this is no TLS at all."""
        head = bytes(self.guard.head) if self.guard is not None else b""
        try:
            hello = tlswire.parse_client_hello(head)
        except tlswire.NotTLS:
            self.not_tls(head)
            return False
        except DecodeError as exc:
            self.hello = {"TLS_UNPARSED": exc.message}
            return True
        if hello is not None:
            self.hello = fingerprint_fields(hello)
        return True

    def pump(self) -> None:
        """Advance the handshake, hand decrypted bytes to HTTP, send what TLS has to send."""
        try:
            if not self.tls.handshaken:
                if not self.tls.handshake():
                    self.flush()
                    return
                self.http.connection_made(_Plaintext(self))
            while not self.closing:
                chunk = self.tls.read()
                if self.tls.ended:  # the client's close_notify
                    self.close()
                    break
                if not chunk:
                    break
                self.http.data_received(chunk)
        except TLSError as exc:
            self.fail(exc.message)
            return
        self.flush()

    def send(self, data: bytes) -> None:
        if self.closing:
            return
        try:
            self.tls.write(data)
        except TLSError as exc:
            self.fail(exc.message)
            return
        self.flush()

    def flush(self) -> None:
        data = self.tls.pending()
        if data and self.raw is not None and not self.raw.is_closing():
            self.raw.write(data)

    def close(self) -> None:
        """End the connection as a server does: close_notify, then close the socket."""
        if self.closing:
            return
        self.closing = True
        self.tls.shutdown()  # close_notify is written; the client's is not awaited
        self.flush()
        if self.raw is not None:
            self.raw.close()

    def fail(self, reason: str) -> None:
        self.flush()  # the alert, if OpenSSL wrote one
        self.report(reason)
        self.close()

    # --- events ---------------------------------------------------------------------------------

    def fields(self) -> dict[str, str | bytes | int]:
        if self.hello is not None:
            return self.hello
        seen = self.guard is not None and bool(self.guard.head)
        return {"TLS_UNPARSED": "ClientHello incomplete" if seen else "no ClientHello seen"}

    def report(self, reason: str, **about: str | bytes | int) -> None:
        """The one event of a connection that got to no request (3002, METHOD empty)."""
        if self.reported or self.raw is None:
            return
        self.reported = True
        data = {"HOSTNAME": "", "PATH": "", "SKIN": self.service.settings.skin, "USERAGENT": "",
                "METHOD": "", **about, "TLS_ERROR": reason, **self.fields()}
        self.service.emit(EventCode.HTTP_UNIMPLEMENTED_METHOD, self.raw, data)

    def not_tls(self, head: bytes) -> None:
        """Bytes that are no TLS: recorded as seen; plain HTTP gets nginx's 400 for it."""
        self.hello = {}
        about: dict[str, str | bytes | int] = {"SEEN_HEX": head[:SEEN_BYTES].hex()}
        try:
            request = parse_request(bytearray(head))
        except BadRequest:
            request = None
        if request is not None:
            about.update(HOSTNAME=request.headers.get("host", ""), PATH=request.path,
                         USERAGENT=request.headers.get("user-agent", ""), METHOD=request.method)
            if self.raw is not None:
                self.raw.write(_PLAIN_HTTP % self.service.greeting.encode("latin-1", "replace"))
        self.report("not TLS", **about)
        self.closing = True
        if self.raw is not None:
            self.raw.close()


class _HTTPSOverTLS(HTTPSession):
    """The HTTP honeypot's session; its events also carry the connection's fingerprint."""

    def __init__(self, service: ListenerService, conn: TLSConnection) -> None:
        super().__init__(service)
        self.conn = conn

    def emit(self, code: EventCode, data: Any) -> None:
        self.conn.reported = True
        super().emit(code, {**data, **self.conn.fields()})


class _Plaintext(asyncio.Transport):
    """What the HTTP session writes to: the TLS side of a :class:`TLSConnection`."""

    def __init__(self, conn: TLSConnection) -> None:
        super().__init__()
        self.conn = conn

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.conn.send(bytes(data))

    def is_closing(self) -> bool:
        return self.conn.closing

    def get_write_buffer_size(self) -> int:
        return self.conn.raw.get_write_buffer_size() if self.conn.raw is not None else 0

    def close(self) -> None:
        self.conn.close()

    def abort(self) -> None:
        self.conn.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """The socket's addresses (events come from the real socket, never the client's word)."""
        if self.conn.raw is None:
            return default
        return self.conn.raw.get_extra_info(name, default)
