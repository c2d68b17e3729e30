"""HTTP/1.1 message syntax for the embedded data plane, on bytes and without I/O.

- `parse_request` reads a request head once and produces everything the proxy needs from
  it: the method, the host and target to route by, how its body is framed, whether the
  client wants the connection closed after it, and the head to send to the instance
  (hop-by-hop headers removed, X-Forwarded-* and Via added).
- `parse_response` does the same for an instance's response head.
- An upgrade (`Upgrade: websocket` in a bodiless HTTP/1.1 request that lists `upgrade` in
  `Connection`) is the one hop-by-hop header passed on: the request keeps it, and a 101
  answer's `Upgrade` goes back to the client; the connection then carries that protocol.
- A `Body` finds where a message body ends as its bytes arrive, so bodies can be passed
  on piece by piece: by `Content-Length`, chunk by chunk (through the last chunk and the
  trailers), or until the connection closes.

Heads are handled as bytes, with few steps in Python: one regular expression finds the
header lines the proxy reads or removes, another refuses malformed lines, and every
other line is passed on as it came, unread.

A request head is held to RFC 9110/9112 before anything in it is read, in one pass of one
regular expression over the whole head (`_REQUEST_HEAD`): the method and every field name
are tokens, the target is visible ASCII, the version is HTTP/1.1 or HTTP/1.0, lines end
with CRLF, and a field value holds visible characters, obs-text, spaces and tabs only. What
that refuses (a bare LF or CR, NUL or another control character, whitespace before a colon,
obs-fold) is what lets a lenient instance read a different request from the one the proxy
routed and framed: request smuggling. Passing lines on unread is safe only because of it.
Only a refused head pays for finding out which rule it broke (`_what_is_wrong`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "BARE_LF",
    "BARE_LF_END",
    "HEAD_END",
    "MAX_FIELDS",
    "MAX_HEAD",
    "NO_BODY",
    "BadMessage",
    "Body",
    "Chunked",
    "Length",
    "Request",
    "Response",
    "TooLarge",
    "UntilClose",
    "parse_request",
    "parse_response",
    "reply",
]

HEAD_END = b"\r\n\r\n"
# The largest head, and the most header lines in one, either data plane takes: HAProxy's
# (its default 16 KiB buffer, less the 1 KiB it keeps for rewriting and its own
# bookkeeping, takes a little over 14 KiB whatever the number of lines; 101 lines at most).
MAX_HEAD = 14 * 1024
MAX_FIELDS = 101
# Where a head whose lines end with a bare LF ends (h11 and HAProxy accept one; sqlifier
# refuses it, as RFC 9112 2.2 allows, rather than rewrite a head it passes on unread).
BARE_LF_END = re.compile(rb"\n\r?\n")
BARE_LF = "bare LF in the request head: lines of a request head end with CRLF\n"

_HOP_BY_HOP = (
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "proxy-authorization",
    "proxy-authenticate",
)
_FORWARDING = ("x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "via")


def _fields(*names: str) -> re.Pattern[bytes]:
    """Finds the header lines with one of `names`: (name, value) of each, in one pass."""
    either = b"|".join(re.escape(name.encode()) for name in names)
    return re.compile(rb"\r\n(" + either + rb"):[ \t]*([^\r\n]*)", re.IGNORECASE)


def _lines(*names: str) -> re.Pattern[bytes]:
    """Finds the header lines with one of `names`, to remove them."""
    either = b"|".join(re.escape(name.encode()) for name in names)
    return re.compile(rb"\r\n(?:" + either + rb"):[^\r\n]*", re.IGNORECASE)


# The headers the proxy reads; all others pass as they came, unread.
_REQUEST_FIELDS = _fields("host", "content-length", "transfer-encoding", *_HOP_BY_HOP, *_FORWARDING)
_RESPONSE_FIELDS = _fields("content-length", "transfer-encoding", "via", *_HOP_BY_HOP)
# What it removes: hop-by-hop headers, and in requests those it writes itself.
_REQUEST_DROPS = _lines(*_HOP_BY_HOP, *_FORWARDING)
_RESPONSE_DROPS = _lines(*_HOP_BY_HOP)
_CONTENT_LENGTH = _lines("content-length")
_TRANSFER_ENCODING = _lines("transfer-encoding")
# RFC 9110 5.6.2: tchar; a method and a field name are made of them.
_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_TCHARS = frozenset(b"!#$%&'*+-.^_`|~0123456789" + bytes(range(65, 91)) + bytes(range(97, 123)))
# RFC 9110 5.5: field-value = VCHAR, obs-text, SP and HTAB; no other control character.
_VALUE_BYTES = frozenset(b"\t" + bytes(range(0x20, 0x7F)) + bytes(range(0x80, 0x100)))
_REQUEST_HEAD = re.compile(
    _TOKEN + rb" [\x21-\x7e]+ HTTP/1\.[01]" + rb"(?:\r\n" + _TOKEN + rb":[\t\x20-\x7e\x80-\xff]*)*"
)
# In a response head a header line is a name (no blanks) and a colon.
_BAD_LINE = re.compile(rb"\r\n(?![^:\s]+:)")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] [1-9][0-9][0-9](?: |$)")
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")
_HEX = b"0123456789abcdefABCDEF"
_KEEP = b"Connection: keep-alive"
_LINE_MAX = 8 * 1024  # a chunk-size line or a trailer line


class BadMessage(Exception):
    """A message the proxy will not pass on; the text is the reply's body."""


