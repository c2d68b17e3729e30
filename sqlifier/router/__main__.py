"""The data plane process: `python -m sqlifier.router --state-dir DIR --kind KIND
--listen HOST:PORT [--tls FILE]`. Started, watched and (after an agent restart) adopted by
the agent; it keeps serving with the last state it was given while no agent is there.

SIGTERM stops it gently: no new connections, requests in flight finish (up to 30 s).
With `--tls` (tls.py's settings) it listens over TLS, and SIGHUP reads the certificates
again at once (they are also watched on disk).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import signal
import sys
from pathlib import Path
from typing import Any

from sqlifier.router.client import Listener
from sqlifier.router.control import load_saved, serve_control
from sqlifier.router.haproxy import HAProxyError, HAProxyPlane
from sqlifier.router.internal import InternalServers
from sqlifier.router.listen import probe_bind
from sqlifier.router.proxy import Proxy
from sqlifier.router.state import DesiredState
from sqlifier.router.tls import Certificates, Contexts, Redirect, load_settings, probe_redirect
from sqlifier.stack.tls import CertificateError

try:
    import uvloop
except ImportError:  # not on this platform: the default loop works, only slower
    uvloop = None  # type: ignore[assignment]


class EmbeddedPlane:
    kind = "embedded"

    def __init__(self, proxy: Proxy, contexts: Contexts | None = None) -> None:
        self.proxy = proxy
        self.contexts = contexts  # with TLS: the certificates' SSL contexts
        self.internal = InternalServers(proxy)

    async def apply(self, state: DesiredState) -> int:
        self.proxy.apply(state)
        await self.internal.reconcile(state.internal)
        return self.proxy.generation

    async def stats(self) -> dict[str, Any]:
        return self.proxy.stats()


async def serve(
    state_dir: Path, kind: str, host: str, port: int, tls_file: Path | None = None
) -> int:
    stop = asyncio.Event()
    reread = asyncio.Event()  # SIGHUP: read the certificates again now
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGHUP, reread.set)
    saved = load_saved(state_dir / "router-state.json")
    plane: EmbeddedPlane | HAProxyPlane
    certificates = None
    changed: list[Path] = []
    servers: list[asyncio.Server] = []
    try:
        if tls_file is not None:
            certificates = Certificates(load_settings(tls_file), state_dir / "tls" / "live")
            changed = certificates.load()
        if kind == "haproxy":
            plane = HAProxyPlane(state_dir / "haproxy", host, port, certificates=certificates)
            await plane.start(saved)
            if certificates is not None and changed:
                # An HAProxy adopted from a data plane that died has the files it read
                # then; one just started has these already (set again: no harm).
                await plane.put_in_force(changed)
        else:
            probe_bind(host, port)  # to name what holds the address, if anything does
            proxy = Proxy()
            if saved is not None:
                proxy.apply(saved)
            servers, contexts = await _listen(proxy, host, port, certificates)
            plane = EmbeddedPlane(proxy, contexts)
            if saved is not None:
                await plane.internal.reconcile(saved.internal)
    except CertificateError as exc:
        print(f"the router cannot use its certificate: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"the router cannot listen on {host}:{port}: {exc.strerror}", file=sys.stderr)
        return 1
    except HAProxyError as exc:
        print(f"HAProxy did not start: {exc}", file=sys.stderr)
        return 1
    watching = _watch(plane, certificates, reread)
    control = await serve_control(plane, state_dir / "router.sock", state_dir / "router-state.json")
    _serving(plane.kind, host, port)
    await stop.wait()
    control.close()
    if watching is not None:
        watching.cancel()
    if isinstance(plane, HAProxyPlane):
        await plane.close()
    elif servers:
        for server in servers:
            server.close()
        plane.internal.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(_in_flight_done(plane.proxy), 30)
        plane.proxy.close_idle()
    return 0


def _serving(kind: str, host: str, port: int) -> None:
    """Started: said on stdout. What start-up made (modules, the state, the listeners)
    lives as long as the process: frozen, the collector's full passes no longer walk it
    (each took tens of milliseconds on a busy machine, added to the requests waiting)."""
    gc.freeze()
    print(f"router ({kind}) listening on {host}:{port}", flush=True)


def _watch(
    plane: EmbeddedPlane | HAProxyPlane, certificates: Certificates | None, reread: asyncio.Event
) -> asyncio.Task[None] | None:
    """Certificates replaced on disk (or SIGHUP) put in force by the plane, if it has TLS."""
    if certificates is None:
        return None
    put_in_force = plane.put_in_force if isinstance(plane, HAProxyPlane) else None
    if isinstance(plane, EmbeddedPlane) and plane.contexts is not None:
        put_in_force = plane.contexts.put_in_force
    assert put_in_force is not None
    return asyncio.create_task(certificates.watch(put_in_force, reread))


async def _listen(
    proxy: Proxy, host: str, port: int, certificates: Certificates | None
) -> tuple[list[asyncio.Server], Contexts | None]:
    """The embedded plane's listeners: plain, or TLS and its plain redirect address."""
    if certificates is None:
        return [await proxy.serve(host, port)], None
    settings = certificates.settings
    contexts = Contexts(certificates)
    listener = Listener(b"https", settings.hsts_line)
    servers = [await proxy.serve(host, port, ssl=contexts.front, listener=listener)]
    if settings.redirect is not None:
        where, number = settings.redirect
        probe_redirect(settings)
        plain = Listener(https_port=port)
        servers.append(await proxy.serve(where, number, listener=plain, client=Redirect))
    return servers, contexts


async def _in_flight_done(proxy: Proxy) -> None:
    while proxy.in_flight():
        await asyncio.sleep(0.05)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sqlifier.router")
    parser.add_argument("--state-dir", required=True, type=Path)
    parser.add_argument("--kind", choices=("embedded", "haproxy"), default="embedded")
    parser.add_argument("--listen", default="127.0.0.1:8080")
    parser.add_argument("--tls", type=Path, default=None, help="TLS settings (JSON)")
    args = parser.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    main_task = serve(args.state_dir, args.kind, host.strip("[]"), int(port), args.tls)
    if uvloop is None:
        return asyncio.run(main_task)
    return uvloop.run(main_task)


if __name__ == "__main__":
    sys.exit(main())
