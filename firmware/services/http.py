"""The HTTP honeypot: a device's login page (a NAS, a router, an intranet) that records every
request and every credential typed into it, and lets nobody in.

Intruders who find a web login try default and stolen passwords on it first.  Each skin is a
plausible login page: ``nas`` and ``router`` are HTML forms posted back to the same path,
``basic`` is an intranet page behind HTTP Basic authentication (``401`` with a realm).  Events
keep OpenCanary's codes and logdata keys: 3000 for a page request (HOSTNAME, PATH, SKIN,
USERAGENT), 3001 for a login (the same plus USERNAME and PASSWORD, from the form or from an
``Authorization: Basic`` header), 3002 for any other method.  The ``Server`` header is the
configured banner, the skin ``[services.http] skin``.

HTTP/1.1 with keep-alive, parsed here with hard bounds before anything is kept: a request head
of at most ``MAX_HEAD`` bytes and ``MAX_HEADERS`` lines, a body of at most ``MAX_BODY`` bytes
(a larger ``Content-Length`` gets ``413``), ``MAX_REQUESTS`` requests per connection; anything
else malformed gets ``400`` and the connection ends.  The guard's byte and time limits apply
underneath.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import html
import json
import urllib.parse
from dataclasses import dataclass

from firmware.protocol.catalogue import EventCode
from firmware.services.lines import ListenerService, Session

MAX_HEAD = 8192
MAX_HEADERS = 64
MAX_BODY = 16384
MAX_REQUESTS = 32

_FORM = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif;background:#eef1f5}}form{{width:320px;margin:12% auto;
background:#fff;padding:24px;border-radius:6px}}input{{width:100%;margin:6px 0;padding:8px}}
</style></head><body><form method="post" action="{path}"><h2>{title}</h2>{error}
<input name="username" placeholder="Username" autocomplete="username">
<input name="password" type="password" placeholder="Password" autocomplete="current-password">
<input type="submit" value="Sign In"></form></body></html>
"""
_TITLES = {"nas": "DiskStation - Sign In", "router": "Router Login"}
_UNAUTHORIZED = "<!DOCTYPE html><html><head><title>401 Unauthorized</title></head><body>" \
                "<h1>Unauthorized</h1><p>This server could not verify that you are " \
                "authorized to access the document requested.</p></body></html>\n"


class HTTPHoneypot(ListenerService):
    name = "http"
    default_port = 80
    event_codes = frozenset({EventCode.HTTP_GET, EventCode.HTTP_POST_LOGIN,
                             EventCode.HTTP_UNIMPLEMENTED_METHOD})
    banner = "nginx"

    def session(self) -> asyncio.Protocol:
        return HTTPSession(self)


class BadRequest(Exception):
    """Not HTTP we answer: the status to send, then the connection ends."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names; a repeated header keeps its first value
    body: bytes


def parse_request(buf: bytearray) -> Request | None:
    """One request taken off the front of ``buf``, or None while it is incomplete."""
    end = buf.find(b"\r\n\r\n", 0, MAX_HEAD + 4)
    if end < 0:
        if len(buf) > MAX_HEAD:
            raise BadRequest("431 Request Header Fields Too Large")
        return None
    lines = bytes(buf[:end]).decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        raise BadRequest("400 Bad Request")
    if len(lines) > MAX_HEADERS:
        raise BadRequest("431 Request Header Fields Too Large")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip():
            raise BadRequest("400 Bad Request")
        headers.setdefault(name.lower(), value.strip())
    if "transfer-encoding" in headers:
        raise BadRequest("411 Length Required")  # no chunked bodies: a login form has none
    length_text = headers.get("content-length", "0")
    if not (length_text.isascii() and length_text.isdigit()) or len(length_text) > 9:
        raise BadRequest("400 Bad Request")  # isdigit() alone takes superscript digits
    length = int(length_text)
    if length > MAX_BODY:
        raise BadRequest("413 Content Too Large")
    start = end + 4
    if len(buf) < start + length:
        return None
    body = bytes(buf[start:start + length])
    del buf[:start + length]
    return Request(parts[0].upper(), parts[1], headers, body)


def basic_credentials(header: str) -> tuple[str, str] | None:
    """User and password of an ``Authorization: Basic`` header (decoded with replacement)."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(token.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    user, _, password = raw.decode("utf-8", "replace").partition(":")
    return user, password


USER_FIELDS = ("username", "user", "login", "email", "userid", "account", "name", "uid")
PASSWORD_FIELDS = ("password", "pass", "passwd", "pwd", "passw", "secret", "pw")


def posted_fields(body: bytes) -> dict[str, str]:
    """A posted body's fields: a urlencoded form or a JSON object (names lower-cased, the
    first value of each; at most 32 fields)."""
    text = body.decode("utf-8", "replace")
    if text.lstrip().startswith("{"):
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError):  # RecursionError: nesting deeper than the stack
            obj = None
        if isinstance(obj, dict):
            return {str(k).lower(): v if isinstance(v, str) else json.dumps(v)
                    for k, v in list(obj.items())[:32]}
    return form_fields(text)


def form_fields(text: str) -> dict[str, str]:
    """``a=1&b=2`` as fields (names lower-cased, the first value of each); none at all when
    there are more than 32 (parse_qs refuses them with a ValueError)."""
    try:
        fields = urllib.parse.parse_qs(text, keep_blank_values=True, max_num_fields=32)
    except ValueError:
        return {}
    return {k.lower(): v[0] for k, v in fields.items()}


