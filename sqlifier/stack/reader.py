"""Reading a parsed stack file into the typed model, with a positioned error for every
mistake: unknown keys (with did-you-mean), wrong types, bad values, unknown or circular
dependencies, a route claimed twice, a port used twice.

Each table is described by a schema: key -> a reader that turns the raw TOML value into
the typed one (or reports why it cannot). Environment overrides are read with the same
schema, merged over the base service, and every environment is checked as it will run.
"""

from __future__ import annotations

import ipaddress
import os
import pwd
import re
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from sqlifier.diagnostics import Diagnostic, Severity
from sqlifier.lang.errors import did_you_mean, quote
from sqlifier.lang.source import Source, Span
from sqlifier.stack import model as m
from sqlifier.stack.dropped import INVALID as _INVALID
from sqlifier.stack.tomlpos import Path as KeyPath
from sqlifier.stack.tomlpos import Positions, locate

__all__ = ["SECRET_PROVIDERS", "StackReader", "parse_cpu", "parse_memory"]

SECRET_PROVIDERS = (
    "secret://local/NAME",
    "vault://MOUNT/PATH#KEY",
    "aws-sm://NAME#KEY",
    "ssm:///PATH",
    "env://NAME",
    "file://PATH",
)
_SECRET_REF = re.compile(
    r"^(secret://local/[A-Za-z0-9_.-]+|vault://[^#\s/]+(/[^#\s/]+)+#[^#\s]+"
    r"|aws-sm://[^#\s]+(#[^#\s]+)?|ssm:///[^#\s]+|env://[A-Za-z_][A-Za-z0-9_]*|file://[^\s]+)\Z"
)
_DURATION = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)\Z")
_PERCENT = re.compile(r"^([0-9]+(?:\.[0-9]+)?)%\Z")
_HOST = re.compile(r"^[A-Za-z0-9*]([A-Za-z0-9.-]*[A-Za-z0-9])?\Z")
_ROUTE_PATH = re.compile(r"[A-Za-z0-9._~%/:@!*+,;=&-]*\Z")
_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_LONGEST = 365 * 86400

Reader = Callable[[object, KeyPath], Any]


