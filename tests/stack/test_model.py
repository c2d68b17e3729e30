"""The typed stack model: every key read, environment overrides, and positioned errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlifier.errors import DiagnosticsError
from sqlifier.stack import load_stack
from sqlifier.stack import model as m

DESIGN_EXAMPLE = """\
[stack]
name = "shop"
rules = ["rules/*.sql"]

[environments.production]
approval = "required"            # deploys need --approve from an approver
approvers = ["alice", "bob"]

[services.payments]
run = "python -m payments"

[services.checkout]
source = "services/checkout"      # what a release is made from (git repo or directory)
run = "python -m checkout --port $PORT"
instances = 2
routes = ["shop.localhost/checkout", "/api/checkout"]
env = { LOG_LEVEL = "info" }
secrets = { DB_PASSWORD = "secret://local/db_password" }
depends_on = ["payments"]

[services.checkout.probes]
startup   = { http = "/health/ready", period = "1s", failure_threshold = 60 }
readiness = { http = "/health/ready", period = "2s" }
liveness  = { http = "/health/live", period = "5s" }

[services.checkout.warmup]        # "ready" is not "warm"
requests = 50
path = "/"
max_p95 = "200ms"
slow_start = "30s"

[services.checkout.rollout]
steps = ["1%", "10%", "50%", "100%"]
pause = "30s"
analysis = ["error_rate() < 1%", "latency(p99) < 300ms"]

