"""The data planes' speed on tiny responses, beside plain HAProxy, with real processes.

    .venv/bin/python benchmarks/traffic.py [--seconds 40] [--rounds 10] [--connections 50]
                                           [--repeat 20]

The proxy under test runs pinned to CPU 0 (the whole process tree: the router process is
started under `taskset -c 0` and the HAProxy it starts inherits that); the backend and
the load generator (`wrk`) share CPU 1. The backend is a second HAProxy that answers
every request itself (`http-request return`, a 6-byte plain text body, HTTP/1.1
keep-alive), so no Python sits behind the proxies. Cases:

1. direct: wrk straight at the backend (what the proxies add is measured against it).
2. haproxy-static: plain HAProxy with a static configuration doing the same job as the data
   plane's — the same route, headers (X-Forwarded-*, Via), error pages, timeouts and
   server — written by sqlifier's own generator with runtime control left out
   (`render_config(control=False)`: no request log, no canary lookup). The difference to
   haproxy-driven is what control costs per request. haproxy-minimal, a hand-written
   one-frontend-one-server configuration with no headers at all, is shown for reference.
3. haproxy-driven: sqlifier's HAProxy data plane (`python -m sqlifier.router --kind
   haproxy`), synced over its control socket with a stable and a canary backend, canary 0.
4. embedded: sqlifier's embedded data plane (`--kind embedded`), the same state.

Each case: wrk -c 50 (after a short warm-up) for S seconds in all, split into R rounds
that take turns between the cases, so the machine's speed drifting during the run touches
every case alike. Reported: requests/s (mean of the rounds, and their spread), the ratio
to haproxy-static (the median of the rounds' ratios, each within one round: the speed of a
shared machine moves by 20% between rounds, much less within one), p50 and p99 latency
from `wrk --latency`, the p99 the proxy adds (its p99 minus direct's), how busy each CPU
was, and how much of a core the data plane's own Python process used.

5. Split switch time, for each data plane: a stable and a canary backend that answer
   "stable" and "canary"; canary at 1000 (all requests); then the time from sending the
   sync that sets canary 0 until (a) its reply arrives and (b) a request sent on a
   kept-alive connection right after the reply is answered by stable. Repeated N times.

With `--before DIR`, the embedded plane of another source tree (DIR/sqlifier, say the
main branch's: `git archive main sqlifier | tar -x -C DIR`) runs beside this one as the
case embedded-before, and the two are compared within each round. `--cases` keeps only
the load cases named. The table's us/req is the data plane's Python process's CPU time
per request: on a busy machine it moves less than requests/s do.

Targets: embedded >= 0.75x haproxy-static's requests/s; haproxy-driven >= 0.90x
haproxy-static's (our control adds nothing per request); embedded adds <= 2 ms of p99
latency; a split change in force <= 100 ms after the sync is sent (judged on the slowest
repetition; a request after the reply that the canary still answers fails it too).

Needs `haproxy` (cases 2, 3 and the HAProxy backend) and `wrk` (cases 1-4); what cannot
run without them is skipped and says so. Without haproxy the backend is a small asyncio
server instead, and direct, embedded and the embedded split switch still run.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlifier.router.haproxy import Files, render_config
from sqlifier.router.state import DesiredState, ServiceTraffic

try:
    import psutil
except ImportError:  # CPU columns are left empty without it
    psutil = None  # type: ignore[assignment]

ROOT = Path(__file__).resolve().parent.parent

EMBEDDED_RATIO = 0.75  # embedded requests/s vs haproxy-static's, at least
DRIVEN_RATIO = 0.90  # haproxy-driven requests/s vs haproxy-static's, at least
ADDED_P99_MS = 2.0  # embedded p99 minus direct p99, at most
SWITCH_MS = 100.0  # sync sent to split change in force, at most

# The timeouts of sqlifier's generated configuration (sqlifier/router/haproxy.py).
TIMEOUTS = """\
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-request 10s
    timeout http-keep-alive 60s
    timeout queue 5s
"""

BACKEND_CONFIG = """\
global
    maxconn 4096

defaults
    mode http
{timeouts}
frontend stable
    bind 127.0.0.1:{stable}
    http-request return status 200 content-type text/plain string "stable"

frontend canary
    bind 127.0.0.1:{canary}
    http-request return status 200 content-type text/plain string "canary"
"""

STATIC_CONFIG = """\
global
    maxconn 4096

