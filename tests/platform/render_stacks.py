"""Stacks the render tests share: the example shop, and a small stack with everything a
service can carry to Kubernetes (a stateful service, secrets by variable and by file, a
startup probe, a shell command, a fixed port, an env_file)."""

from __future__ import annotations

from pathlib import Path

from sqlifier.stack import load_stack
from sqlifier.stack.model import Stack

SHOP = Path(__file__).parents[2] / "examples" / "shop" / "sqlifier.toml"

FULL = """\
[stack]
name = "full"
rules = ["rules/*.sql"]

[environments.prod]
platform = "kubernetes"
env_file = "prod.env"
kubernetes = { namespace = "apps", gateway = "public" }

[services.db]
run = "db --port $PORT --data $DATA_DIR --price $$5"
image = "registry.example.com/full/db:3.1"
stateful = true
instances = 3
port = 5000
stop_timeout = "30s"
resources = { memory = "500M" }
secrets = { DB_PASSWORD = "secret://local/db_password", TLS_KEY = { ref = "secret://local/tls_key", file = "certs/tls.key" } }
probes.startup = { tcp = true, period = "2s", failure_threshold = 30 }
probes.readiness = { exec = "db-ready --quick", period = "5s", timeout = "3s", success_threshold = 2 }
probes.liveness = { http = "/alive", period = "10s", failure_threshold = 6 }

[services.web]
run = "exec web --port $PORT"
shell = true
image = "registry.example.com/full/web"
instances = 2
routes = ["full.example.com/", "/api", "full.example.com/api/admin"]
env = { LOG_LEVEL = "info", GREETING = "from the stack" }
depends_on = ["db"]
resources = { cpu = "250m", memory = "256Mi" }

[services.worker]
run = "worker"
image = "registry.example.com/full/worker@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
routes = ["/images"]
"""


def shop() -> Stack:
    return load_stack(SHOP)[0]


def full(folder: Path) -> Stack:
    """The full stack in `folder`, with its env file and a rule file."""
    (folder / "rules").mkdir(exist_ok=True)
    (folder / "rules" / "scale.sql").write_text(
        "CREATE RULE busy ON high_cpu(>80%) FOR 1m DO SCALE web TO 3;\n"
    )
    (folder / "prod.env").write_text("GREETING=from the file\nREGION=eu\n")
    path = folder / "sqlifier.toml"
    path.write_text(FULL)
    return load_stack(path)[0]
