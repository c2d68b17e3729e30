"""How fast a CPU step becomes an action: sqlifier's rules beside a real Prometheus.

    .venv/bin/python benchmarks/reaction.py [--runs 3] [--for 30] [--threshold 50]
                                            [--scrape-interval 15] [--evaluation-interval 15]
                                            [--cpu-window SECONDS]

Each run starts afresh in a temporary folder: a stack with one service `burner`
(examples/shop/services/shop_service.py, 1 instance, routed through the stack's router,
readiness probed every 200 ms), the agent serving /metrics, and the rule

    RULE hot ON cpu() > 50% FOR 30s IF service.name = 'burner'
      DO SCALE service.name TO instances + 1 LIMIT 2;

and beside it a Prometheus scraping the agent's /metrics every 15 s and evaluating every
15 s the same test as an alert (`sqlifier_service_cpu_ratio{service="burner"} > 0.5`,
`for: 30s`). After a random wait (so that the step falls anywhere in Prometheus' cycle),
the step at T0: the file `mode-burner` holding `cpu` makes the instance burn ~95% of a
core. Measured:

1. sqlifier's detection, from its decision record (.sqlifier/dev/decisions.db): P, the
   'pending' decision (the rule saw the condition true), and F, the 'fired' one. Reported:
   seen (P - T0, the sampling delay), fire after FOR (F - (P + FOR)) and end to end
   (F - (T0 + FOR)). Should the reading dip under the threshold on the way, the FOR window
   starts again: P is then the last 'pending' before F, and the run counts a reset.
2. Scale to serving: from F until a GET through the router (one after another on a
   kept-alive connection) is answered by the new instance (shop_service.py answers with its
   name), beside that instance's own start time: a fresh shop_service.py spawned by this
   script beside one burning instance (as the new one starts beside burner-0), from the
   spawn to its first 200 on /health/ready (the median of 3 per run). F to the 'done'
   decision (the agent saw the new instance ready) is shown too.
3. Prometheus: GET /api/v1/alerts every 0.2 s, from T0; when `hot` is first seen pending
   and firing. Reported: firing - (T0 + FOR), and its ratio to sqlifier's end to end.

Targets: sqlifier fires <= 1 s after P + FOR; the new instance serves through the router
within its own start time + 1 s; Prometheus fires at least 15x as long after T0 + FOR as
sqlifier does. Most of sqlifier's part is the CPU signal's window (`[engine] cpu_window`,
2 s by default; `--cpu-window` sets it): the rule sees the step once the mean of the
readings in the window is over the threshold.

Needs `prometheus` (and `promtool`, which checks the alert rule first); without it only
sqlifier's figures are reported, and the output says so. Every address is on 127.0.0.1.
The machine should be otherwise idle: one burning instance has to read above the
threshold for FOR seconds, and a busy machine makes it dip (counted as resets).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import shlex
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # tests.prom, when run as benchmarks/reaction.py

from tests.prom import PROMETHEUS, PROMTOOL, Prometheus, start_prometheus, wait_for_value  # noqa: E402
from tests.servers import free_port  # noqa: E402

SQLIFIER = [sys.executable, "-m", "sqlifier"]
SHOP = ROOT / "examples" / "shop" / "services" / "shop_service.py"
SERVICE = "burner"
T = TypeVar("T")

FIRE_AFTER_FOR = 1.0  # F - (P + FOR), at most
SERVING_OVER_START = 1.0  # serving after F minus the instance's own start time, at most
RATIO_TARGET = 15.0  # Prometheus' firing after T0 + FOR over sqlifier's, at least

ALERTS_POLL = 0.2  # seconds between GET /api/v1/alerts
OWN_STARTS = 3  # fresh shop_service.py starts timed per run

# No proxy from the environment between this script and a server on 127.0.0.1.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get_json(url: str, timeout: float = 5.0) -> Any:
    """The JSON an address answers with 200; None for anything else."""
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return json.loads(response.read())
    except (OSError, ValueError):
        return None


# --- the stack ----------------------------------------------------------------------


class Stack:
    """A stack folder with the burner service and the rule, and the CLI to run it."""

    def __init__(self, folder: Path, args: argparse.Namespace) -> None:
        self.folder = folder
        self.router = free_port()
        self.metrics = f"127.0.0.1:{free_port()}"
        folder.mkdir(parents=True)
        (folder / "rules").mkdir()
        run = shlex.join([sys.executable, str(SHOP), SERVICE])
        (folder / "sqlifier.toml").write_text(
            f'[stack]\nname = "reaction"\n\n[services.{SERVICE}]\nrun = {json.dumps(run)}\n'
            f'instances = 1\nroutes = ["/"]\n'
            f'probes.readiness = {{ http = "/health/ready", period = "200ms" }}\n\n'
            f'[router]\nlisten = "127.0.0.1:{self.router}"\n\n'
            f'[metrics]\nlisten = "{self.metrics}"\n'
            + (f'\n[engine]\ncpu_window = "{args.cpu_window:g}s"\n' if args.cpu_window else "")
        )
        (folder / "rules" / "hot.sql").write_text(
            f"RULE hot ON cpu() > {args.threshold:g}% FOR {args.for_:g}s"
            f" IF service.name = '{SERVICE}'\n"
            "DO SCALE service.name TO instances + 1 LIMIT 2;\n"
        )
        self.decisions = folder / ".sqlifier" / "dev" / "decisions.db"

    def sqlifier(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*SQLIFIER, *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            check=False,
            timeout=timeout,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )

    def up(self) -> None:
        done = self.sqlifier("up", "--detach")
        if done.returncode != 0:
            raise RuntimeError(f"sqlifier up failed:\n{done.stdout}{done.stderr}")

    def down(self) -> None:
        done = self.sqlifier("down")
        if done.returncode != 0:
            print(f"warning: sqlifier down failed:\n{done.stdout}{done.stderr}", file=sys.stderr)

    def instances(self) -> set[str]:
        done = self.sqlifier("ps", "--json")
        return {i["instance"] for i in json.loads(done.stdout)} if done.returncode == 0 else set()

    def rule_state(self) -> str | None:
        done = self.sqlifier("rules", "list", "--json")
        if done.returncode != 0:
            return None
        found = json.loads(done.stdout)
        return next((r["state"] for r in found if r["service"] == SERVICE), None)

    def heat(self, on: bool) -> None:
        """The step: every instance burns ~95% of a core while `mode-burner` says cpu."""
        mode = self.folder / f"mode-{SERVICE}"
        if on:
            mode.write_text("cpu\n")
        else:
            mode.unlink(missing_ok=True)

    def decided(self, since: float) -> list[tuple[float, str, str]]:
        """(t, outcome, reason) of the rule's decisions from `since` on, in order."""
        if not self.decisions.exists():
            return []
        with closing(sqlite3.connect(f"file:{self.decisions}?mode=ro", uri=True)) as db:
            rows = db.execute(
                "SELECT t, outcome, reason FROM decisions"
                " WHERE rule = 'hot' AND service = ? AND t >= ? ORDER BY t, id",
                (SERVICE, since),
            ).fetchall()
        return [(float(t), str(outcome), str(reason)) for t, outcome, reason in rows]