defaults
    mode http
{timeouts}    http-reuse safe

frontend proxy
    bind 127.0.0.1:{port}
    default_backend web

backend web
    balance roundrobin
    server web-0 127.0.0.1:{stable} weight 100
"""

# The backend when there is no haproxy: asyncio protocol, canned answers, GETs only.
PY_BACKEND = r"""
import asyncio, sys
try:
    import uvloop
except ImportError:
    uvloop = None

def answer(body):
    return (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body))

class Canned(asyncio.Protocol):
    def __init__(self, reply):
        self.reply, self.buffer = reply, b""
    def connection_made(self, transport):
        self.transport = transport
    def data_received(self, data):
        self.buffer += data
        count = self.buffer.count(b"\r\n\r\n")
        if count:
            self.transport.write(self.reply * count)
            self.buffer = self.buffer[self.buffer.rfind(b"\r\n\r\n") + 4:]

async def main():
    loop = asyncio.get_running_loop()
    for spec in sys.argv[1:]:
        port, body = spec.split("=")
        reply = answer(body.encode())
        await loop.create_server(lambda r=reply: Canned(r), "127.0.0.1", int(port), backlog=1024)
    await asyncio.Event().wait()

(uvloop.run if uvloop else asyncio.run)(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def state(stable: int, canary: int, share: int) -> dict[str, Any]:
    """The desired state: one service on `/`, a stable and a canary backend."""

    def backend(instance: str, port: int, track: str) -> dict[str, Any]:
        return {
            "id": f"{instance}_{port}",
            "instance": instance,
            "address": f"127.0.0.1:{port}",
            "track": track,
            "state": "ready",
            "weight": 100,
            "probe": 0,
        }

    return {
        "routes": {"web": [{"host": None, "path": "/"}]},
        "services": {
            "web": {
                "canary": share,
                "backends": [
                    backend("web-0", stable, "stable"),
                    backend("web-c", canary, "canary"),
                ],
            }
        },
    }


# --- processes ----------------------------------------------------------------------


class Processes:
    """Every process this run starts, each the leader of its own process group, so the
    group (HAProxy workers, a router's HAProxy) goes with it."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self, argv: list[str], cpu: int, log: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        tasksets = shutil.which("taskset") is not None
        if tasksets:
            argv = ["taskset", "-c", str(cpu), *argv]
        with open(self.folder / log, "ab") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=self.folder,
            )
        if not tasksets:  # at once, before it starts anything of its own
            os.sched_setaffinity(process.pid, {cpu})
        self.running.append(process)
        return process

    def log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.folder / name).read_text(errors="replace")[-2000:]
        return ""

    def stop(self, process: subprocess.Popen[bytes], gently: bool = False) -> None:
        """SIGTERM to the leader alone (a router then stops its own HAProxy), a moment to
        go, then SIGKILL to whatever of the group is left."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                if gently:
                    process.send_signal(signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(5)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        if process in self.running:
            self.running.remove(process)

    def stop_all(self) -> None:
        for process in list(self.running):
            self.stop(process)


def wait_port(port: int, process: subprocess.Popen[bytes], seconds: float = 10) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the process for port {port} exited ({process.returncode})")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on port {port} after {seconds:g} s")


class Plane:
    """A data plane process (`python -m sqlifier.router`) and a blocking control
    connection to it."""

    def __init__(
        self,
        kind: str,
        processes: Processes,
        cpu: int,
        source: Path = ROOT,
        label: str | None = None,
    ) -> None:
        """`source`: the source tree whose sqlifier runs (--before: another version's);
        `label`: the data plane's name in the report (its kind by default)."""
        self.kind = label or kind
        self.processes = processes
        self.port = free_port()
        self.state_dir = processes.folder / f"plane-{self.kind}"
        self.log = f"plane-{self.kind}.log"
        self.state_dir.mkdir()
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(
                filter(None, [str(source), os.environ.get("PYTHONPATH")])
            ),
            # HAProxy's unix sockets go under here: inside this run's folder, removed with it.
            "XDG_RUNTIME_DIR": str(processes.folder / "run"),
        }
        (processes.folder / "run").mkdir(mode=0o700, exist_ok=True)
        argv = [sys.executable, "-m", "sqlifier.router", "--state-dir", str(self.state_dir)]
        argv += ["--kind", kind, "--listen", f"127.0.0.1:{self.port}"]
        self.process = processes.start(argv, cpu, self.log, env)
        self.sock: socket.socket | None = None
        self.buffer = b""
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the {kind} data plane exited:\n{processes.log(self.log)}")
            sock = socket.socket(socket.AF_UNIX)
            try:
                sock.connect(str(self.state_dir / "router.sock"))
            except OSError:
                sock.close()
                time.sleep(0.05)
                continue
            self.sock = sock
            self.call({"op": "ping"})
            return
        raise RuntimeError(f"the {kind} data plane did not answer:\n{processes.log(self.log)}")

    def send(self, message: dict[str, Any]) -> None:
        assert self.sock is not None
        self.sock.sendall(json.dumps(message).encode() + b"\n")

    def receive(self) -> dict[str, Any]:
        assert self.sock is not None
        while b"\n" not in self.buffer:
            chunk = self.sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError(f"the {self.kind} data plane closed its control socket")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"the {self.kind} data plane refused: {reply}")
        return reply

    def call(self, message: dict[str, Any]) -> dict[str, Any]:
        self.send(message)
        return self.receive()

    def sync(self, desired: dict[str, Any]) -> None:
        self.call({"op": "sync", "state": desired})

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.processes.stop(self.process, gently=True)


