"""Rollouts on the Deploys page, live in headless Chromium: the step shows within 2 s of
the deploy starting, canary and stable are charted side by side, an abort from the page
(logged in) puts it in the history as aborted, and a bad release's canary, judged and
aborted by itself, shows there within 2 s. Real agent, router, instances and load."""

from __future__ import annotations

import json
from typing import Any

from tests.cli.test_deploy import make_shop
from tests.cli.test_deploy_early import QUICK, SLOW, live_v1, storefront
from tests.dashboard.conftest import Page, screenshot
from tests.load import Load
from tests.servers import free_port

__all__ = ["make_shop"]  # the fixture, used by name


def test_a_rollout_step_shows_live_and_an_abort_from_the_page_ends_it(
    make_shop: Any, page: Page
) -> None:
    shop = make_shop("embedded")
    port = free_port()
    shop.header += f'\n[dashboard]\nlisten = "127.0.0.1:{port}"\n'
    storefront(shop, QUICK)
    up = shop.run("up", "--detach")
    assert up.returncode == 0, up.stderr
    url = f"http://127.0.0.1:{port}"
    with Load(shop.port, "/storefront") as load:
        live_v1(shop, load)
        login = json.loads(shop.run("dashboard", "--json", user="ana").stdout)["login"]
        page.page.goto(login)
        page.page.goto(url + "/deploys")
        page.page.wait_for_selector("#live:has-text('live')")
        storefront(shop, SLOW)
        started = shop.run(
            "deploy", "--service", "storefront", "--version", "v2", "--yes", "--detach"
        )
        assert started.returncode == 0, started.stdout + started.stderr
        deploy_id = started.stdout.strip()
        run = f"article.run[data-deploy='{deploy_id}']"
        page.page.wait_for_selector(f"{run} [data-field='step']:has-text('1')", timeout=2000)
        page.page.wait_for_selector(f"{run} .plot[data-drawn='1'] canvas")
        screenshot(page.page, "deploys-live")
        page.page.locator(f"{run} button:has-text('Abort')").click()
        page.page.locator("#confirm-yes").click()
        page.page.wait_for_selector("#message:has-text('done')")
        page.page.wait_for_selector(f"tr[data-deploy='{deploy_id}'] .state-aborted", timeout=5000)
        # A bad release: its canary answers only 5xx, is judged and aborted by itself.
        storefront(shop, SLOW, env='ERROR_RATE = "1"')
        bad = shop.run("deploy", "--service", "storefront", "--version", "v3", "--yes")
        assert bad.returncode == 1, bad.stdout + bad.stderr
        page.page.wait_for_selector("tr[data-deploy] .state-aborted >> nth=1", timeout=2000)
        screenshot(page.page, "deploys-aborted")
    entries = json.loads(shop.run("audit", "--json").stdout)
    assert any(e["who"] == "ana" and "abort" in e["what"] for e in entries), entries[-5:]
    assert page.errors == []
