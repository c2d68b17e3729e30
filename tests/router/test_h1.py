"""The request head rules of `router/h1.py`: what is refused and why, and a differential
test against h11 on generated heads."""

from __future__ import annotations

import h11
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqlifier.router import h1

VIA = b"Via: 1.1 sqlifier"


def refusal(head: bytes) -> str | None:
    """Why `h1.parse_request` refuses `head`; None when it accepts it."""
    try:
        h1.parse_request(head, b"127.0.0.1", VIA)
    except h1.BadMessage as bad:
        return str(bad)
    return None


def h11_accepts(head: bytes) -> bool:
    """Whether h11, as a server, reads `head` (without its blank line) as a request."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(head + b"\r\n\r\n")
    try:
        return isinstance(connection.next_event(), h11.Request)
    except h11.RemoteProtocolError:
        return False


TOKEN_MESSAGE = "(letters, digits and !#$%&'*+-.^_`|~)"
VALUE_MESSAGE = "a field value holds visible characters, spaces and tabs only\n"


@pytest.mark.parametrize(
    ("head", "message"),
    [
        (
            b"GET / HTTP/1.1\r\nHost: a\nTransfer-Encoding: chunked",
            "bare LF or CR in line 2 of the head: lines of a request head end with CRLF\n",
        ),
        (
            b"GET / HTTP/1.1\r\nX: a\rY: b",
            "bare LF or CR in line 2 of the head: lines of a request head end with CRLF\n",
        ),
        (
            b"GET / HTTP/1.1\nHost: a",
            "bare LF or CR in the request line: lines of a request head end with CRLF\n",
        ),
        (
            b"GET / HTTP/1.1\r\nX: a\x00b",
            "control character 0x00 in the value of 'X': " + VALUE_MESSAGE,
        ),
        (
            b"GET / HTTP/1.1\r\nX: a\x01b",
            "control character 0x01 in the value of 'X': " + VALUE_MESSAGE,
        ),
        (
            b"GET / HTTP/1.1\r\nX: a\x7f",
            "control character 0x7f in the value of 'X': " + VALUE_MESSAGE,
        ),
        (
            b"GET / HTTP/1.1\r\nX: \x1b[0m",
            "control character 0x1b in the value of 'X': " + VALUE_MESSAGE,
        ),
        (
            b"GET / HTTP/1.1\r\nHost : a",
            "whitespace between the field name 'Host ' and its colon in line 2 of the head:"
            " expected NAME: VALUE\n",
        ),
        (
            b"GET / HTTP/1.1\r\nHost\t: a",
            "whitespace between the field name 'Host\\t' and its colon in line 2 of the head:"
            " expected NAME: VALUE\n",
        ),
        (
            b'GET / HTTP/1.1\r\nX"y: a',
            "bad field name 'X\"y' in line 2 of the head: a field name is a token "
            + TOKEN_MESSAGE
            + "\n",
        ),
        (
            b"GET / HTTP/1.1\r\n: a",
            "bad field name '' in line 2 of the head: a field name is a token "
            + TOKEN_MESSAGE
            + "\n",
        ),
        (
            b"GET / HTTP/1.1\r\nX: a\r\n b",
            "line 3 of the head starts with a space or tab (obs-fold): a field value is sent"
            " on one line\n",
        ),
        (
            b"GET / HTTP/1.1\r\n\tX: a",
            "line 2 of the head starts with a space or tab (obs-fold): a field value is sent"
            " on one line\n",
        ),
        (
            b"GET / HTTP/1.1\r\nX a",
            "line 2 of the head 'X a' has no colon: expected NAME: VALUE\n",
        ),
        (b"G(T / HTTP/1.1", "bad method 'G(T': a method is a token " + TOKEN_MESSAGE + "\n"),
        (
            b"GET /a\x01b HTTP/1.1",
            "bad request target '/a\\x01b': a target is visible ASCII characters\n",
        ),
        (
            b"GET /\xe9 HTTP/1.1",
            "bad request target '/\\xe9': a target is visible ASCII characters\n",
        ),
        (
            b"GET / HTTP/1.1\r\nHost: a\r\nX: 1\r\nhost: b",
            "more than one Host header: a request names one host\n",
        ),
        (
            b"GET  / HTTP/1.1",
            "bad request line 'GET  / HTTP/1.1': expected METHOD TARGET HTTP/1.1 (or HTTP/1.0),"
            " one space apart\n",
        ),
        (
            b"GET / HTTP/1.2",
            "bad request line 'GET / HTTP/1.2': expected METHOD TARGET HTTP/1.1 (or HTTP/1.0),"
            " one space apart\n",
        ),
    ],
)
def test_a_request_head_against_rfc_9112_is_refused_saying_why(head: bytes, message: str) -> None:
    assert refusal(head) == message


@pytest.mark.parametrize(
    "head",
    [
        b"GET / HTTP/1.1\r\nHost: a",
        b"GET / HTTP/1.0",
        b"GET /a?b=c%20d HTTP/1.1\r\nHost: a\r\nX:\r\nY: \t tabs\tand spaces \t",
        b"M-SEARCH * HTTP/1.1\r\nHost: a\r\nX-Latin-1: caf\xe9 \x80\xff",
        b"OPTIONS * HTTP/1.1\r\nHost: a\r\n!#$%&'*+-.^_`|~09azAZ: v",
    ],
)
def test_a_request_head_within_rfc_9112_is_accepted(head: bytes) -> None:
    assert refusal(head) is None


@pytest.mark.parametrize(
    ("head", "h1_accepts"),
    [
        # h11 reads a bare LF as a line end (RFC 9112 2.2 allows it); the proxy, which
        # passes lines on unread, refuses it.
        (b"GET / HTTP/1.1\r\nHost: a\nX: b", False),
        # h11 joins an obs-fold into the value; RFC 9112 5.2 lets a server refuse it.
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b", False),
        # h11 lets control characters other than NUL, CR, LF, VT and FF into values.
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01b", False),
        (b"GET / HTTP/1.1\r\nHost: a\r\nX: a\x7f", False),
        # h11 reads any HTTP/d.d version; the proxy speaks HTTP/1.1 and HTTP/1.0 only.
        (b"GET / HTTP/1.2\r\nHost: a", False),
        # h11 requires Host in HTTP/1.1; the proxy routes a request without one by path.
        (b"GET / HTTP/1.1", True),
    ],
)
def test_where_h1_judges_a_head_differently_from_h11_on_purpose(
    head: bytes, h1_accepts: bool
) -> None:
    assert h11_accepts(head) != h1_accepts
    assert (refusal(head) is None) == h1_accepts


TCHARS = "!#$%&'*+-.^_`|~0123456789abcxyzABCXYZ"
# Bytes either parser may refuse, but excluding those they judge differently on purpose
# (a bare LF, and control characters other than NUL, CR and HTAB: see the test above).
ODD = ' \t\x00\r"(),/:;<=>?@[]{}\x80\xe9\xff'
methods = st.one_of(st.sampled_from(["GET", "POST", "M-SEARCH"]), st.text(TCHARS + ODD, max_size=6))
targets = st.one_of(
    st.sampled_from(["/", "*", "/a?b=c", "http://a/b"]),
    st.text(TCHARS + "/?%" + ODD, max_size=8),
)
names = st.one_of(
    st.sampled_from(["Host", "Accept", "Cookie", "Connection", "Via", "X-Forwarded-For"]),
    st.text(TCHARS + ODD, max_size=8).filter(lambda name: not name.startswith((" ", "\t"))),
)
values = st.text("aZ09!~=;,/" + ODD, max_size=10)
fields = st.lists(st.tuples(names, values), max_size=4)


@settings(max_examples=400, deadline=None)
@given(methods, targets, st.sampled_from(["HTTP/1.1", "HTTP/1.0"]), fields)
def test_h1_accepts_a_generated_head_iff_h11_does(
    method: str, target: str, version: str, headers: list[tuple[str, str]]
) -> None:
    lines = [f"{method} {target} {version}", "Host: a"]
    lines += [f"{name}:{value}" for name, value in headers]
    head = "\r\n".join(lines).encode("latin-1")
    why = refusal(head)
    assert (why is None) == h11_accepts(head), why
    assert why != "bad request head\n"  # a refusal names the rule the head broke