# --- HTTP ---------------------------------------------------------------------------


class Client:
    """One kept-alive client connection; reopened if the other side closed it."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def get(self) -> tuple[int, bytes]:
        for attempt in range(2):
            try:
                self.connection.request("GET", "/")
                response = self.connection.getresponse()
                return response.status, response.read()
            except (http.client.HTTPException, ConnectionError):
                self.connection.close()
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        self.connection.close()


def expect(port: int, body: bytes, seconds: float = 10) -> None:
    """Wait until GET / on `port` answers 200 with `body`."""
    deadline = time.monotonic() + seconds
    seen: object = None
    while time.monotonic() < deadline:
        client = Client(port)
        try:
            seen = client.get()
            if seen == (200, body):
                return
        except OSError as exc:
            seen = exc
        finally:
            client.close()
        time.sleep(0.05)
    raise RuntimeError(f"port {port} did not answer 200 {body!r}; last: {seen!r}")


# --- load ---------------------------------------------------------------------------


@dataclass
class Round:
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu: tuple[float, float] | None  # busy share of the proxy's CPU and the load's CPU
    python: float | None  # share of a core the data plane's Python process used


@dataclass
class Result:
    """A case over its rounds: requests/s averaged, p50 the median, p99 the worst."""

    case: str
    rounds: list[Round]

    @property
    def rps(self) -> float:
        return statistics.fmean(r.rps for r in self.rounds)

    @property
    def spread(self) -> float:
        """(highest - lowest) / mean requests/s over the rounds."""
        values = [r.rps for r in self.rounds]
        return (max(values) - min(values)) / self.rps if self.rps else 0.0

    @property
    def p50_ms(self) -> float:
        return statistics.median(r.p50_ms for r in self.rounds)

    @property
    def p99_ms(self) -> float:
        return max(r.p99_ms for r in self.rounds)

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)

    @property
    def cpu(self) -> tuple[float, float] | None:
        shares = [r.cpu for r in self.rounds if r.cpu is not None]
        if not shares:
            return None
        return statistics.fmean(c[0] for c in shares), statistics.fmean(c[1] for c in shares)

    @property
    def python(self) -> float | None:
        shares = [r.python for r in self.rounds if r.python is not None]
        return statistics.fmean(shares) if shares else None

    @property
    def cpu_us(self) -> float | None:
        """Microseconds of CPU the data plane's Python process spent per request (the
        rounds' median): what a request costs, less moved by other work on the machine
        than requests/s."""
        costs = [r.python / r.rps * 1e6 for r in self.rounds if r.python is not None and r.rps]
        return statistics.median(costs) if costs else None


def paired(result: Result, base: Result) -> float:
    """The median over the rounds of result's requests/s over base's in the same round:
    the rounds take turns, so a change of the machine's speed between rounds (other
    work, the host) touches both sides of each ratio alike."""
    return statistics.median(r.rps / b.rps for r, b in zip(result.rounds, base.rounds, strict=True))


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    match = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    if match is None:
        raise ValueError(f"not a wrk duration: {text!r}")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_wrk(output: str) -> tuple[float, float, float, int]:
    """(requests/s, p50 ms, p99 ms, errors) from `wrk --latency` output."""
    rps = re.search(r"Requests/sec:\s+([\d.]+)", output)
    p50 = re.search(r"^\s+50%\s+(\S+)", output, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", output, re.M)
    if rps is None or p50 is None or p99 is None:
        raise RuntimeError(f"cannot read wrk's output:\n{output}")
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    if non2xx:
        errors += int(non2xx.group(1))
    sockets = re.search(r"Socket errors:(.*)", output)
    if sockets:
        errors += sum(int(n) for n in re.findall(r"\d+", sockets.group(1)))
    return float(rps.group(1)), _ms(p50.group(1)), _ms(p99.group(1)), errors


def busy(cpus: tuple[int, int]) -> Callable[[], tuple[float, float] | None]:
    """Start measuring how busy two CPUs are; the returned function ends it."""
    if psutil is None:
        return lambda: None
    before = psutil.cpu_times(percpu=True)

    def done() -> tuple[float, float]:
        after = psutil.cpu_times(percpu=True)
        shares = []
        for cpu in cpus:
            spent = [b - a for a, b in zip(before[cpu], after[cpu], strict=True)]
            idle = after[cpu].idle - before[cpu].idle
            idle += getattr(after[cpu], "iowait", 0) - getattr(before[cpu], "iowait", 0)
            shares.append(1 - idle / sum(spent) if sum(spent) else 0.0)
        return shares[0], shares[1]

    return done


@dataclass
class Target:
    """Where a case sends its load, and the data plane process to watch, if any."""

    case: str
    port: int
    python: subprocess.Popen[bytes] | None = None


def wrk(port: int, seconds: float, args: argparse.Namespace, cpu: int) -> str:
    argv = ["wrk", "-t", str(args.threads), "-c", str(args.connections)]
    argv += ["-d", f"{max(1, round(seconds))}s", "--latency", "--timeout", "5s"]
    argv += [f"http://127.0.0.1:{port}/"]
    result = subprocess.run(
        ["taskset", "-c", str(cpu), *argv] if shutil.which("taskset") else argv,
        capture_output=True,
        text=True,
        check=False,
        timeout=seconds + 30,
    )
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed: {result.stderr or result.stdout}")
    return result.stdout


def measure(
    target: Target, seconds: float, args: argparse.Namespace, cpus: tuple[int, int]
) -> Round:
    """One wrk run at the target from the load CPU, with the CPUs' and the data plane's
    Python process's (without its children) CPU time over it."""
    watched = psutil.Process(target.python.pid) if psutil and target.python else None
    spent = sum(watched.cpu_times()[:2]) if watched else 0.0
    started = time.monotonic()
    done = busy(cpus)
    output = wrk(target.port, seconds, args, cpus[1])
    cpu = done()
    share = None
    if watched:
        share = (sum(watched.cpu_times()[:2]) - spent) / (time.monotonic() - started)
    rps, p50, p99, errors = parse_wrk(output)
    return Round(rps, p50, p99, errors, cpu, share)