class TooLarge(BadMessage):
    """A request head with more header lines than MAX_FIELDS (431, not 400)."""


@dataclass(slots=True)
class Request:
    method: bytes
    target: str
    host: str  # as the client sent it (the route table drops the port)
    http10: bool
    length: int  # the body's Content-Length; 0 without one
    chunked: bool
    close: bool  # the client wants the connection closed after this exchange
    head: bytes  # the head to send to the instance, its blank line included
    upgrade: bytes = b""  # the protocol asked for (`Upgrade: websocket`), passed on

    def body(self) -> Body:
        """The body that follows this head."""
        if self.chunked:
            return Chunked()
        return Length(self.length) if self.length else NO_BODY


def parse_request(head: bytes, client: bytes, via: bytes, proto: bytes = b"http") -> Request:
    """Read a request head (without its blank line) from `client` (its address), which
    came over `proto` (http, or https on a TLS listener)."""
    if _REQUEST_HEAD.fullmatch(head) is None:
        raise BadMessage(_what_is_wrong(head))
    if head.count(b"\n") > MAX_FIELDS:
        raise TooLarge(f"more than {MAX_FIELDS} header fields\n")
    end = head.find(b"\r\n")
    if end < 0:
        end = len(head)
    request_line, headers = head[:end], head[end:]
    method, target, version = request_line.split(b" ")
    host = length = codings = connection = forwarded_for = upgrade = b""
    drop = has_host = False
    for name, value in _REQUEST_FIELDS.findall(headers):
        name = name.lower()
        if name == b"host":
            if has_host:  # RFC 9112 3.2: which one the instance reads is anyone's guess
                raise BadMessage("more than one Host header: a request names one host\n")
            host, has_host = value.strip(), True
        elif name == b"content-length":
            if length and value.strip() != length:
                raise BadMessage("bad content-length\n")
            length = value.strip()
        elif name == b"transfer-encoding":
            codings = _join(codings, value)
        else:  # hop-by-hop, or one the proxy writes itself: not passed on
            drop = True
            if name == b"connection":
                connection = _join(connection, value)
            elif name == b"upgrade":
                upgrade = _join(upgrade, value.strip(), b", ")
            elif name == b"x-forwarded-for":
                forwarded_for = _join(forwarded_for, value.strip(), b", ")
    size, framed_twice = _framing(codings, length)
    if framed_twice:
        headers = _CONTENT_LENGTH.sub(b"", headers)
    if drop:
        headers = _REQUEST_DROPS.sub(b"", headers)
    if version != b"HTTP/1.1":
        request_line = method + b" " + target + b" HTTP/1.1"
    http10 = version == b"HTTP/1.0"
    close = http10
    if connection:
        tokens = _tokens(connection)
        close = b"close" in tokens or (http10 and b"keep-alive" not in tokens)
    close = close or framed_twice
    # An upgrade (RFC 9110 7.8) is passed on for an HTTP/1.1 request without a body that
    # lists it in Connection; otherwise its Upgrade header goes the way of the others.
    if not upgrade or http10 or size or codings or b"upgrade" not in _tokens(connection):
        upgrade = b""
    connection_line = b"Upgrade: %s\r\nConnection: upgrade" % upgrade if upgrade else _KEEP
    forwarded = (
        b"%s%s\r\nX-Forwarded-For: %s\r\nX-Forwarded-Proto: %s\r\nX-Forwarded-Host: %s\r\n"
        b"%s\r\n%s\r\n\r\n"
        % (
            request_line,
            headers,
            _join(forwarded_for, client, b", "),
            proto,
            host,
            via,
            connection_line,
        )
    )
    return Request(
        method,
        target.decode("latin-1"),
        host.decode("latin-1"),
        http10,
        size,
        bool(codings),
        close,
        forwarded,
        upgrade,
    )


