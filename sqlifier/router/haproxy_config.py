"""The HAProxy data plane's configuration: the files it lives in, the text generated for a
desired state, and the maps changed at runtime.

The canary split is the same exact interleave as the embedded data plane's: a per-service
request counter in a stick table (`sc_inc_gpc0`) numbers the requests, and request i goes
to the canary when floor((i+1)·w/1000) > floor(i·w/1000).

Every rule a request passes costs HAProxy time, so the configuration keeps the path of a
request without a canary share short (benchmarks/traffic.py compares it with a static
configuration): one variable (the service), a map lookup, and checks that find nothing
tracked. The log sample's size lives in a second map, resized by the data plane (haproxy.py),
rather than computed per request.
"""

from __future__ import annotations

import hashlib
import http
import os
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlifier.router.internal import haproxy_frontends, instance_backends, instance_structure
from sqlifier.router.routes import RESOLUTION, RouteTable, Track
from sqlifier.router.state import BackendState, DesiredState
from sqlifier.router.tls import CIPHERS, TLS13_SUITES
from sqlifier.stack.model import Timeouts

__all__ = [
    "CANARY_TURN",
    "ERROR_PAGES",
    "RING_SIZE",
    "SAMPLE_RANGE",
    "Files",
    "HAProxyError",
    "TlsBind",
    "check_config",
    "error_page",
    "map_text",
    "render_config",
    "service_numbers",
    "socket_dir",
    "structure",
    "track_backend",
]

RING_SIZE = 4 * 1024 * 1024  # request log lines HAProxy keeps until they are read
SAMPLE_RANGE = 65536  # a request's random number for the log sample is below this
CANARY_TURN = f"{{ var(txn.c) -m int ge {RESOLUTION} }}"  # this request goes to the canary


# HAProxy's own answers (a head it cannot parse, one that took too long, a server that
# failed) in the embedded data plane's words and shape: plain text, one line, instead of
# HAProxy's HTML page. These are the statuses HAProxy can answer of its own (`errorfile`);
# 401 and 407 would need a challenge header, and nothing here asks for a password.
ERROR_PAGES: dict[int, str] = {
    400: "bad request: the request head is malformed or too large\n",
    403: "forbidden\n",
    405: "method not allowed\n",
    408: "the request head did not arrive in time\n",
    410: "gone\n",
    413: "request body too large\n",
    425: "too early\n",
    429: "too many requests\n",
    500: "the router failed on this request\n",
    501: "the request uses what the router does not support\n",
    502: "the instance failed\n",
    503: "no instance ready\n",
    504: "the instance did not answer\n",
}


@dataclass(frozen=True)
class TlsBind:
    """TLS on the frontend: HAProxy's crt-list (the certificates, the first the default;
    HAProxy picks one by the names in each for a client's SNI), the plain address that
    answers 308 to https, and HSTS's max-age in seconds."""

    crt_list: Path
    redirect: tuple[str, int] | None = None
    hsts: int | None = None


class HAProxyError(Exception):
    """HAProxy refused a configuration or a command; the message has its words."""


def socket_dir(root: Path) -> Path:
    """A short private folder for HAProxy's unix sockets: HAProxy refuses socket paths
    longer than 97 bytes, and a stack's state folder can be deep."""
    base = Path(os.environ.get("XDG_RUNTIME_DIR") or f"/tmp/sqlifier-{os.getuid()}")
    base.mkdir(mode=0o700, exist_ok=True)
    info = base.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise HAProxyError(f"{base} is not a folder of this user's; remove it and retry")
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:12]
    folder = base / digest
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


@dataclass(frozen=True)
class Files:
    root: Path
    sockets: Path

    @property
    def config(self) -> Path:
        return self.root / "haproxy.cfg"

    @property
    def admin(self) -> Path:
        return self.sockets / "admin.sock"

    @property
    def pid(self) -> Path:
        """HAProxy's master's pid: how a data plane that restarts finds it."""
        return self.root / "haproxy.pid"

    @property
    def state(self) -> Path:
        return self.root / "haproxy.state"

    @property
    def errors(self) -> Path:
        """The error pages' folder: one `STATUS.http` file per status in ERROR_PAGES."""
        return self.root / "errors"

    @property
    def crt_list(self) -> Path:
        """The certificates (router/tls.py's combined files), one a line, the default first."""
        return self.root / "crt-list.txt"

    @property
    def canary_map(self) -> Path:
        return self.root / "canary.map"

    @property
    def sample_map(self) -> Path:
        return self.root / "sample.map"


