"""The release `up` starts is a release: on a fresh stack, the first deploy has something
to roll back to, by hand (`sqlifier rollback`) and by the seed's ROLLBACK rule.

Real agent, router, instances and load, with the example shop's service as the app (the
stacks of test_deploy.py: rollout steps of a second).
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from typing import Any

import psutil

from tests.cli.test_deploy import Shop, all_from, make_shop, wait_for
from tests.load import Load

__all__ = ["make_shop"]  # the fixture, used by name below

# The seed's rule, verbatim.
SEED_ROLLBACK = """\
ON log_error(level='critical', service='payment-gateway') > 10 FOR 1m
DO ROLLBACK service 'payment-gateway' TO previous_stable;
"""


def pay(shop: Shop, count: int) -> list[int]:
    """`count` payments (POSTs) through the router: their statuses."""
    statuses = []
    for _ in range(count):
        connection = http.client.HTTPConnection("127.0.0.1", shop.port, timeout=10)
        connection.request("POST", "/payment-gateway", body=b'{"cents": 1200}')
        response = connection.getresponse()
        response.read()
        connection.close()
        statuses.append(response.status)
    return statuses


def up_release(shop: Shop, name: str = "storefront") -> str:
    """`up` the shop; the version of the release it recorded for `name`."""
    up = shop.run("up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    (release,) = shop.releases(name).values()
    version = str(release["version"])
    assert f"{name}: release {version} recorded from its source" in up.stdout
    assert release["status"] == "live" and release["reason"] == "started by sqlifier up"
    assert release["details"]["completed_at"] is not None
    rows = [i for i in shop.instances() if i["service"] == name]
    assert {i["release"] for i in rows} == {version}
    # Until the first deploy, `up` runs the service from its source folder, as it did.
    assert {psutil.Process(i["pid"]).cwd() for i in rows} == {str(shop.root / "services")}
    return version


def test_rollback_after_the_first_deploy_returns_to_the_release_up_started(
    make_shop: Any,
) -> None:
    shop = make_shop()
    shop.set("storefront")
    first = up_release(shop)
    with Load(shop.port, "/storefront") as load:
        all_from(load, first)
        shop.set("storefront", env='SLOW_MS = "1"')
        v2 = shop.run("deploy", "-s", "storefront", "--version", "v2", "--yes")
        assert v2.returncode == 0, v2.stdout + v2.stderr
        assert f"storefront in dev: {first} -> v2" in v2.stdout
        all_from(load, "v2")
        assert shop.releases("storefront")[first]["status"] == "superseded"

        back = shop.run("rollback", "--service", "storefront", "--reason", "v2 is slow")
        assert back.returncode == 0, back.stdout + back.stderr
        assert f"storefront {first} (from v2) — rolled back" in back.stdout
        all_from(load, first)
    releases = shop.releases("storefront")
    assert {v: r["status"] for v, r in releases.items()} == {
        first: "live",
        "v2": "rolled back",
    }
    assert releases[first]["details"]["rolled_back_from"] == "v2"
    assert not [a for a in load.answers if a[1] == 0]  # no request failed on the way

    # Rolled back to, it is a deployed release: `up` runs it again as it is.
    assert shop.run("down").returncode == 0
    again = shop.run("up", "--detach")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "recorded from its source" not in again.stdout
    assert len(shop.releases("storefront")) == 2
    rows = [i for i in shop.instances() if i["service"] == "storefront"]
    assert {i["release"] for i in rows} == {first}
    assert {psutil.Process(i["pid"]).cwd() for i in rows} == {releases[first]["path"]}


def test_the_seed_rollback_rule_after_the_first_deploy_reaches_the_release_up_started(
    make_shop: Any,
) -> None:
    shop = make_shop(rules=SEED_ROLLBACK)
    shop.set("payment-gateway")
    first = up_release(shop, "payment-gateway")
    with Load(shop.port, "/payment-gateway") as load:
        # v2 answers GETs well (its canary passes) but declines every payment.
        shop.set("payment-gateway", env='DECLINE_PAYMENTS = "1"')
        v2 = shop.run("deploy", "-s", "payment-gateway", "--version", "v2", "--yes")
        assert v2.returncode == 0, v2.stdout + v2.stderr
        assert "— complete" in v2.stdout
        assert set(pay(shop, 12)) == {502}  # twelve CRITICAL lines: the rule fires
        all_from(load, first, timeout=60)  # rolled back, live
    assert set(pay(shop, 3)) == {200}
    releases = shop.releases("payment-gateway")
    assert releases["v2"]["status"] == "rolled back"
    assert releases[first]["status"] == "live"
    assert releases[first]["details"]["rolled_back_from"] == "v2"
    entries = json.loads(shop.run("audit", "--json").stdout)
    by_rule = {(e["what"], e["result"]) for e in entries if e["who"].startswith("rule ")}
    assert ("rollback", "ok") in by_rule and ("rollback complete", "ok") in by_rule


def test_a_second_up_records_a_changed_source_and_keeps_the_release_before(
    make_shop: Any,
) -> None:
    shop = make_shop()
    shop.set("storefront")
    first = up_release(shop)
    assert shop.run("down").returncode == 0
    same = shop.run("up", "--detach")  # the same source: no new release
    assert same.returncode == 0 and "recorded" not in same.stdout
    assert list(shop.releases("storefront")) == [first]
    assert shop.run("down").returncode == 0

    source = shop.root / "services" / "shop_service.py"
    source.write_text(source.read_text() + "\n# changed\n")
    changed = shop.run("up", "--detach")
    assert changed.returncode == 0, changed.stdout + changed.stderr
    releases = shop.releases("storefront")
    second = next(v for v in releases if v != first)
    assert f"storefront: release {second} recorded from its source" in changed.stdout
    assert {v: r["status"] for v, r in releases.items()} == {
        first: "superseded",
        second: "live",
    }
    listed = shop.run("releases", "storefront")
    assert listed.returncode == 0
    assert all(v in listed.stdout for v in (first, second))
    assert listed.stdout.count("started by sqlifier up") == 2
    wait_for(
        lambda: (
            {i["release"] for i in shop.instances() if i["service"] == "storefront"} == {second}
        ),
        "storefront to run the new release",
    )


# A ledger's migrations, as `migrate` and `schema_version` commands: the revision is kept
# in $DATA_DIR/revision.
LEDGER = """\
import os, sys
path = os.path.join(os.environ["DATA_DIR"], "revision")
if sys.argv[1] == "migrate":
    with open(path, "a") as handle:
        handle.write("0007\\n")
