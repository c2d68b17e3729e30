"""The runtime's cost and speed, with real processes.

    .venv/bin/python benchmarks/runtime.py [--instances 50] [--seconds 60]

1. Agent overhead: CPU and memory of the agent supervising N instances of a trivial HTTP
   service with HTTP readiness and liveness probes every 2 s, over S seconds — beside a
   baseline run of the same instances under a bare asyncio parent that only waits on
   them (no probes, no logs), measured the same way.
2. `up --detach` of 20 instances of a service that is ready at once.
3. Restart after a crash: from the SIGKILL to the replacement's process start time.

Targets: agent <= 3% of a core and <= 120 MB; up of 20 instances <= 3 s; replacement
started <= 1 s after the exit (the first backoff step).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
SQLIFIER = [sys.executable, "-m", "sqlifier"]

APP = """\
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
"""


def stack(root: Path, instances: int, probes: bool = True) -> Path:
    (root / "app.py").write_text(APP)
    probe_lines = (
        'probes.readiness = { http = "/", period = "2s" }\n'
        'probes.liveness = { http = "/", period = "2s" }\n'
        if probes
        else ""
    )
    (root / "sqlifier.toml").write_text(
        f'[stack]\nname = "bench"\n\n[services.web]\nrun = "{sys.executable} app.py"\n'
        f"instances = {instances}\n{probe_lines}"
    )
    return root


def sqlifier(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SQLIFIER, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def agent_process(root: Path) -> psutil.Process:
    info = json.loads((root / ".sqlifier" / "dev" / "agent.json").read_text())
    return psutil.Process(int(info["pid"]))


def measure(process: psutil.Process, seconds: float) -> tuple[float, float]:
    """CPU share of one core and peak RSS (MB) of `process` over `seconds`."""
    start_cpu = sum(process.cpu_times()[:2])
    start = time.monotonic()
    peak = 0.0
    while time.monotonic() - start < seconds:
        peak = max(peak, process.memory_info().rss / 1e6)
        time.sleep(1)
    used = sum(process.cpu_times()[:2]) - start_cpu
    return used / (time.monotonic() - start), peak


def baseline(instances: int, seconds: float) -> tuple[float, float]:
    """The same instances under a bare asyncio parent that only waits on them."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        (root / "app.py").write_text(APP)
        script = f"""
import asyncio, os, socket, sys
async def main():
    procs = []
    for i in range({instances}):
        s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()
        procs.append(await asyncio.create_subprocess_exec(
            sys.executable, "app.py", env={{**os.environ, "PORT": str(port)}},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True))
    print("up", flush=True)
    await asyncio.gather(*(p.wait() for p in procs))
asyncio.run(main())
"""
        with subprocess.Popen(
            [sys.executable, "-c", script], cwd=root, stdout=subprocess.PIPE, text=True
        ) as parent:
            assert parent.stdout is not None
            parent.stdout.readline()
            time.sleep(2)
            result = measure(psutil.Process(parent.pid), seconds)
            children = psutil.Process(parent.pid).children(recursive=True)
            for child in children:
                os.killpg(child.pid, signal.SIGKILL)
            parent.wait()
    return result


def overhead(instances: int, seconds: float) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as folder:
        root = stack(Path(folder), instances)
        up = sqlifier("up", "--detach", "--timeout", "120", cwd=root)
        assert up.returncode == 0, up.stderr
        try:
            time.sleep(2)
            return measure(agent_process(root), seconds)
        finally:
            sqlifier("down", cwd=root)


def up_time(instances: int) -> float:
    with tempfile.TemporaryDirectory() as folder:
        root = stack(Path(folder), instances, probes=False)
        start = time.monotonic()
        up = sqlifier("up", "--detach", cwd=root)
        elapsed = time.monotonic() - start
        assert up.returncode == 0, up.stderr
        sqlifier("down", cwd=root)
        return elapsed


def restart_delay() -> float:
    """From SIGKILL to the replacement launched, timed inside a supervisor (the kernel's
    process start times are only as precise as the boot time it reports, about 1 s)."""
    from sqlifier.runtime.supervisor import Event, Supervisor
    from sqlifier.stack import load_stack

    with tempfile.TemporaryDirectory() as folder:
        root = stack(Path(folder), 1, probes=False)
        loaded, _ = load_stack(root / "sqlifier.toml")
        restarted = asyncio.Event()
        when: list[float] = []

        def seen(event: Event) -> None:
            if event.reason == "restarted":
                when.append(time.monotonic())
                restarted.set()

        async def run() -> float:
            supervisor = Supervisor(loaded, "dev", root / ".sqlifier" / "dev", on_event=seen)
            await supervisor.start()
            try:
                (instance,) = supervisor.instances["web"]
                assert instance.launched is not None
                killed = time.monotonic()
                os.kill(instance.launched.pid, signal.SIGKILL)
                await asyncio.wait_for(restarted.wait(), 10)
                return when[0] - killed
            finally:
                await supervisor.stop()

        return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--instances", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()
    asyncio.set_event_loop_policy(None)

    print(f"{args.instances} instances, probes every 2 s, measured over {args.seconds:g} s\n")
    cpu, rss = overhead(args.instances, args.seconds)
    base_cpu, base_rss = baseline(args.instances, args.seconds)
    print(f"{'':28} {'CPU (% of a core)':>18} {'peak RSS (MB)':>14}")
    print(f"{'sqlifier agent':28} {cpu * 100:18.2f} {rss:14.1f}")
    print(f"{'baseline: bare asyncio parent':28} {base_cpu * 100:18.2f} {base_rss:14.1f}")
    print(f"agent CPU vs target 3%:  {cpu * 100 / 3:.2f}x of the budget")
    print(f"agent RSS vs target 120 MB: {rss / 120:.2f}x of the budget\n")

    seconds = up_time(20)
    print(f"up --detach, 20 instances ready at once: {seconds:.2f} s ({seconds / 3:.2f}x of 3 s)")
    delay = restart_delay()
    print(f"crash to replacement started: {delay:.2f} s ({delay:.2f}x of 1 s; first backoff 1 s)")


if __name__ == "__main__":
    main()
