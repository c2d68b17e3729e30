"""What network isolation costs a request: through the router to an isolated instance (its
namespace, reached over the stack's bridge and a veth pair) against a plain one (on the
host's loopback), in the same run, on both data planes.

    .venv/bin/python benchmarks/isolation.py [--seconds 30] [--rounds 6] [--connections 50]

Needs root (namespaces, nftables), `wrk`; HAProxy for the backends and its data plane
(without it, only the embedded data plane runs, against a small Python backend).

Both backends are the same program, an HAProxy answering every request itself (a 6-byte
body, HTTP/1.1 keep-alive): one on 127.0.0.1, one started inside an isolated instance's
namespace by `runtime/netns.py`, exactly as an isolated service's instance is (listening
on its loopback, reached through the namespace's redirect). The data plane routes `/plain`
to the first and `/isolated` to the second. Each round runs `wrk --latency` at one path
and then the other, taking turns, so a busy machine's drift touches both alike. Reported:
requests/s and p99 per case (mean of the rounds), and the isolated case's ratio to the
plain one (the median of the ratios within each round) beside the target.

Targets: requests/s through a veth pair at 0.90x of the plain path or better; p99 added
by the veth path at most 1 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlifier.runtime.netns import StackNetwork, cannot_isolate, enter_namespace

ROOT = Path(__file__).resolve().parent.parent
TARGET_RATIO = 0.90
TARGET_P99_ADDED = 1.0  # ms

BACKEND = """\
global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend answer
    bind 127.0.0.1:{port}
    http-request return status 200 content-type text/plain string "hello!"
"""

PY_BACKEND = """\
import asyncio, sys
BODY = b"HTTP/1.1 200 OK\\r\\nContent-Type: text/plain\\r\\nContent-Length: 6\\r\\n\\r\\nhello!"
class Answer(asyncio.Protocol):
    def connection_made(self, transport): self.transport = transport; self.buffer = b""
    def data_received(self, data):
        self.buffer += data
        while b"\\r\\n\\r\\n" in self.buffer:
            _, _, self.buffer = self.buffer.partition(b"\\r\\n\\r\\n"); self.transport.write(BODY)
async def main():
    server = await asyncio.get_running_loop().create_server(Answer, "127.0.0.1", int(sys.argv[1]))
    await server.serve_forever()
