"""`isolation`, `egress` and `user` in the stack model and in release records: a release
keeps them for a rollback, and a service that uses none of them records what it did
before (its config hash does not change)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from sqlifier.delivery.records import config_hash, service_config, service_from_config
from sqlifier.errors import DiagnosticsError
from sqlifier.runtime.supervisor import StartFailed, Supervisor
from sqlifier.stack import load_stack
from sqlifier.stack.model import Egress, Isolation, Service


def test_a_release_record_keeps_isolation_egress_and_user(tmp_path: Path) -> None:
    service = Service(
        "web",
        "python3 app.py",
        tmp_path,
        isolation=Isolation.NETWORK,
        egress=(Egress("service", "orders"), Egress("network", "10.0.0.0/8", 443)),
        user="nobody",
    )
    assert service_from_config(service_config(service)) == service


def test_a_service_without_them_records_what_it_did_before(tmp_path: Path) -> None:
    config = service_config(Service("web", "python3 app.py", tmp_path))
    assert not {"isolation", "egress", "user"} & set(config)
    assert config_hash(config) == config_hash(
        service_config(Service("web", "python3 app.py", tmp_path))
    )


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("orders", Egress("service", "orders")),
        ("db.example.com:5432", Egress("host", "db.example.com", 5432)),
        ("192.0.2.7:5432", Egress("network", "192.0.2.7/32", 5432)),
        ("10.0.0.0/8:443", Egress("network", "10.0.0.0/8", 443)),
    ],
)
def test_egress_entries_are_read_by_their_shape(tmp_path: Path, written: str, read: Egress) -> None:
    path = tmp_path / "sqlifier.toml"
    path.write_text(
        '[stack]\nname = "t"\n[services.web]\nrun = "x"\nisolation = "network"\n'
        f'egress = ["{written}"]\n[services.orders]\nrun = "x"\n'
    )
    stack, _ = load_stack(path)
    assert stack.services["web"].egress == (read,)


@pytest.mark.parametrize(
    "written", ["db.example.com", "10.0.0.1/8:443", "x:0", "a b:1", "10.0.0.0/8"]
)
def test_an_egress_entry_of_no_known_shape_is_a_positioned_error(
    tmp_path: Path, written: str
) -> None:
    path = tmp_path / "sqlifier.toml"
    path.write_text(f'[stack]\nname = "t"\n[services.web]\nrun = "x"\negress = ["{written}"]\n')
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(path)
    assert str(caught.value).startswith(
        f"{path}:5:11: error: invalid egress '{written}': write a service of the stack by name, "
        'a host and port, or a network and port, like "orders"'
    )


def test_an_egress_service_that_does_not_exist_is_named(tmp_path: Path) -> None:
    path = tmp_path / "sqlifier.toml"
    path.write_text(
        '[stack]\nname = "t"\n[services.web]\nrun = "x"\nisolation = "network"\n'
        'egress = ["ordrs"]\n[services.orders]\nrun = "x"\n'
    )
    with pytest.raises(DiagnosticsError) as caught:
        load_stack(path)
    assert str(caught.value) == (
        f"{path}:6:11: error: services.web.egress names unknown service 'ordrs'; "
        "services: web, orders"
    )
    assert caught.value.diagnostics[0].hint == "did you mean 'orders'?"


def test_where_it_cannot_isolate_check_warns_and_up_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A mock: these tests run as root; the euid is replaced to stand for a user's.
    monkeypatch.setattr("os.geteuid", lambda: 1000)
    path = tmp_path / "sqlifier.toml"
    path.write_text('[stack]\nname = "t"\n[services.web]\nrun = "x"\nisolation = "network"\n')
    stack, [warning] = load_stack(path)
    assert warning.headline() == (
        f"{path}:5:13: warning: services.web.isolation: this environment cannot isolate: "
        "network namespaces, veth pairs and nftables need root; "
        "up refuses to start the service here"
    )
    supervisor = Supervisor(stack, "dev", tmp_path / ".sqlifier" / "dev")
    with pytest.raises(StartFailed) as caught:
        asyncio.run(supervisor.start())
    assert str(caught.value) == (
        'service web asks for isolation = "network": network isolation needs root '
        "(network namespaces, veth pairs, nftables)"
    )
    assert supervisor.snapshot() == []  # nothing started, unisolated or not