def _framing(codings: bytes, length: bytes) -> tuple[int, bool]:
    """The body's Content-Length (0 when chunked or none), and whether the request is
    framed both ways. RFC 9112 6.1 and 6.3: Transfer-Encoding overrides Content-Length,
    which is removed before forwarding, and the connection closes after the answer (as
    HAProxy does): nothing the client sent after this body is read."""
    if codings:  # chunked must be the last coding, or the body's end cannot be found
        if _tokens(codings)[-1] != b"chunked":
            raise BadMessage("bad transfer-encoding\n")
        return 0, bool(length)
    if length:
        if not length.isdigit():
            raise BadMessage("bad content-length\n")
        return int(length), False
    return 0, False


def _what_is_wrong(head: bytes) -> str:
    """Why `_REQUEST_HEAD` refused `head`: the first rule it breaks, and what is valid."""
    lines = head.split(b"\r\n")
    problem = _bad_request_line(lines[0])
    number = 1
    while problem is None and number < len(lines):
        problem = _bad_field_line(lines[number], number + 1)
        number += 1
    return (problem or "bad request head") + "\n"


def _bad_request_line(line: bytes) -> str | None:
    if b"\n" in line or b"\r" in line:
        return "bare LF or CR in the request line: lines of a request head end with CRLF"
    parts = line.split(b" ")
    if len(parts) != 3 or parts[2] not in _VERSIONS:
        return (
            f"bad request line {_show(line)}: expected METHOD TARGET HTTP/1.1 (or HTTP/1.0),"
            " one space apart"
        )
    if not parts[0] or not _TCHARS.issuperset(parts[0]):
        return (
            f"bad method {_show(parts[0])}: a method is a token"
            " (letters, digits and !#$%&'*+-.^_`|~)"
        )
    if not parts[1] or not all(0x21 <= byte <= 0x7E for byte in parts[1]):
        return f"bad request target {_show(parts[1])}: a target is visible ASCII characters"
    return None


def _bad_field_line(line: bytes, number: int) -> str | None:
    where = f"line {number} of the head"
    if b"\n" in line or b"\r" in line:
        return f"bare LF or CR in {where}: lines of a request head end with CRLF"
    if line[:1] in (b" ", b"\t"):
        return f"{where} starts with a space or tab (obs-fold): a field value is sent on one line"
    name, colon, value = line.partition(b":")
    if not colon:
        return f"{where} {_show(line)} has no colon: expected NAME: VALUE"
    if name[-1:] in (b" ", b"\t"):
        return (
            f"whitespace between the field name {_show(name)} and its colon in {where}:"
            " expected NAME: VALUE"
        )
    if not name or not _TCHARS.issuperset(name):
        return (
            f"bad field name {_show(name)} in {where}: a field name is a token"
            " (letters, digits and !#$%&'*+-.^_`|~)"
        )
    for byte in value:
        if byte not in _VALUE_BYTES:
            return (
                f"control character 0x{byte:02x} in the value of {_show(name)}: a field"
                " value holds visible characters, spaces and tabs only"
            )
    return None


