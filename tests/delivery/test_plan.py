"""The plan of a deploy: stacks read from real stack files, live releases as recorded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from sqlifier.delivery.plan import (
    NO_ROUTES,
    Change,
    ServicePlan,
    diff_config,
    plan_service,
)
from sqlifier.delivery.releases import Release, ReleaseError, ReleaseStatus, service_config
from sqlifier.stack import load_stack
from sqlifier.stack.model import Rollout, Stack

SHA = "3f2a9c1b7e4d5a6b7c8d9e0f1a2b3c4d5e6f7a8b"

BASE = """\
[stack]
name = "shop"

[environments.production]
approval = "required"
approvers = ["alice", "bob"]

[services.web]
run = "python3 app.py"
source = "web"
instances = 2
routes = ["/api"]
env = { LOG_LEVEL = "info", OLD = "1" }
secrets = { DB_PASSWORD = "secret://local/db_password" }

[services.web.rollout]
analysis = ["error_rate() < 1%", "latency(p99) < 300ms"]

[services.worker]
run = "python3 worker.py"
source = "worker"
"""


def stack(tmp_path: Path, text: str) -> Stack:
    """The stack a sqlifier.toml of `text` in tmp_path describes."""
    path = tmp_path / "sqlifier.toml"
    path.write_text(text)
    loaded, warnings = load_stack(path)
    assert all("names no approvers" in w.message for w in warnings)  # the one case without
    return loaded


def live(
    old: Stack, env: str = "production", service: str = "web", version: str = "1.4.0"
) -> Release:
    """The release live in `env`, recorded when the stack was `old`."""
    return Release(
        service=service,
        env=env,
        version=version,
        path=Path("/nowhere") / version,
        commit=None,
        commit_time=None,
        ref=None,
        content_hash="0" * 12,
        config=service_config(old.services_for(env)[service]),
        created=1_700_000_000.0,
        created_by="alice",
        reason="",
        status=ReleaseStatus.LIVE,
        built=False,
        build_output="",
    )


def changed(tmp_path: Path, old: str, new: str, env: str = "production") -> ServicePlan:
    """The plan of web from a release made with stack `old` to stack `new`."""
    current = live(stack(tmp_path, old), env)
    return plan_service(stack(tmp_path, new), env, "web", current, "1.5.0")


# --- diff_config ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        ({"a": 1}, {"a": 1}, ()),
        ({"a": 1}, {"a": 2}, (Change("a", 1, 2),)),
        ({"env": {"X": "1"}}, {"env": {"X": "2"}}, (Change("env.X", "1", "2"),)),
        ({"env": {}}, {"env": {"X": "1"}}, (Change("env.X", None, "1"),)),
        ({"env": {"X": "1"}}, {"env": {}}, (Change("env.X", "1", None),)),
        ({"build": None}, {}, ()),  # null and absent are the same
        ({}, {"build": None}, ()),
        ({"p": None}, {"p": {"t": 1}}, (Change("p.t", None, 1),)),
        (
            {"routes": ["/a", "/b"]},
            {"routes": ["/b", "/a"]},
            (Change("routes", ["/a", "/b"], ["/b", "/a"]),),
        ),
        ({"x": 1}, {"x": {"y": 1}}, (Change("x", 1, None), Change("x.y", None, 1))),
        (
            {"b": 1, "a": {"z": 1, "c": 1}},
            {"b": 2, "a": {"z": 2, "c": 2}},
            (Change("a.c", 1, 2), Change("a.z", 1, 2), Change("b", 1, 2)),
        ),
    ],
)
def test_diff_config_flattens_tables_and_compares_lists_whole(
    before: dict[str, object], after: dict[str, object], expected: tuple[Change, ...]
) -> None:
    assert diff_config(before, after) == expected


def test_diff_config_without_a_before_adds_every_setting() -> None:
    assert diff_config(None, {"run": "x", "env": {"A": "1"}, "build": None}) == (
        Change("env.A", None, "1"),
        Change("run", None, "x"),
    )


@pytest.mark.parametrize(
    ("change", "line"),
    [
        (Change("env.LOG_LEVEL", "info", "debug"), "~ env.LOG_LEVEL: info -> debug"),
        (Change("env.NEW", None, "1"), "+ env.NEW: 1"),
        (Change("env.OLD", "1", None), "- env.OLD"),
        (Change("env.EMPTY", "", " x"), '~ env.EMPTY: "" -> " x"'),
        (Change("rollout.pause", 30.0, 90.0), "~ rollout.pause: 30s -> 90s"),
        (Change("warmup.max_p95", None, 0.2), "+ warmup.max_p95: 200ms"),
        (Change("rollout.bake", 30.0, 0.0), "~ rollout.bake: 30s -> 0s"),
        (
            Change("rollout.steps", [1.0, 100.0], [5.0, 50.0, 100.0]),
            '~ rollout.steps: ["1%", "100%"] -> ["5%", "50%", "100%"]',
        ),
        (Change("instances", 2, 4), "~ instances: 2 -> 4"),
        (Change("shell", False, True), "~ shell: false -> true"),
        (Change("routes", ["/api"], []), '~ routes: ["/api"] -> []'),
    ],
)
def test_a_change_is_shown_the_way_the_stack_file_writes_it(change: Change, line: str) -> None:
    assert change.line() == line


# --- what changes ---------------------------------------------------------------------------


def test_first_deploy_lists_every_set_setting_as_added(tmp_path: Path) -> None:
    plan = plan_service(stack(tmp_path, BASE), "production", "web", None, "1.5.0")
    assert plan.first
    assert plan.current is None
    assert {change.kind for change in plan.changes} == {"added"}
    paths = [change.path for change in plan.changes]
    assert paths == sorted(paths)
    assert {"run", "instances", "env.LOG_LEVEL", "secrets.DB_PASSWORD.ref", "routes"} <= set(paths)
    assert "build" not in paths  # unset settings are not "added"
    assert plan.instances == (0, 2)


def test_first_deploy_screen_is_one_line_and_the_instance_count(tmp_path: Path) -> None:
    plan = plan_service(stack(tmp_path, BASE), "production", "web", None, "1.5.0", SHA)
    assert plan.lines()[:3] == [
        "web in production: nothing live -> 1.5.0 (commit 3f2a9c1b7e4d)",
        "  + first release of web: python3 app.py",
        "  instances: 0 -> 2",
    ]


def test_an_env_change_is_the_only_change(tmp_path: Path) -> None:
    plan = changed(tmp_path, BASE, BASE.replace('LOG_LEVEL = "info"', 'LOG_LEVEL = "debug"'))
    assert plan.changes == (Change("env.LOG_LEVEL", "info", "debug"),)
    assert plan.lines()[1] == "  ~ env.LOG_LEVEL: info -> debug"


def test_env_keys_added_and_removed(tmp_path: Path) -> None:
    plan = changed(tmp_path, BASE, BASE.replace('OLD = "1"', 'NEW = "2"'))
    assert plan.changes == (Change("env.NEW", None, "2"), Change("env.OLD", "1", None))
    assert plan.lines()[1:3] == ["  + env.NEW: 2", "  - env.OLD"]


def test_a_secret_reference_change_shows_references_only(tmp_path: Path) -> None:
    new = BASE.replace("secret://local/db_password", "vault://secret/shop/db#password")
    plan = changed(tmp_path, BASE, new)
    assert plan.changes == (
        Change(
            "secrets.DB_PASSWORD.ref",
            "secret://local/db_password",
            "vault://secret/shop/db#password",
        ),
    )
    assert plan.lines()[1] == (
        "  ~ secrets.DB_PASSWORD.ref: secret://local/db_password -> vault://secret/shop/db#password"
    )


def test_instances_come_from_the_environment_overlay(tmp_path: Path) -> None:
    overlay = BASE + "\n[environments.production.services.web]\ninstances = 4\n"
    plan = changed(tmp_path, BASE, overlay)
    assert plan.instances == (2, 4)
    assert plan.changes == (Change("instances", 2, 4),)
    lines = plan.lines()
    assert "  instances: 2 -> 4" in lines
    assert "  ~ instances: 2 -> 4" not in lines  # shown once, on its own line
    assert lines[1] == "  no config changes"
    dev = plan_service(
        stack(tmp_path, overlay), "dev", "web", live(stack(tmp_path, BASE), "dev"), "1.5.0"
    )
    assert dev.instances == (2, 2)
    assert "  instances: 2 (unchanged)" in dev.lines()


def test_a_routes_change_compares_the_lists(tmp_path: Path) -> None:
    plan = changed(tmp_path, BASE, BASE.replace('["/api"]', '["/api", "shop.localhost/web"]'))
    assert plan.changes == (Change("routes", ["/api"], ["/api", "shop.localhost/web"]),)
    assert plan.lines()[1] == '  ~ routes: ["/api"] -> ["/api", "shop.localhost/web"]'


def test_a_redeploy_of_the_same_config_has_no_changes(tmp_path: Path) -> None:
    plan = changed(tmp_path, BASE, BASE)
    assert plan.changes == ()
    assert plan.lines()[1] == "  no config changes"


def test_settings_a_release_record_lacks_are_not_changes_when_unset(tmp_path: Path) -> None:
    # A release recorded before `schema_version` existed: its config has no such key.
    current = live(stack(tmp_path, BASE))
    del current.config["schema_version"]
    plan = plan_service(stack(tmp_path, BASE), "production", "web", current, "1.5.0")
    assert plan.changes == ()


# --- what will run --------------------------------------------------------------------------


def test_commands_before_traffic_and_the_rollout_come_from_the_new_config(tmp_path: Path) -> None:
    new = BASE.replace(
        "instances = 2\n",
        'instances = 2\nmigrate = "python3 manage.py migrate"\n'
        'schema_version = "python3 manage.py schema"\n',
    ).replace(
        "[services.web.rollout]\n", '[services.web.rollout]\nsteps = ["5%", "100%"]\npause = "1m"\n'
    )
    plan = changed(tmp_path, BASE, new)
    assert plan.migrate == "python3 manage.py migrate"
    assert plan.schema_command == "python3 manage.py schema"
    assert (plan.steps, plan.pause, plan.bake, plan.min_requests) == ((5.0, 100.0), 60.0, 30.0, 50)
    assert plan.analysis == ("error_rate() < 1%", "latency(p99) < 300ms")
    assert "  schema version: python3 manage.py schema" in plan.lines()
    assert "  ~ rollout.pause: 30s -> 60s" in plan.lines()


def test_a_rollout_without_analysis_is_judged_against_the_stable_track(tmp_path: Path) -> None:
    new = BASE.replace('analysis = ["error_rate() < 1%", "latency(p99) < 300ms"]', "")
    plan = plan_service(stack(tmp_path, new), "production", "web", None, "1.5.0")
    assert (
        "  rollout: 1% -> 10% -> 50% -> 100%, 30s pause, analysis: against the stable track "
        "only (min 50 requests per step)"
    ) in plan.lines()


@pytest.mark.parametrize(
    ("table", "expected"),
    [
        ("", "none"),
        ('approval = "none"\napprovers = ["alice"]', "none"),
        ('approval = "required"\napprovers = ["alice", "bob"]', "required (approvers: alice, bob)"),
        (
            'approval = "required"\napprovers = ["alice", "bob"]\ntwo_person = true',
            "required, two people (approvers: alice, bob)",
        ),
        ('approval = "required"', "required (approvers: none listed)"),
    ],
)
def test_approval_is_said_per_environment(tmp_path: Path, table: str, expected: str) -> None:
    text = BASE.replace('approval = "required"\napprovers = ["alice", "bob"]\n', table + "\n")
    plan = plan_service(stack(tmp_path, text), "production", "web", None, "1.5.0")
    assert plan.approval == expected
    assert f"  approval: {expected}" in plan.lines()


def test_an_undeclared_environment_needs_no_approval(tmp_path: Path) -> None:
    plan = plan_service(stack(tmp_path, BASE), "staging", "web", None, "1.5.0")
    assert plan.approval == "none"


# --- what stops a deploy, and what is worth knowing ----------------------------------------


def test_an_analysis_a_canary_cannot_measure_is_a_problem(tmp_path: Path) -> None:
    # `check` refuses it in a stack file too; a service built by hand still meets the plan.
    loaded = stack(tmp_path, BASE)
    web = dataclasses.replace(
        loaded.services_for("production")["web"], rollout=Rollout(analysis=("cpu() < 80%",))
    )
    broken = dataclasses.replace(loaded, resolved={"production": {"web": web}})
    plan = plan_service(broken, "production", "web", None, "1.5.0")
    problem = (
        "invalid analysis 'cpu() < 80%': cpu() is not measured on a canary; analysis can use "
        "error_rate(), latency(p50|p90|p95|p99) and rps()"
    )
    assert plan.problems == (problem,)
    assert plan.lines()[-1] == f"  problem: {problem}"


def test_an_analysis_that_does_not_parse_is_a_problem(tmp_path: Path) -> None:
    # The stack loader rejects this text, so the service is built by hand.
    loaded = stack(tmp_path, BASE)
    web = dataclasses.replace(
        loaded.services_for("production")["web"], rollout=Rollout(analysis=("error_rate( < 1%",))
    )
    broken = dataclasses.replace(loaded, resolved={"production": {"web": web}})
    plan = plan_service(broken, "production", "web", None, "1.5.0")
    assert plan.problems == (
        "invalid analysis 'error_rate( < 1%': expected an argument, found the end of the file",
    )


def test_no_instances_is_a_problem(tmp_path: Path) -> None:
    text = BASE + "\n[environments.production.services.web]\ninstances = 0\n"
    plan = plan_service(stack(tmp_path, text), "production", "web", None, "1.5.0")
    assert plan.problems == (
        "web has instances = 0 in production: nothing would run the new release; "
        "set instances to 1 or more",
    )
    assert plan_service(stack(tmp_path, text), "dev", "web", None, "1.5.0").problems == ()


def test_a_service_without_routes_gets_a_note_and_no_canary(tmp_path: Path) -> None:
    plan = plan_service(stack(tmp_path, BASE), "production", "worker", None, "7")
    assert not plan.canary
    assert plan.notes == (NO_ROUTES,)
    assert plan.problems == ()  # replaced one at a time: nothing stops it
    lines = plan.lines()
    assert not any(line.startswith("  rollout:") for line in lines)
    assert lines[-1] == (
        "  note: no routes: the release replaces instances one at a time without a canary"
    )


def test_a_routed_service_has_a_canary_and_no_notes(tmp_path: Path) -> None:
    plan = plan_service(stack(tmp_path, BASE), "production", "web", None, "1.5.0")
    assert plan.canary
    assert plan.routes == ("/api",)
    assert plan.notes == ()


def test_an_unknown_service_is_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(
        ReleaseError, match=r"^no service 'wbe' in .*sqlifier.toml; did you mean 'web'\?$"
    ):
        plan_service(stack(tmp_path, BASE), "production", "wbe", None, "1.5.0")


def test_a_live_release_of_another_service_is_a_bug(tmp_path: Path) -> None:
    loaded = stack(tmp_path, BASE)
    with pytest.raises(ValueError, match="the live release is of worker in production"):
        plan_service(loaded, "production", "web", live(loaded, service="worker"), "1.5.0")


# --- the screen and the JSON ----------------------------------------------------------------

OLD = BASE.replace(
    'secrets = { DB_PASSWORD = "secret://local/db_password" }\n',
    'secrets = { DB_PASSWORD = "secret://local/db_password" }\n'
    'warmup = { requests = 50, max_p95 = "200ms" }\n',
)
NEW = (
    OLD.replace('LOG_LEVEL = "info", OLD = "1"', 'LOG_LEVEL = "debug"')
    .replace(
        'DB_PASSWORD = "secret://local/db_password"',
        'DB_PASSWORD = "secret://local/db_password", API_KEY = "vault://secret/shop/web#api_key"',
    )
    .replace("instances = 2\n", 'instances = 2\nmigrate = "python3 manage.py migrate"\n')
    .replace('max_p95 = "200ms"', 'max_p95 = "200ms", slow_start = "30s"')
    + "\n[environments.production.services.web]\ninstances = 4\n"
)


def test_the_screen_of_a_realistic_deploy(tmp_path: Path) -> None:
    current = live(stack(tmp_path, OLD))
    plan = plan_service(stack(tmp_path, NEW), "production", "web", current, "1.5.0", SHA)
    assert plan.lines() == [
        "web in production: 1.4.0 -> 1.5.0 (commit 3f2a9c1b7e4d)",
        "  ~ env.LOG_LEVEL: info -> debug",
        "  - env.OLD",
        "  + migrate: python3 manage.py migrate",
        "  + secrets.API_KEY.ref: vault://secret/shop/web#api_key",
        "  ~ warmup.slow_start: 0s -> 30s",
        "  instances: 2 -> 4",
        "  migrate: python3 manage.py migrate",
        "  rollout: 1% -> 10% -> 50% -> 100%, 30s pause, analysis: error_rate() < 1%, "
        "latency(p99) < 300ms (min 50 requests per step)",
        "  bake: 30s",
        "  warmup: 50 requests to /, p95 under 200ms, 30s slow start",
        "  approval: required (approvers: alice, bob)",
    ]


def test_the_plan_survives_a_json_round_trip(tmp_path: Path) -> None:
    current = live(stack(tmp_path, OLD))
    plan = plan_service(stack(tmp_path, NEW), "production", "web", current, "1.5.0", SHA)
    data = json.loads(json.dumps(plan.to_json()))
    assert set(data) == {
        "service", "env", "current", "target", "commit", "changes", "instances", "migrate",
        "schema_command", "steps", "pause", "bake", "analysis", "min_requests", "warmup",
        "approval", "problems", "notes", "routes", "budget",
    }  # fmt: skip
    assert data["changes"][0] == {
        "path": "env.LOG_LEVEL",
        "kind": "changed",
        "before": "info",
        "after": "debug",
    }
    assert data["instances"] == [2, 4]
    assert data["warmup"] == {
        "requests": 50, "path": "/", "max_p95": 0.2, "slow_start": 30.0, "timeout": 120.0
    }  # fmt: skip
    assert ServicePlan.from_json(data) == plan
