"""Whether the router's listening address is free, and if not, what holds it: the one
question a data plane that will not start must answer for the user.
"""

from __future__ import annotations

import contextlib
import socket

import psutil

__all__ = ["holder", "probe_bind"]


def probe_bind(host: str, port: int) -> None:
    """OSError, its message naming the address and what holds it, when it is taken."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            who = holder(port)
            detail = f" (held by {who})" if who else ""
            raise OSError(exc.errno, f"{exc.strerror}{detail}") from None


def holder(port: int) -> str | None:
    """The process (of this user's) listening on `port`: "haproxy, pid 1234"."""
    with contextlib.suppress(psutil.Error, OSError):
        for connection in psutil.net_connections("tcp"):
            address = connection.laddr
            if connection.status == psutil.CONN_LISTEN and address and address[1] == port:
                if connection.pid is None:
                    return None
                return f"{psutil.Process(connection.pid).name()}, pid {connection.pid}"
    return None