def poll_until(test: Callable[[], T | None], seconds: float, poll: float = 0.05) -> T | None:
    """Call `test()` every `poll` seconds until it returns something other than None or
    False; that value, or None after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = test()
        if value is not None and value is not False:
            return value
        time.sleep(poll)
    return None


def wait_for(what: str, test: Callable[[], T | None], seconds: float, poll: float = 0.05) -> T:
    value = poll_until(test, seconds, poll)
    if value is None:
        raise RuntimeError(f"{what} did not happen within {seconds:g} s")
    return value


def fired_at(stack: Stack, since: float) -> float | None:
    return next((t for t, outcome, _ in stack.decided(since) if outcome == "fired"), None)


def done_at(stack: Stack, since: float) -> float | None:
    """The SCALE's 'done' (or 'failed') decision: recorded once the new instance is ready."""
    return next((t for t, o, _ in stack.decided(since) if o in ("done", "failed")), None)


def first_answer_from(port: int, known: set[str], seconds: float) -> float | None:
    """GET / through the router, one after another, until an instance not in `known`
    answers; when (time.time()), or None."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            try:
                connection.request("GET", "/")
                response = connection.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException):
                connection.close()  # reopened by the next request
                time.sleep(0.01)
                continue
            answered = time.time()
            with contextlib.suppress(ValueError):
                if response.status == 200 and json.loads(body)["instance"] not in known:
                    return answered
            time.sleep(0.005)
    finally:
        connection.close()
    return None


# --- Prometheus ---------------------------------------------------------------------


ALERT_RULES = """\
groups:
  - name: reaction
    rules:
      - alert: hot
        expr: sqlifier_service_cpu_ratio{{service="{service}"}} > {ratio:g}
        for: {for_:g}s