[environments.production.services.checkout]
instances = 4
env = { LOG_LEVEL = "warn" }
"""


def load(tmp_path: Path, text: str) -> m.Stack:
    path = tmp_path / "sqlifier.toml"
    path.write_text(text)
    stack, warnings = load_stack(path, "sqlifier.toml")
    assert [w.message for w in warnings] == []
    return stack


def errors(tmp_path: Path, text: str) -> list[tuple[int, int, str]]:
    path = tmp_path / "sqlifier.toml"
    path.write_text(text)
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(path, "sqlifier.toml")
    return [(d.line, d.col, d.message) for d in caught.value.diagnostics if d.is_error]


def test_the_design_example_reads_into_the_model(tmp_path: Path) -> None:
    stack = load(tmp_path, DESIGN_EXAMPLE)
    checkout = stack.services["checkout"]
    assert checkout.run == "python -m checkout --port $PORT"
    assert checkout.source == (tmp_path / "services" / "checkout").resolve()
    assert checkout.instances == 2
    assert checkout.routes == (
        m.Route("shop.localhost", "/checkout"),
        m.Route(None, "/api/checkout"),
    )
    assert checkout.secrets == {"DB_PASSWORD": m.SecretRef("secret://local/db_password")}
    assert checkout.depends_on == ("payments",)
    assert checkout.probes.startup == m.Probe(
        m.ProbeKind.HTTP, "/health/ready", period=1.0, failure_threshold=60
    )
    assert checkout.probes.liveness is not None and checkout.probes.liveness.period == 5.0
    assert checkout.warmup == m.Warmup(50, "/", 0.2, 30.0)
    assert checkout.rollout.steps == (1.0, 10.0, 50.0, 100.0)
    assert checkout.rollout.analysis == ("error_rate() < 1%", "latency(p99) < 300ms")
    assert stack.environments["production"] == m.Environment(
        "production", m.Approval.REQUIRED, ("alice", "bob")
    )


def test_an_environment_overrides_its_services_and_merges_tables(tmp_path: Path) -> None:
    stack = load(tmp_path, DESIGN_EXAMPLE)
    base = stack.services_for("dev")["checkout"]
    production = stack.services_for("production")["checkout"]
    assert (base.instances, production.instances) == (2, 4)
    assert base.env == {"LOG_LEVEL": "info"}
    assert production.env == {"LOG_LEVEL": "warn"}
    assert production.probes == base.probes
    assert stack.services_for("production")["payments"] == stack.services["payments"]


def test_defaults_for_what_is_not_written(tmp_path: Path) -> None:
    stack = load(tmp_path, '[stack]\nname = "x"\n[services.web]\nrun = "a"\n')
    web = stack.services["web"]
    assert (web.instances, web.restart, web.stop_timeout, web.shell) == (
        1,
        m.RestartPolicy.ALWAYS,
        10.0,
        False,
    )
    assert stack.router == m.Router(m.RouterKind.AUTO, "127.0.0.1", 8080)
    assert stack.engine == m.Engine(1.0, 300.0, 10, 600.0)


def test_unknown_key_has_its_position_and_a_suggestion(tmp_path: Path) -> None:
    path = tmp_path / "sqlifier.toml"
    path.write_text('[stack]\nname = "x"\n[services.web]\nrun = "a"\ninstnaces = 2\n')
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(path, "sqlifier.toml")
    (found,) = caught.value.diagnostics
    assert (found.line, found.col) == (5, 1)
    assert found.message.startswith("unknown key 'instnaces' in [services.web]; valid: run, ")
    assert found.hint == "did you mean 'instances'?"


@pytest.mark.parametrize(
    ("line", "col", "message"),
    [
        ('instances = "two"', 13, "services.web.instances must be a whole number, found 'two'"),
        ("instances = -1", 13, "services.web.instances must be between 0 and 1000, found -1"),
        (
            "stop_timeout = 10",
            16,
            'services.web.stop_timeout must be a duration like "30s" or "5m", found 10',
        ),
        (
            'restart = "sometimes"',
            11,
            "services.web.restart must be one of 'always', 'on-failure', 'never', found 'sometimes'",
        ),
        ("shell = 1", 9, "services.web.shell must be true or false, found 1"),
        (
            'routes = ["shop localhost"]',
            11,
            'invalid route \'shop localhost\': write host/path or /path, like "shop.localhost/checkout" or "/api/checkout"',
        ),
        (
            'routes = ["/a\\n\\thttp-request\\treturn"]',
            11,
            "invalid route '/a\\n\\thttp-request\\treturn': a route's path holds "
            "letters, digits and - . _ ~ % / : @ ! * + , ; = & only (percent-encode anything "
            "else)",
        ),
        (
            'env = { "A=B" = "x" }',
            17,
            "invalid environment variable name 'A=B' in services.web.env: a name is not empty "
            "and holds no '=', like DATABASE_URL",
        ),
        ('env = { A = "a\\u0000b" }', 13, "services.web.env.A holds a NUL character (\\u0000)"),
        ('source = "a\\u0000b"', 10, "services.web.source holds a NUL character (\\u0000)"),
        (
            'probes = { readiness = { http = "/a\\r\\nHost: x" } }',
            33,
            'services.web.probes.readiness.http must be a path starting with /, like "/health/'
            'ready", without spaces or control characters',
        ),
        (
            "port = 65534\ninstances = 3",
            8,
            "services.web.port 65534 with 3 instances needs ports up to 65536, past 65535: "
            "each instance listens on port + its number",
        ),
        (
            'secrets = { DB = "hunter2" }',
            18,
            "invalid secret reference 'hunter2'; providers: secret://local/NAME, vault://MOUNT/PATH#KEY, aws-sm://NAME#KEY, ssm:///PATH, env://NAME, file://PATH",
        ),
        (
            'probes = { readiness = { period = "2s" } }',
            12,
            'services.web.probes.readiness needs exactly one of http = "/path", tcp = true or exec = "command", found 0',
        ),
        (
            'rollout = { steps = ["10%", "1%", "100%"] }',
            21,
            'services.web.rollout.steps must grow step by step, like ["1%", "10%", "100%"]',
        ),
        (
            'rollout = { analysis = ["error_rate() < 1"] }',
            25,
            "invalid analysis 'error_rate() < 1': error_rate() is a percentage; compare it with a percentage like 80%, not '1'",
        ),
        (
            'rollout = { analysis = ["cpu() > 50%"] }',
            25,
            "invalid analysis 'cpu() > 50%': cpu() is not measured on a canary; analysis can use error_rate(), latency(p50|p90|p95|p99) and rps()",
        ),
    ],
)
def test_wrong_values_are_reported_at_the_value(
    tmp_path: Path, line: str, col: int, message: str
) -> None:
    text = f'[stack]\nname = "x"\n[services.web]\nrun = "a"\n{line}\n'
    assert errors(tmp_path, text) == [(5, col, message)]


def test_a_service_needs_a_run_command(tmp_path: Path) -> None:
    assert errors(tmp_path, '[stack]\nname = "x"\n[services.web]\ninstances = 2\n') == [
        (3, 11, 'services.web needs a run command, like run = "python3 app.py"')
    ]


def test_unknown_dependency_and_cycles(tmp_path: Path) -> None:
    text = (
        '[stack]\nname = "x"\n'
        '[services.a]\nrun = "a"\ndepends_on = ["b"]\n'
        '[services.b]\nrun = "b"\ndepends_on = ["c"]\n'
        '[services.c]\nrun = "c"\ndepends_on = ["a", "d"]\n'
    )
    assert errors(tmp_path, text) == [
        (5, 15, "dependency cycle: a -> b -> c -> a"),
        (11, 20, "service c depends on unknown service 'd'; services: a, b, c"),
    ]


def test_a_route_claimed_by_two_services(tmp_path: Path) -> None:
    text = (
        '[stack]\nname = "x"\n'
        '[services.a]\nrun = "a"\nroutes = ["/api"]\n'
        '[services.b]\nrun = "b"\nroutes = ["/web", "/api"]\n'
    )
    assert errors(tmp_path, text) == [(8, 19, "route '/api' is claimed by both a and b")]


def test_a_port_used_twice(tmp_path: Path) -> None:
    text = (
        '[stack]\nname = "x"\n'
        '[services.a]\nrun = "a"\nport = 9000\ninstances = 2\n'
        '[services.b]\nrun = "b"\nport = 9001\n'
        '[services.c]\nrun = "c"\nport = 8080\n'
    )
    assert errors(tmp_path, text) == [
        (9, 8, "port 9001 of service b is already used by a"),
        (12, 8, "port 8080 of service c is already used by the router"),
    ]


def test_overrides_of_unknown_services_and_keys(tmp_path: Path) -> None:
    text = (
        '[stack]\nname = "x"\n[services.web]\nrun = "a"\n'
        "[environments.production.services.wbe]\ninstances = 3\n"
        "[environments.production.services.web]\ninstance = 3\n"
    )
    found = errors(tmp_path, text)
    assert found[0] == (
        5,
        35,
        "environment production overrides unknown service 'wbe'; services: web",
    )
    assert found[1][:2] == (8, 1)
    assert found[1][2].startswith(
        "unknown key 'instance' in [environments.production.services.web]"
    )
    assert len(found) == 2


def test_an_override_is_checked_as_it_will_run(tmp_path: Path) -> None:
    text = (
        '[stack]\nname = "x"\n'
        '[services.a]\nrun = "a"\nroutes = ["/a"]\n'
        '[services.b]\nrun = "b"\nroutes = ["/b"]\n'
        '[environments.staging.services.b]\nroutes = ["/a"]\n'
    )
    assert errors(tmp_path, text) == [(10, 11, "route '/a' is claimed by both a and b")]


def test_a_secret_in_plain_text_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "sqlifier.toml"
    path.write_text(
        '[stack]\nname = "x"\n[services.web]\nrun = "a"\nenv = { DB_PASSWORD = "hunter2" }\n'
    )
    stack, warnings = load_stack(path, "sqlifier.toml")
    assert stack.services["web"].env == {"DB_PASSWORD": "hunter2"}
    assert [(w.line, w.col, w.message) for w in warnings] == [
        (5, 23, "env.DB_PASSWORD looks like a secret written in plain text")
    ]
    assert warnings[0].hint == (
        "move it to [services.web.secrets] as a reference, like "
        'DB_PASSWORD = "secret://local/db_password"'
    )


def test_router_listen_is_host_and_port(tmp_path: Path) -> None:
    stack = load(
        tmp_path, '[stack]\nname = "x"\n[router]\nkind = "embedded"\nlisten = "127.0.0.1:9090"\n'
    )
    assert stack.router == m.Router(m.RouterKind.EMBEDDED, "127.0.0.1", 9090)
    assert errors(tmp_path, '[stack]\nname = "x"\n[router]\nlisten = "9090"\n') == [
        (4, 10, "router.listen must be host:port, like \"127.0.0.1:8080\", found '9090'")
    ]


def test_each_environment_can_have_its_own_router_address(tmp_path: Path) -> None:
    stack = load(
        tmp_path,
        '[stack]\nname = "x"\n[router]\nlisten = "127.0.0.1:9090"\n'
        '[environments.staging]\nlisten = "127.0.0.1:9091"\n[environments.production]\n',
    )
    assert stack.router_for("dev").port == 9090
    assert stack.router_for("staging") == m.Router(m.RouterKind.AUTO, "127.0.0.1", 9091)
    assert stack.router_for("production").port == 9090
    assert errors(tmp_path, '[stack]\nname = "x"\n[environments.staging]\nlisten = "x"\n') == [
        (4, 10, "environments.staging.listen must be host:port, like \"127.0.0.1:8080\", found 'x'")
    ]