elif os.path.exists(path):
    print(open(path).read().split()[-1], "(head)")
"""


def test_up_migrates_its_release_once_so_a_rollback_to_it_passes_the_schema_check(
    make_shop: Any,
) -> None:
    shop = make_shop()
    (shop.root / "services" / "ledger.py").write_text(LEDGER)
    commands = (
        f'migrate = "{sys.executable} ledger.py migrate"\n'
        f'schema_version = "{sys.executable} ledger.py current"\n'
    )
    shop.set("payment-gateway", extra=commands)
    first = up_release(shop, "payment-gateway")
    details = shop.releases("payment-gateway")[first]["details"]
    assert details["schema"] == "0007" and details["migrated_at"] is not None
    migrations = shop.root / ".sqlifier" / "dev" / "data" / "payment-gateway" / "revision"
    assert migrations.read_text() == "0007\n"
    assert shop.run("down").returncode == 0
    assert shop.run("up", "--detach").returncode == 0
    assert migrations.read_text() == "0007\n"  # once per release, as for a deploy

    with Load(shop.port, "/payment-gateway") as load:
        shop.set("payment-gateway", env='SLOW_MS = "1"', extra=commands)
        v2 = shop.run("deploy", "-s", "payment-gateway", "--version", "v2", "--yes")
        assert v2.returncode == 0, v2.stdout + v2.stderr
        back = shop.run("rollback", "--service", "payment-gateway")
        assert back.returncode == 0, back.stdout + back.stderr
        all_from(load, first)
    assert shop.releases("payment-gateway")[first]["status"] == "live"


def test_up_from_git_is_labelled_by_the_commit_and_warns_of_uncommitted_changes(
    make_shop: Any,
) -> None:
    shop = make_shop()
    shop.set("storefront")

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", "-c", "user.name=Alice", "-c", "user.email=alice@example.com", *args],
            cwd=shop.root, capture_output=True, text=True, check=True,
        ).stdout.strip()  # fmt: skip

    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "-m", "the shop")
    source = shop.root / "services" / "shop_service.py"
    source.write_text(source.read_text() + "\n# edited, not committed\n")
    up = shop.run("up", "--detach")
    assert up.returncode == 0, up.stdout + up.stderr
    version = f"up-{git('rev-parse', 'HEAD')[:12]}"
    assert f"storefront: release {version} recorded from its source" in up.stdout
    assert (
        "sqlifier: warning: storefront runs uncommitted changes (shop_service.py) that are "
        f"not part of its release {version}, which holds the committed files"
    ) in " ".join(up.stderr.split())


def test_a_failed_migration_of_the_release_up_starts_stops_up_and_names_it(
    make_shop: Any,
) -> None:
    shop = make_shop()
    script = "print('no such table: payments'); raise SystemExit(3)"
    migrate = json.dumps(f'{sys.executable} -c "{script}"')  # a TOML basic string
    shop.set("payment-gateway", extra=f"migrate = {migrate}")
    up = shop.run("up", "--detach")
    assert up.returncode == 1, up.stdout + up.stderr
    said = " ".join(up.stderr.split())
    (version,) = shop.releases("payment-gateway")
    assert (
        f"sqlifier: error: payment-gateway: migrate of release {version} failed: exit 3: "
        "no such table: payments; nothing started"
    ) in said
    assert "Traceback" not in up.stderr
    assert shop.instances() == []