def load(
    targets: list[Target], args: argparse.Namespace, cpus: tuple[int, int]
) -> dict[str, Result]:
    """Every target warmed up, then measured in `args.rounds` interleaved rounds of
    seconds / rounds each, so a slow drift of the machine's speed touches all alike."""
    results = {t.case: Result(t.case, []) for t in targets}
    for target in targets:
        if args.warmup > 0:
            wrk(target.port, args.warmup, args, cpus[1])
    each = max(1.0, args.seconds / args.rounds)
    for _ in range(args.rounds):
        for target in targets:
            results[target.case].rounds.append(measure(target, each, args, cpus))
            time.sleep(0.3)  # let a data plane catch up (HAProxy's request log)
    return results


# --- split switch -------------------------------------------------------------------


@dataclass
class Switch:
    kind: str
    reply_ms: list[float]
    in_force_ms: list[float]
    late: int  # requests sent after the reply that the canary still answered


def switch(plane: Plane, stable: int, canary: int, repeat: int) -> Switch:
    """Canary 1000 -> 0, timed from the sync sent to its reply and to stable answering."""
    client = Client(plane.port)
    replies: list[float] = []
    in_force: list[float] = []
    late = 0
    try:
        for _ in range(repeat):
            plane.sync(state(stable, canary, 1000))
            deadline = time.monotonic() + 5
            while client.get() != (200, b"canary"):  # in force on reply: the first one
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{plane.kind}: canary 1000 never reached the canary")
            time.sleep(0.02)
            message = {"op": "sync", "state": state(stable, canary, 0)}
            sent = time.perf_counter()
            plane.send(message)
            plane.receive()
            replied = time.perf_counter()
            deadline = time.monotonic() + 5
            while True:
                answer = client.get()
                if answer == (200, b"stable"):
                    break
                late += 1
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{plane.kind}: canary 0 never reached stable: {answer}")
            answered = time.perf_counter()
            replies.append((replied - sent) * 1e3)
            in_force.append((answered - sent) * 1e3)
    finally:
        client.close()
    return Switch(plane.kind, replies, in_force, late)