def error_page(status: int) -> str:
    """The error page file for `status`: a whole HTTP answer in the shape of the embedded
    data plane's (`h1.reply`), its `Connection` header left to HAProxy."""
    body = ERROR_PAGES[status]
    return (
        f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\nContent-Type: text/plain\r\n"
        f"Content-Length: {len(body.encode())}\r\n\r\n{body}"
    )


def track_backend(service: str, track: Track) -> str:
    return f"{service}.{track.value}"


def render_config(
    state: DesiredState,
    host: str,
    port: int,
    files: Files,
    name: str = "sqlifier",
    control: bool = True,
    tls: TlsBind | None = None,
) -> str:
    """The whole configuration for a desired state: its routes, one backend per service
    and track, and the backends it has now as servers (later ones arrive at runtime).

    `control=False` leaves out what only runtime control needs — the request log, the
    canary map and the request counter — and routes straight to the stable backends: the
    static configuration someone would write by hand for the same routes and headers (the
    benchmark's baseline). `tls` listens over TLS (tls_lines)."""
    lines = [
        "# Generated by sqlifier; changes made here are overwritten.",
        "global",
        "    maxconn 4096",
        f"    stats socket {files.admin} mode 600 level admin",
        f"    server-state-file {files.state}",
        *(_tls_global() if tls else ()),
    ]
    if control:
        # Latencies: one short line per request into an in-memory ring that the data
        # plane streams with `show events` (no syscall per request on HAProxy's side).
        lines += ["    log ring@requests local0", "", "ring requests", "    format raw"]
        lines += [f"    size {RING_SIZE}", "    maxlen 256"]
    lines += [
        "",
        "defaults",
        "    mode http",
        *(["    log global", '    log-format "%b %s %Ta"'] if control else []),
        "    load-server-state-from-file global",
        "    timeout connect 5s",
        "    timeout client 60s",
        "    timeout server 60s",
        "    timeout http-request 10s",
        "    timeout http-keep-alive 60s",
        "    timeout queue 5s",
        # A request is tried once more, on another server, when it could not connect, or
        # when its server closed or said nothing before the first byte of an answer
        # (`timeout server`, the first-byte timeout): for a request that is not
        # idempotent or has a body only when it could not connect (the rule below).
        "    retries 1",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response response-timeout",
        "    option forwardfor",
        "    http-reuse safe",
        *(
            f"    errorfile {status} {files.errors / f'{status}.http'}"
            for status in (ERROR_PAGES if control else ())
        ),
        "",
        f"frontend {name}",
        *(_tls_frontend(tls, host, port) if tls else [f"    bind {host}:{port}"]),
        *_strict_heads(),
        f"    http-request set-header X-Forwarded-Proto {'https' if tls else 'http'}",
        "    http-request set-header X-Forwarded-Host %[req.hdr(host)]",
        f'    http-request set-header Via "1.1 {name}"',
        f'    http-response add-header Via "1.1 {name}" if !{{ res.hdr(via) -m found }}',
        "    http-request disable-l7-retry if !METH_GET !METH_OPTIONS"
        " or { req.hdr_val(content-length) gt 0 } or { req.hdr_cnt(transfer-encoding) gt 0 }",
    ]
    # The service is named by its number (`service_numbers`): an integer variable, map
    # key and table key cost HAProxy less than a string's (no copy per request).
    numbers = service_numbers(state)
    unset = "!{ var(txn.svc) -m found }"
    for index, (route, service) in enumerate(RouteTable(state.routes).ordered()):
        # Routes are tried longest first and the first match names the service; the
        # first route cannot find one named already.
        conditions = [unset] if control and index else []
        if route.host is not None:
            lines.append(f"    acl h{index} req.hdr(host),field(1,:),lower -m str {route.host}")
            conditions.append(f"h{index}")
        if route.path == "/":
            alternatives = [conditions]
        else:
            prefix = route.path.rstrip("/")
            lines.append(f"    acl p{index} path -m str {prefix}")
            lines.append(f"    acl b{index} path -m beg {prefix}/")
            alternatives = [[*conditions, f"p{index}"], [*conditions, f"b{index}"]]
        test = " || ".join(" ".join(a) for a in alternatives)
        when = f" if {test}" if test else ""
        if not control:
            lines.append(f"    use_backend {track_backend(service, Track.STABLE)}{when}")
            continue
        lines.append(f"    http-request set-var(txn.svc) int({numbers[service]}){when}")
    if control:
        lines += _canary_rules(state, files, numbers)
        # Busy, a sample of the stable track's requests is enough for its latency
        # percentiles: the sample map keeps a request when its random number falls in
        # the map's one range, which the data plane sizes to the request rate (see
        # `HAProxyPlane._sample`). Canary requests are always logged (their backend says so).
        lines.append(
            f"    http-request set-log-level silent if {{ rand({SAMPLE_RANGE}),"
            f"map_int_int({files.sample_map},1) -m int gt 0 }}"
        )
    lines += ["    default_backend no-route", ""]
    if control:
        share = f"var(txn.svc),map_int_int({files.canary_map},0)"
        lines += [*haproxy_frontends(state, numbers, share, CANARY_TURN), ""]
        lines += ["backend turns", "    stick-table type integer size 1k store gpc0", ""]
    lines += [
        "backend no-route",
        '    http-request return status 404 content-type text/plain string "no route"',
    ]
    for service in state.routes:
        traffic = state.services.get(service)
        for track in Track:
            lines += ["", f"backend {track_backend(service, track)}", "    balance roundrobin"]
            lines += _timeouts(traffic.timeouts if traffic else Timeouts())
            if control and track is Track.CANARY:
                lines.append("    http-request set-log-level info")
            for backend in traffic.backends if traffic else ():
                if backend.track is track:
                    disabled = " disabled" if backend.state is BackendState.DRAIN else ""
                    lines.append(
                        f"    server {backend.id} {backend.host}:{backend.port}"
                        f" weight {backend.weight}{disabled}"
                    )
    for proxy_name, (service, backends) in instance_backends(state).items():
        traffic = state.services.get(service)
        lines += ["", f"backend {proxy_name}", "    balance roundrobin"]
        lines += _timeouts(traffic.timeouts if traffic else Timeouts())
        for backend in backends:
            disabled = " disabled" if backend.state is BackendState.DRAIN else ""
            lines.append(
                f"    server {backend.id} {backend.host}:{backend.port}"
                f" weight {backend.weight}{disabled}"
            )
    return "\n".join(lines) + "\n"


