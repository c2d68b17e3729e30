"""Logins, sessions and CSRF of the dashboard, with an injected clock (no waiting)."""

from __future__ import annotations

from sqlifier.dashboard.auth import (
    CODE_TTL,
    COOKIE,
    SESSION_TTL,
    Logins,
    same_origin,
    set_cookie,
    token_matches,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_login_code_opens_one_session_once() -> None:
    logins = Logins(Clock())
    code = logins.code_for("ana")
    session = logins.redeem(code)
    assert session is not None and session.user == "ana"
    assert logins.redeem(code) is None


def test_a_login_code_expires() -> None:
    clock = Clock()
    logins = Logins(clock)
    code = logins.code_for("ana")
    clock.now += CODE_TTL
    assert logins.redeem(code) is None


def test_a_session_expires() -> None:
    clock = Clock()
    logins = Logins(clock)
    session = logins.redeem(logins.code_for("ana"))
    assert session is not None
    header = f"other=1; {COOKIE}={session.id}"
    assert logins.session(header) == session
    clock.now += SESSION_TTL
    assert logins.session(header) is None


def test_the_cookie_is_http_only_and_same_site_strict_with_its_expiry() -> None:
    clock = Clock()
    logins = Logins(clock)
    session = logins.redeem(logins.code_for("ana"))
    assert session is not None
    cookie = set_cookie(session, clock.now)
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    assert f"Max-Age={int(SESSION_TTL)}" in cookie


def test_a_post_from_another_origin_is_refused() -> None:
    assert same_origin("http://127.0.0.1:9465", "127.0.0.1:9465")
    assert not same_origin("http://127.0.0.1:8000", "127.0.0.1:9465")
    assert not same_origin("null", "127.0.0.1:9465")


def test_the_csrf_token_must_be_the_sessions() -> None:
    logins = Logins(Clock())
    session = logins.redeem(logins.code_for("ana"))
    assert session is not None
    assert token_matches(session.csrf, session)
    assert not token_matches("", session)