def _show(text: bytes) -> str:
    """`text` for an error message: quoted, control characters escaped, cut short."""
    shown = repr(text[:40])[1:]
    return shown[:-1] + "...'" if len(text) > 40 else shown


@dataclass(slots=True)
class Response:
    status: int
    head: bytes  # the status line and the headers to pass on, Via included
    length: int | None  # Content-Length, when the body is framed by it
    chunked: bool
    close: bool  # the instance closes the connection after this response
    interim: bool  # a 1xx other than 101: the final response is still to come
    upgrade: bytes = b""  # a 101's protocol: the connection carries it from now on
    # The body's length when Content-Length alone frames it in a final answer (not 1xx,
    # 204 or 304); -1 otherwise. An answer to HEAD has no body whatever this says.
    sized: int = -1
    # encode(close=False, decoded=False, extra) as last made: (extra, the head). An
    # instance answers alike again and again, and its parsed head is kept (upstreams.py).
    kept: tuple[bytes, bytes] | None = None

    def body(self, head_request: bool, decode: bool) -> Body:
        """The body that follows this head (decode: pass on a chunked body's data only)."""
        if head_request or self.interim or self.status in (204, 304):
            return NO_BODY
        if self.chunked:
            return Chunked(decode)
        if self.length is not None:
            return Length(self.length)
        return UntilClose()

    def encode(self, close: bool, decoded: bool, extra: bytes = b"") -> bytes:
        """The head for the client (decoded: the chunked body goes out decoded; extra:
        header lines of the router's own, each after a CRLF)."""
        if self.upgrade:
            return self.head + b"\r\nUpgrade: %s\r\nConnection: upgrade\r\n\r\n" % self.upgrade
        head = _TRANSFER_ENCODING.sub(b"", self.head) if decoded else self.head
        if close:
            return head + extra + b"\r\nConnection: close\r\n\r\n"
        if not decoded:
            kept = self.kept
            if kept is not None and kept[0] == extra:
                return kept[1]
            encoded = head + extra + b"\r\nConnection: keep-alive\r\n\r\n"
            self.kept = (extra, encoded)
            return encoded
        return head + extra + b"\r\nConnection: keep-alive\r\n\r\n"


def parse_response(head: bytes, via: bytes) -> Response:
    """Read an instance's response head (without its blank line)."""
    end = head.find(b"\r\n")
    if end < 0:
        end = len(head)
    status_line, headers = head[:end], head[end:]
    if not _STATUS_LINE.match(status_line) or _BAD_LINE.search(headers):
        raise BadMessage("bad response head")
    status = int(status_line[9:12])
    length = codings = connection = upgrade = b""
    has_via = drop = False
    for name, value in _RESPONSE_FIELDS.findall(headers):
        name = name.lower()
        if name == b"content-length":
            if length and value.strip() != length:
                raise BadMessage("bad content-length")
            length = value.strip()
        elif name == b"transfer-encoding":
            codings = _join(codings, value)
        elif name == b"via":
            has_via = True
        else:
            drop = True
            if name == b"connection":
                connection = _join(connection, value)
            elif name == b"upgrade":
                upgrade = _join(upgrade, value.strip(), b", ")
    if status == 101 and not upgrade:
        raise BadMessage("a 101 answer names no protocol")
    if drop:
        headers = _RESPONSE_DROPS.sub(b"", headers)
    # A transfer coding other than a final chunked one means the body ends when the
    # connection does (RFC 9112 6.3); Content-Length counts only without any coding.
    chunked = bool(codings) and _tokens(codings)[-1] == b"chunked"
    size = None
    if codings and length:
        headers = _CONTENT_LENGTH.sub(b"", headers)
    elif length:
        if not length.isdigit():
            raise BadMessage("bad content-length")
        size = int(length)
    if not has_via:
        headers += b"\r\n" + via
    http10 = status_line[7] == ord("0")
    close = http10  # HTTP/1.0 closes unless it says otherwise
    if connection:
        tokens = _tokens(connection)
        close = b"close" in tokens or (http10 and b"keep-alive" not in tokens)
    if http10:  # the proxy speaks HTTP/1.1 to its client, whatever the instance speaks
        status_line = b"HTTP/1.1" + status_line[8:]
    if status != 101:
        upgrade = b""
    interim = status < 200 and status != 101
    sized = -1 if size is None or interim or status in (101, 204, 304) else size
    return Response(status, status_line + headers, size, chunked, close, interim, upgrade, sized)


