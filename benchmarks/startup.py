"""How quickly the `sqlifier` command answers, side by side with a floor and a baseline.

    .venv/bin/python benchmarks/startup.py [--repeat 15]

Each case runs the installed console script as a user types it, in a fresh process, the
cases interleaved round by round (so a busy moment of a shared machine falls on every
case alike). Printed per case: the median wall time, the spread (fastest to slowest), the
target and the ratio to it.

- `python -c pass`: the floor, an interpreter that starts and does nothing;
- `promtool check rules` on 100 alerting rules, the baseline, beside `sqlifier check` on a
  stack holding the same 100 rules (target: within 3x of promtool);
- `sqlifier --help` (target: 100 ms);
- `sqlifier ps` against a running stack of one service (target: 150 ms);
- `sqlifier check` of a stack with 1,000 rules (target: 0.5 s).

The stacks are generated in a temporary folder; the running one is started with
`sqlifier up --detach` and stopped with `sqlifier down` at the end.

`--instructions` also runs each case once under valgrind (callgrind) and prints the
instructions it executed: a count that does not move with the machine's load, where the
wall times of a shared machine do (a run takes a minute more).

sqlifier's modules are compiled to bytecode first (`compileall`), as `pip install` and
`pipx install` do: a checkout installed in development mode, with PYTHONDONTWRITEBYTECODE
set, would otherwise compile every module from source on every start (some 60 ms more).
"""

from __future__ import annotations

import argparse
import os
import random
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent
SQLIFIER = str(BIN / "sqlifier")

SERVICES = [f"svc-{i}" for i in range(20)]

# Rules that each have an exact Prometheus alerting rule: a threshold held FOR a window.
TEMPLATES = [
    (
        "RULE cpu-{i}\nON cpu(service='{s}') > {p}% FOR {m}m\nDO SCALE '{s}' TO instances + 1\n"
        "LIMIT 10;",
        'avg(rate(process_cpu_seconds_total{{service="{s}"}}[1m])) * 100 > {p}',
    ),
    (
        "RULE errors-{i}\nON error_rate(service='{s}') > {n}% FOR {m}m\n"
        "DO ROLLBACK service '{s}' TO previous_stable;",
        'sum(rate(http_requests_total{{service="{s}",code=~"5.."}}[1m])) / '
        'sum(rate(http_requests_total{{service="{s}"}}[1m])) * 100 > {n}',
    ),
    (
        "RULE latency-{i}\nON latency(p99, service='{s}') > {n}0ms FOR {m}m\n"
        "DO NOTIFY 'p99 of {{service.name}} is {{value}}';",
        "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket"
        '{{service="{s}"}}[1m]))) * 1000 > {n}0',
    ),
    (
        "RULE memory-{i}\nON memory(service='{s}') > {p}% FOR {m}m\nDO RESTART '{s}';",
        'avg(process_resident_memory_percent{{service="{s}"}}) > {p}',
    ),
]


def generate(count: int, seed: int = 7) -> tuple[str, str]:
    """`count` rules, and the same rules as Prometheus alerting rules (YAML)."""
    rng = random.Random(seed)
    rules, alerts = [], ["groups:", "  - name: stack", "    rules:"]
    for i in range(count):
        rule, expr = TEMPLATES[i % len(TEMPLATES)]
        values = {
            "i": i,
            "s": rng.choice(SERVICES),
            "p": rng.randint(50, 95),
            "m": rng.randint(1, 10),
            "n": rng.randint(2, 50),
        }
        rules.append(rule.format(**values))
        alerts += [
            f"      - alert: {rule.split()[1].format(**values)}",
            f"        expr: '{expr.format(**values)}'",
            f"        for: {values['m']}m",
            "        labels: {severity: page}",
            "        annotations: {summary: 'rule " + str(i) + " fired'}",
        ]
    return "\n\n".join(rules) + "\n", "\n".join(alerts) + "\n"


APP = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "3")
        self.end_headers()
        self.wfile.write(b"ok\\n")

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def make_stack(folder: Path, rules: int) -> tuple[Path, Path]:
    """A stack of 20 services with `rules` rules; the stack file and the alerting rules."""
    folder.mkdir(parents=True)
    services = "".join(
        f'\n[services.{s}]\nrun = "python3 app.py"\nroutes = ["/{s}"]\n' for s in SERVICES
    )
    (folder / "sqlifier.toml").write_text(
        f'[stack]\nname = "bench"\nrules = ["rules/*.sql"]\n\n[metrics]\nlisten = "off"\n{services}'
    )
    (folder / "rules").mkdir()
    text, alerts = generate(rules)
    (folder / "rules" / "all.sql").write_text(text)
    (folder / "alerts.yml").write_text(alerts)
    return folder / "sqlifier.toml", folder / "alerts.yml"


def make_running_stack(folder: Path) -> Path:
    """A stack of one service, no router and no /metrics: what `ps` asks about."""
    (folder / "web").mkdir(parents=True)
    (folder / "web" / "app.py").write_text(APP)
    (folder / "sqlifier.toml").write_text(
        '[stack]\nname = "bench-ps"\nrules = []\n\n[metrics]\nlisten = "off"\n\n'
        '[services.web]\nsource = "web"\nrun = "python3 app.py"\n'
    )
    return folder / "sqlifier.toml"


@dataclass
class Case:
    name: str
    argv: list[str]
    cwd: Path
    target: float | None = None  # seconds
    baseline: str | None = None  # a case whose median times a ratio is the target
    ratio: float | None = None
    times: list[float] | None = None
    cpu: list[float] | None = None
    instructions: int | None = None