# --- the run ------------------------------------------------------------------------


def pick_cpus() -> tuple[int, int]:
    """CPU 0 for the proxy, CPU 1 for the backend and wrk (the first two allowed)."""
    allowed = sorted(os.sched_getaffinity(0))
    if len(allowed) < 2:
        print(f"only CPU {allowed[0]} is available: proxy and load share it\n")
        return allowed[0], allowed[0]
    return allowed[0], allowed[1]


def start_backend(
    processes: Processes, haproxy: str | None, cpu: int, stable: int, canary: int
) -> None:
    if haproxy:
        config = processes.folder / "backend.cfg"
        config.write_text(BACKEND_CONFIG.format(timeouts=TIMEOUTS, stable=stable, canary=canary))
        process = processes.start([haproxy, "-db", "-f", str(config)], cpu, "backend.log")
    else:
        script = processes.folder / "backend.py"
        script.write_text(PY_BACKEND)
        argv = [sys.executable, str(script), f"{stable}=stable", f"{canary}=canary"]
        process = processes.start(argv, cpu, "backend.log")
    try:
        for port in (stable, canary):
            wait_port(port, process)
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{processes.log('backend.log')}") from None
    expect(stable, b"stable")
    expect(canary, b"canary")


def static_haproxy(processes: Processes, haproxy: str, cpu: int, stable: int, minimal: bool) -> int:
    port = free_port()
    name = "minimal" if minimal else "static"
    config = processes.folder / f"{name}.cfg"
    if minimal:
        config.write_text(STATIC_CONFIG.format(timeouts=TIMEOUTS, port=port, stable=stable))
    else:
        files = Files(processes.folder / name, processes.folder / name)
        files.root.mkdir(exist_ok=True)
        only_stable = DesiredState.from_json(state(stable, stable + 1, 0))
        traffic = only_stable.services["web"]
        stable_only = {"web": ServiceTraffic(traffic.backends[:1], 0)}
        config.write_text(
            render_config(
                DesiredState(only_stable.routes, stable_only),
                "127.0.0.1",
                port,
                files,
                control=False,
            )
        )
    checked = subprocess.run(
        [haproxy, "-c", "-f", str(config)], capture_output=True, text=True, check=False
    )
    if checked.returncode != 0:
        raise RuntimeError(f"haproxy -c rejected the static configuration:\n{checked.stderr}")
    process = processes.start([haproxy, "-db", "-f", str(config)], cpu, f"{name}.log")
    wait_port(port, process)
    expect(port, b"stable")
    return port