def _join(values: bytes, value: bytes, comma: bytes = b",") -> bytes:
    """Repeated headers make one list."""
    return values + comma + value if values else value


def _tokens(value: bytes) -> list[bytes]:
    return [token.strip() for token in value.lower().split(b",")]


class Body:
    """Where a message body ends, found as its bytes arrive."""

    __slots__ = ("done",)

    done: bool

    def take(self, data: bytes) -> tuple[bytes, bytes]:
        """(what of `data` to pass on as this body, what follows the body)."""
        raise NotImplementedError


class Length(Body):
    __slots__ = ("_left",)

    def __init__(self, length: int) -> None:
        self._left = length
        self.done = length == 0

    def take(self, data: bytes) -> tuple[bytes, bytes]:
        left = self._left
        if len(data) < left:
            self._left = left - len(data)
            return data, b""
        self._left = 0
        self.done = True
        return data[:left], data[left:]


NO_BODY = Length(0)  # shared: a body that is over before it starts never changes


class UntilClose(Body):
    """A response without a length: it ends when the instance closes the connection."""

    __slots__ = ()

    def __init__(self) -> None:
        self.done = False

    def take(self, data: bytes) -> tuple[bytes, bytes]:
        return data, b""


_SIZE, _DATA, _CRLF, _TRAILER = range(4)


class Chunked(Body):
    """A chunked body, passed on as it is (size lines, data, last chunk, trailers), or
    decoded to its data alone for an HTTP/1.0 client."""

    __slots__ = ("_decode", "_left", "_line", "_state")

    def __init__(self, decode: bool = False) -> None:
        self.done = False
        self._decode = decode
        self._state = _SIZE
        self._left = 0  # bytes left of a chunk's data, or of the CRLF after it
        self._line = b""  # a size or trailer line so far

    def take(self, data: bytes) -> tuple[bytes, bytes]:
        out: list[bytes] = []
        pos, end = 0, len(data)
        while pos < end and not self.done:
            if self._state in (_DATA, _CRLF):
                step = min(self._left, end - pos)
                if self._state == _DATA or not self._decode:
                    out.append(data[pos : pos + step])
                pos += step
                self._left -= step
                if not self._left:
                    self._state, self._left = (_CRLF, 2) if self._state == _DATA else (_SIZE, 0)
                continue
            newline = data.find(b"\n", pos)
            stop = end if newline < 0 else newline + 1
            if not self._decode:
                out.append(data[pos:stop])
            self._line += data[pos:stop]
            pos = stop
            if len(self._line) > _LINE_MAX:
                raise BadMessage("chunk line too long\n")
            if newline >= 0:
                line, self._line = self._line, b""
                self._end_of_line(line)
        return b"".join(out), data[pos:]

    def _end_of_line(self, line: bytes) -> None:
        if self._state == _TRAILER:
            self.done = not line.strip()  # the blank line after the trailers ends it
            return
        digits = line.split(b";", 1)[0].strip()
        if not digits or digits.strip(_HEX):
            raise BadMessage("bad chunk size\n")
        size = int(digits, 16)
        self._state, self._left = (_DATA, size) if size else (_TRAILER, 0)


_REASONS = {
    308: "Permanent Redirect",
    400: "Bad Request",
    404: "Not Found",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def reply(status: int, text: str, close: bool, extra: bytes = b"") -> bytes:
    """A short plain-text answer of the proxy's own (extra: header lines, each after a
    CRLF)."""
    body = text.encode()
    return (
        (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
            f"Content-Length: {len(body)}\r\nConnection: {'close' if close else 'keep-alive'}"
        ).encode()
        + extra
        + b"\r\n\r\n"
        + body
    )
