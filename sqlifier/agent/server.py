"""The agent: one process per stack and environment, running the supervisor and serving
a small JSON API on a unix socket beside its state.

    .sqlifier/<env>/agent.sock   the API (0600), every request with the token
    .sqlifier/<env>/token        the token (0600)
    .sqlifier/<env>/agent.json   pid and start time of the agent; its phase; its error
    .sqlifier/<env>/audit.db     who did what (SQLite)
    .sqlifier/<env>/decisions.db every decision of the rules, with its reason (SQLite)
    .sqlifier/<env>/history.db   signal history at 10 s resolution, for backtests
    .sqlifier/<env>/engine.json  rule state (pending since, cooldowns, budgets, pauses)

API (JSON, `Authorization: Bearer TOKEN`): GET /v1/status, POST /v1/scale
{"service", "instances"}, POST /v1/restart {"service"}, POST /v1/traffic {"service",
"canary_percent"}, GET /v1/rules, POST /v1/rules/explain {"rule", "service"},
POST /v1/rules/pause and /v1/rules/resume {"rule"}, POST /v1/shutdown,
GET /v1/openapi.json.

While the stack runs, `automation.py` measures it, runs the rules and serves `/metrics`
for Prometheus on `[metrics] listen` (127.0.0.1:9464 by default).

When a service has routes, the agent also runs the data plane (`traffic.py`): started
before the services, given each instance once it is ready, draining each before it stops,
stopped last.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import psutil

from sqlifier.agent.automation import Automation
from sqlifier.agent.deployer import Deployer
from sqlifier.agent.files import agent_files, read_json
from sqlifier.errors import UserError
from sqlifier.platform.local import LocalPlatform
from sqlifier.platform.traffic import RouterFailed, Traffic
from sqlifier.runtime.private import private_dir
from sqlifier.runtime.process import is_same_process
from sqlifier.runtime.supervisor import Event, StartFailed, Supervisor
from sqlifier.secrets.local import LocalStore
from sqlifier.secrets.resolver import SecretResolver
from sqlifier.signals.exposition import CONTENT_TYPE, render
from sqlifier.stack.model import Stack
from sqlifier.store.audit import AuditLog

__all__ = ["OPENAPI", "Agent"]

MAX_REQUEST = 64 * 1024

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "sqlifier agent", "version": "1"},
    "paths": {
        "/v1/status": {"get": {"summary": "The agent's phase and every instance"}},
        "/v1/scale": {
            "post": {
                "summary": "Run N instances of a service",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["service", "instances"],
                                "properties": {
                                    "service": {"type": "string"},
                                    "instances": {"type": "integer", "minimum": 0},
                                },
                            }
                        }
                    }
                },
            }
        },
        "/v1/restart": {"post": {"summary": "Replace a service's instances one at a time"}},
        "/v1/traffic": {
            "post": {
                "summary": "Give a service's canary track a share of its requests",
                "requestBody": {
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "required": ["service", "canary_percent"],
                                "properties": {
                                    "service": {"type": "string"},
                                    "canary_percent": {
                                        "type": "number",
                                        "minimum": 0,
                                        "maximum": 100,
                                    },
                                },
                            }
                        }
                    }
                },
            }
        },
        "/v1/shutdown": {"post": {"summary": "Stop every service, then the agent"}},
        "/v1/rules": {"get": {"summary": "Every rule and service: state, values, last firing"}},
        "/v1/rules/explain": {
            "post": {"summary": "Why a rule ({rule, service?}) did or did not fire"}
        },
        "/v1/rules/pause": {"post": {"summary": "Stop a rule ({rule}) or all rules from acting"}},
        "/v1/rules/resume": {"post": {"summary": "Let a rule ({rule}) or all rules act again"}},
        "/v1/deploy": {
            "post": {
                "summary": "Deploy a made release ({service, version, reason?, approve?, "
                "lock_wait?}): approval, lock, then the canary rollout"
            }
        },
        "/v1/deploy/approve": {"post": {"summary": "Second approval of a deploy ({id})"}},
        "/v1/deploy/status": {"post": {"summary": "A deploy's or rollback's record ({id})"}},
        "/v1/rollout": {
            "post": {"summary": "Abort, pause or resume a rollout ({service, action, reason?})"}
        },
        "/v1/rollback": {
            "post": {
                "summary": "Roll a service back ({service, to?, force?, approve?, reason?}): "
                "traffic first"
            }
        },
        "/v1/secrets/rotate": {
            "post": {"summary": "Deliver a local secret's new version ({name}): restarts"}
        },
    },
}


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
        self.supervisor = Supervisor(stack, env, state_dir, on_event=self._event)
        self.traffic = Traffic(stack, env, state_dir, self.supervisor, say=self._say)
        self.supervisor.before_stop = self.traffic.drain
        self.deployer: Deployer  # made once this agent holds the lock (run)
        self.audit: AuditLog  # opened once this agent holds the lock (run)
        self.automation: Automation | None = None  # rules run once the stack is up
        self.metrics_error: str | None = None
        self.phase = "starting"
        self.error: str | None = None
        self.stopping = asyncio.Event()
        self.token = ""

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
            # A replacement half-way through a restart is not adopted: it is stopped.
            str(record["instance"]) + ("#replacement" if record.get("replacement") else ""): record
            for record in previous.get("instances", [])
            if isinstance(record, dict) and record.get("pid") and record.get("started")
        }

    async def run(self, ready_timeout: float = 60.0) -> int:
        """Serve until shut down; 0 after a clean stop, 1 when the stack failed to start."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._lock()
        self.audit = AuditLog(self.files["audit"])
        self.deployer = Deployer(
            self.stack, self.env, self.state_dir, LocalPlatform(self.supervisor, self.traffic),
            self.audit, self._say,
        )  # fmt: skip
        self.deployer.load_live()  # services with a live release run it
        self._wire_secrets()
        previous = self._left_running()
        self.supervisor.adoptable = self._adoptable(previous)
        left_router = previous.get("router") if previous else None
        self.token = _write_secret(self.files["token"], secrets.token_urlsafe(32))
        socket_path = self.files["socket"]
        server = await self._open_socket(socket_path)
        self._write_info()
        code = 0
        saver = asyncio.create_task(self._save_periodically())
        try:
            await self._start_router(left_router)
            if await self._start_unless_stopped(ready_timeout):
                self.traffic.go_live()
                self.deployer.resume_requests()
                with contextlib.suppress(Exception):
                    await self.traffic.sync()  # routing in force before `up` returns
                async with self._automation():  # rules answer once `up` returns
                    self.phase = "running"
                    self.audit.record(self.who, "up", f"{self.stack.name}/{self.env}", "ok")
                    self._write_info()
                    await self.stopping.wait()
        except (StartFailed, RouterFailed) as exc:
            self.phase, self.error, code = "failed", str(exc), 1
            self.audit.record(self.who, "up", f"{self.stack.name}/{self.env}", f"failed: {exc}")
            self._write_info()
        finally:
            saver.cancel()
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
        return code

    @contextlib.asynccontextmanager
    async def _automation(self) -> AsyncIterator[None]:
        """Signals, rules and /metrics, while the stack runs."""
        automation = Automation(
            self.stack, self.env, self.state_dir, self.supervisor, self.traffic, self.audit,
            self._say,
        )  # fmt: skip
        automation.redact = self.secrets.redact
        automation.deployer = self.deployer
        automation.world.rolled_back_from = self.deployer.rolled_back_from
        if self.stack.notify.webhook is not None:
            self.deployer.notify = automation.notifier.notify
        automation.load()
        self.automation = automation
        metrics = await self._serve_metrics()
        tasks = [asyncio.create_task(automation.run()), asyncio.create_task(self._refresh())]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            if metrics is not None:
                metrics.close()
                await metrics.wait_closed()

    async def _refresh(self) -> None:
        """References with `refresh`: re-resolved on their period; a changed value is
        delivered like a rotation (one instance at a time, through the drain path)."""
        while True:
            await asyncio.sleep(1.0)
            try:
                changed = await self.secrets.changed(time.time())
            except Exception as exc:  # never end the loop; say why
                self._say(f"secrets: refresh failed: {type(exc).__name__}: {exc}")
                continue
            for service in sorted({service for service, _ in changed}):
                refs = ", ".join(ref for name, ref in changed if name == service)
                await self._deliver(service, "agent", f"refresh: {refs} changed")

    async def _deliver(self, service: str, who: str, why: str) -> str:
        target = f"{self.stack.name}/{self.env}/{service}"
        try:
            await self.supervisor.restart(service)
        except StartFailed as exc:
            self.audit.record(who, "secret rotate", f"{target} ({why})", f"failed: {exc}")
            return f"failed: {exc}"
        self.audit.record(who, "secret rotate", f"{target} ({why})", "ok")
        return "ok"

    async def _rotate(self, body: Any, who: str) -> tuple[int, Any]:
        name = body.get("name") if isinstance(body, dict) else None
        if not isinstance(name, str) or not name:
            return 400, {"error": "rotate needs the secret's name"}
        store = LocalStore(self.state_dir, self.env)
        info = store.info(name)
        if info is None:
            return 200, {"ok": False, "error": f"no secret {name} in {self.env}"}
        services = self.secrets.users(f"secret://local/{name}")
        results = {}
        for service in services:
            results[service] = await self._deliver(service, who, f"{name} version {info.version}")
        if all(r == "ok" for r in results.values()):
            store.mark_delivered(name, info.version)
        return 200, {"ok": True, "version": info.version, "services": results}

    async def _serve_metrics(self) -> asyncio.Server | None:
        """/metrics for Prometheus on [metrics] listen; a taken port is reported, not fatal."""
        address = self.stack.metrics
        if address is None:
            return None
        try:
            return await asyncio.start_server(self._serve_scrape, address[0], address[1])
        except OSError as exc:
            self.metrics_error = (
                f"cannot serve /metrics on {address[0]}:{address[1]}: {exc.strerror}"
            )
            self._say(f"metrics: {self.metrics_error}")
            return None

    async def _serve_scrape(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            target = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            if target.split(b"?")[0] == b"/metrics" and self.automation is not None:
                status, body = "200 OK", render(self.automation.metrics()).encode()
                kind = CONTENT_TYPE
            else:
                status, body, kind = "404 Not Found", b"not found; try /metrics\n", "text/plain"
            writer.write(
                f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\nContent-Length: {len(body)}"
                "\r\nConnection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    async def _open_socket(self, path: Path) -> asyncio.Server:
        """The API's unix socket, only the owner can open it (0600)."""
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        old_umask = os.umask(0o177)
        try:
            return await asyncio.start_unix_server(self._serve, path=str(path))
        finally:
            os.umask(old_umask)

    def _wire_secrets(self) -> None:
        """Instances get their secrets just before they start; output is masked."""
        self.secrets = SecretResolver(
            self.stack, self.env, self.state_dir, self.audit, say=self._say
        )
        self.supervisor.secrets = self.secrets.for_instance
        self.supervisor.after_stop = self.secrets.forget
        self.supervisor.redactor = self.secrets.redact

    async def _start_router(self, left: Any) -> None:
        await self.traffic.start(left if isinstance(left, dict) else None)

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
            "router": self.traffic.snapshot(),
            "updated": time.time(),
        }
        temp = self.files["info"].with_suffix(".tmp")
        temp.write_text(json.dumps(info, indent=2))
        temp.replace(self.files["info"])

    # --- the API ------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await self._handle(reader)
        except (ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            status, body = 400, {"error": f"bad request: {exc}"}
        payload = json.dumps(body).encode()
        reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found"}
        writer.write(
            f"HTTP/1.1 {status} {reason.get(status, 'Error')}\r\nContent-Type: application/json"
            f"\r\nContent-Length: {len(payload)}\r\nConnection: close\r\n\r\n".encode()
            + payload
        )
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    async def _handle(self, reader: asyncio.StreamReader) -> tuple[int, Any]:
        head = await reader.readuntil(b"\r\n\r\n")
        if len(head) > MAX_REQUEST:
            raise ValueError("request too large")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                key, _, value = line.partition(":")
                headers[key.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if length > MAX_REQUEST:
            raise ValueError("body too large")
        raw = await reader.readexactly(length) if length else b"{}"
        if not secrets.compare_digest(headers.get("authorization", ""), f"Bearer {self.token}"):
            return 401, {"error": "missing or wrong token"}
        body = json.loads(raw or b"{}")
        return await self._route(method, path, body, headers.get("x-sqlifier-user", "unknown"))

    async def _route(self, method: str, path: str, body: Any, who: str) -> tuple[int, Any]:
        if (method, path) == ("GET", "/v1/status"):
            return 200, self._status()
        if (method, path) == ("GET", "/v1/openapi.json"):
            return 200, OPENAPI
        if (method, path) == ("POST", "/v1/shutdown"):
            self.audit.record(who, "down", f"{self.stack.name}/{self.env}", "ok")
            self.stopping.set()
            return 200, {"stopping": True}
        if (method, path) in (("POST", "/v1/scale"), ("POST", "/v1/restart")):
            return await self._operate(path.rsplit("/", 1)[1], body, who)
        if (method, path) == ("POST", "/v1/traffic"):
            return await self._split(body, who)
        if path.startswith("/v1/rules"):
            return self._rules(method, path, body, who)
        if (method, path) == ("POST", "/v1/secrets/rotate"):
            return await self._rotate(body, who)
        if path.startswith(("/v1/deploy", "/v1/rollback", "/v1/rollout")) and method == "POST":
            return await self._delivery(path, body if isinstance(body, dict) else {}, who)
        return 404, {"error": f"no such endpoint: {method} {path}"}

    async def _operate(self, what: str, body: Any, who: str) -> tuple[int, Any]:
        name = body.get("service") if isinstance(body, dict) else None
        services = self.supervisor.services
        if name not in services:
            return 404, {"error": f"unknown service {name!r}; services: {', '.join(services)}"}
        target = f"{self.stack.name}/{self.env}/{name}"
        try:
            if what == "scale":
                count = body.get("instances")
                if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= 1000:
                    return 400, {"error": "instances must be a whole number from 0 to 1000"}
                await self.supervisor.scale(name, count)
                target += f" to {count}"
            else:
                await self.supervisor.restart(name)
        except StartFailed as exc:
            self.audit.record(who, what, target, f"failed: {exc}")
            self._write_info()
            return 200, {"ok": False, "error": str(exc), "status": self._status()}
        self.audit.record(who, what, target, "ok")
        self._write_info()
        return 200, {"ok": True, "status": self._status()}

    async def _split(self, body: Any, who: str) -> tuple[int, Any]:
        name = body.get("service") if isinstance(body, dict) else None
        routed = self.traffic.routes
        if name not in routed:
            listed = ", ".join(routed) or "none"
            return 404, {"error": f"{name!r} is not a service with routes; routed: {listed}"}
        share = body.get("canary_percent")
        if not isinstance(share, int | float) or isinstance(share, bool) or not 0 <= share <= 100:
            return 400, {"error": "canary_percent must be a number from 0 to 100"}
        target = f"{self.stack.name}/{self.env}/{name} canary {share:g}%"
        await self.traffic.set_canary(name, float(share))
        self.audit.record(who, "traffic", target, "ok")
        return 200, {"ok": True, "canary_percent": share}

    async def _delivery(self, path: str, body: dict[str, Any], who: str) -> tuple[int, Any]:
        """Deploys, approvals, rollout controls and rollbacks (deployer.py)."""
        if self.phase != "running":
            return 200, {"ok": False, "error": f"the stack is {self.phase}; deploys need it up"}
        deployer = self.deployer
        if path == "/v1/deploy":
            ok, data = await deployer.deploy(body, who)
        elif path == "/v1/deploy/approve":
            ok, data = await deployer.approve(body, who)
        elif path == "/v1/deploy/status":
            found = deployer.status(str(body.get("id", "")))
            ok, data = found is not None, found or {"error": f"no deploy {body.get('id')!r}"}
        elif path == "/v1/rollback":
            ok, data = await deployer.rollback(body, who)
        elif path == "/v1/rollout":
            action = str(body.get("action", ""))
            done, message = deployer.control(
                str(body.get("service")), action, who, str(body.get("reason") or "")
            )
            ok, data = done, {"message": message, "error": message}
        else:
            return 404, {"error": f"no such endpoint: POST {path}"}
        return 200, {**data, "ok": ok}

    def _rules(self, method: str, path: str, body: Any, who: str) -> tuple[int, Any]:
        automation = self.automation
        if automation is None:
            return 200, {
                "ok": False,
                "error": "the stack is still starting; rules run once it is up",
            }
        body = body if isinstance(body, dict) else {}
        rule = body.get("rule")
        if rule is not None and not isinstance(rule, str):
            return 400, {"error": "rule must be a rule name or FILE:LINE"}
        if (method, path) == ("GET", "/v1/rules"):
            return 200, automation.listing()
        if (method, path) == ("POST", "/v1/rules/explain"):
            service = body.get("service")
            if rule is None or (service is not None and not isinstance(service, str)):
                return 400, {"error": "explain needs a rule, and optionally a service"}
            if service is not None and service not in self.supervisor.services:
                known = ", ".join(self.supervisor.services)
                unknown = f"unknown service {service!r}; services: {known}"
                return 200, {"ok": False, "error": unknown}
            ok, found = automation.explain(rule, service)
            return 200, {"ok": True, "explain": found} if ok else {"ok": False, "error": found}
        if (method, path) in (("POST", "/v1/rules/pause"), ("POST", "/v1/rules/resume")):
            ok, message = automation.pause(rule, who, path.endswith("pause"))
            return 200, {"ok": ok, "message": message, "error": message}
        return 404, {"error": f"no such endpoint: {method} {path}"}

    def _status(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "error": self.error,
            "stack": self.stack.name,
            "env": self.env,
            "pid": os.getpid(),
            "instances": self.supervisor.snapshot(),
            "router": self.traffic.snapshot(),
            "traffic": self.traffic.summary(),
            "metrics": self._metrics_address(),
        }

    def _metrics_address(self) -> dict[str, Any] | None:
        address = self.stack.metrics
        if address is None:
            return None
        return {"url": f"http://{address[0]}:{address[1]}/metrics", "error": self.metrics_error}


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
