"""The RDP honeypot: a Windows server that asks for Network Level Authentication and refuses it.

Exposed Remote Desktop is among the most attacked services, and an RDP client says who it is
before it sees a screen.  Its first packet (the X.224 Connection Request) names a user in its
``mstshash`` cookie (OpenCanary's USERNAME) and the security protocols it can speak; with NLA
(CredSSP inside TLS, NTLM inside that) it then gives its user, domain and workstation and an
NTLMv2 response, from which a defender checks a suspected password (hashcat mode 5600).  So
this server answers as a current Windows does: HYBRID (NLA) when the client offers it, else
TLS alone, else the RDP_NEG_FAILURE HYBRID_REQUIRED_BY_SERVER (which sends a client back to
try NLA); in TLS (in memory, :mod:`firmware.services.tlsmem`, so the guard bounds the
handshake too) it plays CredSSP with NTLM (:mod:`firmware.services.ntlm`: a CHALLENGE with
the target information of a standalone Windows server named after the device), and when the
client's AUTHENTICATE has come it records it and answers STATUS_LOGON_FAILURE (a TSRequest
errorCode, for clients of CredSSP version 3 or later, as Windows does), then closes.  A client
that chose TLS alone gets as far as its MCS Connect Initial, whose core data names its
computer, build and keyboard; then the connection ends.

One event 14001 per connection that sent anything, when the identity is complete or the
connection ends, whichever comes first (a client that hangs up early is recorded with what it
said): USERNAME (the cookie), PROTOCOLS, how far it got (STAGE) and how it ended (END), the
client's TLS fingerprint (JA3, JA4), and the NLA identity or the client data when they came.
Bytes that are not RDP raise :class:`RDPDecodeError` (or the NTLM or TLS error) and end the
connection after what was seen is recorded (SEEN_HEX for bytes that are no RDP at all).  The
certificate is Windows' own kind (:data:`firmware.services.tlscert.WINDOWS_RDP`, the host name
as its subject), made by ``--make-host-key`` (a root oneshot on the device); the service only
reads it and never loads the cryptography library.
"""

from __future__ import annotations

import asyncio
import secrets
import ssl

from firmware.config import DeviceConfig
from firmware.protocol.catalogue import EventCode
from firmware.services import tlsmem, tlswire
from firmware.services.guard import Guard
from firmware.services.lines import ListenerService, Session
from firmware.services.ntlm import (
    NTLMSSP,
    Authenticate,
    challenge,
    client_version,
    filetime,
    negotiate_flags,
    ntlm_type,
    ntlmssp_token,
    spnego_challenge,
)
from firmware.services.rdpwire import (
    CREDSSP_VERSION,
    HYBRID_REQUIRED_BY_SERVER,
    PROTOCOL_HYBRID,
    PROTOCOL_HYBRID_EX,
    PROTOCOL_SSL,
    STATUS_LOGON_FAILURE,
    ConnectionRequest,
    RDPDecodeError,
    TSRequest,
    client_core,
    connection_confirm,
    negotiation_failure,
    take_der,
    take_tpkt,
    ts_request,
)
from firmware.services.tlsmem import MemoryTLS, TLSError
from firmware.shared.errors import DecodeError

SEEN_BYTES = 64
MAKE_CERT = ("python3 -m firmware.services rdp --make-host-key (as root; on the device "
             "coalmine-cert@rdp.service runs it before the honeypot starts)")
SELECTED_NAMES = {PROTOCOL_SSL: "ssl", PROTOCOL_HYBRID: "hybrid", PROTOCOL_HYBRID_EX: "hybrid_ex"}


def host_names(node_name: str) -> tuple[str, str]:
    """The NetBIOS and DNS names a standalone Windows server named like the device has."""
    label = node_name.split(".", 1)[0]
    dns = "".join(c for c in label if c.isascii() and (c.isalnum() or c == "-"))[:63]
    dns = dns or "WIN-SERVER"
    return dns.upper()[:15], dns