def form_credentials(fields: dict[str, str]) -> tuple[str, str] | None:
    """User and password among posted or query fields (the usual field names)."""
    user = next((fields[k] for k in USER_FIELDS if k in fields), None)
    password = next((fields[k] for k in PASSWORD_FIELDS if k in fields), None)
    if user is None and password is None:
        return None
    return user or "", password or ""


def query_fields(path: str) -> dict[str, str]:
    try:
        query = urllib.parse.urlsplit(path).query
    except ValueError:
        return {}
    return form_fields(query)


def userinfo(path: str) -> tuple[str, str] | None:
    """The ``user:password@`` of an absolute-form target (``GET http://u:p@host/``)."""
    try:
        split = urllib.parse.urlsplit(path)
    except ValueError:
        return None
    if not split.scheme or split.username is None:
        return None
    return (urllib.parse.unquote(split.username),
            urllib.parse.unquote(split.password or ""))


def shown_path(path: str) -> str:
    """PATH as events show it: no password in it (the query's password fields and an
    absolute URL's user information masked; the credentials go to USERNAME and PASSWORD)."""
    try:
        split = urllib.parse.urlsplit(path)
    except ValueError:
        return path
    netloc = split.netloc
    if "@" in netloc:
        netloc = "********@" + netloc.rpartition("@")[2]
    query = "&".join(
        f"{name}=********" if name.lower() in PASSWORD_FIELDS else part
        for part in split.query.split("&") if part
        for name in [urllib.parse.unquote_plus(part.partition("=")[0])])
    if netloc == split.netloc and query == split.query:
        return path
    return urllib.parse.urlunsplit((split.scheme, netloc, split.path, query, split.fragment))


class HTTPSession(Session):
    """One HTTP/1.1 connection (the HTTPS honeypot runs the same over TLS)."""

    def __init__(self, service: ListenerService) -> None:
        super().__init__(service)
        self.requests = 0

    def greet(self) -> None:  # the client speaks first
        pass

    def line(self, line: bytes) -> None:  # requests are parsed whole, not as lines
        raise NotImplementedError

    def data_received(self, data: bytes) -> None:
        self.pending += data
        while self.ready():
            try:
                request = parse_request(self.pending)
            except BadRequest as exc:
                self.refused(exc.status)
                self.respond(exc.status, b"", close=True)
                return
            if request is None:
                return
            self.requests += 1
            self.handle(request, last=self.requests >= MAX_REQUESTS
                        or request.headers.get("connection", "").lower() == "close")

    def refused(self, status: str) -> None:
        """A request not answered (malformed, too large): recorded with what it began with."""
        first = bytes(self.pending[:MAX_HEAD]).split(b"\r\n", 1)[0].split(b" ")
        self.emit(EventCode.HTTP_UNIMPLEMENTED_METHOD, {
            "METHOD": first[0][:32], "PATH": first[1] if len(first) > 1 else b"",
            "SKIN": self.service.settings.skin, "REASON": status})

    def handle(self, request: Request, *, last: bool) -> None:
        skin = self.service.settings.skin
        about: dict[str, str | bytes | int] = {
            "HOSTNAME": request.headers.get("host", ""), "PATH": shown_path(request.path),
            "SKIN": skin, "USERAGENT": request.headers.get("user-agent", "")}
        if request.method not in ("GET", "HEAD", "POST"):
            self.emit(EventCode.HTTP_UNIMPLEMENTED_METHOD, {**about, "METHOD": request.method})
            self.respond("405 Not Allowed", b"", close=last)
            return
        credentials = None
        if "authorization" in request.headers:
            credentials = basic_credentials(request.headers["authorization"])
        posted = posted_fields(request.body) if request.method == "POST" else {}
        credentials = (credentials or form_credentials(posted)
                       or form_credentials(query_fields(request.path)) or userinfo(request.path))
        if credentials is not None:
            self.emit(EventCode.HTTP_POST_LOGIN, {**about, "USERNAME": credentials[0],
                                                  "PASSWORD": credentials[1]})
        elif request.method == "POST":  # a post with no field we know: what it named
            self.emit(EventCode.HTTP_POST_LOGIN, {**about, "USERNAME": "", "PASSWORD": "",
                                                  "FIELDS": ",".join(sorted(posted))[:256]})
        else:
            self.emit(EventCode.HTTP_GET, about)
        if skin == "basic":
            self.respond("401 Unauthorized", _UNAUTHORIZED.encode(), close=last,
                         head=request.method == "HEAD",
                         extra=b'WWW-Authenticate: Basic realm="Intranet"\r\n')
            return
        error = "<p>The account or password is incorrect.</p>" if credentials else ""
        page = _FORM.format(title=_TITLES.get(skin, "Sign In"), error=error,
                            path=html.escape(urllib.parse.urlsplit(request.path).path or "/"))
        self.respond("200 OK", page.encode(), close=last, head=request.method == "HEAD")

    def respond(self, status: str, body: bytes, *, close: bool, head: bool = False,
                extra: bytes = b"") -> None:
        headers = (f"HTTP/1.1 {status}\r\nServer: {self.service.greeting}\r\n"
                   f"Content-Type: text/html; charset=utf-8\r\nContent-Length: {len(body)}\r\n"
                   f"Connection: {'close' if close else 'keep-alive'}\r\n").encode()
        self.send(headers + extra + b"\r\n" + (b"" if head else body))
        if close:
            self.close()