class StackReader:
    """Turns the data of one stack file into a Stack; collects diagnostics."""

    def __init__(self, source: Source, data: dict[str, Any], path: Path) -> None:
        self.source = source
        self.data = data
        self.path = path
        self.positions: Positions = locate(source.text)
        self.diagnostics: list[Diagnostic] = []

    # --- reporting ----------------------------------------------------------------------

    def span(self, path: KeyPath, key: bool = False) -> Span:
        found = self.positions.key(path) if key else self.positions.value(path)
        return found or Span(1, 1, 1, 2)

    def error(
        self, path: KeyPath, message: str, hint: str | None = None, key: bool = False
    ) -> None:
        self.diagnostics.append(
            Diagnostic.at(self.source, self.span(path, key), message, hint=hint)
        )

    def warning(self, path: KeyPath, message: str, hint: str | None = None) -> None:
        self.diagnostics.append(
            Diagnostic.at(
                self.source, self.span(path), message, hint=hint, severity=Severity.WARNING
            )
        )

    # --- scalar readers -----------------------------------------------------------------

    def text(self, value: object, path: KeyPath) -> Any:
        if isinstance(value, str):
            if "\0" in value:  # no path, command or name can hold one
                self.error(path, f"{_dotted(path)} holds a NUL character (\\u0000)")
                return _INVALID
            return value
        self.error(path, f"{_dotted(path)} must be text in quotes, found {_shown(value)}")
        return _INVALID

    def command(self, value: object, path: KeyPath) -> Any:
        text = self.text(value, path)
        if text is not _INVALID and not text.strip():
            self.error(path, f'{_dotted(path)} is empty; it needs a command, like "python3 app.py"')
            return _INVALID
        return text

    def boolean(self, value: object, path: KeyPath) -> Any:
        if isinstance(value, bool):
            return value
        self.error(path, f"{_dotted(path)} must be true or false, found {_shown(value)}")
        return _INVALID

    def integer(self, low: int, high: int) -> Reader:
        def read(value: object, path: KeyPath) -> Any:
            if isinstance(value, bool) or not isinstance(value, int):
                self.error(path, f"{_dotted(path)} must be a whole number, found {_shown(value)}")
                return _INVALID
            if not low <= value <= high:
                self.error(path, f"{_dotted(path)} must be between {low} and {high}, found {value}")
                return _INVALID
            return value

        return read

    def duration(self, value: object, path: KeyPath) -> Any:
        match = _DURATION.match(value) if isinstance(value, str) else None
        if match is None:
            hint = f'write "{value}s"' if isinstance(value, int | float) else None
            self.error(
                path,
                f'{_dotted(path)} must be a duration like "30s" or "5m", found {_shown(value)}',
                hint,
            )
            return _INVALID
        seconds = float(match.group(1)) * _SECONDS[match.group(2)]
        if not 0 < seconds <= _LONGEST:
            self.error(path, f"{_dotted(path)} must be longer than zero and at most 365d")
            return _INVALID
        return seconds

    def percent(self, value: object, path: KeyPath) -> Any:
        match = _PERCENT.match(value) if isinstance(value, str) else None
        if match is None or not 0 < float(match.group(1)) <= 100:
            self.error(
                path,
                f"{_dotted(path)} must be a percentage above 0 and at most 100, "
                f'like "10%", found {_shown(value)}',
            )
            return _INVALID
        return float(match.group(1))

    def choice(self, enum: type[Any]) -> Reader:
        names = [member.value for member in enum]

        def read(value: object, path: KeyPath) -> Any:
            if isinstance(value, str) and value in names:
                return enum(value)
            hint = did_you_mean(value, names) if isinstance(value, str) else None
            self.error(
                path,
                f"{_dotted(path)} must be one of {', '.join(map(quote, names))}, "
                f"found {_shown(value)}",
                hint,
            )
            return _INVALID

        return read

    def patterns(self, value: object, path: KeyPath) -> Any:
        items = self.text_list(value, path)
        if items is _INVALID:
            return _INVALID
        for index, pattern in enumerate(items):
            if not pattern or pattern.startswith("/") or ".." in pattern.split("/"):
                self.error(
                    (*path, index),
                    f"rule pattern {quote(pattern)} must be a path "
                    'inside the stack\'s folder, like "rules/*.sql"',
                )
                return _INVALID
        return items

    def text_list(self, value: object, path: KeyPath) -> Any:
        if not isinstance(value, list):
            self.error(
                path,
                f'{_dotted(path)} must be a list of text, like ["a", "b"], found {_shown(value)}',
            )
            return _INVALID
        items = [self.text(item, (*path, i)) for i, item in enumerate(value)]
        return _INVALID if _INVALID in items else tuple(items)

    def text_map(self, value: object, path: KeyPath) -> Any:
        if not isinstance(value, dict):
            self.error(path, f'{_dotted(path)} must be a table, like {{ KEY = "value" }}')
            return _INVALID
        out: dict[str, str] = {}
        for key, item in value.items():
            if isinstance(item, bool) or not isinstance(item, str | int | float):
                self.error(
                    (*path, key),
                    f"{_dotted((*path, key))} must be text or a number, found {_shown(item)}",
                )
                continue
            if "\0" in key or "\0" in str(item):
                self.error((*path, key), f"{_dotted((*path, key))} holds a NUL character (\\u0000)")
                continue
            out[key] = str(item)
        return out

    def env_map(self, value: object, path: KeyPath) -> Any:
        """Environment variables: a name is not empty and holds no '='."""
        out = self.text_map(value, path)
        if out is _INVALID:
            return _INVALID
        for key in list(out):
            if not key or "=" in key:
                self.error(
                    (*path, key),
                    f"invalid environment variable name {quote(key)} in {_dotted(path)}: "
                    "a name is not empty and holds no '=', like DATABASE_URL",
                )
                del out[key]
        return out

    # --- tables -------------------------------------------------------------------------

    def table(
        self, raw: object, path: KeyPath, schema: Mapping[str, Reader], what: str
    ) -> dict[str, Any] | None:
        """The keys of `raw` read by `schema`; None when `raw` is not a table."""
        if not isinstance(raw, dict):
            self.error(path, f"{_dotted(path)} must be a table, like [{_dotted(path)}]")
            return None
        out: dict[str, Any] = {}
        for key, value in raw.items():
            reader = schema.get(key)
            if reader is None:
                self.error(
                    (*path, key),
                    f"unknown key {quote(key)} in {what}; valid: {', '.join(schema)}",
                    did_you_mean(key, schema),
                    key=True,
                )
                continue
            typed = reader(value, (*path, key))
            if typed is not _INVALID:
                out[key] = typed
        return out

    def subtable(self, schema: Mapping[str, Reader], what: str) -> Reader:
        def read(value: object, path: KeyPath) -> Any:
            typed = self.table(value, path, schema, what)
            return _INVALID if typed is None else typed

        return read

    # --- service parts ------------------------------------------------------------------

    def route(self, value: object, path: KeyPath) -> Any:
        text = self.text(value, path)
        if text is _INVALID:
            return _INVALID
        host, slash, rest = text.partition("/")
        if not slash or (host and not _HOST.match(host)) or " " in text:
            self.error(
                path,
                f"invalid route {quote(text)}: write host/path or /path, "
                'like "shop.localhost/checkout" or "/api/checkout"',
            )
            return _INVALID
        if not _ROUTE_PATH.match(rest):
            # The path reaches the router's configuration: nothing that could end a line,
            # quote, comment or query there.
            self.error(
                path,
                f"invalid route {text!r}: a route's path holds letters, digits and "
                "- . _ ~ % / : @ ! * + , ; = & only (percent-encode anything else)",
            )
            return _INVALID
        return m.Route(host.lower() or None, "/" + rest)

    def routes(self, value: object, path: KeyPath) -> Any:
        if not isinstance(value, list):
            self.error(path, f'{_dotted(path)} must be a list of routes, like ["/api"]')
            return _INVALID
        items = [self.route(item, (*path, i)) for i, item in enumerate(value)]
        return tuple(item for item in items if item is not _INVALID)

    def secret(self, value: object, path: KeyPath) -> Any:
        if isinstance(value, dict):
            typed = self.table(
                value,
                path,
                {"ref": self.text, "file": self.text, "refresh": self.duration},
                "a secret",
            )
            if typed is None or "ref" not in typed:
                if typed is not None:
                    self.error(path, f'{_dotted(path)} needs ref = "provider://..."', key=True)
                return _INVALID
            ref, file, refresh = typed["ref"], typed.get("file"), typed.get("refresh")
        else:
            ref = self.text(value, path)
            file = refresh = None
            if ref is _INVALID:
                return _INVALID
        if not _SECRET_REF.match(ref):
            self.error(
                (*path, "ref") if isinstance(value, dict) else path,
                f"invalid secret reference {quote(ref)}; providers: " + ", ".join(SECRET_PROVIDERS),
            )
            return _INVALID
        return m.SecretRef(ref, file, refresh)

    def secrets(self, value: object, path: KeyPath) -> Any:
        if not isinstance(value, dict):
            self.error(path, f'{_dotted(path)} must be a table of NAME = "reference"')
            return _INVALID
        items = {key: self.secret(item, (*path, key)) for key, item in value.items()}
        return {key: item for key, item in items.items() if item is not _INVALID}

    def probe(self, value: object, path: KeyPath) -> Any:
        schema = {
            "http": self.text,
            "tcp": self.boolean,
            "exec": self.command,
            "period": self.duration,
            "timeout": self.duration,
            "failure_threshold": self.integer(1, 10_000),
            "success_threshold": self.integer(1, 10_000),
            "status": self.integer(100, 599),
        }
        typed = self.table(value, path, schema, "a probe")
        if typed is None:
            return _INVALID
        kinds = [k for k in ("http", "tcp", "exec") if k in typed]
        if len(kinds) != 1:
            self.error(
                path,
                f'{_dotted(path)} needs exactly one of http = "/path", tcp = true '
                f'or exec = "command", found {len(kinds)}',
                key=True,
            )
            return _INVALID
        kind = m.ProbeKind(kinds[0])
        target = "" if kind is m.ProbeKind.TCP else typed[kinds[0]]
        if kind is m.ProbeKind.HTTP and (
            not target.startswith("/") or not target.isprintable() or " " in target
        ):
            # It is sent as the request line's path: no space or line break can be in it.
            self.error(
                (*path, "http"),
                f'{_dotted((*path, "http"))} must be a path starting with /, like "/health/ready"'
                ", without spaces or control characters",
            )
            return _INVALID
        fields = {k: v for k, v in typed.items() if k not in ("http", "tcp", "exec")}
        return m.Probe(kind, target, **fields)

    def analysis(self, value: object, path: KeyPath) -> Any:
        # The rule language's parser and checker, only for a stack that has expressions:
        # `sqlifier ps` reads the stack file too, and starts quicker without them.
        from sqlifier.lang.analysis import analysis_problems  # noqa: PLC0415

        items = self.text_list(value, path)
        if items is _INVALID:
            return _INVALID
        for index, text in enumerate(items):
            for message in analysis_problems(text):
                self.error((*path, index), message)
        return items

    def steps(self, value: object, path: KeyPath) -> Any:
        if not isinstance(value, list) or not value:
            self.error(
                path,
                f'{_dotted(path)} must be a list of percentages, like ["1%", "10%", "50%", "100%"]',
            )
            return _INVALID
        items = [self.percent(item, (*path, i)) for i, item in enumerate(value)]
        if _INVALID in items:
            return _INVALID
        if items != sorted(set(items)):
            self.error(path, f'{_dotted(path)} must grow step by step, like ["1%", "10%", "100%"]')
            return _INVALID
        if items[-1] != 100:
            self.error(path, f'{_dotted(path)} must end at "100%" (the canary takes all traffic)')
            return _INVALID
        return tuple(items)

    def resources(self, value: object, path: KeyPath) -> Any:
        """`{ cpu = 0.5, memory = "256Mi" }`, with Kubernetes' quantities."""
        typed = self.table(value, path, {"cpu": self.cpu, "memory": self.memory}, "resources")
        if typed is None:
            return _INVALID
        if not typed and not value:
            self.error(path, f'{_dotted(path)} is empty; like {{ cpu = 0.5, memory = "256Mi" }}')
            return _INVALID
        return m.Resources(typed.get("cpu"), typed.get("memory"))

    def cpu(self, value: object, path: KeyPath) -> Any:
        cores = parse_cpu(value)
        if cores is None:
            self.error(
                path,
                f"{_dotted(path)} must be a number of cores above 0 and at most 1024, like 0.5"
                f' or "500m", found {_shown(value)}',
            )
            return _INVALID
        return cores

    def memory(self, value: object, path: KeyPath) -> Any:
        size = parse_memory(value)
        if size is None:
            self.error(
                path,
                f'{_dotted(path)} must be a size of at least 1Mi, like "256Mi", "1Gi" or "500M"'
                f" (a bare number is bytes), found {_shown(value)}",
            )
            return _INVALID
        return size

    def service_schema(self) -> dict[str, Reader]:
        return {
            "run": self.command,
            "source": self.text,
            "shell": self.boolean,
            "instances": self.integer(0, 1000),
            "stateful": self.boolean,
            "port": self.integer(1, 65535),
            "routes": self.routes,
            "env": self.env_map,
            "secrets": self.secrets,
            "labels": self.text_map,
            "depends_on": self.text_list,
            "restart": self.choice(m.RestartPolicy),
            "stop_timeout": self.duration,
            "build": self.command,
            "migrate": self.command,
            "schema_version": self.command,
            "compatible_schemas": self.text_list,
            "probes": self.subtable(
                {"startup": self.probe, "readiness": self.probe, "liveness": self.probe},
                "probes",
            ),
            "warmup": self.subtable(
                {
                    "requests": self.integer(0, 1_000_000),
                    "path": self.text,
                    "max_p95": self.duration,
                    "slow_start": self.duration,
                    "timeout": self.duration,
                },
                "warmup",
            ),
            "timeouts": self.subtable(
                {"connect": self.duration, "first_byte": self.duration, "idle": self.duration},
                "timeouts",
            ),
            "rollout": self.subtable(
                {
                    "steps": self.steps,
                    "pause": self.duration,
                    "analysis": self.analysis,
                    "min_requests": self.integer(1, 1_000_000),
                    "bake": self.duration,
                    "interval": self.duration,
                    "early_abort": self.boolean,
                },
                "rollout",
            ),
            "image": self.text,
            "isolation": self.isolation,
            "egress": self.egress,
            "user": self.user,
            "resources": self.resources,
            "slo": self.slo,
        }

    def slo(self, value: object, path: KeyPath) -> Any:
        """A service's `slo` (stack/slo.py, imported only for a stack that has one)."""
        from sqlifier.stack.slo import read_slo  # noqa: PLC0415

        return read_slo(self, value, path)

    def duration_at_most(self, longest: float, shown: str) -> Reader:
        """A duration no longer than `longest` seconds (`shown` as written, like "5m")."""

        def read(value: object, path: KeyPath) -> Any:
            seconds = self.duration(value, path)
            if seconds is not _INVALID and seconds > longest:
                self.error(path, f"{_dotted(path)} must be at most {shown}, found {_shown(value)}")
                return _INVALID
            return seconds

        return read

    def egress(self, value: object, path: KeyPath) -> Any:
        """`egress`: services by name, `host:port`, `address:port` or `network/bits:port`."""
        items = self.text_list(value, path)
        if items is _INVALID:
            return _INVALID
        out = []
        for index, text in enumerate(items):
            entry = _egress_entry(text)
            if entry is None:
                self.error(
                    (*path, index),
                    f"invalid egress {quote(text)}: write a service of the stack by name, "
                    'a host and port, or a network and port, like "orders", '
                    '"db.example.com:5432" or "10.0.0.0/8:443"',
                )
                return _INVALID
            out.append(entry)
        return tuple(out)

    def isolation(self, value: object, path: KeyPath) -> Any:
        """`isolation`: where this machine cannot isolate, a warning here (the stack may be
        meant for another machine, or rendered for Kubernetes); `up` refuses to run it."""
        chosen = self.choice(m.Isolation)(value, path)
        if chosen is m.Isolation.NETWORK:
            problem = _cannot_isolate()
            if problem is not None:
                self.warning(
                    path,
                    f"{_dotted(path)}: this environment cannot isolate: {problem}; "
                    "up refuses to start the service here",
                    "run the agent as root on Linux with iproute2 and nftables, or set "
                    'isolation = "none" for this environment',
                )
        return chosen

    def user(self, value: object, path: KeyPath) -> Any:
        """`user`: an account that exists on this machine."""
        name = self.text(value, path)
        if name is _INVALID:
            return _INVALID
        try:
            pwd.getpwnam(name)
        except KeyError:
            self.error(
                path,
                f"{_dotted(path)}: no user {quote(name)} on this machine; "
                "create it (useradd --system " + name + ") or name an existing account",
            )
            return _INVALID
        return name


