"""The early check end to end, on both data planes: a release answering only 5xx, judged
every minute, is aborted by the early check between verdicts (its reason says so, with
the seconds into the step) and the traffic is back on stable; with `early_abort = false`
the same release waits for the minute's verdict (aborted here by hand before it, so the
test never waits a minute). Real agent, router, instances and load.
"""

from __future__ import annotations

import json
import re
import sys
import time
from typing import Any

import pytest

from tests.cli.test_deploy import Shop, all_from, make_shop, wait_for
from tests.load import Load
from tests.servers import KINDS

__all__ = ["make_shop"]  # the fixture, used by name

QUICK = 'steps = ["100%"]\npause = "1s"\ninterval = "1s"\nbake = "1s"\nmin_requests = 1\n'
SLOW = 'steps = ["10%", "50%", "100%"]\npause = "60s"\ninterval = "60s"\nbake = "1s"\n'


def storefront(shop: Shop, rollout: str, env: str = "") -> None:
    env_line = f"env = {{ {env} }}\n" if env else ""
    shop.services["storefront"] = (
        '[services.storefront]\nsource = "services"\n'
        f'run = "{sys.executable} shop_service.py storefront"\ninstances = 2\n'
        f'routes = ["/storefront"]\n{env_line}'
        'probes.readiness = { http = "/health/ready", period = "300ms" }\n\n'
        f"[services.storefront.rollout]\n{rollout}"
    )
    shop.write()


def live_v1(shop: Shop, load: Load) -> None:
    storefront(shop, QUICK)
    first = shop.run("deploy", "--service", "storefront", "--version", "v1", "--yes")
    assert first.returncode == 0, first.stdout + first.stderr
    all_from(load, "v1")


@pytest.mark.parametrize("kind", KINDS)
def test_a_release_answering_only_5xx_is_aborted_by_the_early_check_not_the_interval(
    make_shop: Any, kind: str
) -> None:
    shop = make_shop(kind)
    storefront(shop, QUICK)
    up = shop.run("up", "--detach")
    assert up.returncode == 0, up.stderr
    with Load(shop.port, "/storefront") as load:
        live_v1(shop, load)
        storefront(shop, SLOW, env='ERROR_RATE = "1"')
        bad = shop.run("deploy", "--service", "storefront", "--version", "v2", "--yes")
        assert bad.returncode == 1, bad.stdout + bad.stderr
        assert "step 1/3: 10% of traffic" in bad.stdout
        found = re.search(
            r"aborted: early analysis: certain failure ([0-9.]+)s into the step, before the "
            r"60s verdict: error_rate vs stable \(certain\): [0-9.]+% vs 0%; beyond doubt: "
            r"(\d+) errors in (\d+) requests; all traffic is back on v1",
            bad.stdout,
        )
        assert found is not None, bad.stdout
        into, errors, requests = float(found[1]), int(found[2]), int(found[3])
        # Aborted by an early check (every half second), long before the minute's verdict,
        # on the canary's own answers: every one of them a 5xx.
        assert 0 < into < 60
        assert errors == requests >= 3
        assert "step 1 at 10%: fail" not in bad.stdout  # no interval verdict was needed
        assert "step 2/3" not in bad.stdout
        aborted = time.time()
        all_from(load, "v1")
        assert all(s == 200 for _, s, _ in load.since(aborted + 0.2))
    releases = shop.releases("storefront")
    assert releases["v2"]["status"] == "failed"
    details = releases["v2"]["details"]
    assert details["failed_reason"].startswith("early analysis: certain failure")
    assert [c["name"] for c in details["checks"] if c["passed"] is False] == [
        "error_rate vs stable (certain)",
        "beyond doubt",
    ]
    assert [s for _, s, _ in load.answers].count(0) == 0  # no request failed outright


def test_with_the_early_check_off_the_release_waits_for_the_verdict(make_shop: Any) -> None:
    shop = make_shop("embedded")
    storefront(shop, QUICK)
    up = shop.run("up", "--detach")
    assert up.returncode == 0, up.stderr
    with Load(shop.port, "/storefront") as load:
        live_v1(shop, load)
        storefront(shop, SLOW + "early_abort = false\n", env='ERROR_RATE = "1"')
        started = shop.run(
            "deploy", "--service", "storefront", "--version", "v2", "--yes", "--detach"
        )
        assert started.returncode == 0, started.stdout + started.stderr
        deploy_id = started.stdout.strip()

        def record() -> dict[str, Any]:
            result = shop.run("deploy", "status", deploy_id, "--json")
            return dict(json.loads(result.stdout))

        # The canary takes its share and fails every answer; nothing aborts it yet.
        wait_for(lambda: any(r == "v2" for _, _, r in load.since(0)), "the canary's answers")
        bad_seen = time.time()
        wait_for(
            lambda: sum(1 for _, s, _ in load.since(bad_seen) if s == 500) >= 30,
            "30 more 5xx from the canary",
        )
        now = record()
        assert (now["state"], now["weight"], now["error"]) == ("step", 10, None)
        abort = shop.run("rollout", "abort", "storefront", "--reason", "the test is done")
        assert abort.returncode == 0, abort.stdout + abort.stderr
        wait_for(lambda: record()["state"] == "aborted", "the abort")
        all_from(load, "v1")
    assert record()["error"].endswith(": the test is done")
