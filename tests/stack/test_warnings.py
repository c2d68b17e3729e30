"""Warnings of the stack file, positioned like errors: what would stop a deploy or a
start that the stack file allows (an approval no one can give, a route listed twice, two
listeners on one address, a SCALE that a fixed port cannot hold)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlifier.diagnostics import Severity
from sqlifier.errors import DiagnosticsError
from sqlifier.lang import Source, parse_source
from sqlifier.stack import load_stack
from sqlifier.stack.crosscheck import scale_port_warnings

BASE = '[stack]\nname = "w"\n\n[services.web]\nrun = "x"\n'


def warnings(tmp_path: Path, text: str) -> list[tuple[int, int, str]]:
    path = tmp_path / "sqlifier.toml"
    path.write_text(text)
    _, found = load_stack(path, "sqlifier.toml")
    assert all(d.severity is Severity.WARNING for d in found)
    return [(d.line, d.col, d.message) for d in found]


def test_approval_without_approvers_is_a_warning_at_the_empty_list(tmp_path: Path) -> None:
    text = BASE + '\n[environments.production]\napproval = "required"\napprovers = []\n'
    assert warnings(tmp_path, text) == [
        (
            9,
            13,
            "environment production requires approval but names no approvers: every deploy "
            "to it will be refused",
        )
    ]


def test_approval_without_an_approvers_key_points_at_the_approval(tmp_path: Path) -> None:
    text = BASE + '\n[environments.production]\napproval = "required"\n'
    assert [w[:2] for w in warnings(tmp_path, text)] == [(8, 12)]


def test_approval_with_approvers_or_none_needed_is_clean(tmp_path: Path) -> None:
    assert (
        warnings(tmp_path, BASE + '\n[environments.p]\napproval = "required"\napprovers = ["a"]\n')
        == []
    )
    assert warnings(tmp_path, BASE + '\n[environments.p]\napproval = "none"\n') == []


def test_a_route_listed_twice_in_one_service_is_a_warning_at_the_second(tmp_path: Path) -> None:
    text = BASE + 'routes = ["/", "/api", "/"]\n'
    assert warnings(tmp_path, text) == [(6, 24, "route '/' is listed twice in the routes of web")]


def test_a_route_of_two_services_stays_an_error(tmp_path: Path) -> None:
    path = tmp_path / "sqlifier.toml"
    path.write_text(BASE + 'routes = ["/"]\n\n[services.api]\nrun = "y"\nroutes = ["/"]\n')
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(path)
    assert [d.message for d in caught.value.diagnostics] == [
        "route '/' is claimed by both web and api"
    ]


def test_router_and_metrics_on_one_address_is_a_warning(tmp_path: Path) -> None:
    text = BASE + '\n[router]\nlisten = "127.0.0.1:9100"\n\n[metrics]\nlisten = "0.0.0.0:9100"\n'
    assert warnings(tmp_path, text) == [
        (8, 10, "the router and /metrics both listen on 127.0.0.1:9100")
    ]


def test_an_environments_router_on_the_metrics_address_is_a_warning(tmp_path: Path) -> None:
    text = BASE + '\n[environments.staging]\nlisten = "127.0.0.1:9464"\n'
    assert warnings(tmp_path, text) == [
        (8, 10, "the router of staging and /metrics both listen on 127.0.0.1:9464")
    ]


def test_routers_on_other_hosts_or_ports_are_clean(tmp_path: Path) -> None:
    text = (
        BASE
        + '\n[router]\nlisten = "127.0.0.2:9464"\n\n[environments.s]\nlisten = "127.0.0.1:8080"\n'
    )
    assert warnings(tmp_path, text) == []


def test_a_fixed_port_on_the_metrics_port_is_a_warning_naming_the_instance(
    tmp_path: Path,
) -> None:
    text = BASE + "port = 9462\ninstances = 3\n"
    assert warnings(tmp_path, text) == [
        (6, 8, "instance web-2 would listen on port 9464, where /metrics listens")
    ]


def test_an_environments_instances_past_a_fixed_port_is_an_error_at_the_override(
    tmp_path: Path,
) -> None:
    text = (
        BASE
        + 'port = 9000\n\n[services.api]\nrun = "y"\nport = 9003\n\n'
        + "[environments.big.services.web]\ninstances = 5\n"
    )
    path = tmp_path / "sqlifier.toml"
    path.write_text(text)
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(path)
    assert [(d.line, d.col, d.message) for d in caught.value.diagnostics] == [
        (13, 13, "port 9003 of service api in environment big is already used by web")
    ]


SCALE_STACK = BASE + 'port = 9000\n\n[services.api]\nrun = "y"\nport = 9005\n'


def scale_warnings(tmp_path: Path, stack_text: str, rules: str) -> list[tuple[int, int, str]]:
    path = tmp_path / "sqlifier.toml"
    path.write_text(stack_text)
    stack, _ = load_stack(path)
    source = Source(rules, "r.sql")
    parsed, errors = parse_source(source)
    assert errors == []
    found = scale_port_warnings(stack, [(source, parsed)])
    return [(d.line, d.col, d.message) for d in found]


@pytest.mark.parametrize(
    "rule",
    [
        "ON cpu(service='web') > 80% DO SCALE service.name TO instances + 1 LIMIT 8;",
        "ON cpu() > 80% IF service.name = 'web' DO SCALE service.name TO instances + 1;",
        "ON cpu() > 80% DO SCALE 'web' TO 6;",
    ],
)
def test_a_scale_past_the_next_fixed_port_is_a_warning_at_the_scale(
    tmp_path: Path, rule: str
) -> None:
    found = scale_warnings(tmp_path, SCALE_STACK, rule + "\n")
    assert len(found) == 1
    line, col, message = found[0]
    assert (line, col) == (1, rule.index("SCALE") + 1)
    assert message.startswith("this SCALE can run up to ")
    assert message.endswith("instances of web, on ports 9000 to " + message.split(" to ")[2])
    assert "but port 9005 is taken by api-0" in message


def test_a_scale_that_fits_or_scales_another_service_is_clean(tmp_path: Path) -> None:
    rules = (
        "ON cpu(service='web') > 80% DO SCALE service.name TO instances + 1 LIMIT 5;\n"
        "ON cpu() > 80% DO SCALE 'web' TO 5;\n"
        "ON cpu() > 80% IF service.name = 'other' DO SCALE service.name TO instances + 1;\n"
    )
    text = SCALE_STACK + '\n[services.other]\nrun = "z"\n'
    assert scale_warnings(tmp_path, text, rules) == []


def test_a_scale_past_the_last_port_says_so(tmp_path: Path) -> None:
    text = BASE + "port = 65530\n"
    found = scale_warnings(tmp_path, text, "ON cpu() > 80% DO SCALE 'web' TO 10;\n")
    assert found == [
        (
            1,
            19,
            "this SCALE can run up to 10 instances of web, on ports 65530 to 65539 from its "
            "fixed port, but ports end at 65535",
        )
    ]
