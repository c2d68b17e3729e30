"""The dashboard in a real browser (headless Chromium): pages, live updates, charts,
logins, actions and CSRF, against a running stack (see conftest.py)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.dashboard.conftest import SECRET, Page, Stack, screenshot

PAGES = [
    ("/", "overview"),
    ("/services/web", "service"),
    ("/rules", "rules"),
    ("/deploys", "deploys"),
    ("/audit", "audit"),
    ("/dora", "dora"),
]


def _paused(stack: Stack, rule: str) -> bool:
    listing = json.loads(stack.cli("rules", "list", "--json"))
    rows = listing["rules"] if isinstance(listing, dict) else listing
    return any(r["state"] == "paused" for r in rows if r["rule"] == rule)


def _log_in(page: Page, stack: Stack) -> None:
    page.page.goto(stack.login_link())
    page.page.wait_for_selector("text=logged in as")


@pytest.mark.parametrize(("path", "name"), PAGES)
def test_every_page_loads_without_console_errors(
    stack: Stack, page: Page, path: str, name: str
) -> None:
    page.page.goto(stack.url + path)
    page.page.wait_for_selector("#live:has-text('live')")
    screenshot(page.page, name)
    page.page.emulate_media(color_scheme="dark")
    page.page.reload()
    page.page.wait_for_selector("#live:has-text('live')")
    screenshot(page.page, f"{name}-dark")
    assert page.errors == []


def test_the_service_page_draws_its_charts(stack: Stack, page: Page) -> None:
    page.page.goto(stack.url + "/services/web")
    # CPU and memory are sampled from the start, but reach the history only every 10 s:
    # each chart is waited for by itself (a page shown before the first bucket says "no
    # data yet" until the live update after it). Without requests, the error rate and
    # the latency have no data yet and say so.
    for chart in ("0", "1"):
        page.page.locator(f"figure.chart[data-chart='{chart}'] .plot canvas").wait_for()
    page.page.locator("figure.chart[data-chart='3'] .plot[data-drawn='1']").wait_for()
    assert page.page.locator("figure.chart[data-chart='0'] canvas").count() == 1
    assert page.page.locator("figure.chart[data-chart='3'] .plot").inner_text() == "no data yet"
    assert page.page.locator("figure.chart[data-chart='0'] figcaption").inner_text() == (
        "CPU · busy: high_cpu(>80%)"
    )
    assert page.errors == []


def test_a_live_update_keeps_each_chart_and_gives_it_the_new_data(stack: Stack, page: Page) -> None:
    page.page.goto(stack.url + "/services/web")
    canvas = "figure.chart[data-chart='0'] .plot canvas"
    page.page.locator(canvas).wait_for()
    page.page.eval_on_selector(canvas, "c => { c.dataset.first = '1'; }")
    version = page.page.evaluate("document.body.dataset.version")
    # a new 10 s bucket of history changes the page: it is fetched again within ~10 s
    page.page.wait_for_function(
        "(seen) => document.body.dataset.version !== seen", arg=version, timeout=25000
    )
    page.page.locator(canvas).wait_for()
    assert page.page.locator(canvas).get_attribute("data-first") == "1"  # the same chart
    assert page.page.locator("figure.chart canvas[data-first]").count() == 1
    assert page.errors == []


def test_pages_without_charts_do_not_load_the_chart_library(stack: Stack, page: Page) -> None:
    page.page.goto(stack.url + "/")
    page.page.wait_for_selector("#live:has-text('live')")
    assert page.page.evaluate("typeof uPlot") == "undefined"
    page.page.goto(stack.url + "/services/web")
    page.page.wait_for_selector("#live:has-text('live')")
    assert page.page.evaluate("typeof uPlot") == "function"


def test_a_scale_shows_on_the_overview_within_two_seconds(stack: Stack, page: Page) -> None:
    page.page.goto(stack.url + "/")
    cell = page.page.locator("tr[data-service='web'] [data-field='instances']")
    assert cell.inner_text() == "2/2"
    page.page.wait_for_selector("#live:has-text('live')")
    stack.cli("scale", "web", "3")  # returns once the third instance is ready
    page.page.wait_for_selector(
        "tr[data-service='web'] [data-field='instances']:has-text('3/3')", timeout=2000
    )
    assert page.page.evaluate("performance.getEntriesByType('navigation').length") == 1
    stack.cli("scale", "web", "2")


def test_a_rule_firing_shows_on_the_rules_page_live(stack: Stack, page: Page) -> None:
    page.page.goto(stack.url + "/rules")
    page.page.wait_for_selector("#live:has-text('live')")
    stack.cli("scale", "web", "3")
    # the rules are evaluated every second: the firing, then 2 s to show it
    page.page.wait_for_selector("tr[data-decision-rule='many'][data-outcome='fired']", timeout=3000)
    stack.cli("scale", "web", "2")


def test_a_pending_rules_for_bar_fills_live(stack: Stack, page: Page) -> None:
    page.page.goto(stack.url + "/rules")
    page.page.wait_for_selector("#live:has-text('live')")
    bar = "tr[data-rule='holding'] progress"
    first = page.page.locator(bar).get_attribute("value")
    assert first is not None and float(first) > 0
    page.page.wait_for_function(
        "([bar, first]) => document.querySelector(bar).value > first",
        arg=[bar, float(first)],
        timeout=2000,
    )


def test_an_action_without_a_login_is_refused(stack: Stack, page: Page) -> None:
    page.page.goto(stack.url + "/rules")
    assert page.page.locator("tbody[data-rule-group='many'] button").is_disabled()
    request = urllib.request.Request(
        stack.url + "/actions/rule-pause", data=b"rule=many&confirm=yes", method="POST"
    )
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=5)
    with refused.value as answer:
        assert answer.code == 401
        assert "log in first" in json.loads(answer.read())["error"]


def test_a_logged_in_action_is_confirmed_done_and_audited_as_the_user(
    stack: Stack, page: Page
) -> None:
    _log_in(page, stack)
    assert "code=" not in page.page.url  # the login code left the address
    page.page.goto(stack.url + "/rules")
    page.page.once("dialog", lambda d: d.accept())
    page.page.locator("tbody[data-rule-group='busy'] button:has-text('Pause')").click()
    page.page.locator("#confirm-yes").click()
    page.page.wait_for_selector("#message:has-text('done')")
    screenshot(page.page, "rules-logged-in")
    page.page.wait_for_selector(
        "tr[data-rule='busy'] [data-field='state'] .state-paused", timeout=2000
    )
    entries = json.loads(stack.cli("audit", "--json"))
    paused = [e for e in entries if e["what"] == "rules pause" and "busy" in e["target"]]
    assert paused and paused[-1]["who"] not in ("unknown", "agent")
    stack.cli("rules", "resume", "busy")
    assert page.errors == []


def test_a_cancelled_confirmation_does_nothing(stack: Stack, page: Page) -> None:
    _log_in(page, stack)
    page.page.goto(stack.url + "/rules")
    page.page.locator("tbody[data-rule-group='busy'] button:has-text('Pause')").click()
    page.page.locator("#confirm button[value='cancel']").click()
    page.page.wait_for_selector("#message:has-text('cancelled')")
    assert not _paused(stack, "busy")


def test_a_forged_cross_site_post_is_refused(stack: Stack, page: Page) -> None:
    _log_in(page, stack)
    # Another site on this machine, with a form that posts to the dashboard by itself.
    from http.server import BaseHTTPRequestHandler
    from threading import Thread

    from tests.servers import QuietServer

    form = (
        f'<form id="f" method="post" action="{stack.url}/actions/rule-pause">'
        '<input name="rule" value="busy"><input name="confirm" value="yes"></form>'
        "<script>document.getElementById('f').submit()</script>"
    ).encode()

    class Evil(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(form)))
            self.end_headers()
            self.wfile.write(form)

        def log_message(self, *args: Any) -> None:
            pass

    evil = QuietServer(("127.0.0.1", 0), Evil)
    Thread(target=evil.serve_forever, daemon=True).start()
    try:
        with page.page.expect_response(lambda r: "/actions/" in r.url) as answer:
            page.page.goto(f"http://127.0.0.1:{evil.server_address[1]}/")
        assert answer.value.status == 403
    finally:
        evil.shutdown()
        evil.server_close()
    assert not _paused(stack, "busy")


def test_a_login_link_works_once(stack: Stack, page: Page) -> None:
    link = stack.login_link()
    page.page.goto(link)
    page.page.wait_for_selector("text=logged in as")
    cookie = next(c for c in page.context.cookies() if c["name"] == "sqlifier_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["expires"] > 0
    with pytest.raises(urllib.error.HTTPError) as used:
        urllib.request.urlopen(link, timeout=5)
    with used.value as answer:
        assert answer.code == 403


def test_no_secret_value_reaches_a_page(stack: Stack, page: Page) -> None:
    _log_in(page, stack)
    for path, _ in PAGES:
        page.page.goto(stack.url + path)
        assert SECRET not in page.page.content(), path
    page.page.goto(stack.url + "/rules")
    assert "the password is" in page.page.content()  # the rule is shown, masked