def _cannot_isolate() -> str | None:
    # The same test as runtime/netns.py's cannot_isolate, which the stack may not import.
    if os.geteuid() != 0:
        return "network namespaces, veth pairs and nftables need root"
    if not os.path.exists("/proc/self/ns/net"):
        return "this kernel has no network namespaces"
    for tool, package in (("ip", "iproute2"), ("nft", "nftables"), ("nsenter", "util-linux")):
        if shutil.which(tool) is None:
            return f"the {tool!r} command is missing (Debian package {package})"
    return None


def _egress_entry(text: str) -> m.Egress | None:
    if m.SERVICE_NAME.match(text):
        return m.Egress("service", text)
    target, colon, port = text.rpartition(":")
    if not colon or not port.isdigit() or not 1 <= int(port) <= 65535 or not target:
        return None
    try:
        network = ipaddress.IPv4Network(target, strict=True)
    except ValueError:
        if "/" in target or target[-1].isdigit() or not _HOST.match(target) or "*" in target:
            return None
        return m.Egress("host", target.lower(), int(port))
    return m.Egress("network", str(network), int(port))


_CPU = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m?)\Z")
_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|K|M|G|T|P|E)?\Z")
_MEMORY_UNITS = {
    **{unit: 1024 ** (i + 1) for i, unit in enumerate(("Ki", "Mi", "Gi", "Ti", "Pi", "Ei"))},
    **{unit: 1000 ** (i + 1) for i, unit in enumerate(("k", "M", "G", "T", "P", "E"))},
    "K": 1000,
    "": 1,
}


def parse_cpu(value: object) -> float | None:
    """Cores from Kubernetes' CPU quantity: 0.5, 2, "0.5", "500m"; None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        cores = float(value)
    else:
        match = _CPU.match(value) if isinstance(value, str) else None
        if match is None:
            return None
        cores = float(match.group(1)) / (1000 if match.group(2) else 1)
    return cores if 0 < cores <= 1024 else None


def parse_memory(value: object) -> int | None:
    """Bytes from Kubernetes' memory quantity: "256Mi", "1Gi", "500M", 1048576; None if it
    is not one (or is below 1Mi, too little for any process)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        size = value
    else:
        match = _MEMORY.match(value) if isinstance(value, str) else None
        if match is None:
            return None
        size = int(float(match.group(1)) * _MEMORY_UNITS[match.group(2) or ""])
    return size if 1024 * 1024 <= size <= 2**62 else None


def _dotted(path: KeyPath) -> str:
    return ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in path).replace(
        ".[", "["
    )


def _shown(value: object) -> str:
    if isinstance(value, str):
        return quote(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return str(value)
