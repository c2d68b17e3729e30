"""The HAProxy data plane: HAProxy runs the traffic; this module drives it.

HAProxy (2.6+, the distribution's package) starts in master-worker mode with a generated
configuration that passes `haproxy -c`. Everything that changes while the stack runs goes
through its admin socket, without a reload:

- instances come and go with `add server` / `del server`,
- readiness, drain and ejection are `set server ... state ready|drain|maint`,
- weights are `set server ... weight`,
- each service's canary share is an entry of a map file, changed with `set map`.

The configuration changes (and HAProxy reloads, without dropping connections) only when the
stack's routes or services change. After every change the servers' state is saved to the
server-state file and the map file is rewritten, so an HAProxy that restarts comes back as
it was.

Counts come from `show stat`; latencies from HAProxy's request log, kept in an in-memory
ring this process streams. The configuration, its maps and the canary split's rules are
haproxy_config.py's; the admin socket is haproxy_admin.py's.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlifier.router.haproxy_admin import admin, drain, parse_servers_state, parse_stat, unrouted
from sqlifier.router.haproxy_config import (
    ERROR_PAGES,
    SAMPLE_RANGE,
    Files,
    HAProxyError,
    TlsBind,
    check_config,
    error_page,
    map_text,
    render_config,
    service_numbers,
    socket_dir,
    structure,
    track_backend,
)
from sqlifier.router.haproxy_master import Master, find_master
from sqlifier.router.haproxy_master import stop_left_behind as stop_master_left
from sqlifier.router.internal import with_internal_services
from sqlifier.router.listen import probe_bind
from sqlifier.router.metrics import BUCKETS_MS, CLASSES, Counters
from sqlifier.router.routes import Track
from sqlifier.router.state import Backend, BackendState, DesiredState
from sqlifier.router.tls import Certificates, probe_redirect

__all__ = ["HAProxyError", "HAProxyPlane", "find_haproxy", "render_config", "stop_left_behind"]

LOGGED = 250  # stable requests logged a second, about, when more arrive


def find_haproxy() -> str | None:
    return shutil.which("haproxy")


async def stop_left_behind(root: Path) -> bool:
    """Stop the HAProxy of the data plane whose folder is `root` if it outlived its data
    plane (killed with SIGKILL); whether there was one."""
    files = Files(root, root)  # the sockets' folder is not needed (nor made) for this
    return await stop_master_left(files.pid, files.config)


@dataclass
class _Server:
    spec: Backend
    backend: str
    ejected_at: int | None = None
    seen_econ: int | None = 0  # connection errors at the last look (None: not looked yet)


@dataclass
class HAProxyPlane:
    root: Path
    host: str
    port: int
    binary: str = "haproxy"
    kind: str = "haproxy"
    certificates: Certificates | None = None  # TLS at the front door
    files: Files = field(init=False)
    _state: DesiredState = field(default_factory=DesiredState)
    _structure: tuple[Any, ...] | None = None
    _servers: dict[str, _Server] = field(default_factory=dict)
    _deleting: dict[str, str] = field(default_factory=dict)  # id -> backend, once drained
    _latency: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    _latency_sum: Counter[tuple[str, str]] = field(default_factory=Counter)  # ms
    _master: Master | None = None
    _follower: asyncio.Task[None] | None = None
    _generation: int = 0
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _closing: bool = False
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _kept: int = SAMPLE_RANGE  # the log sample's size now, of SAMPLE_RANGE
    # A configuration or map that could not be written (a full disk): HAProxy goes on
    # with the one it runs, and the next change writes the whole state again.
    _unwritten: bool = False
    _running_routes: dict[str, Any] = field(default_factory=dict)  # the routes HAProxy has
    write_failures: int = 0
    write_error: str | None = None

    def __post_init__(self) -> None:
        self.files = Files(self.root, socket_dir(self.root))

    # --- starting and stopping HAProxy ----------------------------------------------

    async def start(self, initial: DesiredState | None = None) -> None:
        """Adopt the HAProxy a previous data plane of this stack left running (it keeps
        serving meanwhile), or start one. OSError when the listening address is taken by
        anything else (HAProxy itself would only say that it exited)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._state = with_internal_services(initial or DesiredState())
        self._master = find_master(self.files.pid, self.files.config)
        if self._master is not None:
            await self._adopt()
        else:
            probe_bind(self.host, self.port)
            if self.certificates is not None:
                probe_redirect(self.certificates.settings)
            await self._launch()
        for coroutine in (self._watch(), self._housekeeping()):
            task = asyncio.create_task(coroutine)
            self._tasks.add(task)

    async def _adopt(self) -> None:
        """Take over a running HAProxy without a reload (a reload would close its idle
        kept-alive client connections): learn its servers from `show servers state`
        and bring them to the saved state with runtime commands. Only if its backends are
        not the saved state's (its configuration is older) does it reload."""
        print(f"haproxy (pid {self._master.pid if self._master else '?'}) adopted", flush=True)
        try:
            await self._wait_admin(None)
            rows = parse_servers_state(await admin(self.files.admin, "show servers state"))
            names = (await admin(self.files.admin, "show backend")).splitlines()[1:]
            if not self._resume(rows, {name.strip() for name in names}):
                await self._reload()
                return
            sample = self.files.sample_map
            await self._run(
                [
                    f"set server {backend}/{key} state maint"
                    for key, backend in self._deleting.items()
                ]
                + [f"clear map {sample}; add map {sample} 0:{SAMPLE_RANGE - 1} 0"]
            )
            await self._apply_changes(DesiredState(), self._state)
            await self._save_server_state()
            self._follow_log()
        except (HAProxyError, OSError, TimeoutError) as exc:
            # It does not answer as it should: replace it.
            print(f"the adopted haproxy does not answer ({exc}); replacing it", flush=True)
            await self._stop_master(5.0)
            probe_bind(self.host, self.port)
            await self._launch()

    def _resume(self, rows: list[dict[str, str]], running: set[str]) -> bool:
        """What this process knows of HAProxy, from its backends' names (`running`) and
        servers (`rows`), each server taken to be draining, so that the saved state's
        readiness and weights are all sent again; servers the state no longer has are to
        be deleted. False if a backend of the state is missing (its configuration is
        older: it must be written anew)."""
        state = self._state
        backends = {track_backend(name, track) for name in state.routes for track in Track}
        if not backends <= running:
            return False
        wanted = {
            b.id: track_backend(name, b.track)
            for name, traffic in state.services.items()
            if name in state.routes
            for b in traffic.backends
        }
        self._structure = structure(state)
        self._running_routes = dict(state.routes)
        self._servers, self._deleting = {}, {}
        for row in rows:
            backend, key = row["be_name"], row["srv_name"]
            if backend not in backends:
                continue
            if wanted.get(key) == backend and key not in self._servers:
                track = Track.CANARY if backend.endswith(".canary") else Track.STABLE
                spec = Backend(
                    key,
                    key,
                    row["srv_addr"],
                    int(row["srv_port"]),
                    track,
                    BackendState.DRAIN,
                    weight=max(1, min(256, int(row["srv_uweight"]))),
                )
                self._servers[key] = _Server(spec, backend, seen_econ=None)
            else:
                self._deleting[key] = backend
        return True

    def _write_files(self) -> None:
        """The configuration and the files it names, for the state now (OSError when the
        disk refuses; each file is replaced whole or not at all)."""
        state = self._state
        self.files.errors.mkdir(exist_ok=True)
        for status in ERROR_PAGES:
            _write(self.files.errors / f"{status}.http", error_page(status), unchanged=True)
        _write(self.files.canary_map, map_text(state))
        _write(self.files.sample_map, f"0:{self._kept - 1} 0\n")
        tls = None
        if self.certificates is not None:
            listed = "".join(f"{path}\n" for path in self.certificates.files())
            _write(self.files.crt_list, listed, unchanged=True)
            settings = self.certificates.settings
            tls = TlsBind(self.files.crt_list, settings.redirect, settings.hsts)
        config = render_config(state, self.host, self.port, self.files, tls=tls)
        _write(self.files.config, config)
        check_config(self.binary, self.files.config)
        if not self.files.state.exists():
            _write(self.files.state, "")
        self._unwritten = False
        self.write_error = None

    def _write_config(self) -> None:
        state = self._state
        self._write_files()
        self._structure = structure(state)
        self._running_routes = dict(state.routes)
        self._servers = {
            b.id: _Server(b, track_backend(name, b.track))
            for name, traffic in state.services.items()
            if name in state.routes
            for b in traffic.backends
        }
        self._deleting.clear()

    def _write_failed(self, exc: OSError) -> None:
        """Count and say a failed write (the way control.py does for the router's state):
        the running configuration goes on serving; the next change writes it all again."""
        self._unwritten = True
        self.write_failures += 1
        self.write_error = f"cannot write {self.files.config}: {exc.strerror or exc}"
        print(
            f"router: {self.write_error} ({self.write_failures}); haproxy keeps its running"
            " configuration, and the next change writes it again",
            file=sys.stderr,
            flush=True,
        )

    async def _launch(self) -> None:
        try:
            self._write_config()
        except OSError as exc:
            # No HAProxy runs to keep serving: say what stopped it starting.
            raise HAProxyError(f"cannot write {self.files.config}: {exc.strerror or exc}") from exc
        process = await asyncio.create_subprocess_exec(
            self.binary,
            *("-W", "-db", "-f", str(self.files.config), "-p", str(self.files.pid)),
            stdin=subprocess.DEVNULL,
        )
        self._master = Master(process.pid, process)
        await self._wait_admin(None)
        self._follow_log()

    async def _wait_admin(self, old_worker: str | None) -> str:
        """Wait until a worker answers on the admin socket (a new one, after a reload)."""
        for _ in range(200):
            if self._master is None or not self._master.alive():
                code = self._master.code() if self._master else None
                raise HAProxyError(f"haproxy exited with code {code}")
            with contextlib.suppress(OSError, TimeoutError):
                info = await admin(self.files.admin, "show info", 1.0)
                pid = next((x.split(":", 1)[1] for x in info.splitlines() if x[:4] == "Pid:"), "")
                if pid and pid != old_worker:
                    return pid
            await asyncio.sleep(0.05)
        raise HAProxyError("haproxy did not open its admin socket within 10 s")

    async def put_in_force(self, changed: list[Path]) -> None:
        """Certificates replaced on disk (their combined files rewritten): HAProxy's
        runtime API takes each in a transaction, without a reload; connections stay."""
        for path in changed:
            try:
                pem = path.read_text().replace("\n\n", "\n").strip("\n")
                answer = await admin(self.files.admin, f"set ssl cert {path} <<\n{pem}\n")
                if "Transaction" not in answer:
                    raise HAProxyError(f"set ssl cert {path}: {answer.strip()}")
                answer = await admin(self.files.admin, f"commit ssl cert {path}")
                if "Success" not in answer:
                    raise HAProxyError(f"commit ssl cert {path}: {answer.strip()}")
            except (HAProxyError, OSError, TimeoutError) as exc:
                # HAProxy keeps the certificate it has; its file on disk is the new one,
                # which the next reload or restart reads.
                print(f"router: haproxy did not take {path.name}: {exc}", flush=True)

    async def _reload(self) -> bool:
        """A new configuration: the master starts a new worker; the old one finishes the
        requests it has and leaves. The server-state file carries states across. False
        when the configuration could not be written (the running one stays)."""
        await self._save_server_state()
        old = await self._worker_pid()
        try:
            self._write_config()
        except OSError as exc:
            self._write_failed(exc)
            return False
        assert self._master is not None
        self._master.signal(signal.SIGUSR2)
        await self._wait_admin(old)
        self._follow_log()
        return True

    async def _apply_within(self, previous: DesiredState, state: DesiredState) -> None:
        """The new configuration could not be written: put in force what the running one
        can hold, the instances and shares of the services it routes."""
        routes = self._running_routes

        def within(s: DesiredState) -> DesiredState:
            services = {name: t for name, t in s.services.items() if name in routes}
            return DesiredState(routes=dict(routes), services=services)

        try:
            await self._apply_changes(within(previous), within(state))
        except HAProxyError as exc:
            print(f"haproxy runtime change failed ({exc})", flush=True)

    async def _worker_pid(self) -> str | None:
        with contextlib.suppress(OSError, TimeoutError):
            info = await admin(self.files.admin, "show info", 1.0)
            return next((x.split(":", 1)[1] for x in info.splitlines() if x[:4] == "Pid:"), None)
        return None

    async def _watch(self) -> None:
        """HAProxy ended without being asked: start it again as it was."""
        while not self._closing:
            assert self._master is not None
            await self._master.wait()
            if self._closing:
                return
            await asyncio.sleep(1)
            async with self._lock:
                with contextlib.suppress(HAProxyError, OSError):
                    await self._launch()

    async def close(self) -> None:
        self._closing = True
        if self._follower is not None:
            self._follower.cancel()  # its open `show events -w` would hold HAProxy up
            with contextlib.suppress(asyncio.CancelledError):
                await self._follower
        for task in self._tasks:
            task.cancel()
        await self._stop_master(30.0)
        # HAProxy has ended: its sockets' folder goes with it (one per stack ever run).
        with contextlib.suppress(OSError):
            shutil.rmtree(self.files.sockets)
        with contextlib.suppress(OSError):
            self.files.pid.unlink()

    async def _stop_master(self, grace: float) -> None:
        """Soft stop (finish what is in flight), then SIGKILL after `grace` seconds."""
        master = self._master
        if master is None or not master.alive():
            return
        master.signal(signal.SIGUSR1)
        try:
            await asyncio.wait_for(master.wait(), grace)
        except TimeoutError:
            master.signal(signal.SIGKILL)
            await master.wait()

    # --- latencies from the request log ---------------------------------------------

    def _follow_log(self) -> None:
        """(Re)start reading the request log, from the worker that runs now."""
        if self._follower is not None:
            self._follower.cancel()
        self._follower = asyncio.create_task(self._read_log())

    async def _read_log(self) -> None:
        """Stream new lines of the `requests` ring (`show events -w -n`) and count them
        into the histograms. Lines are counted whole first (`%b %s %Ta` repeats a lot),
        so the work per request is a split and a dictionary increment.

        The socket is read once a second, not when data arrives: meanwhile the lines
        wait in the socket and then in the ring (4 MiB, some 150,000 lines), and
        neither this process nor HAProxy wakes up for each one."""
        loop = asyncio.get_running_loop()
        while True:
            sock = socket.socket(socket.AF_UNIX)
            sock.setblocking(False)
            try:
                await loop.sock_connect(sock, str(self.files.admin))
                await loop.sock_sendall(sock, b"show events requests -w -n\n")
                rest = b""
                while True:
                    data, open_ = drain(sock)
                    if data:
                        lines = (rest + data).split(b"\n")
                        rest = lines.pop()
                        for line, count in Counter(lines).items():
                            self._count_line(line, count)
                    if not open_:
                        break
                    await asyncio.sleep(1.0)
            except OSError:
                pass
            finally:
                sock.close()
            await asyncio.sleep(0.2)  # the worker went away (reload, restart)

    def _count_line(self, line: bytes, count: int) -> None:
        parts = line.split(b" ")
        if len(parts) != 3 or not parts[2].isdigit():
            return  # HAProxy's own messages (a server changed state)
        backend, server = parts[0].decode(), parts[1].decode()
        ms = int(parts[2])
        bucket = bisect.bisect_left(BUCKETS_MS, ms)
        for key in ((backend, server), (backend, "BACKEND")):
            histogram = self._latency.get(key)
            if histogram is None:
                histogram = self._latency[key] = [0] * (len(BUCKETS_MS) + 1)
            histogram[bucket] += count
            self._latency_sum[key] += ms * count

    # --- what the agent asks for ----------------------------------------------------

    async def apply(self, state: DesiredState) -> int:
        state = with_internal_services(state)  # their backends are rendered
        async with self._lock:
            previous, self._state = self._state, state
            if structure(state) != self._structure:
                if not await self._reload():
                    await self._apply_within(previous, state)
            else:
                try:
                    await self._apply_changes(previous, state)
                except HAProxyError as exc:
                    # A runtime change refused leaves HAProxy out of step with the state
                    # just recorded: a reload from the whole state puts it right.
                    print(f"haproxy runtime change failed ({exc}); reloading", flush=True)
                    await self._reload()
                if self._unwritten:
                    # The running HAProxy has it all; the files a restart reads lag.
                    try:
                        self._write_files()
                    except OSError as exc:
                        self._write_failed(exc)
            await self._save_server_state()
            self._generation += 1
            return self._generation

    async def _apply_changes(self, previous: DesiredState, state: DesiredState) -> None:
        # What adds capacity goes first, what takes it away last: a replacement is
        # ready before the instance it replaces starts draining, never after.
        ups: list[str] = []
        downs: list[str] = []
        wanted = {
            b.id: (track_backend(name, b.track), b)
            for name, traffic in state.services.items()
            if name in state.routes
            for b in traffic.backends
        }
        for key, gone in list(self._servers.items()):
            if key not in wanted or wanted[key][0] != gone.backend:
                downs.append(f"set server {gone.backend}/{key} state maint")
                self._deleting[key] = gone.backend
                del self._servers[key]
        for key, (backend_name, spec) in wanted.items():
            server = self._servers.get(key)
            if server is None:
                # Back before it was deleted, in the same backend. One that moved to the
                # other track (a promotion) is added there; the old one is deleted.
                revived = self._deleting.get(key) == backend_name
                if revived:
                    del self._deleting[key]
                else:
                    # A server added at runtime keeps no idle connections unless told
                    # to: without these, every request opens (and resets) one, and a
                    # stack halves its throughput after its first restart or deploy.
                    ups.append(
                        f"add server {backend_name}/{key} {spec.host}:{spec.port}"
                        f" weight {spec.weight} pool-max-conn -1 pool-purge-delay 5s"
                    )
                # Added (or kept) in maintenance: the state below makes it ready.
                server = self._servers[key] = _Server(spec, backend_name)
                server.spec = Backend(**{**_fields(spec), "state": BackendState.DRAIN})
                if revived:
                    server.seen_econ = None  # its counters did not start at zero
            if server.ejected_at is not None and spec.probe > server.ejected_at:
                server.ejected_at = None
                server.spec = Backend(**{**_fields(server.spec), "state": BackendState.DRAIN})
            if spec.weight != server.spec.weight:
                ups.append(f"set server {backend_name}/{key} weight {spec.weight}")
            if spec.state is not server.spec.state and server.ejected_at is None:
                command = f"set server {backend_name}/{key} state {spec.state.value}"
                (ups if spec.state is BackendState.READY else downs).append(command)
            server.spec = spec
        numbers = service_numbers(state)
        for name, traffic in state.services.items():
            before = previous.services.get(name)
            if name in state.routes and (before is None or before.canary != traffic.canary):
                number = numbers[name]
                ups.append(f"set map {self.files.canary_map} {number} {traffic.canary}")
        commands = ups + downs
        if commands:
            await self._run(commands)
        await self._delete_drained()
        if any(c.startswith("set map") for c in commands):
            try:
                _write(self.files.canary_map, map_text(state))
            except OSError as exc:  # HAProxy has the share already; only a restart reads it
                self._write_failed(exc)

    async def _run(self, commands: Iterable[str]) -> None:
        for command in commands:
            print(f"haproxy runtime: {command}", flush=True)  # the data plane's own log
            answer = (await admin(self.files.admin, command)).strip()
            if answer and not answer.startswith("New server registered"):
                raise HAProxyError(f"{command}: {answer}")

    async def _delete_drained(self) -> None:
        for key, backend in list(self._deleting.items()):
            answer = (await admin(self.files.admin, f"del server {backend}/{key}")).strip()
            if answer.startswith("Server deleted") or "No such server" in answer:
                del self._deleting[key]
                self._latency.pop((backend, key), None)

    async def _save_server_state(self) -> None:
        with contextlib.suppress(OSError, TimeoutError):
            _write(self.files.state, await admin(self.files.admin, "show servers state"))

    async def _housekeeping(self) -> None:
        """Four times a second: eject servers that refused connections (HAProxy already
        retried the request elsewhere), delete servers removed while still busy, and size
        the request log's sample to the request rate."""
        while True:
            await asyncio.sleep(0.25)
            async with self._lock:
                with contextlib.suppress(OSError, TimeoutError, HAProxyError):
                    await self._eject_refusing()
                    await self._delete_drained()

    async def _eject_refusing(self) -> None:
        rows = parse_stat(await admin(self.files.admin, "show stat -1 5 -1"))  # servers, frontend
        await self._sample(rows)
        for row in rows:
            server = self._servers.get(row["svname"])
            if server is None or server.backend != row["pxname"]:
                continue
            # A refused connection shows as a retry or a redispatch away from the server
            # (HAProxy sent the request elsewhere), or as a connection error.
            econ = sum(int(row[k] or 0) for k in ("econ", "wretr", "wredis"))
            seen = server.seen_econ
            if seen is None or econ < seen:  # first look, or a new worker since
                seen = econ
            if econ > seen and server.ejected_at is None:
                server.ejected_at = server.spec.probe
                await self._run([f"set server {server.backend}/{row['svname']} state maint"])
            server.seen_econ = econ

    async def _sample(self, rows: list[dict[str, str]]) -> None:
        """Keep about LOGGED stable requests a second in the request log: resize the
        sample map's range when the frontend's rate moved it by more than a quarter."""
        rate = next((int(r["req_rate"] or 0) for r in rows if r["svname"] == "FRONTEND"), None)
        if rate is None:
            return
        kept = sample_size(rate)
        if kept == self._kept or (
            SAMPLE_RANGE not in (kept, self._kept) and abs(kept - self._kept) * 4 <= self._kept
        ):
            return
        path = self.files.sample_map
        await self._run([f"clear map {path}; add map {path} 0:{kept - 1} 0"])
        self._kept = kept

    async def stats(self) -> dict[str, Any]:
        async with self._lock:
            rows = parse_stat(await admin(self.files.admin, "show stat"))
        backends: dict[str, Any] = {}
        services: dict[str, dict[str, Any]] = {}
        for row in rows:
            service, _, track = row["pxname"].rpartition(".")
            if track not in ("stable", "canary"):
                continue
            counters = Counters(
                requests=int(row["stot"] or 0),
                status={k: int(row[f"hrsp_{k}"] or 0) for k in CLASSES},
                failed=int(row["econ"] or 0) + int(row["eresp"] or 0),
            )
            histogram = self._latency.get((row["pxname"], row["svname"]))
            if histogram is not None:
                counters.latency = list(histogram)
                counters.latency_sum = float(self._latency_sum[row["pxname"], row["svname"]])
            if row["svname"] == "BACKEND":
                counters.requests = sum(counters.status.values())
                services.setdefault(service, {})[track] = counters.to_json()
                continue
            if row["svname"] == "FRONTEND":
                continue
            server = self._servers.get(row["svname"])
            backends[row["svname"]] = {
                "service": service,
                "instance": server.spec.instance if server else row["svname"],
                "track": track,
                "state": server.spec.state.value if server else "drain",
                "inflight": int(row["scur"] or 0),
                "ejected": bool(server and server.ejected_at is not None),
                **counters.to_json(),
            }
        return {
            "generation": self._generation,
            "write_failures": self.write_failures,
            "write_error": self.write_error,
            "unrouted": unrouted(rows),
            "backends": backends,
            "services": services,
        }


def sample_size(rate: int) -> int:
    """Of SAMPLE_RANGE random numbers, how many keep a stable request in the log at
    `rate` requests/s: all up to LOGGED a second, then about LOGGED a second."""
    if rate <= LOGGED:
        return SAMPLE_RANGE
    return max(1, SAMPLE_RANGE * LOGGED // rate)


def _fields(backend: Backend) -> dict[str, Any]:
    return {name: getattr(backend, name) for name in Backend.__slots__}


def _write(path: Path, text: str, unchanged: bool = False) -> None:
    """Replace `path` whole or not at all; `unchanged=True` leaves alone a file that
    already holds `text` (no write at all on a full disk)."""
    if unchanged:
        with contextlib.suppress(OSError):
            if path.read_text() == text:
                return
    temp = path.with_name(path.name + ".tmp")
    try:
        temp.write_text(text)
        os.replace(temp, path)
    except OSError:
        with contextlib.suppress(OSError):
            temp.unlink()  # a half-written file would only take more room
        raise