class RDPHoneypot(ListenerService):
    name = "rdp"
    default_port = 3389
    event_codes = frozenset({EventCode.RDP_CONNECTION})
    banner = ""  # the client speaks first; nothing to configure

    context: ssl.SSLContext | None = None
    names: tuple[str, str] = ("", "")  # NetBIOS and DNS name, from the device's host name

    @classmethod
    def subject(cls, cfg: DeviceConfig) -> tuple[tuple[str, str], ...]:
        """``cert_subject``, else what Windows puts there: its host name."""
        return cfg.listeners[cls.name].cert_subject or (("CN", host_names(cfg.node_name)[1]),)

    @classmethod
    def make_host_key(cls, cfg: DeviceConfig, group: str | None = None) -> str:
        from firmware.services import tlscert  # cryptography: only the oneshot needs it

        settings = cfg.listeners[cls.name]
        cert, done = tlscert.make_certificate(settings.certificate, cls.subject(cfg), group,
                                              profile=tlscert.WINDOWS_RDP)
        return (f"coalmine: RDP certificate {cert.subject.rfc4514_string()} SHA256 "
                f"{tlscert.fingerprint(cert)} ({done}) in {settings.certificate}")

    async def start(self) -> None:
        self.context = tlsmem.server_context(self.settings.certificate, what="RDP",
                                             make=MAKE_CERT)
        self.names = host_names(self.cfg.node_name)
        await super().start()

    def session(self) -> asyncio.Protocol:
        assert self.context is not None, "start() makes the context"
        return RDPConnection(self, self.context)