"""


def alert_rules(folder: Path, args: argparse.Namespace) -> Path:
    """The alert rule file, checked by promtool when it is installed."""
    path = folder / "alerts.yml"
    path.write_text(ALERT_RULES.format(service=SERVICE, ratio=args.threshold / 100, for_=args.for_))
    if PROMTOOL is not None:
        checked = subprocess.run(
            [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False
        )
        if checked.returncode != 0:
            raise RuntimeError(
                f"promtool rejects the alert rule:\n{checked.stdout}{checked.stderr}"
            )
    return path


@contextmanager
def alerting_prometheus(
    workdir: Path, target: str, rules: Path, args: argparse.Namespace
) -> Iterator[Prometheus]:
    """A Prometheus scraping `target` and evaluating `rules` at the intervals asked for."""
    prometheus = start_prometheus(
        workdir,
        [target],
        scrape_interval=f"{args.scrape_interval:g}s",
        evaluation_interval=f"{args.evaluation_interval:g}s",
        rule_files=[rules],
    )
    try:
        yield prometheus
    finally:
        prometheus.stop()


def _ready(url: str) -> bool:
    with contextlib.suppress(OSError), _OPENER.open(f"{url}/-/ready", timeout=5) as response:
        return bool(response.status == 200)
    return False


class AlertWatch(threading.Thread):
    """Polls /api/v1/alerts until `hot` fires or `stop()`; when it was first seen pending
    and firing (time.time())."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.pending: float | None = None
        self.firing: float | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set() and self.firing is None:
            answer = get_json(f"{self.url}/api/v1/alerts", timeout=2)
            seen = time.time()
            alerts = answer["data"]["alerts"] if answer else []
            states = {a["state"] for a in alerts if a["labels"].get("alertname") == "hot"}
            if states & {"pending", "firing"} and self.pending is None:
                self.pending = seen
            if "firing" in states:
                self.firing = seen
            self._halt.wait(ALERTS_POLL)

    def stop(self) -> None:
        self._halt.set()
        self.join()


# --- the instance's own start time --------------------------------------------------


def spawn(folder: Path, name: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(SHOP), SERVICE],
        cwd=folder,
        env={**os.environ, "PORT": str(port), "INSTANCE": name},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    return process, port