def run(args: argparse.Namespace, folder: Path) -> None:
    haproxy = shutil.which("haproxy")
    wrk_found = shutil.which("wrk")
    if not haproxy:
        print("haproxy is not installed: haproxy-static and haproxy-driven are skipped, and the")
        print("backend is a small asyncio server instead of HAProxy.")
    if not wrk_found:
        print("wrk is not installed: the load cases (direct, haproxy-*, embedded) are skipped.")
    if not haproxy or not wrk_found:
        print()

    proxy_cpu, load_cpu = cpus = pick_cpus()
    os.sched_setaffinity(0, {load_cpu})  # this script's own work stays off the proxy's CPU
    stable, canary = free_port(), free_port()
    processes = Processes(folder)
    results: dict[str, Result] = {}
    switches: list[Switch] = []
    skipped: dict[str, str] = {}
    planes: list[Plane] = []
    try:
        start_backend(processes, haproxy, load_cpu, stable, canary)
        targets = [Target("direct", stable)]
        if haproxy:
            for case in ("haproxy-minimal", "haproxy-static"):
                port = static_haproxy(processes, haproxy, proxy_cpu, stable, case.endswith("l"))
                targets.append(Target(case, port))
        else:
            skipped["haproxy-minimal"] = skipped["haproxy-static"] = "no haproxy"
            skipped["haproxy-driven"] = "no haproxy"
        wanted = [("haproxy", "haproxy-driven", ROOT)] if haproxy else []
        wanted.append(("embedded", "embedded", ROOT))
        if args.before is not None:  # the same plane from another source tree, side by side
            wanted.append(("embedded", "embedded-before", args.before))
        for kind, case, source in wanted:
            plane = Plane(kind, processes, proxy_cpu, source, case if source != ROOT else None)
            planes.append(plane)
            plane.sync(state(stable, canary, 0))
            expect(plane.port, b"stable")
            targets.append(Target(case, plane.port, plane.process))
        if args.cases:
            wanted = set(args.cases.split(","))
            targets = [t for t in targets if t.case in wanted]
        if wrk_found:
            print(
                f"backend: {'HAProxy' if haproxy else 'asyncio'} on CPU {load_cpu}; wrk -t "
                f"{args.threads} -c {args.connections} on CPU {load_cpu}; proxies on CPU "
                f"{proxy_cpu}; {args.seconds:g} s per case in {args.rounds} interleaved rounds,"
                f" after {args.warmup:g} s of warm-up\n",
                flush=True,
            )
            results = load(targets, args, cpus)
        else:
            skipped.update({t.case: "no wrk" for t in targets})
        for plane in planes:
            switches.append(switch(plane, stable, canary, args.repeat))
    finally:
        for plane in planes:
            plane.close()
        processes.stop_all()
    report(results, switches, skipped, args)
    for plane in planes:
        complaints(plane.kind, processes.folder / plane.log)


def complaints(kind: str, log: Path) -> None:
    """Say so when a data plane wrote tracebacks to its log during the run."""
    with contextlib.suppress(OSError):
        text = log.read_text(errors="replace")
        count = text.count("Unhandled exception") or text.count("Traceback (most recent")
        if count:
            last = [line for line in text.splitlines() if line and not line[0].isspace()]
            print(
                f"note: the {kind} data plane logged {count} errors with tracebacks in the run; the"
                f" last says: {last[-1][:200] if last else '?'}"
            )


def report(
    results: dict[str, Result],
    switches: list[Switch],
    skipped: dict[str, str],
    args: argparse.Namespace,
) -> None:
    load_table(results, skipped)
    if switches:
        switch_table(switches, args.repeat)
    targets(results, switches)


def load_table(results: dict[str, Result], skipped: dict[str, str]) -> None:
    direct = results.get("direct")
    static = results.get("haproxy-static")
    print(
        f"{'case':16} {'requests/s':>11} {'spread':>7} {'vs static':>10} {'p50 ms':>8}"
        f" {'p99 ms':>8} {'p99 added':>10} {'CPU0 busy':>10} {'CPU1 busy':>10} {'python':>7}"
        f" {'us/req':>7} {'errors':>7}"
    )
    cases = ("direct", "haproxy-minimal", "haproxy-static", "haproxy-driven", "embedded")
    for case in (*cases, "embedded-before"):
        if case in skipped:
            print(f"{case:16} skipped: {skipped[case]}")
            continue
        if case not in results:
            continue
        r = results[case]
        ratio = f"{paired(r, static):.2f}x" if static else "-"
        added = f"{r.p99_ms - direct.p99_ms:.2f}" if direct and case != "direct" else "-"
        cpu0, cpu1 = (f"{r.cpu[0]:.0%}", f"{r.cpu[1]:.0%}") if r.cpu else ("-", "-")
        python = f"{r.python:.0%}" if r.python is not None else "-"
        cost = f"{r.cpu_us:.1f}" if r.cpu_us is not None else "-"
        print(
            f"{case:16} {r.rps:11,.0f} {r.spread:7.0%} {ratio:>10} {r.p50_ms:8.2f}"
            f" {r.p99_ms:8.2f} {added:>10} {cpu0:>10} {cpu1:>10} {python:>7} {cost:>7}"
            f" {r.errors:7d}"
        )
    if results:
        print(
            "spread: highest minus lowest requests/s of the rounds, over their mean; vs static: the"
            " median\nof the rounds' ratios to haproxy-static's requests/s in the same round; p50:"
            " the rounds' median;\np99: the worst round's; p99 added: minus direct's; python: the"
            " data plane's Python process\n(a share of a core, without the HAProxy it runs);"
            " us/req: its CPU microseconds per request (the rounds' median)"
        )
    if direct and direct.cpu and direct.cpu[0] > 0.15:
        print(
            f"warning: CPU 0 was {direct.cpu[0]:.0%} busy during the direct case, with no proxy"
            " on it: something else is running and the numbers are disturbed"
        )
    errors = sum(r.errors for r in results.values())
    if errors:
        print(f"warning: {errors} failed requests (non-2xx or socket errors) in the load runs")