class RDPConnection(Session):
    """One connection: X.224 negotiation, then TLS, then CredSSP (or the MCS client data)."""

    def __init__(self, service: RDPHoneypot, context: ssl.SSLContext) -> None:
        super().__init__(service)
        self.rdp = service
        self.context = context
        self.guard: Guard | None = None
        self.first = bytearray()  # the connection's first bytes, shown when they are no RDP
        self.tls: MemoryTLS | None = None
        self.hello: bytearray | None = bytearray()  # the first TLS record, until it is read
        self.plain = bytearray()  # decrypted bytes not yet a whole message
        self.selected = 0
        self.stage = "x224"
        self.fields: dict[str, str | bytes | int] = {"USERNAME": "", "PROTOCOLS": ""}
        self.client_credssp = 0  # the client's CredSSP version, once it said it
        self.server_challenge = b""
        self.raw_ntlm = True  # the client sends NTLMSSP as it is, not wrapped in SPNEGO
        self.reported = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.guard = self.service.guard_of(transport)

    def greet(self) -> None:
        """Nothing: an RDP client speaks first."""

    def line(self, line: bytes) -> None:  # packets are parsed whole, not as lines
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        if self.reported or not data:
            return
        self.first += data[:SEEN_BYTES - len(self.first)]
        try:
            if self.tls is None:
                self.pending += data
                self.negotiate()
            else:
                self.secure(data)
        except (DecodeError, TLSError) as exc:
            if self.stage == "x224":
                self.fields["SEEN_HEX"] = self.first.hex()
            self.fail(exc.message)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.first and not self.reported:
            cut = self.guard.cut_reason if self.guard is not None else ""
            self.report(cut or "closed by the client")
        self.transport = None

    # --- the steps --------------------------------------------------------------------------

    def negotiate(self) -> None:
        """The X.224 Connection Request, answered with the protocol chosen or a refusal."""
        tpdu = take_tpkt(self.pending)
        if tpdu is None:
            return
        request = ConnectionRequest.parse(tpdu)
        self.fields.update(USERNAME=request.cookie or b"", PROTOCOLS=request.protocol_names)
        if request.routing_token is not None:
            self.fields["ROUTING_TOKEN"] = request.routing_token
        if request.flags:
            self.fields["REQUEST_FLAGS"] = request.flag_names
        if request.correlation_id:
            self.fields["CORRELATION_ID"] = request.correlation_id.hex()
        for choice in (PROTOCOL_HYBRID, PROTOCOL_HYBRID_EX, PROTOCOL_SSL):
            if request.protocols & choice:
                break
        else:  # standard RDP security only: a server that wants NLA says so
            self.send(negotiation_failure(HYBRID_REQUIRED_BY_SERVER))
            self.finish("refused: NLA required")
            return
        self.selected, self.stage = choice, "tls"
        self.fields["SELECTED"] = SELECTED_NAMES[choice]
        self.send(connection_confirm(choice))
        self.tls = MemoryTLS(self.context)
        rest = bytes(self.pending)
        self.pending.clear()
        if rest:
            self.secure(rest)

    def secure(self, data: bytes) -> None:
        """Ciphertext from the client: the handshake, then whole messages inside TLS."""
        assert self.tls is not None
        if self.hello is not None:
            self.fingerprint(data)
        self.tls.receive(data)
        if not self.tls.handshaken:
            if not self.tls.handshake():
                self.flush()
                return
            self.stage = "mcs" if self.selected == PROTOCOL_SSL else "credssp"
        while not self.reported:
            chunk = self.tls.read()
            if self.tls.ended:
                self.finish("the client ended TLS")
                return
            if not chunk:
                break
            self.plain += chunk
            self.messages()
        self.flush()

    def fingerprint(self, data: bytes) -> None:
        """JA3 and JA4 of the client's ClientHello, once its record is whole."""
        assert self.hello is not None
        head = self.hello
        head += data[:tlswire.RECORD_HEADER + tlswire.MAX_RECORD - len(head)]
        try:
            hello = tlswire.parse_client_hello(bytes(head))
        except tlswire.NotTLS:
            self.fields["SEEN_HEX"] = bytes(head[:SEEN_BYTES]).hex()
            raise RDPDecodeError("not TLS after the connection confirm") from None
        except DecodeError as exc:
            self.fields["TLS_UNPARSED"] = exc.message
            self.hello = None
            return
        if hello is not None:
            self.fields.update(tlsmem.fingerprint_fields(hello))
            self.hello = None

    def messages(self) -> None:
        while not self.reported:
            if self.selected == PROTOCOL_SSL:
                tpdu = take_tpkt(self.plain)
                if tpdu is None:
                    return
                self.client_data(tpdu)
            else:
                message = take_der(self.plain)
                if message is None:
                    return
                self.credssp(TSRequest.parse(message))

    def credssp(self, request: TSRequest) -> None:
        """NTLM inside CredSSP: NEGOTIATE gets a CHALLENGE, AUTHENTICATE is recorded, refused."""
        assert self.tls is not None
        if not self.client_credssp:
            self.client_credssp = request.version
            self.fields["CREDSSP_VERSION"] = request.version
        if not request.tokens:
            raise RDPDecodeError("a TSRequest without a negotiation token")
        token = ntlmssp_token(request.tokens[0])
        kind = ntlm_type(token)
        if kind == 1 and not self.server_challenge:
            self.raw_ntlm = request.tokens[0].startswith(NTLMSSP)
            self.version_of(token)
            self.server_challenge = secrets.token_bytes(8)
            netbios, dns = self.rdp.names
            reply = challenge(negotiate_flags(token), self.server_challenge,
                              netbios_domain=netbios, netbios_name=netbios, dns_domain=dns,
                              dns_name=dns, timestamp=filetime(self.rdp.clock()))
            self.stage = "ntlm"
            self.tls.write(ts_request(CREDSSP_VERSION,
                                      reply if self.raw_ntlm else spnego_challenge(reply)))
        elif kind == 3 and self.server_challenge:
            auth = Authenticate.parse(token)
            self.version_of(token)
            self.fields.update(USER=auth.user, DOMAIN=auth.domain, WORKSTATION=auth.workstation,
                               NTLMV2_RESPONSE=auth.hashcat(self.server_challenge))
            self.stage = "authenticate"
            self.report("logon failure")  # the identity is complete: recorded first
            if self.client_credssp >= 3:
                self.tls.write(ts_request(CREDSSP_VERSION, error_code=STATUS_LOGON_FAILURE))
            self.close()
        else:
            raise RDPDecodeError(f"NTLMSSP message {kind} out of order")

    def version_of(self, token: bytes) -> None:
        version = client_version(token)
        if version and "NTLM_VERSION" not in self.fields:
            self.fields["NTLM_VERSION"] = version

    def client_data(self, tpdu: bytes) -> None:
        """The MCS Connect Initial of a client that chose TLS alone: who it says it is."""
        core = client_core(tpdu)
        if core is not None:
            self.fields.update(CLIENT_NAME=core.name, CLIENT_BUILD=core.build,
                               KEYBOARD_LAYOUT=f"{core.keyboard_layout:08x}",
                               DESKTOP=f"{core.width}x{core.height}")
        self.finish("client data read")

    # --- the end ----------------------------------------------------------------------------

    def report(self, end: str) -> None:
        """The connection's one event."""
        if self.reported or self.transport is None:
            return
        self.reported = True
        self.emit(EventCode.RDP_CONNECTION, {**self.fields, "STAGE": self.stage, "END": end})

    def finish(self, end: str) -> None:
        self.report(end)
        self.close()

    def fail(self, reason: str) -> None:
        self.flush()  # a TLS alert, if OpenSSL wrote one
        self.finish(reason)

    def flush(self) -> None:
        if self.tls is not None:
            data = self.tls.pending()
            if data:
                self.send(data)

    def close(self) -> None:
        """close_notify when TLS is up, then the socket (what is written still goes out)."""
        if self.tls is not None:
            self.tls.shutdown()
            self.flush()
        super().close()