def kill(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def until_ready(process: subprocess.Popen[bytes], port: int, seconds: float = 30) -> float:
    """Poll /health/ready every 10 ms until it answers 200; when (time.time())."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"shop_service.py exited ({process.returncode})")
        if get_json(f"http://127.0.0.1:{port}/health/ready", timeout=1) is not None:
            return time.time()
        time.sleep(0.01)
    raise RuntimeError(f"shop_service.py not ready after {seconds:g} s")


def own_start(folder: Path, repeat: int) -> float:
    """The median time from spawning a fresh shop_service.py to its first 200 on
    /health/ready, beside one instance burning a core, with its own mode file saying cpu
    (as the new instance of the scale-up starts)."""
    folder.mkdir()
    (folder / f"mode-{SERVICE}").write_text("cpu\n")
    burning, port = spawn(folder, "alone-0")
    try:
        until_ready(burning, port)
        time.sleep(1.5)  # it reads its mode file every second, then burns
        times = []
        for n in range(repeat):
            spawned = time.time()
            fresh, port = spawn(folder, f"alone-{n + 1}")
            try:
                times.append(until_ready(fresh, port) - spawned)
            finally:
                kill(fresh)
        return statistics.median(times)
    finally:
        kill(burning)


# --- one run ------------------------------------------------------------------------


@dataclass
class Run:
    """One step's figures in seconds; None when not seen."""

    seen: float | None = None  # P - T0, the first 'pending' after the step
    fire_after_for: float | None = None  # F - (P + FOR), P the last 'pending' before F
    resets: float = 0  # times the FOR window started again before F
    end_to_end: float | None = None  # F - (T0 + FOR)
    done: float | None = None  # the 'done' decision (agent: new instance ready) - F
    serving: float | None = None  # first answer of the new instance through the router - F
    own_start: float | None = None  # a fresh shop_service.py: spawn to ready
    prom_pending: float | None = None  # alert first seen pending - T0
    prom_firing: float | None = None  # alert first seen firing - (T0 + FOR)
    dips: list[str] = field(default_factory=list)  # the 'cleared' reasons between P and F

    @property
    def serving_over_start(self) -> float | None:
        if self.serving is None or self.own_start is None:
            return None
        return self.serving - self.own_start

    @property
    def ratio(self) -> float | None:
        """Prometheus' delay after FOR over sqlifier's (end to end)."""
        if self.prom_firing is None or self.end_to_end is None or self.end_to_end <= 0.01:
            return None
        return self.prom_firing / self.end_to_end


def read_decisions(run: Run, decided: list[tuple[float, str, str]], t0: float, for_: float) -> None:
    pendings = [t for t, outcome, _ in decided if outcome == "pending"]
    fired = next((t for t, outcome, _ in decided if outcome == "fired"), None)
    if pendings:
        run.seen = pendings[0] - t0
    if fired is None:
        return
    before = [t for t in pendings if t <= fired]
    run.resets = max(0, len(before) - 1)
    run.dips = [
        f"+{t - t0:.0f} s {reason}"
        for t, outcome, reason in decided
        if outcome == "cleared" and pendings[0] < t < fired
    ]
    if before:
        run.fire_after_for = fired - (before[-1] + for_)
    run.end_to_end = fired - (t0 + for_)
    done = next((t for t, outcome, _ in decided if outcome == "done" and t >= fired), None)
    if done is not None:
        run.done = done - fired


def measure(stack: Stack, prometheus: Prometheus | None, args: argparse.Namespace) -> Run:
    """The step, and what sqlifier and Prometheus make of it."""
    run = Run()
    watch = AlertWatch(prometheus.url) if prometheus is not None else None
    known = stack.instances()
    t0 = time.time()
    stack.heat(True)
    if watch is not None:
        watch.start()
    try:
        give_up = args.for_ + 60  # room for a reset or two
        fired = poll_until(lambda: fired_at(stack, t0), give_up)
        if fired is not None:
            seen = first_answer_from(stack.router, known, 60)
            run.serving = seen - fired if seen is not None else None
            poll_until(lambda: done_at(stack, fired), 10)
        if watch is not None:
            prometheus_cycle = 2 * (args.scrape_interval + args.evaluation_interval)
            deadline = t0 + args.for_ + prometheus_cycle + 30
            while watch.firing is None and time.time() < deadline:
                time.sleep(0.1)
    finally:
        if watch is not None:
            watch.stop()
    read_decisions(run, stack.decided(t0), t0, args.for_)
    if watch is not None:
        run.prom_pending = watch.pending - t0 if watch.pending is not None else None
        run.prom_firing = watch.firing - t0 - args.for_ if watch.firing is not None else None
    return run


def one_run(folder: Path, rules: Path | None, args: argparse.Namespace) -> Run:
    stack = Stack(folder / "stack", args)
    try:
        stack.up()
        wait_for("the rule inactive", lambda: stack.rule_state() == "inactive", 30, 0.5)
        if rules is None:
            run = measure(stack, None, args)
        else:
            with alerting_prometheus(folder / "prometheus", stack.metrics, rules, args) as prom:
                # A scrape has brought the metric before the step.
                wait_for_value(prom.url, f'sqlifier_service_cpu_ratio{{service="{SERVICE}"}}')
                time.sleep(random.uniform(0, args.scrape_interval))  # anywhere in its cycle
                run = measure(stack, prom, args)
    finally:
        stack.heat(False)
        stack.down()
    run.own_start = own_start(folder / "alone", OWN_STARTS)
    return run


# --- the report ---------------------------------------------------------------------


def seconds(value: float | None, width: int) -> str:
    return f"{value:{width}.2f}" if value is not None else f"{'-':>{width}}"


def times(value: float | None, width: int) -> str:
    return f"{value:{width - 1}.1f}x" if value is not None else f"{'-':>{width}}"


def rows(runs: list[Run]) -> Iterator[tuple[str, Run]]:
    """Each run, then the median and the max of every figure over the runs."""
    for n, run in enumerate(runs, 1):
        yield str(n), run
    for name, pick in (("median", statistics.median), ("max", max)):
        summary = Run()
        for figure in fields(Run):
            values = [getattr(r, figure.name) for r in runs]
            numbers = [v for v in values if isinstance(v, int | float)]
            if numbers:
                setattr(summary, figure.name, pick(numbers))
        yield name, summary


def detection_table(runs: list[Run], prometheus: bool) -> None:
    print(
        f"{'run':>6} {'sqlifier seen':>14} {'fire after FOR':>15} {'resets':>7}"
        f" {'end to end':>11} {'prom pending':>13} {'prom firing':>12} {'prom/sqlifier':>14}"
    )
    for name, run in rows(runs):
        ratio = run.ratio if name.isdigit() else None
        if not name.isdigit():  # the median and max of the runs' own ratios
            ratios = [r.ratio for r in runs if r.ratio is not None]
            pick = statistics.median if name == "median" else max
            ratio = pick(ratios) if ratios else None
        print(
            f"{name:>6} {seconds(run.seen, 14)} {seconds(run.fire_after_for, 15)}"
            f" {run.resets:7g} {seconds(run.end_to_end, 11)}"
            f" {seconds(run.prom_pending if prometheus else None, 13)}"
            f" {seconds(run.prom_firing if prometheus else None, 12)} {times(ratio, 14)}"
        )
    print(
        "seconds; sqlifier seen: P - T0 (first 'pending'); fire after FOR: F - (P + FOR);"
        " end to end: F - (T0 + FOR);\nprom pending: first seen pending - T0; prom firing:"
        " first seen firing - (T0 + FOR); prom/sqlifier: prom firing / end to end"
    )


def scaling_table(runs: list[Run]) -> None:
    print(
        f"\n{'run':>6} {'fire to done':>13} {'serving after fire':>19} {'own start':>10}"
        f" {'serving - own start':>20}"
    )
    for name, run in rows(runs):
        over = run.serving_over_start
        if not name.isdigit():
            overs = [r.serving_over_start for r in runs if r.serving_over_start is not None]
            over = (statistics.median if name == "median" else max)(overs) if overs else None
        print(
            f"{name:>6} {seconds(run.done, 13)} {seconds(run.serving, 19)}"
            f" {seconds(run.own_start, 10)} {seconds(over, 20)}"
        )
    print(
        "seconds from F; fire to done: the agent's 'done' decision (new instance ready);"
        " serving: its first answer\nthrough the router; own start: a fresh shop_service.py"
        f" from spawn to ready (median of {OWN_STARTS})"
    )


def targets(runs: list[Run], prometheus: bool, args: argparse.Namespace) -> None:
    print("\ntargets (slowest run)")

    def line(name: str, values: list[float | None], target: float) -> None:
        worst = None if None in values else max(v for v in values if v is not None)
        shown = "-" if worst is None else f"{worst:.3f} s"
        verdict = "not measured" if worst is None else "met" if worst <= target else "NOT MET"
        print(f"  {name:48} {shown:>9}   target <= {target:g} s   {verdict}")

    line("sqlifier fire after P + FOR", [r.fire_after_for for r in runs], FIRE_AFTER_FOR)
    line(
        "new instance serving after F, minus its start",
        [r.serving_over_start for r in runs],
        SERVING_OVER_START,
    )
    ratios = [r.ratio for r in runs if r.ratio is not None]
    if prometheus and ratios:
        median = statistics.median(ratios)
        print(
            f"\nPrometheus (scrape {args.scrape_interval:g} s, evaluation"
            f" {args.evaluation_interval:g} s) fires {median:.1f}x as long"
            " after FOR as sqlifier (median of the runs' ratios; target >= "
            f"{RATIO_TARGET:g}x: {'met' if median >= RATIO_TARGET else 'NOT MET'})"
        )
    late = sum(r.fire_after_for is not None and r.fire_after_for >= 0.5 for r in runs)
    if late:
        print(f"note: in {late} of {len(runs)} runs the rule fired a tick (1 s) after P + FOR")
    resets = sum(r.resets for r in runs)
    if resets:
        print(
            f"note: the reading dipped under the threshold {resets:g} times after the step, and"
            " FOR started again\n(end to end includes that): was the machine busy?"
        )


def run_all(args: argparse.Namespace, folder: Path) -> None:
    rules = None
    if PROMETHEUS is None:
        print("prometheus is not installed (Debian package `prometheus`): only sqlifier's")
        print("figures are reported.\n")
    else:
        if PROMTOOL is None:
            print("promtool is not installed: the alert rule is not checked first.\n")
        rules = alert_rules(folder, args)
    print(
        f"{args.runs} runs; rule: cpu() > {args.threshold:g}% FOR {args.for_:g}s"
        f" (cpu_window {args.cpu_window or 2:g} s); Prometheus:"
        f" scrape {args.scrape_interval:g} s, evaluation {args.evaluation_interval:g} s;"
        f" load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs\n",
        flush=True,
    )
    runs = []
    for n in range(1, args.runs + 1):
        run = one_run(folder / f"run-{n}", rules, args)
        runs.append(run)
        print(
            f"run {n}: sqlifier end to end {seconds(run.end_to_end, 0)} s,"
            f" Prometheus {seconds(run.prom_firing, 0)} s after FOR;"
            f" serving {seconds(run.serving, 0)} s after F",
            flush=True,
        )
        for dip in run.dips:
            print(f"  FOR restarted: {dip}", flush=True)
    print()
    detection_table(runs, rules is not None)
    scaling_table(runs)
    targets(runs, rules is not None, args)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="steps, each on a fresh stack")
    parser.add_argument("--for", dest="for_", type=int, default=30, help="FOR, seconds")
    parser.add_argument("--threshold", type=float, default=50, help="CPU, percent of a core")
    parser.add_argument(
        "--cpu-window",
        type=float,
        default=None,
        help="[engine] cpu_window, seconds (default: the stack file's default, 2 s)",
    )
    parser.add_argument("--scrape-interval", type=int, default=15, help="Prometheus, seconds")
    parser.add_argument("--evaluation-interval", type=int, default=15, help="Prometheus, seconds")
    args = parser.parse_args()

    def interrupted(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds through the finally blocks that stop processes

    signal.signal(signal.SIGTERM, interrupted)
    try:
        with tempfile.TemporaryDirectory(prefix="sqlifier-reaction-") as folder:
            run_all(args, Path(folder))
    except KeyboardInterrupt:
        print("interrupted; the stack and Prometheus were stopped", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