def switch_table(switches: list[Switch], repeat: int) -> None:
    print(f"\nsplit switch, canary 1000 -> 0, {repeat} times (ms from the sync sent):")
    print(
        f"{'data plane':16} {'reply p50':>10} {'reply max':>10} {'in force p50':>13}"
        f" {'in force max':>13} {'canary after reply':>19}"
    )
    for s in switches:
        print(
            f"{s.kind:16} {statistics.median(s.reply_ms):10.2f} {max(s.reply_ms):10.2f}"
            f" {statistics.median(s.in_force_ms):13.2f} {max(s.in_force_ms):13.2f}"
            f" {s.late:19d}"
        )
    late = sum(s.late for s in switches)
    if late:
        print(f"warning: {late} requests sent after a sync reply were answered by the old split")


def targets(results: dict[str, Result], switches: list[Switch]) -> None:
    print("\ntargets")

    def line(name: str, value: float | None, unit: str, target: str, ok: bool) -> None:
        shown = "-" if value is None else f"{value:.2f}{unit}"
        verdict = "not measured" if value is None else "met" if ok else "NOT MET"
        print(f"  {name:44} {shown:>10}   target {target:10} {verdict}")

    direct, static = results.get("direct"), results.get("haproxy-static")
    embedded, driven = results.get("embedded"), results.get("haproxy-driven")
    ratio = paired(embedded, static) if embedded and static else None
    line(
        "embedded / haproxy-static requests/s",
        ratio,
        "x",
        f">= {EMBEDDED_RATIO:.2f}x",
        ratio is not None and ratio >= EMBEDDED_RATIO,
    )
    ratio = paired(driven, static) if driven and static else None
    line(
        "haproxy-driven / haproxy-static requests/s",
        ratio,
        "x",
        f">= {DRIVEN_RATIO:.2f}x",
        ratio is not None and ratio >= DRIVEN_RATIO,
    )
    added = embedded.p99_ms - direct.p99_ms if embedded and direct else None
    line(
        "embedded p99 added latency",
        added,
        " ms",
        f"<= {ADDED_P99_MS:g} ms",
        added is not None and added <= ADDED_P99_MS,
    )
    before = results.get("embedded-before")
    if embedded and before:  # no target: how this tree compares with the one given
        ratio = paired(embedded, before)
        print(f"  {'embedded / embedded-before requests/s':44} {ratio:>9.2f}x   (no target)")
        if embedded.cpu_us is not None and before.cpu_us is not None:
            ratio = embedded.cpu_us / before.cpu_us
            name = "embedded / embedded-before CPU per request"
            print(f"  {name:44} {ratio:>9.2f}x   (no target)")
    for kind in ("haproxy", "embedded"):
        found = next((s for s in switches if s.kind == kind), None)
        worst = max(found.in_force_ms) if found else None
        line(
            f"split switch in force, {kind} (slowest)",
            worst,
            " ms",
            f"<= {SWITCH_MS:g} ms",
            found is not None and worst is not None and worst <= SWITCH_MS and found.late == 0,
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=40, help="measured seconds per case")
    parser.add_argument("--rounds", type=int, default=10, help="interleaved rounds per case")
    parser.add_argument("--warmup", type=float, default=1, help="seconds of load before each")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--repeat", type=int, default=20, help="split switches per data plane")
    parser.add_argument(
        "--before",
        type=Path,
        default=None,
        help="a source tree (holding sqlifier/) whose embedded plane runs beside this one's,"
        " as the case embedded-before (say, `git archive main sqlifier | tar -x -C DIR`)",
    )
    parser.add_argument(
        "--cases", default="", help="only these load cases, comma-separated (default: all)"
    )
    args = parser.parse_args()

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through the finally blocks that stop processes

    signal.signal(signal.SIGTERM, interrupted)
    try:
        with tempfile.TemporaryDirectory(prefix="sqlifier-traffic-") as folder:
            run(args, Path(folder))
    except KeyboardInterrupt:
        print("interrupted; every process started was stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