# A control character other than HTAB in a field value (NUL, ESC, DEL...): RFC 9110 5.5
# forbids them, and a lenient instance may read them as line ends. HAProxy 2.6 passes them
# on; the embedded data plane refuses them, and so does this rule. `req.hdrs` is the head's
# fields as they came, each line ending with CRLF (a bare CR or LF HAProxy has already
# read as a line end, or refused).
_CONTROL = r"[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]"


def _tls_global() -> list[str]:
    """Mozilla's "intermediate" TLS: 1.2 and 1.3, ECDHE with AEAD ciphers (router/tls.py)."""
    return [
        f"    ssl-default-bind-ciphers {CIPHERS}",
        f"    ssl-default-bind-ciphersuites {TLS13_SUITES}",
        "    ssl-default-bind-options ssl-min-ver TLSv1.2 no-tls-tickets",
    ]


def _tls_frontend(tls: TlsBind, host: str, port: int) -> list[str]:
    """The TLS bind; the plain redirect bind answering 308 with the same host (without
    its port) and target on the TLS port; HSTS on every answer over TLS."""
    lines = [f"    bind {host}:{port} ssl crt-list {tls.crt_list} alpn http/1.1"]
    if tls.redirect is not None:
        where = f":{port}" if port != 443 else ""
        lines += [
            f"    bind {tls.redirect[0]}:{tls.redirect[1]}",
            "    http-request redirect code 308 location"
            f" https://%[req.hdr(host),field(1,:)]{where}%[capture.req.uri] unless {{ ssl_fc }}",
        ]
    if tls.hsts is not None:
        lines.append(
            "    http-after-response set-header Strict-Transport-Security"
            f' "max-age={tls.hsts}" if {{ ssl_fc }}'
        )
    return lines


