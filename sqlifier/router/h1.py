"""HTTP/1.1 message syntax for the embedded data plane, on bytes and without I/O.

- `parse_request` reads a request head once and produces everything the proxy needs from
  it: the method, the host and target to route by, how its body is framed, whether the
  client wants the connection closed after it, and the head to send to the instance
  (hop-by-hop headers removed, X-Forwarded-* and Via added).
- `parse_response` does the same for an instance's response head.
- A `Body` finds where a message body ends as its bytes arrive, so bodies can be passed
  on piece by piece: by `Content-Length`, chunk by chunk (through the last chunk and the
  trailers), or until the connection closes.

Heads are handled as bytes, with few steps in Python: one regular expression finds the
header lines the proxy reads or removes, another refuses malformed lines, and every
other line is passed on as it came, unread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = [
    "HEAD_END",
    "NO_BODY",
    "BadMessage",
    "Body",
    "Chunked",
    "Length",
    "Request",
    "Response",
    "UntilClose",
    "parse_request",
    "parse_response",
    "reply",
]

HEAD_END = b"\r\n\r\n"

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
# A header line is a name (no blanks) and a colon; anything else is refused.
_BAD_LINE = re.compile(rb"\r\n(?![^:\s]+:)")
_STATUS_LINE = re.compile(rb"HTTP/1\.[01] [1-9][0-9][0-9](?: |$)")
_VERSIONS = (b"HTTP/1.1", b"HTTP/1.0")
_HEX = b"0123456789abcdefABCDEF"
_LINE_MAX = 8 * 1024  # a chunk-size line or a trailer line


class BadMessage(Exception):
    """A message the proxy will not pass on; the text is the reply's body."""


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

    def body(self) -> Body:
        """The body that follows this head."""
        if self.chunked:
            return Chunked()
        return Length(self.length) if self.length else NO_BODY


def parse_request(head: bytes, client: bytes, via: bytes) -> Request:
    """Read a request head (without its blank line) from `client` (its address)."""
    end = head.find(b"\r\n")
    if end < 0:
        end = len(head)
    request_line, headers = head[:end], head[end:]
    parts = request_line.split(b" ")
    if len(parts) != 3 or not parts[0] or not parts[1] or parts[2] not in _VERSIONS:
        raise BadMessage("bad request line\n")
    if _BAD_LINE.search(headers):
        raise BadMessage("bad header\n")
    method, target, version = parts
    host = length = codings = connection = forwarded_for = b""
    drop = False
    for name, value in _REQUEST_FIELDS.findall(headers):
        name = name.lower()
        if name == b"host":
            host = value.strip()
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
            elif name == b"x-forwarded-for":
                forwarded_for = _join(forwarded_for, value.strip(), b", ")
    size = 0
    if codings:  # chunked must be the last coding, or the body's end cannot be found
        if length or _tokens(codings)[-1] != b"chunked":
            raise BadMessage("bad transfer-encoding\n")
    elif length:
        if not length.isdigit():
            raise BadMessage("bad content-length\n")
        size = int(length)
    if drop:
        headers = _REQUEST_DROPS.sub(b"", headers)
    if version != b"HTTP/1.1":
        request_line = method + b" " + target + b" HTTP/1.1"
    http10 = version == b"HTTP/1.0"
    close = http10
    if connection:
        tokens = _tokens(connection)
        close = b"close" in tokens or (http10 and b"keep-alive" not in tokens)
    forwarded = (
        b"%s%s\r\nX-Forwarded-For: %s\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: %s\r\n"
        b"%s\r\nConnection: keep-alive\r\n\r\n"
        % (request_line, headers, _join(forwarded_for, client, b", "), host, via)
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
    )


@dataclass(slots=True)
class Response:
    status: int
    head: bytes  # the status line and the headers to pass on, Via included
    length: int | None  # Content-Length, when the body is framed by it
    chunked: bool
    close: bool  # the instance closes the connection after this response
    interim: bool  # a 1xx: the final response is still to come

    def body(self, head_request: bool, decode: bool) -> Body:
        """The body that follows this head (decode: pass on a chunked body's data only)."""
        if head_request or self.interim or self.status in (204, 304):
            return NO_BODY
        if self.chunked:
            return Chunked(decode)
        if self.length is not None:
            return Length(self.length)
        return UntilClose()

    def encode(self, close: bool, decoded: bool) -> bytes:
        """The head for the client (decoded: the chunked body goes out decoded)."""
        head = _TRANSFER_ENCODING.sub(b"", self.head) if decoded else self.head
        if close:
            return head + b"\r\nConnection: close\r\n\r\n"
        return head + b"\r\nConnection: keep-alive\r\n\r\n"


def parse_response(head: bytes, via: bytes) -> Response:
    """Read an instance's response head (without its blank line)."""
    end = head.find(b"\r\n")
    if end < 0:
        end = len(head)
    status_line, headers = head[:end], head[end:]
    if not _STATUS_LINE.match(status_line) or _BAD_LINE.search(headers):
        raise BadMessage("bad response head")
    status = int(status_line[9:12])
    if status == 101:  # the proxy never asks for an upgrade (Upgrade is not passed on)
        raise BadMessage("unexpected upgrade")
    length = codings = connection = b""
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
    return Response(status, status_line + headers, size, chunked, close, status < 200)


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
    400: "Bad Request",
    404: "Not Found",
    413: "Content Too Large",
    431: "Request Header Fields Too Large",
    502: "Bad Gateway",
    503: "Service Unavailable",
    504: "Gateway Timeout",
}


def reply(status: int, text: str, close: bool) -> bytes:
    """A short plain-text answer of the proxy's own."""
    body = text.encode()
    return (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body)}\r\nConnection: {'close' if close else 'keep-alive'}"
        "\r\n\r\n"
    ).encode() + body
