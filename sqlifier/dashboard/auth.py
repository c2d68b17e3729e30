"""Who may act on the dashboard: one-time login codes, sessions with an expiry, CSRF tokens.

    sqlifier dashboard ──(agent API, its token)──► a login code (one use, 5 minutes)
    browser: GET /login?code=… ──► a session cookie (HttpOnly, SameSite=Strict, 8 hours)
                                ──► 303 to the page asked for: the code leaves the URL

Every action is a POST that carries the session's CSRF token in its form; a request whose
Origin names another site is refused before the token is looked at. Sessions live in the
agent's memory only: an agent that restarts logs everyone out. The clock is injected, so
expiry is tested without waiting.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "CODE_TTL",
    "COOKIE",
    "SESSION_TTL",
    "Logins",
    "Session",
    "clear_cookie",
    "same_origin",
    "set_cookie",
    "token_matches",
]

CODE_TTL = 300.0  # seconds a login code may wait before it is used
SESSION_TTL = 8 * 3600.0  # seconds a session lasts after its login
_MAX_CODES = 64  # codes waiting at once; the oldest is dropped beyond


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    user: str
    csrf: str
    expires: float


class Logins:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self._codes: dict[str, tuple[str, float]] = {}  # code -> (user, expires)
        self._sessions: dict[str, Session] = {}

    def code_for(self, user: str) -> str:
        """A new one-time login code for `user`."""
        now = self.clock()
        self._codes = {c: v for c, v in self._codes.items() if v[1] > now}
        while len(self._codes) >= _MAX_CODES:
            self._codes.pop(next(iter(self._codes)))
        code = secrets.token_urlsafe(24)
        self._codes[code] = (user, now + CODE_TTL)
        return code

    def redeem(self, code: str) -> Session | None:
        """The session a valid code opens; None for an unknown, used or expired code."""
        found = self._codes.pop(code, None)
        now = self.clock()
        if found is None or found[1] <= now:
            return None
        session = Session(
            secrets.token_urlsafe(32), found[0], secrets.token_urlsafe(24), now + SESSION_TTL
        )
        self._sessions[session.id] = session
        return session

    def session(self, cookie_header: str) -> Session | None:
        """The live session a Cookie header names, if any."""
        value = _cookie(cookie_header, COOKIE)
        if value is None:
            return None
        session = self._sessions.get(value)
        if session is None:
            return None
        if session.expires <= self.clock():
            del self._sessions[value]
            return None
        return session

    def end(self, session: Session) -> None:
        self._sessions.pop(session.id, None)


COOKIE = "sqlifier_session"


def set_cookie(session: Session, now: float) -> str:
    max_age = max(0, int(session.expires - now))
    return f"{COOKIE}={session.id}; Max-Age={max_age}; Path=/; HttpOnly; SameSite=Strict"


def clear_cookie() -> str:
    return f"{COOKIE}=; Max-Age=0; Path=/; HttpOnly; SameSite=Strict"


def _cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == name and value:
            return value
    return None


def same_origin(origin: str | None, host: str) -> bool:
    """A POST's Origin (when the browser sends one) must be this dashboard's own."""
    if origin is None or origin == "":
        return True  # not sent: the CSRF token decides
    scheme, _, rest = origin.partition("://")
    return scheme in ("http", "https") and rest == host


def token_matches(given: str, session: Session) -> bool:
    return secrets.compare_digest(given.encode(), session.csrf.encode())
