"""The agent: one process per stack and environment, and the one place it is put together.

    .sqlifier/<env>/agent.sock   the API (0600), every request with the token (`api.py`)
    .sqlifier/<env>/token        the token (0600)
    .sqlifier/<env>/agent.json   pid and start time of the agent; its phase; its error
    .sqlifier/<env>/audit.db     who did what (SQLite)
    .sqlifier/<env>/decisions.db every decision of the rules, with its reason (SQLite)
    .sqlifier/<env>/history.db   signal history at 10 s resolution, for backtests
    .sqlifier/<env>/engine.json  rule state (pending since, cooldowns, budgets, pauses)

(`files.py` names them for the CLI, which reads them without importing the agent.)

This module is the composition root: once the agent holds the stack's lock, `_compose`
builds every component through its constructor, in the order they depend on each other —
the audit log, the secret resolver, the supervisor, the data plane's keeper, the platform
over those two, the deployer, the API's endpoints — and, once the stack is up, the
automation. It is the only module of the agent that knows the supervisor and the data
plane; everything above reaches them through the platform (`sqlifier.platform`).

The API (`api.py`, `endpoints.py`, described by `openapi.py`) is served on the unix
socket, and while the stack runs, `/metrics` for Prometheus on `[metrics] listen`
(127.0.0.1:9464 by default), both through `runtime/http.py`.

When a service has routes, the agent also runs the data plane (`platform/traffic.py`):
started before the services, given each instance once it is ready, draining each before
it stops, stopped last.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil

from sqlifier.agent.api import BACKLOG, Api
from sqlifier.agent.automation import Automation
from sqlifier.agent.dashboard_source import AgentSource
from sqlifier.agent.deployer import Deployer
from sqlifier.agent.endpoints import Endpoints
from sqlifier.agent.figures import metrics
from sqlifier.agent.files import agent_files, read_json, write_json
from sqlifier.agent.secretsync import SecretSync
from sqlifier.dashboard import Dashboard
from sqlifier.dashboard import start as start_dashboard
from sqlifier.engine.series import SeriesStore
from sqlifier.engine.state import Decision
from sqlifier.errors import UserError
from sqlifier.platform.local import LocalPlatform
from sqlifier.platform.traffic import RouterFailed, Traffic
from sqlifier.runtime import http
from sqlifier.runtime.private import private_dir
from sqlifier.runtime.process import is_same_process
from sqlifier.runtime.supervisor import Event, Instance, StartFailed, Supervisor
from sqlifier.secrets.resolver import SecretResolver
from sqlifier.signals.exposition import CONTENT_TYPE, render
from sqlifier.signals.samplers import Samplers
from sqlifier.stack.model import Stack
from sqlifier.store.audit import AuditLog
from sqlifier.store.decisions import DecisionLog

__all__ = ["Agent"]


class Agent:
    def __init__(
        self,
        stack: Stack,
        env: str,
        state_dir: Path,
        on_event: Callable[[Event], None] | None = None,
        who: str = "agent",
    ) -> None:
        self.stack = stack
        self.env = env
        self.state_dir = state_dir
        self.files = agent_files(state_dir)
        self.who = who
        self.on_event = on_event
        self.target = f"{stack.name}/{env}"
        self.automation: Automation | None = None  # rules run once the stack is up
        self.metrics_error: str | None = None
        self.dashboard: Dashboard | None = None
        self.dashboard_error: str | None = None
        self.phase = "starting"
        self.error: str | None = None
        self.stopping = asyncio.Event()
        # Built by _compose once this agent holds the stack's lock:
        self.audit: AuditLog
        self.secrets: SecretResolver
        self.supervisor: Supervisor
        self.traffic: Traffic
        self.platform: LocalPlatform
        self.deployer: Deployer
        self.secret_sync: SecretSync
        self.endpoints: Endpoints

    # --- putting it together ------------------------------------------------------------

    def _compose(self) -> None:
        """Every component, through its constructor, in the order they depend on each other."""
        stack, env, state_dir = self.stack, self.env, self.state_dir
        self.audit = AuditLog(self.files["audit"])
        # Instances get their secrets just before they start; output is masked.
        self.secrets = SecretResolver(stack, env, state_dir, self.audit, say=self._say)
        self.supervisor = Supervisor(
            stack,
            env,
            state_dir,
            on_event=self._event,
            before_stop=self._drain,
            secrets=self.secrets.for_instance,
            after_stop=self.secrets.forget,
            redactor=self.secrets.redact,
        )
        self.traffic = Traffic(stack, env, state_dir, self.supervisor, say=self._say)
        self.supervisor.discovery = self.traffic.discovery_env  # ORDERS_URL...
        self.supervisor.on_oom = self._oom_killed
        self.platform = LocalPlatform(self.supervisor, self.traffic)
        self.deployer = Deployer(stack, env, state_dir, self.platform, self.audit, self._say)
        self.secret_sync = SecretSync(
            self.target, env, state_dir, self.platform, self.secrets, self.audit, self._say
        )
        routed = self.traffic.routes
        self.endpoints = Endpoints(
            self.target, self, self.platform, lambda: list(routed), self.deployer,
            self.secret_sync, self.audit,
        )  # fmt: skip

    def _automate(self) -> Automation:
        """Signals and rules, from the moment the stack is up: lines count from then on."""
        store = SeriesStore()
        traffic = self.traffic if self.traffic.needed else None
        engine = self.stack.engine
        samplers = Samplers(
            store, self.supervisor, traffic, cpu_window=engine.cpu_window, interval=engine.interval
        )
        self.supervisor.on_lines = samplers.on_lines
        self.supervisor.on_denied = samplers.on_denied
        automation = Automation(
            self.stack, self.env, self.state_dir, self.platform, samplers, self.deployer,
            self.audit, self.secrets.redact, self.deployer.rolled_back_from, self._say,
        )  # fmt: skip
        if self.stack.notify.webhook is not None:
            self.deployer.notify = automation.notifier.notify
        self.deployer.budget = automation.budget
        return automation

    def _oom_killed(self, instance: Instance, what: str) -> None:
        """An OOM kill goes in the decision record, beside what the rules did."""
        decision = Decision(time.time(), "runtime", instance.service.name, "oom killed", what)
        with contextlib.suppress(Exception):  # a full disk: `ps` and the log still say it
            DecisionLog(self.state_dir / "decisions.db").record([decision])

    async def _drain(self, instance: Instance) -> None:
        await self.traffic.drain(instance)

    # --- running ------------------------------------------------------------------------

    def _event(self, event: Event) -> None:
        """Every change is saved at once, so an agent that dies leaves an exact record of
        its instances for the next one to adopt."""
        self._write_info()
        self.traffic.changed()
        if self.on_event is not None:
            self.on_event(event)

    def _say(self, message: str) -> None:
        name, _, rest = message.partition(" ")
        self._event(Event(time.time(), name, "running", rest))

    async def run(self, ready_timeout: float = 60.0) -> int:
        """Serve until shut down; 0 after a clean stop, 1 when the stack failed to start."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        self._compose()
        previous = self._left_running()
        self.supervisor.adoptable = self._adoptable(previous)
        self.supervisor.keep_counts(previous.get("counts") if previous else None)
        self.deployer.load_live()  # services with a live release run it
        left_router = previous.get("router") if previous else None
        token = _write_secret(self.files["token"], secrets.token_urlsafe(32))
        socket_path = self.files["socket"]
        api = Api(token, self.endpoints.routes())
        server = await self._open_socket(socket_path, api)
        board = await self._serve_dashboard(api)
        self._write_info()
        code = 0
        saver = asyncio.create_task(self._save_periodically())
        try:
            await self.traffic.start(left_router if isinstance(left_router, dict) else None)
            if failed := await self.deployer.migrate_started():
                raise StartFailed(failed)
            if await self._start_unless_stopped(ready_timeout):
                self.traffic.go_live()
                self.deployer.resume_requests()
                with contextlib.suppress(Exception):
                    await self.traffic.sync()  # routing in force before `up` returns
                async with self._automation():  # rules answer once `up` returns
                    self.phase = "running"
                    self.audit.record(self.who, "up", self.target, "ok")
                    self._write_info()
                    await self.stopping.wait()
        except (StartFailed, RouterFailed) as exc:
            self.phase, self.error, code = "failed", str(exc), 1
            self.audit.record(self.who, "up", self.target, f"failed: {exc}")
            self._write_info()
        finally:
            saver.cancel()
            if board is not None:
                board.close()
            await self._stop_everything(server, socket_path)
        return code

    async def _stop_everything(self, server: asyncio.Server, socket_path: Path) -> None:
        await self.deployer.stop()
        if self.phase != "failed":
            self.phase = "stopping"
            self._write_info()
        await self.supervisor.stop()
        # Every instance has stopped and its output was read: the raw output files
        # (kept in memory, outside .sqlifier) go too.
        with contextlib.suppress(OSError):
            shutil.rmtree(private_dir(self.state_dir, "out"))
        await self.traffic.stop()
        server.close()
        await server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            socket_path.unlink()
        if self.phase != "failed":
            self.phase = "stopped"
        self._write_info()

    @contextlib.asynccontextmanager
    async def _automation(self) -> AsyncIterator[None]:
        """Signals, rules, secret refreshes and /metrics, while the stack runs."""
        automation = self._automate()
        automation.load()
        self.automation = automation
        scrapes = await self._serve_metrics()
        refresh = self.secret_sync.refresh()
        tasks = [asyncio.create_task(automation.run()), asyncio.create_task(refresh)]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if scrapes is not None:
                scrapes.close()
                await scrapes.wait_closed()

    # --- serving ------------------------------------------------------------------------

    async def _serve_metrics(self) -> asyncio.Server | None:
        """/metrics for Prometheus on [metrics] listen; a taken port is reported, not fatal."""
        address = self.stack.metrics
        if address is None:
            return None

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await http.serve(reader, writer, self._scrape, _plain)

        try:
            return await asyncio.start_server(serve, address[0], address[1])
        except OSError as exc:
            self.metrics_error = (
                f"cannot serve /metrics on {address[0]}:{address[1]}: {exc.strerror}"
            )
            self._say(f"metrics: {self.metrics_error}")
            return None

    async def _serve_dashboard(self, api: Api) -> asyncio.Server | None:
        """The web dashboard on [dashboard] listen; a taken port is reported, not fatal."""
        address = self.stack.dashboard
        if address is None:
            return None
        source = AgentSource(
            self, self.stack, self.env, self.state_dir, self.audit, api,
            self.secrets.redact, self.endpoints.disk,
        )  # fmt: skip
        self.dashboard = Dashboard(source)
        try:
            return await start_dashboard(self.dashboard, address[0], address[1])
        except OSError as exc:
            self.dashboard_error = (
                f"cannot serve the dashboard on {address[0]}:{address[1]}: {exc.strerror}"
            )
            self._say(f"dashboard: {self.dashboard_error}")
            return None

    def dashboard_login(self, who: str) -> dict[str, Any]:
        address = self.stack.dashboard
        if address is None:
            return {"ok": False, "error": 'the dashboard is off ([dashboard] listen = "off")'}
        if self.dashboard is None or self.dashboard_error is not None:
            return {"ok": False, "error": self.dashboard_error or "the dashboard is starting"}
        base = f"http://{address[0]}:{address[1]}"
        return {"ok": True, "url": base, "login": self.dashboard.login_link(who, base)}

    async def _scrape(self, request: http.Incoming) -> http.Outgoing:
        if request.target.split("?")[0] == "/metrics" and self.automation is not None:
            return http.Outgoing(200, render(metrics(self.automation)).encode(), CONTENT_TYPE)
        return _plain(404, "not found; try /metrics")

    async def _open_socket(self, path: Path, api: Api) -> asyncio.Server:
        """The API's unix socket, only the owner can open it (0600)."""

        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old_umask = os.umask(0o177)
        try:
            return await asyncio.start_unix_server(api.serve, path=str(path), backlog=BACKLOG)
        finally:
            os.umask(old_umask)

    # --- what the endpoints ask of the agent (endpoints.Host) ---------------------------

    def status(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "error": self.error,
            "stack": self.stack.name,
            "env": self.env,
            "pid": os.getpid(),
            "instances": self.supervisor.snapshot(),
            "counts": self.supervisor.counts,
            "router": self.traffic.snapshot(),
            "traffic": self.traffic.summary(),
            "metrics": self._metrics_address(),
        }

    def saved(self) -> None:
        self._write_info()

    def stop(self) -> None:
        self.stopping.set()

    def _metrics_address(self) -> dict[str, Any] | None:
        address = self.stack.metrics
        if address is None:
            return None
        return {"url": f"http://{address[0]}:{address[1]}/metrics", "error": self.metrics_error}

    # --- the agent's record -------------------------------------------------------------

    def _write_info(self) -> None:
        me = psutil.Process()
        info = {
            "pid": me.pid,
            "started": me.create_time(),
            "phase": self.phase,
            "error": self.error,
            "stack": self.stack.name,
            "env": self.env,
            "instances": self.supervisor.snapshot(),
            "counts": self.supervisor.counts,
            "router": self.traffic.snapshot(),
            "updated": time.time(),
        }
        self.info_error = write_json(self.files["info"], info)  # a full disk: said by status

    def _left_running(self) -> dict[str, Any] | None:
        """The record of an earlier agent of this stack that died while running."""
        previous = read_json(self.files["info"])
        if previous is None or previous.get("phase") not in ("starting", "running", "stopping"):
            return None
        if _alive(previous.get("pid"), previous.get("started")):
            return None
        return previous

    def _adoptable(self, previous: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
        """Instances an earlier agent of this stack left running when it died."""
        if previous is None:
            return {}
        return {
            # A replacement half-way through a restart is not adopted: it is stopped; a
            # canary is, when the deployer takes its rollout up again.
            str(record["instance"]) + _passing(record): record
            for record in previous.get("instances", [])
            if isinstance(record, dict) and record.get("pid") and record.get("started")
        }

    def _lock(self) -> None:
        """One agent per stack and environment: the second `up` of a race stops here."""
        handle = (self.state_dir / "agent.lock").open("a")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise UserError(
                f"another agent already runs {self.stack.name} in {self.env}; "
                "use sqlifier ps, or sqlifier down first"
            ) from None
        self._lock_handle = handle  # held, and the lock with it, until this process ends

    async def _start_unless_stopped(self, ready_timeout: float) -> bool:
        """Start the stack; a stop asked for meanwhile (Ctrl-C, down) wins at once."""
        starting = asyncio.create_task(self.supervisor.start(ready_timeout))
        stopped = asyncio.create_task(self.stopping.wait())
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        stopped.cancel()
        if starting.done():
            starting.result()  # raises StartFailed
            return True
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        return False

    async def _save_periodically(self) -> None:
        """Log offsets move without events: save them every few seconds, so an agent that
        follows reads on from (nearly) where this one stopped."""
        while True:
            await asyncio.sleep(2)
            self._write_info()


def _passing(record: dict[str, Any]) -> str:
    if record.get("track") == "canary":
        return "#canary"
    return "#replacement" if record.get("replacement") else ""


def _plain(status: int, text: str) -> http.Outgoing:
    return http.Outgoing(status, f"{text}\n".encode(), "text/plain")


def _write_secret(path: Path, value: str) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(value)
    os.chmod(path, 0o600)
    return value


def _alive(pid: object, started: object) -> bool:
    try:
        return is_same_process(int(str(pid)), float(str(started)))
    except ValueError:
        return False
