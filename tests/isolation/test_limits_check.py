"""`sqlifier check` warns, at the signal, when a rule reads a share of a limit that no
service it applies to declares: such a rule has no data and never fires."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import run_sqlifier

STACK = """\
[stack]
name = "w"

[services.web]
run = "python3 app.py"
resources = { memory = "256Mi" }

[services.api]
run = "python3 app.py"

[environments.production.services.api]
resources = { cpu = 1 }
"""


def warnings(tmp_path: Path, rules: str) -> list[str]:
    (tmp_path / "sqlifier.toml").write_text(STACK)
    (tmp_path / "rules").mkdir(exist_ok=True)
    (tmp_path / "rules" / "r.sql").write_text(rules)
    result = run_sqlifier("check", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    return [line for line in result.stderr.splitlines() if ": warning: " in line]


def test_a_share_no_service_declares_is_warned_at_the_signal(tmp_path: Path) -> None:
    assert warnings(
        tmp_path,
        "ON memory(service='api') > 90% DO RESTART 'api';\n"
        "ON cpu(of = 'limit') > 90% IF service.name = 'web' DO RESTART service.name;\n",
    ) == [
        "rules/r.sql:1:4: warning: memory() reads a share of resources.memory, which no service"
        " this rule applies to declares: it has no data",
        "rules/r.sql:2:4: warning: cpu() reads a share of resources.cpu, which no service this"
        " rule applies to declares: it has no data",
    ]


def test_a_share_some_service_declares_is_not_warned(tmp_path: Path) -> None:
    assert (
        warnings(
            tmp_path,
            "ON memory() > 90% DO RESTART service.name;\n"
            "ON memory(service='web') > 90% DO RESTART 'web';\n"
            "ON cpu(of = 'limit') > 90% IF service.name = 'api' DO RESTART 'api';\n"
            "ON memory(service='api') > 512MiB DO RESTART 'api';\n",
        )
        == []
    )
