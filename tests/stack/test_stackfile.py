"""The stack file at this stage: TOML, the documented tables, service names, positions."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlifier.errors import DiagnosticsError
from sqlifier.stack import find_stack, load_stack


def errors(tmp_path: Path, text: str) -> list[tuple[int, int, str]]:
    path = tmp_path / "sqlifier.toml"
    path.write_text(text)
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(path, "sqlifier.toml")
    return [(d.line, d.col, d.message) for d in caught.value.diagnostics]


def test_a_valid_stack(tmp_path: Path) -> None:
    path = tmp_path / "sqlifier.toml"
    path.write_text(
        '[stack]\nname = "shop"\nrules = ["r/*.sql"]\n\n[services.web]\nrun = "x"\n\n'
        '[services.api]\nrun = "y"\n\n[environments.production]\napproval = "required"\napprovers = ["al"]\n'
    )
    stack, warnings = load_stack(path)
    assert warnings == []
    assert (stack.name, stack.rules, stack.service_names, tuple(stack.environments)) == (
        "shop",
        ("r/*.sql",),
        ("web", "api"),
        ("production",),
    )


def test_invalid_toml_has_its_position(tmp_path: Path) -> None:
    assert errors(tmp_path, '[stack]\nname = "x"\nrules = [\n') == [
        (4, 1, "invalid TOML: invalid value")
    ]


def test_unknown_top_level_table(tmp_path: Path) -> None:
    assert errors(tmp_path, '[stack]\nname = "x"\n[routr]\nlisten = "x"\n') == [
        (
            3,
            2,
            "unknown top-level table 'routr'; valid: stack, environments, services, router, "
            "engine, notify, prometheus, metrics, dashboard",
        )
    ]


def test_stack_table_is_required(tmp_path: Path) -> None:
    assert errors(tmp_path, '[services.web]\nrun = "x"\n') == [
        (1, 1, "the stack file needs a [stack] table with a name")
    ]


def test_service_names_must_be_usable_as_instance_names(tmp_path: Path) -> None:
    found = errors(tmp_path, '[stack]\nname = "x"\n\n[services.Web_1]\nrun = "x"\n')
    assert found == [
        (
            4,
            11,
            "invalid service name 'Web_1': use lower-case letters, digits and '-', "
            "starting with a letter (at most 63 characters)",
        )
    ]


def test_a_service_must_be_a_table(tmp_path: Path) -> None:
    assert errors(tmp_path, '[stack]\nname = "x"\n[services]\nweb = "python app.py"\n') == [
        (4, 1, "services.web must be a table, like [services.web]")
    ]


def test_rules_must_be_a_list_of_patterns(tmp_path: Path) -> None:
    assert errors(tmp_path, '[stack]\nname = "x"\nrules = "rules/*.sql"\n') == [
        (3, 9, 'stack.rules must be a list of text, like ["a", "b"], found \'rules/*.sql\'')
    ]


def test_the_stack_is_found_from_a_subfolder(tmp_path: Path) -> None:
    (tmp_path / "sqlifier.toml").write_text('[stack]\nname = "x"\n')
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    assert find_stack(deep) == (tmp_path / "sqlifier.toml").resolve()


def test_metrics_listen_default_address_and_off(tmp_path: Path) -> None:
    path = tmp_path / "sqlifier.toml"
    base = '[stack]\nname = "x"\n[services.web]\nrun = "x"\n'
    for extra, expected in (
        ("", ("127.0.0.1", 9464)),
        ('[metrics]\nlisten = "0.0.0.0:9100"\n', ("0.0.0.0", 9100)),
        ('[metrics]\nlisten = "off"\n', None),
    ):
        path.write_text(base + extra)
        assert load_stack(path)[0].metrics == expected


def test_metrics_listen_must_be_an_address(tmp_path: Path) -> None:
    text = '[stack]\nname = "x"\n[services.web]\nrun = "x"\n[metrics]\nlisten = "9100"\n'
    assert errors(tmp_path, text) == [
        (6, 10, "metrics.listen must be host:port, like \"127.0.0.1:8080\", found '9100'")
    ]
