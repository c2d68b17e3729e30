"""The dashboard's routes: pages, the live event stream, login and actions.

    GET  /  /services/<name>  /rules  /deploys  /audit  /dora     pages (read-only for all)
         ?fragment=1                                             just the page's <main>
    GET  /events                                                 server-sent events
    GET  /login?code=…  → session cookie, 303 without the code      POST /logout
    POST /actions/<what>                                         needs the login
    GET  /static/…                                               css, script, uPlot

Pages are rendered on the server (Jinja2, autoescaped); the script layer (`static/app.js`)
follows `/events` and, on each change, fetches the page's fragment and swaps it in — no
full-page reload. One watcher compares the agent's state twice a second while anyone
watches and tells every open stream at once; fragments are rendered once per change and
shared by every dashboard showing that page.

Every action is a POST with the session cookie, the session's CSRF token and `confirm=yes`
(set by the script once the user confirmed); it goes through the agent's own API (`call`)
as the logged-in user, who is the one the audit log names. No secret reaches a page: the
pages show no environment values, and everything sent is passed through the agent's
redactor, which masks every secret value it has resolved.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mimetypes
import time
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any
from urllib.parse import quote

import jinja2

from sqlifier.dashboard import views
from sqlifier.dashboard.auth import (
    Logins,
    Session,
    clear_cookie,
    same_origin,
    set_cookie,
    token_matches,
)
from sqlifier.dashboard.source import Source
from sqlifier.dashboard.web import Request, Response, Stream

__all__ = ["ACTIONS", "Dashboard"]

WATCH_EVERY = 0.25  # seconds between two looks at the agent's state while someone watches
KEEPALIVE = 15.0  # seconds between comments on an idle event stream

# action -> (method and path of the agent's API, the form fields it takes)
ACTIONS: dict[str, tuple[str, tuple[str, ...]]] = {
    "rule-pause": ("/v1/rules/pause", ("rule",)),
    "rule-resume": ("/v1/rules/resume", ("rule",)),
    "rollout-pause": ("/v1/rollout", ("service",)),
    "rollout-resume": ("/v1/rollout", ("service",)),
    "rollout-abort": ("/v1/rollout", ("service",)),
    "approve": ("/v1/deploy/approve", ("id",)),
    "rollback": ("/v1/rollback", ("service",)),
    "scale": ("/v1/scale", ("service", "instances")),
}
PAGES = ("overview", "service", "rules", "deploys", "audit", "dora")
CHARTED = ("service", "deploys", "dora")  # the pages that load the chart library


class Dashboard:
    def __init__(self, source: Source, clock: Callable[[], float] = time.time) -> None:
        self.source = source
        self.clock = clock
        self.logins = Logins(clock)
        self.series = views.Series(source)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("sqlifier.dashboard", "templates"),
            autoescape=True,
            undefined=jinja2.StrictUndefined,
        )
        self.templates.globals["CHARTED"] = CHARTED
        self.templates.filters.update(
            when=_when, ago=lambda t: _ago(t, self.clock()), pct=_pct, num=_num, secs=_secs
        )
        self.version = 0
        self._seen: tuple[Any, ...] | None = None
        self._listeners: set[asyncio.Queue[int]] = set()
        self._watcher: asyncio.Task[None] | None = None
        self._fragments: dict[tuple[str, str, int], bytes] = {}

    # --- routing ---------------------------------------------------------------------

    async def handle(self, request: Request) -> Response | Stream:
        path, method = request.path, request.method
        if path.startswith("/static/"):
            return _static(path.removeprefix("/static/"))
        if path == "/events" and method == "GET":
            return Stream(self._events())
        if path == "/login" and method == "GET":
            return self._login(request)
        if path == "/logout" and method == "POST":
            return self._logout(request)
        if path.startswith("/actions/"):
            if method != "POST":
                return _text(405, "actions are POST requests", (("Allow", "POST"),))
            return await self._act(request, path.removeprefix("/actions/"))
        if method not in ("GET", "HEAD"):
            return _text(405, f"{method} is not allowed on {path}", (("Allow", "GET"),))
        return self._page(request)

    # --- pages -----------------------------------------------------------------------

    def _page(self, request: Request) -> Response:
        found = self._route(request.path)
        if found is None:
            return self._render(request, "missing", "Not found", {"path": request.path}, 404)
        page, title, data = found
        return self._render(request, page, title, data)

    def _route(self, path: str) -> tuple[str, str, Any] | None:
        now = self.clock()
        source = self.source
        if path == "/":
            return "overview", "Overview", lambda: views.overview(source, self.series, now)
        if path.startswith("/services/"):
            name = path.removeprefix("/services/")
            if name not in source.stack.services_for(source.env):
                return None
            return "service", name, lambda: views.service(source, self.series, name, now)
        simple: dict[str, tuple[str, Callable[[], Any]]] = {
            "/deploys": ("Deploys", lambda: views.deploys(source, self.series, now)),
            "/audit": ("Audit", lambda: views.audit(source)),
            "/dora": ("DORA", lambda: views.dora(source, now)),
        }
        if path == "/rules":
            return "rules", "Rules", None
        if path in simple:
            title, make = simple[path]
            return path.strip("/"), title, make
        return None

    def _render(
        self, request: Request, page: str, title: str, data: Any, status: int = 200
    ) -> Response:
        if self._watcher is None:
            # No one watches: the version is brought up to date first, so that the page's
            # own event stream, once it connects, does not fetch the same page again.
            self._look()
        session = self.logins.session(request.headers.get("cookie", ""))
        fragment = request.query.get("fragment") == "1"
        key = (request.path + "?" + _query_key(request), page, self.version)
        if fragment and status == 200 and key in self._fragments and session is None:
            return Response(200, self._fragments[key])
        if page == "rules":
            values = views.rules(self.source, self.clock(), request.query)
        elif callable(data):
            values = data()
        else:
            values = data
        context = {
            "page": page,
            "title": title,
            "data": values,
            "session": session,
            "user": session.user if session else None,
            "csrf": session.csrf if session else "",
            "stack": self.source.stack.name,
            "env": self.source.env,
            "version": self.version,
            "now": self.clock(),
            "charts": json.dumps(_charts(page, values)),
        }
        name = "fragment.html" if fragment else "page.html"
        html = self.templates.get_template(name).render(**context)
        body = self.source.redact(html).encode()
        if fragment and status == 200 and session is None:
            if len(self._fragments) > 256:
                self._fragments.clear()
            self._fragments[key] = body
        return Response(status, body)

    # --- login -----------------------------------------------------------------------

    def login_link(self, user: str, base: str) -> str:
        """A one-time link that logs `user` in (what `sqlifier dashboard` prints)."""
        return f"{base}/login?code={quote(self.logins.code_for(user))}"

    def _login(self, request: Request) -> Response:
        session = self.logins.redeem(request.query.get("code", ""))
        if session is None:
            return _text(
                403,
                "this login link is unknown, used or expired; run `sqlifier dashboard` for a "
                "new one",
            )
        target = request.query.get("next", "/")
        if not target.startswith("/") or target.startswith("//"):
            target = "/"
        cookie = set_cookie(session, self.clock())
        return Response(303, b"", headers=(("Location", target), ("Set-Cookie", cookie)))

    def _logout(self, request: Request) -> Response:
        session = self.logins.session(request.headers.get("cookie", ""))
        refusal = self._refusal(request, session)
        if refusal is not None:
            return refusal
        assert session is not None
        self.logins.end(session)
        return Response(303, b"", headers=(("Location", "/"), ("Set-Cookie", clear_cookie())))

    # --- actions ---------------------------------------------------------------------

    def _refusal(self, request: Request, session: Session | None) -> Response | None:
        host = request.headers.get("host", "")
        if not same_origin(request.headers.get("origin"), host):
            return _json(403, {"ok": False, "error": "refused: the request came from another site"})
        if session is None:
            return _json(
                401,
                {"ok": False, "error": "log in first: run `sqlifier dashboard` for a login link"},
            )
        if not token_matches(request.form().get("csrf", ""), session):
            return _json(403, {"ok": False, "error": "refused: the form's CSRF token is wrong"})
        return None

    async def _act(self, request: Request, what: str) -> Response:
        session = self.logins.session(request.headers.get("cookie", ""))
        refusal = self._refusal(request, session)
        if refusal is not None:
            return refusal
        assert session is not None
        if what not in ACTIONS:
            known = ", ".join(ACTIONS)
            return _json(404, {"ok": False, "error": f"no action {what!r}; actions: {known}"})
        form = request.form()
        if form.get("confirm") != "yes":
            return _json(400, {"ok": False, "error": "not confirmed: confirm the action first"})
        path, fields = ACTIONS[what]
        body: dict[str, Any] = {}
        for name in fields:
            value = form.get(name, "")
            if not value and not (what.startswith("rule-") and name == "rule"):
                return _json(400, {"ok": False, "error": f"{what} needs {name}"})
            body[name] = value or None
        if what.startswith("rollout-"):
            body["action"] = what.removeprefix("rollout-")
        if what == "scale":
            try:
                body["instances"] = int(form["instances"])
            except ValueError:
                return _json(400, {"ok": False, "error": "instances must be a whole number"})
        status, answer = await self.source.call("POST", path, body, session.user)
        ok = status == 200 and isinstance(answer, dict) and answer.get("ok", True) is not False
        message = _message(answer)
        self.poke()
        shown = self.source.redact(message)
        return _json(200 if ok else 409, {"ok": ok, "message": shown, "error": "" if ok else shown})

    # --- live ------------------------------------------------------------------------

    def poke(self) -> None:
        """Look at the state now (after an action) rather than at the next tick."""
        self._look()

    def _look(self) -> None:
        seen = views.fingerprint(self.source, self.clock())
        if seen != self._seen:
            self._seen = seen
            self.version += 1
            self._fragments.clear()
            for queue in list(self._listeners):
                with contextlib.suppress(asyncio.QueueFull):
                    queue.put_nowait(self.version)

    async def _watch(self) -> None:
        while self._listeners:
            with contextlib.suppress(Exception):
                self._look()
            await asyncio.sleep(WATCH_EVERY)
        self._watcher = None

    async def _events(self) -> AsyncIterator[bytes]:
        queue: asyncio.Queue[int] = asyncio.Queue(maxsize=8)
        self._listeners.add(queue)
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch())
        try:
            yield f"retry: 1000\nevent: hello\ndata: {self.version}\n\n".encode()
            while True:
                try:
                    version = await asyncio.wait_for(queue.get(), KEEPALIVE)
                except TimeoutError:
                    yield b": keep-alive\n\n"
                    continue
                while not queue.empty():
                    version = queue.get_nowait()
                yield f"event: change\ndata: {version}\n\n".encode()
        finally:
            self._listeners.discard(queue)

    @property
    def watchers(self) -> int:
        return len(self._listeners)


def _charts(page: str, values: Any) -> Any:
    if page == "service" and isinstance(values, dict):
        return values.get("charts", [])
    if page == "deploys" and isinstance(values, dict):
        return [c for run in values.get("live", []) for c in run["charts"]]
    if page == "dora" and isinstance(values, dict):
        return {"trend": values.get("trend", []), "names": values.get("names", [])}
    return None


def _message(answer: Any) -> str:
    if not isinstance(answer, dict):
        return str(answer)
    for key in ("message", "error", "reason", "state"):
        if answer.get(key):
            return str(answer[key])
    return "done" if answer.get("ok", True) else "refused"


def _query_key(request: Request) -> str:
    return "&".join(f"{k}={v}" for k, v in sorted(request.query.items()) if k != "fragment")


def _json(status: int, body: Any) -> Response:
    return Response(status, json.dumps(body).encode(), "application/json")


def _text(status: int, text: str, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, f"{text}\n".encode(), "text/plain; charset=utf-8", headers)


_STATIC = resources.files("sqlifier.dashboard") / "static"


def _static(name: str) -> Response:
    parts = name.split("/")
    if any(part in ("", ".", "..") for part in parts):
        return _text(404, "not found")
    item = _STATIC.joinpath(*parts)
    if not item.is_file():
        return _text(404, f"no static file {name!r}")
    kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if kind.startswith("text/") or kind.endswith("javascript"):
        kind += "; charset=utf-8"
    return Response(200, item.read_bytes(), kind, (("Cache-Control", "max-age=3600"),))


def _when(t: float | None) -> str:
    if t is None:
        return "—"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _ago(t: float | None, now: float) -> str:
    if t is None:
        return "—"
    return _secs(max(0.0, now - t)) + " ago"


def _secs(seconds: float | None) -> str:
    return "—" if seconds is None else views.seconds_text(float(seconds))


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value * 100:.2f}%"


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    return f"{value:.{digits}g}"
