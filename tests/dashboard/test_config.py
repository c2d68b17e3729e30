"""`[dashboard] listen` in the stack file: the default, "off", and a wrong value."""

from __future__ import annotations

from pathlib import Path

import pytest

from sqlifier.errors import DiagnosticsError
from sqlifier.stack.model import DEFAULT_DASHBOARD
from sqlifier.stack.stackfile import load_stack


def _load(tmp_path: Path, table: str) -> object:
    (tmp_path / "sqlifier.toml").write_text(
        f'[stack]\nname = "s"\n{table}\n[services.web]\nrun = "python3 app.py"\n'
    )
    stack, problems = load_stack(tmp_path / "sqlifier.toml")
    if problems:
        return [p.message for p in problems]
    return stack.dashboard


def test_the_dashboard_listens_on_9465_by_default(tmp_path: Path) -> None:
    assert _load(tmp_path, "") == DEFAULT_DASHBOARD == ("127.0.0.1", 9465)


def test_off_turns_the_dashboard_off(tmp_path: Path) -> None:
    assert _load(tmp_path, '[dashboard]\nlisten = "off"') is None


def test_a_listen_address_is_host_and_port(tmp_path: Path) -> None:
    assert _load(tmp_path, '[dashboard]\nlisten = "0.0.0.0:8080"') == ("0.0.0.0", 8080)


def test_a_wrong_address_names_the_key_and_what_is_valid(tmp_path: Path) -> None:
    with pytest.raises(DiagnosticsError) as found:
        _load(tmp_path, '[dashboard]\nlisten = "nowhere"')
    assert str(found.value).endswith(
        "sqlifier.toml:4:10: error: dashboard.listen must be host:port, "
        "like \"127.0.0.1:8080\", found 'nowhere'"
    )