def timed(argv: list[str], cwd: Path) -> tuple[float, float]:
    """Wall time, and the CPU time (user + system) the process used."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(argv, cwd=cwd, capture_output=True, check=False)
    elapsed = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({result.returncode}):\n{result.stderr.decode()}")
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    return elapsed, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeat", type=int, default=15, help="rounds (default 15)")
    parser.add_argument(
        "--instructions", action="store_true", help="also count instructions (valgrind)"
    )
    args = parser.parse_args()
    if args.instructions and shutil.which("valgrind") is None:
        sys.exit("--instructions needs valgrind (apt-get install valgrind)")
    if shutil.which("promtool") is None:
        sys.exit("promtool is not installed: it is the baseline (apt-get install prometheus)")
    env = {k: v for k, v in os.environ.items() if k not in ("SQLIFIER_ENV", "SQLIFIER_DEBUG")}
    os.environ.clear()
    os.environ.update(env)
    import sqlifier

    package = Path(sqlifier.__file__).parent
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(package)], check=True)
    with tempfile.TemporaryDirectory(prefix="sqlifier-startup-") as temp:
        root = Path(temp)
        stack100, alerts100 = make_stack(root / "s100", 100)
        stack1000, _ = make_stack(root / "s1000", 1000)
        running = make_running_stack(root / "running")
        up = subprocess.run(
            [SQLIFIER, "up", "--detach", "-f", str(running)],
            cwd=running.parent,
            capture_output=True,
            text=True,
            check=False,
        )
        if up.returncode != 0:
            sys.exit(f"sqlifier up failed:\n{up.stderr}")
        try:
            cases = [
                Case("python -c pass (floor)", [sys.executable, "-c", "pass"], root),
                Case(
                    "promtool check rules, 100 rules (baseline)",
                    ["promtool", "check", "rules", str(alerts100)],
                    root,
                ),
                Case(
                    "sqlifier check, 100 rules",
                    [SQLIFIER, "check"],
                    stack100.parent,
                    baseline="promtool check rules, 100 rules (baseline)",
                    ratio=3.0,
                ),
                Case("sqlifier --help", [SQLIFIER, "--help"], root, target=0.100),
                Case("sqlifier ps, a running stack", [SQLIFIER, "ps"], running.parent, 0.150),
                Case("sqlifier check, 1,000 rules", [SQLIFIER, "check"], stack1000.parent, 0.5),
            ]
            run_cases(cases, args.repeat)
            if args.instructions:
                count_instructions(cases)
        finally:
            subprocess.run([SQLIFIER, "down", "-f", str(running)], capture_output=True, check=False)
    report(cases)


def run_cases(cases: list[Case], repeat: int) -> None:
    for case in cases:  # one warm-up each: the page cache, not the first round, pays
        timed(case.argv, case.cwd)
        case.times, case.cpu = [], []
    for _ in range(repeat):
        for case in cases:
            assert case.times is not None and case.cpu is not None
            wall, cpu = timed(case.argv, case.cwd)
            case.times.append(wall)
            case.cpu.append(cpu)


def count_instructions(cases: list[Case]) -> None:
    """Each case once under callgrind: the instructions it executed (promtool, a Go
    program, does not run under valgrind: it has none)."""
    for case in cases:
        if case.argv[0] == "promtool":
            continue
        done = subprocess.run(
            ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", *case.argv],
            cwd=case.cwd,
            capture_output=True,
            text=True,
            check=False,
        )
        found = re.search(r"Collected : (\d+)", done.stderr)
        case.instructions = int(found.group(1)) if found else None


def report(cases: list[Case]) -> None:
    medians = {c.name: statistics.median(c.times or [0.0]) for c in cases}
    floor = medians[cases[0].name]
    load = os.getloadavg()[0]
    print(
        f"{len(cases[0].times or [])} rounds, medians; load average {load:.2f} on "
        f"{os.cpu_count()} cores. The machine is shared: the median, not the best, is the "
        "figure;\nCPU (user + system of the process) moves less with the load than wall time."
    )
    print(
        f"{'case':<44} {'wall':>7} {'spread':>13} {'CPU':>7} {'target':>8} {'ratio':>6} "
        f"{'- floor':>8}"
    )
    for case in cases:
        times = case.times or [0.0]
        median = medians[case.name]
        spread = f"{min(times) * 1000:.0f}-{max(times) * 1000:.0f} ms"
        cpu = statistics.median(case.cpu or [0.0])
        target = case.target
        if case.baseline is not None and case.ratio is not None:
            target = medians[case.baseline] * case.ratio
        shown_target = f"{target * 1000:.0f} ms" if target else "-"
        ratio = f"{median / target:.2f}x" if target else "-"
        print(
            f"{case.name:<44} {median * 1000:>4.0f} ms {spread:>13} {cpu * 1000:>4.0f} ms "
            f"{shown_target:>8} {ratio:>6} {(median - floor) * 1000:>5.0f} ms"
        )
    if any(case.instructions for case in cases):
        floor_count = cases[0].instructions or 1
        print("\ninstructions executed (valgrind; the same on an idle or a busy machine):")
        for case in cases:
            if case.instructions:
                print(
                    f"  {case.name:<44} {case.instructions / 1e6:>6.0f} M  "
                    f"{case.instructions / floor_count:>5.2f}x the floor"
                )
    check = medians["sqlifier check, 100 rules"]
    promtool = medians["promtool check rules, 100 rules (baseline)"]
    print(
        f"\nsqlifier check / promtool check rules, 100 rules: {check / promtool:.1f}x (target: "
        "3x or less).\nratio: the median over its target (1.00x or less meets it); - floor: "
        "the median less python -c pass's."
    )


if __name__ == "__main__":
    main()
