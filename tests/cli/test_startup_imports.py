"""What a command loads as it starts: each module left out here is one a user would wait
for on every run. No timing here (benchmarks/startup.py measures it): only which modules
a fresh process has imported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_RUN_CHECK = (
    "import json, sys\n"
    "sys.argv = ['sqlifier', 'check']\n"
    "from sqlifier.cli.fasthelp import main\n"
    "try:\n    main()\nexcept SystemExit:\n    pass\n"
    "print(json.dumps(sorted(sys.modules)))"
)
# The stack file's parts for keys most stacks never write, and cron.py for rules with no
# schedule().
_OPTIONAL = (
    "sqlifier.stack.kubernetes",
    "sqlifier.stack.tls",
    "sqlifier.stack.slo",
    "sqlifier.lang.cron",
)


_SCHEDULED = "RULE nightly\nON schedule('0 3 * * *')\nDO RESTART 'web';\n"


def _loaded(code: str, cwd: Path) -> set[str]:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.stdout, done.stderr
    return set(json.loads(done.stdout.splitlines()[-1]))


def _stack(folder: Path, extra: str = "") -> Path:
    (folder / "rules").mkdir(parents=True)
    (folder / "rules" / "r.sql").write_text(
        "RULE cpu\nON cpu(service='web') > 90% FOR 5m\nDO SCALE 'web' TO instances + 1\nLIMIT 4;\n"
    )
    if extra == _SCHEDULED:  # a rule file, not a key of the stack file
        (folder / "rules" / "nightly.sql").write_text(_SCHEDULED)
        extra = ""
    (folder / "sqlifier.toml").write_text(
        '[stack]\nname = "s"\nrules = ["rules/*.sql"]\n\n'
        '[services.web]\nrun = "python3 app.py"\n' + extra
    )
    return folder


def test_check_of_a_plain_stack_loads_no_kubernetes_tls_slo_or_cron(tmp_path: Path) -> None:
    loaded = _loaded(_RUN_CHECK, _stack(tmp_path))
    assert "sqlifier.stack.model" in loaded  # the stack was read
    assert [name for name in _OPTIONAL if name in loaded] == []


@pytest.mark.parametrize(
    ("extra", "module"),
    [
        (
            '\n[environments.prod]\nplatform = "kubernetes"\nkubernetes = { namespace = "shop" }\n',
            "sqlifier.stack.kubernetes",
        ),
        ('\n[router]\ntls = "self-signed"\n', "sqlifier.stack.tls"),
        ("slo = { availability = 0.999 }\n", "sqlifier.stack.slo"),
        (_SCHEDULED, "sqlifier.lang.cron"),
    ],
)
def test_check_loads_each_part_for_a_stack_that_uses_it(
    tmp_path: Path, extra: str, module: str
) -> None:
    assert module in _loaded(_RUN_CHECK, _stack(tmp_path, extra))


def test_ps_loads_neither_the_stack_model_nor_the_agent() -> None:
    loaded = _loaded(
        "import json, sys\nimport sqlifier.cli.ps\nprint(json.dumps(sorted(sys.modules)))",
        Path.cwd(),
    )
    absent = (
        "sqlifier.stack.model",
        "sqlifier.stack.reader",
        "sqlifier.lang.parser",
        "sqlifier.agent.server",
        "sqlifier.engine",
        "tomllib",
        "h11",
        "asyncio",
        "psutil",
    )
    assert [name for name in absent if name in loaded] == []