def _strict_heads() -> list[str]:
    """The rule refusing with 400 what HAProxy would pass on and the embedded data plane
    refuses: control characters in field values."""
    return [
        "    http-request deny status 400 content-type text/plain string"
        ' "control character in a field value: a field value holds visible characters,'
        f' spaces and tabs only\\n" if {{ req.hdrs -m reg {_CONTROL} }}',
    ]


def _timeouts(timeouts: Timeouts) -> list[str]:
    """A service's timeouts on its instances. HAProxy 2.6 has one inactivity timer on the
    server side (`timeout server`): it bounds the wait for the first byte and every pause
    after it alike, so it takes the first-byte timeout; an upgraded connection's
    (`timeout tunnel`) takes the idle timeout."""
    return [
        f"    timeout connect {_ms(timeouts.connect)}",
        f"    timeout server {_ms(timeouts.first_byte)}",
        f"    timeout tunnel {_ms(timeouts.idle)}",
    ]


def _ms(seconds: float) -> str:
    return f"{max(1, round(seconds * 1000))}ms"


def _canary_rules(state: DesiredState, files: Files, numbers: dict[str, int]) -> list[str]:
    """Request i of a service goes to its canary when floor((i+1)w/R) > floor(iw/R), w
    its share (from the map, changed at runtime), i counted in a stick table per service.
    That difference is 1 exactly when (iw mod R) + w >= R, one expression. Only requests
    of a service with a share are counted; for the others the rules after the first
    find nothing tracked and do nothing (no variable is stored)."""
    share = f"var(txn.svc),map_int_int({files.canary_map},0)"
    lines = [
        f"    http-request track-sc0 var(txn.svc) table turns if {{ {share} -m int gt 0 }}",
        f"    http-request set-var(txn.w) {share} if {{ sc0_tracked }}",
        f"    http-request set-var(txn.c) sc_inc_gpc0(0),sub(1),mod({RESOLUTION}),mul(txn.w),"
        f"mod({RESOLUTION}),add(txn.w)",
    ]
    for service in state.routes:
        canary, stable = track_backend(service, Track.CANARY), track_backend(service, Track.STABLE)
        mine = f"{{ var(txn.svc) -m int {numbers[service]} }}"
        lines.append(f"    use_backend {canary} if {CANARY_TURN} {mine} {{ nbsrv({canary}) gt 0 }}")
        lines.append(f"    use_backend {stable} if {mine}")
    return lines


def check_config(binary: str, path: Path) -> None:
    result = subprocess.run(
        [binary, "-c", "-f", str(path)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        alerts = [line for line in result.stderr.splitlines() if "ALERT" in line]
        raise HAProxyError(f"haproxy -c rejected {path}: {' '.join(alerts) or result.stderr}")


def service_numbers(state: DesiredState) -> dict[str, int]:
    """Each routed service's number in the configuration, from 1 in name order: the
    routes decide it, and a change of routes writes a new configuration and maps."""
    return {name: number for number, name in enumerate(sorted(state.routes), start=1)}


def map_text(state: DesiredState) -> str:
    """The canary map file: one `number thousandths` line per routed service."""
    lines = []
    for name, number in service_numbers(state).items():
        traffic = state.services.get(name)
        lines.append(f"# {name}\n{number} {traffic.canary if traffic else 0}\n")
    return "".join(lines)


def structure(state: DesiredState) -> tuple[Any, ...]:
    """What only a new configuration can change: the routes, the services and their
    timeouts."""
    timeouts = sorted((name, traffic.timeouts) for name, traffic in state.services.items())
    routes = tuple(sorted((k, v) for k, v in state.routes.items()))
    return (routes, tuple(timeouts), instance_structure(state))
