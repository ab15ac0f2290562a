"""TLS for the honeypots, run in memory: what HTTPS and RDP share.

Both terminate TLS with the ssl module but must keep the guard between the socket and the
protocol (its byte and time limits bound the handshake too, and it sees every raw byte), and
RDP starts TLS only after its own plaintext negotiation.  So TLS runs on ``ssl.MemoryBIO``:
the service feeds it the ciphertext it received and writes out what :meth:`MemoryTLS.pending`
returns.  Also here: the server context (TLS 1.2 and 1.3, no renegotiation, the one PEM file
of key and certificate, with a hint that names the command making it) and the fields every
event of a connection carries about the client's ClientHello (JA3, JA4, SNI, ALPN).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Sequence
from pathlib import Path

from firmware.protocol.text import MAX_VALUE_CHARS
from firmware.services import tlswire
from firmware.shared.errors import ConfigError, InputError

READ_CHUNK = 16384


class TLSError(InputError):
    """The client's TLS failed (its handshake, a record, an alert); the message says how."""


def server_context(path: Path, *, what: str, make: str,
                   alpn: Sequence[str] = ()) -> ssl.SSLContext:
    """TLS 1.2 and 1.3 with the certificate and key of the one PEM file at ``path``.

    ``what`` names the certificate in errors ("HTTPS"), ``make`` the command that makes it."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    context.options |= ssl.OP_NO_RENEGOTIATION  # a client may not make us sign again and again
    if alpn:
        context.set_alpn_protocols(list(alpn))
    try:
        context.load_cert_chain(path)
    except FileNotFoundError:
        raise ConfigError(f"{what} certificate {path} does not exist",
                          hint=f"create it first: {make}") from None
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot read {what} certificate {path}: {exc}",
                          hint=f"the service's group must be able to read it; {make} "
                               "makes it again") from None
    return context


class MemoryTLS:
    """The server side of one TLS connection in memory: ciphertext in, plaintext out."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.incoming, self.outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.tls = context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        self.handshaken = False
        self.ended = False  # the client sent its close_notify

    def receive(self, data: bytes) -> None:
        """Ciphertext from the client."""
        self.incoming.write(data)

    def receive_eof(self) -> None:
        self.incoming.write_eof()

    def handshake(self) -> bool:
        """Go on with the handshake as far as the client's bytes allow; True once it is done."""
        if not self.handshaken:
            try:
                self.tls.do_handshake()
            except ssl.SSLWantReadError:
                return False
            except ssl.SSLError as exc:
                raise TLSError(f"handshake failed: {exc.reason or exc}") from None
            self.handshaken = True
        return True

    def read(self) -> bytes:
        """The next plaintext the client sent, b"" when there is none yet (or it has ended)."""
        try:
            return self.tls.read(READ_CHUNK)
        except ssl.SSLWantReadError:
            return b""
        except ssl.SSLZeroReturnError:
            self.ended = True
            return b""
        except ssl.SSLError as exc:
            raise TLSError(f"TLS error: {exc.reason or exc}") from None

    def write(self, data: bytes) -> None:
        """Plaintext for the client (its records then wait in :meth:`pending`)."""
        try:
            self.tls.write(data)
        except ssl.SSLError as exc:
            raise TLSError(f"TLS error: {exc.reason or exc}") from None

    def pending(self) -> bytes:
        """Ciphertext to send to the client: handshake messages, records, alerts."""
        return self.outgoing.read()

    def shutdown(self) -> None:
        """Write close_notify (the client's is not awaited)."""
        if self.handshaken:
            with contextlib.suppress(ssl.SSLError):
                self.tls.unwrap()


def fingerprint_fields(hello: tlswire.ClientHello) -> dict[str, str | bytes | int]:
    """What every event of a connection says about its ClientHello."""
    fields: dict[str, str | bytes | int] = {"JA3": hello.ja3, "JA4": hello.ja4}
    if len(hello.ja3_string) <= MAX_VALUE_CHARS:  # else it would be cut: the hash says it all
        fields["JA3_STRING"] = hello.ja3_string
    if hello.server_name is not None:
        fields["SNI"] = hello.server_name
    if hello.alpn:
        fields["ALPN"] = b",".join(hello.alpn)
    return fields
