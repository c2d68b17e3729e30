"""The data plane process: `python -m sqlifier.router --state-dir DIR --kind KIND
--listen HOST:PORT`. Started, watched and (after an agent restart) adopted by the agent;
it keeps serving with the last state it was given while no agent is there.

SIGTERM stops it gently: no new connections, requests in flight finish (up to 30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
from pathlib import Path
from typing import Any

from sqlifier.router.control import load_saved, serve_control
from sqlifier.router.haproxy import HAProxyError, HAProxyPlane
from sqlifier.router.internal import InternalServers
from sqlifier.router.listen import probe_bind
from sqlifier.router.proxy import Proxy
from sqlifier.router.state import DesiredState

try:
    import uvloop
except ImportError:  # not on this platform: the default loop works, only slower
    uvloop = None  # type: ignore[assignment]


class EmbeddedPlane:
    kind = "embedded"

    def __init__(self, proxy: Proxy) -> None:
        self.proxy = proxy
        self.internal = InternalServers(proxy)

    async def apply(self, state: DesiredState) -> int:
        self.proxy.apply(state)
        await self.internal.reconcile(state.internal)
        return self.proxy.generation

    async def stats(self) -> dict[str, Any]:
        return self.proxy.stats()


async def serve(state_dir: Path, kind: str, host: str, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    saved = load_saved(state_dir / "router-state.json")
    plane: EmbeddedPlane | HAProxyPlane
    try:
        if kind == "haproxy":
            plane = HAProxyPlane(state_dir / "haproxy", host, port)
            await plane.start(saved)
            server = None
        else:
            probe_bind(host, port)  # to name what holds the address, if anything does
            proxy = Proxy()
            plane = EmbeddedPlane(proxy)
            if saved is not None:
                await plane.apply(saved)
            server = await proxy.serve(host, port)
    except OSError as exc:
        print(f"the router cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    except HAProxyError as exc:
        print(f"HAProxy did not start: {exc}", file=sys.stderr)
        return 1
    control = await serve_control(plane, state_dir / "router.sock", state_dir / "router-state.json")
    print(f"router ({plane.kind}) listening on {host}:{port}", flush=True)
    await stop.wait()
    control.close()
    if isinstance(plane, HAProxyPlane):
        await plane.close()
    elif server is not None:
        server.close()
        plane.internal.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_in_flight_done(plane.proxy), 30)
        plane.proxy.close_idle()
    return 0


async def _in_flight_done(proxy: Proxy) -> None:
    while proxy.in_flight():
        await asyncio.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sqlifier.router")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--kind", choices=("embedded", "haproxy"), default="embedded")
    parser.add_argument("--listen", default="127.0.0.1:8080")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    main_task = serve(args.state_dir, args.kind, host.strip("[]"), int(port))
    if uvloop is None:
        return asyncio.run(main_task)
    return uvloop.run(main_task)


if __name__ == "__main__":
    sys.exit(main())
