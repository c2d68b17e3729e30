"""A running stack with its dashboard, and headless Chromium (Debian's) driven by Playwright.

The stack runs for the whole module: one service `web` behind the router, a local secret
delivered to it, and rules that fire once `web` has more than two instances. Tests that need
the browser skip, saying so, where /usr/bin/chromium is not installed (.ci/run installs it).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.apps import APP
from tests.conftest import run_sqlifier
from tests.servers import free_port

SECRET = "hunter2-dashboard-secret-value"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARTEFACTS = (
    Path(os.environ.get("SQLIFIER_ARTEFACTS", Path(tempfile.gettempdir()) / "sqlifier-artefacts"))
    / "dashboard"
)

RULES = f"""\
RULE many ON instances() > 2 DO NOTIFY 'web has {{value}} instances';
RULE leaky ON instances() > 50 DO NOTIFY 'the password is {SECRET}';
RULE busy ON high_cpu(>80%) FOR 3m DO SCALE service.name TO instances + 2 LIMIT 6;
RULE holding ON instances() >= 1 FOR 10m DO NOTIFY 'web has held for 10 minutes';
"""


@dataclass
class Stack:
    root: Path
    url: str

    def cli(self, *args: str) -> Any:
        done = run_sqlifier(*args, cwd=self.root)
        assert done.returncode == 0, done.stderr + done.stdout
        return done.stdout

    def login_link(self) -> str:
        answer = json.loads(self.cli("dashboard", "--json"))
        assert answer["url"] == self.url
        return str(answer["login"])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("dashboard-stack")
    port, router = free_port(), free_port()
    (root / "app.py").write_text(APP)
    (root / "rules").mkdir()
    (root / "rules" / "web.sql").write_text(RULES)
    (root / "sqlifier.toml").write_text(
        f"""\
[stack]
name = "shop"

[dashboard]
listen = "127.0.0.1:{port}"

[metrics]
listen = "off"

[router]
kind = "embedded"
listen = "127.0.0.1:{router}"

[services.web]
run = "python3 app.py"
instances = 2
routes = ["/"]
secrets = {{ DB_PASSWORD = "secret://local/db_password" }}
"""
    )
    assert run_sqlifier("secret", "set", "db_password", cwd=root, stdin=SECRET).returncode == 0
    up = run_sqlifier("up", "--detach", cwd=root)
    assert up.returncode == 0, up.stderr + up.stdout
    try:
        yield Stack(root, f"http://127.0.0.1:{port}")
    finally:
        run_sqlifier("down", cwd=root)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            "Debian's chromium is not installed (apt-get install chromium); "
            "the dashboard's browser tests need it"
        )
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with playwright.sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


class Page:
    """A browser page that keeps every console error and failed request it sees."""

    def __init__(self, browser: Any) -> None:
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Page]:
    opened = Page(browser)
    try:
        yield opened
    finally:
        opened.close()


def screenshot(page: Any, name: str) -> Path:
    ARTEFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTEFACTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
