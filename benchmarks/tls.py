"""TLS at the front door: each data plane beside HAProxy's own TLS with a static
configuration, in one run, with real processes.

    .venv/bin/python benchmarks/tls.py [--seconds 20] [--rounds 5] [--connections 50]

Cases (the same certificate, an ECDSA P-256 one, for all; the backend a plain HAProxy
answering every request itself on CPU 1 with the load generator, the proxies on CPU 0,
as in benchmarks/traffic.py):

1. haproxy-static: HAProxy with the configuration sqlifier generates for the same route
   with runtime control left out (`render_config(control=False, tls=...)`): the same
   TLS settings (Mozilla intermediate, crt-list), the baseline.
2. haproxy-driven: sqlifier's HAProxy data plane with `--tls`.
3. embedded: sqlifier's embedded data plane with `--tls` (Python's ssl on uvloop).

Two loads, each in interleaved rounds (the cases take turns, so the machine's drift
touches all alike), wrk against https://:
- requests/s on kept-alive TLS connections (wrk -c N);
- handshakes/s: `Connection: close` on every request, so each request is a new TCP
  connection and a full TLS handshake.

Reported: the mean per case and the ratio to haproxy-static (the median of the rounds'
ratios). Target: haproxy-driven >= 0.90x haproxy-static on both (the data plane adds
nothing per request or handshake); the embedded data plane has no target and is shown
for choosing between them.

Needs haproxy and wrk; says so and stops without them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from traffic import (  # benchmarks/traffic.py: the processes, backend and state it uses
    ROOT,
    Processes,
    free_port,
    pick_cpus,
    start_backend,
    state,
    wait_port,
)

from sqlifier.router.haproxy_config import Files, TlsBind, render_config
from sqlifier.router.state import DesiredState, ServiceTraffic
from sqlifier.router.tls import Settings, self_signed

DRIVEN_RATIO = 0.90  # haproxy-driven vs haproxy-static, at least, on both loads


def tls_plane(
    kind: str, processes: Processes, cpu: int, settings: Path
) -> tuple[int, subprocess.Popen[bytes]]:
    """A data plane over TLS, synced with the one route; its port and process."""
    port = free_port()
    state_dir = processes.folder / f"plane-{kind}"
    state_dir.mkdir()
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "XDG_RUNTIME_DIR": str(processes.folder / "run"),
    }
    (processes.folder / "run").mkdir(mode=0o700, exist_ok=True)
    argv = [sys.executable, "-m", "sqlifier.router", "--state-dir", str(state_dir)]
    argv += ["--kind", kind, "--listen", f"127.0.0.1:{port}", "--tls", str(settings)]
    process = processes.start(argv, cpu, f"plane-{kind}.log", env)
    deadline = time.monotonic() + 20
    while True:
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(
                f"the {kind} data plane did not start:\n{processes.log(f'plane-{kind}.log')}"
            )
        with socket.socket(socket.AF_UNIX) as control:
            try:
                control.connect(str(state_dir / "router.sock"))
            except OSError:
                time.sleep(0.05)
                continue
            return port, process


def sync(kind: str, processes: Processes, stable: int) -> None:
    with socket.socket(socket.AF_UNIX) as control:
        control.connect(str(processes.folder / f"plane-{kind}" / "router.sock"))
        control.sendall(
            json.dumps({"op": "sync", "state": state(stable, stable, 0)}).encode() + b"\n"
        )
        reply = b""
        while not reply.endswith(b"\n"):
            reply += control.recv(65536)
        if not json.loads(reply)["ok"]:
            raise RuntimeError(f"the {kind} data plane refused the state: {reply!r}")


def static_tls(processes: Processes, haproxy: str, cpu: int, stable: int, pem: Path) -> int:
    port = free_port()
    files = Files(processes.folder / "static", processes.folder / "static")
    files.root.mkdir()
    crt_list = files.root / "crt-list.txt"
    crt_list.write_text(f"{pem}\n")
    desired = DesiredState.from_json(state(stable, stable, 0))
    only = {"web": ServiceTraffic(desired.services["web"].backends[:1], 0)}
    config = files.root / "static.cfg"
    config.write_text(
        render_config(
            DesiredState(desired.routes, only),
            "127.0.0.1",
            port,
            files,
            control=False,
            tls=TlsBind(crt_list),
        )
    )
    process = processes.start([haproxy, "-db", "-f", str(config)], cpu, "static.log")
    wait_port(port, process)
    return port


def answers(port: int, seconds: float = 10) -> None:
    """Wait until a request over TLS is answered by the backend."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with (
                socket.create_connection(("127.0.0.1", port), 2) as raw,
                context.wrap_socket(raw, server_hostname="localhost") as tls,
            ):
                tls.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
                if b"stable" in tls.recv(4096) + tls.recv(4096):
                    return
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"port {port} does not answer over TLS")