asyncio.run(main())
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Run:
    """The processes of this run (each its own process group) and its folder."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], log: str, env: dict[str, str] | None = None) -> None:
        with open(self.folder / log, "ab") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env=env,
                cwd=self.folder,
            )
        self.processes.append(process)

    def stop_all(self) -> None:
        for process in self.processes:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def backend(run: Run, name: str, port: int, prefix: list[str]) -> None:
    haproxy = shutil.which("haproxy")
    if haproxy:
        config = run.folder / f"{name}.cfg"
        config.write_text(BACKEND.format(port=port))
        run.start([*prefix, haproxy, "-db", "-f", str(config)], f"{name}.log")
    else:
        script = run.folder / "backend.py"
        script.write_text(PY_BACKEND)
        run.start([*prefix, sys.executable, str(script), str(port)], f"{name}.log")


@contextlib.contextmanager
def plane(run: Run, kind: str, plain: str, isolated: str) -> Iterator[int]:
    """A data plane process routing /plain and /isolated; its port."""
    port = free_port()
    state = run.folder / f"plane-{kind}"
    state.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_RUNTIME_DIR": str(run.folder / "run")}
    (run.folder / "run").mkdir(mode=0o700, exist_ok=True)
    argv = [sys.executable, "-m", "sqlifier.router", "--state-dir", str(state)]
    run.start([*argv, "--kind", kind, "--listen", f"127.0.0.1:{port}"], f"plane-{kind}.log", env)
    sock = socket.socket(socket.AF_UNIX)
    deadline = time.monotonic() + 20
    while True:
        try:
            sock.connect(str(state / "router.sock"))
            break
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} data plane did not start") from None
            time.sleep(0.05)

    def backend_of(name: str, address: str) -> dict[str, Any]:
        return {"id": f"{name}-0_1", "instance": f"{name}-0", "address": address,
                "track": "stable", "state": "ready", "probe": 0}  # fmt: skip

    desired = {
        "routes": {
            "plain": [{"host": None, "path": "/plain"}],
            "isolated": [{"host": None, "path": "/isolated"}],
        },
        "services": {
            "plain": {"backends": [backend_of("plain", plain)]},
            "isolated": {"backends": [backend_of("isolated", isolated)]},
        },
    }
    sock.sendall(json.dumps({"op": "sync", "state": desired}).encode() + b"\n")
    reply = b""
    while not reply.endswith(b"\n"):
        reply += sock.recv(1 << 16)
    if not json.loads(reply).get("ok"):
        raise RuntimeError(f"the {kind} data plane refused the routes: {reply!r}")
    try:
        yield port
    finally:
        sock.close()


def wrk(port: int, path: str, seconds: float, connections: int) -> tuple[float, float, int]:
    """(requests/s, p99 ms, errors) of one `wrk --latency` run."""
    argv = ["wrk", "-t", "2", "-c", str(connections), "-d", f"{max(1, round(seconds))}s"]
    argv += ["--latency", "--timeout", "5s", f"http://127.0.0.1:{port}{path}"]
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.M)
    if rps is None or p99 is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out}")
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}[p99.group(2)]
    errors = sum(
        int(n) for n in re.findall(r"(?:Non-2xx or 3xx responses|timeout)\s*:?\s*(\d+)", out)
    )
    return float(rps.group(1)), float(p99.group(1)) * scale, errors


def measure(port: int, args: argparse.Namespace) -> dict[str, list[tuple[float, float, int]]]:
    results: dict[str, list[tuple[float, float, int]]] = {"plain": [], "isolated": []}
    each = args.seconds / args.rounds / 2
    for index in range(args.rounds):
        # Which goes first alternates: neither always follows the other's warm caches.
        order = ("plain", "isolated") if index % 2 == 0 else ("isolated", "plain")
        for case in order:
            results[case].append(wrk(port, f"/{case}", each, args.connections))
    return results


def report(kind: str, results: dict[str, list[tuple[float, float, int]]]) -> None:
    plain, isolated = results["plain"], results["isolated"]
    ratios = [i[0] / p[0] for p, i in zip(plain, isolated, strict=True)]
    ratio = statistics.median(ratios)
    p99 = {case: statistics.mean(r[1] for r in rounds) for case, rounds in results.items()}
    added = p99["isolated"] - p99["plain"]
    print(f"\n{kind} data plane, {len(plain)} rounds")
    print("| case | requests/s | p99 | errors |\n|---|---|---|---|")
    for case, rounds in results.items():
        rps = statistics.mean(r[0] for r in rounds)
        spread = f" ±{statistics.stdev(r[0] for r in rounds):,.0f}" if len(rounds) > 1 else ""
        errors = sum(r[2] for r in rounds)
        print(f"| {case} | {rps:,.0f}{spread} | {p99[case]:.2f} ms | {errors} |")
    verdict = "meets" if ratio >= TARGET_RATIO else "misses"
    print(f"isolated / plain requests/s: {ratio:.2f}x (target >= {TARGET_RATIO:.2f}x: {verdict})")
    verdict = "meets" if added <= TARGET_P99_ADDED else "misses"
    target = f"target <= {TARGET_P99_ADDED:g} ms"
    print(f"p99 added by the veth path: {added:+.2f} ms ({target}: {verdict})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="per data plane, in all")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    problem = cannot_isolate()
    if problem is not None or shutil.which("wrk") is None:
        sys.exit(f"cannot run: {problem or 'wrk is not installed'}")
    kinds = ["embedded"] + (["haproxy"] if shutil.which("haproxy") else [])
    print("A busy machine moves these figures: compare the two cases within one run.")
    with tempfile.TemporaryDirectory(prefix="sqlifier-isolation-") as tmp:
        folder = Path(tmp)
        run = Run(folder)
        net = StackNetwork(folder / "state")
        try:
            plain_port, isolated_port = free_port(), free_port()
            slot = net.attach("isolated-0_1", isolated_port, [])
            backend(run, "plain", plain_port, [])
            backend(run, "isolated", isolated_port, enter_namespace(slot.path))
            time.sleep(1.0)
            for kind in kinds:
                plain, isolated = f"127.0.0.1:{plain_port}", f"{slot.address}:{isolated_port}"
                with plane(run, kind, plain, isolated) as port:
                    wrk(port, "/plain", 1, args.connections)  # warm-up
                    wrk(port, "/isolated", 1, args.connections)
                    report(kind, measure(port, args))
        finally:
            run.stop_all()
            net.teardown()


if __name__ == "__main__":
    main()