def wrk(
    port: int, seconds: float, args: argparse.Namespace, cpu: int, close: bool
) -> tuple[float, int]:
    """(requests/s, errors) of one wrk run over https."""
    argv = ["wrk", "-t", "1", "-c", str(args.connections), "-d", f"{max(1, round(seconds))}s"]
    argv += ["--timeout", "5s", *(["-H", "Connection: close"] if close else [])]
    argv += [f"https://127.0.0.1:{port}/"]
    if shutil.which("taskset"):
        argv = ["taskset", "-c", str(cpu), *argv]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=seconds + 30)
    found = re.search(r"Requests/sec:\s+([\d.]+)", out.stdout)
    if found is None:
        raise RuntimeError(f"cannot read wrk's output:\n{out.stdout}{out.stderr}")
    errors = sum(
        int(n) for n in re.findall(r"\d+", "".join(re.findall(r"Socket errors:(.*)", out.stdout)))
    )
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out.stdout)
    return float(found.group(1)), errors + (int(non2xx.group(1)) if non2xx else 0)


def run(args: argparse.Namespace, folder: Path) -> None:
    haproxy, wrk_found = shutil.which("haproxy"), shutil.which("wrk")
    if not haproxy or not wrk_found:
        print("needs haproxy and wrk (apt-get install haproxy wrk); nothing measured")
        return
    proxy_cpu, load_cpu = pick_cpus()
    os.sched_setaffinity(0, {load_cpu})
    stable, canary = free_port(), free_port()
    processes = Processes(folder)
    cert, key = self_signed(folder / "cert", ["localhost"], "sqlifier benchmark")
    pem = folder / "cert" / "combined.pem"
    pem.write_bytes(cert.read_bytes() + key.read_bytes())
    settings = folder / "tls.json"
    settings.write_text(json.dumps(Settings(((cert, key),)).to_json()))
    ports: dict[str, int] = {}
    try:
        start_backend(processes, haproxy, load_cpu, stable, canary)
        ports["haproxy-static"] = static_tls(processes, haproxy, proxy_cpu, stable, pem)
        for kind, case in (("haproxy", "haproxy-driven"), ("embedded", "embedded")):
            ports[case], _ = tls_plane(kind, processes, proxy_cpu, settings)
            sync(kind, processes, stable)
        for port in ports.values():
            answers(port)
        print(
            f"proxies on CPU {proxy_cpu}; backend and wrk -c {args.connections} on CPU "
            f"{load_cpu}; {args.seconds:g} s per case and load in {args.rounds} rounds\n",
            flush=True,
        )
        results: dict[tuple[str, bool], list[tuple[float, int]]] = {}
        each = max(1.0, args.seconds / args.rounds)
        for port in ports.values():
            wrk(port, 1, args, load_cpu, close=False)
        for _ in range(args.rounds):
            for close in (False, True):
                for case, port in ports.items():
                    results.setdefault((case, close), []).append(
                        wrk(port, each, args, load_cpu, close)
                    )
    finally:
        processes.stop_all()
    report(results, list(ports))


def report(results: dict[tuple[str, bool], list[tuple[float, int]]], cases: list[str]) -> None:
    print(f"{'case':<16}{'load':<28}{'per s':>10}{'ratio':>8}{'errors':>8}   target")
    verdicts = []
    for close, load in ((False, "requests, kept-alive TLS"), (True, "handshakes (a new TLS each)")):
        base = results[("haproxy-static", close)]
        for case in cases:
            rounds = results[(case, close)]
            mean = statistics.fmean(r for r, _ in rounds)
            ratio = statistics.median(r / b for (r, _), (b, _) in zip(rounds, base, strict=True))
            errors = sum(e for _, e in rounds)
            target = ""
            if case == "haproxy-driven":
                ok = ratio >= DRIVEN_RATIO
                verdicts.append(ok)
                target = f">= {DRIVEN_RATIO:.2f}x  {'met' if ok else 'MISSED'}"
            elif case == "haproxy-static":
                target = "(baseline)"
            else:
                target = "(none; shown for choosing)"
            print(f"{case:<16}{load:<28}{mean:>10.0f}{ratio:>7.2f}x{errors:>8}   {target}")
    print()
    print("figures from one machine's run; rerun for a second opinion on a busy machine")
    if not all(verdicts):
        sys.exit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--seconds", type=float, default=20, help="measured seconds per case and load"
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sqlifier-tls-") as folder:
        run(args, Path(folder))


if __name__ == "__main__":
    main()
