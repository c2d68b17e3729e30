"""Routes and traffic splits: which service a request goes to, and which track serves it.

Both data planes (embedded and HAProxy) use these decisions; they are pure functions of
the route table and a counter, so they are tested without a socket.

- **Routes**: `host/path` prefixes from the stack file. The longest matching path wins;
  a route with a host beats one without for the same path. Paths match whole segments:
  `/api` matches `/api` and `/api/x`, not `/apix`.
- **Splits**: a service has a stable track and, during a rollout, a canary track. The
  canary's share is a percentage with 0.1% resolution. Requests are assigned with a
  deterministic interleave (not a coin toss), so 1% means 10 requests in every 1,000,
  exactly, spread evenly.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from sqlifier.stack.model import Route

__all__ = ["RESOLUTION", "RouteTable", "Split", "Track"]

RESOLUTION = 1000  # shares are counted in thousandths: 0.1%


class Track(enum.Enum):
    STABLE = "stable"
    CANARY = "canary"


@dataclass(frozen=True, slots=True)
class _Entry:
    route: Route
    service: str

    def matches(self, host: str, path: str) -> bool:
        if self.route.host is not None and self.route.host != host:
            return False
        prefix = self.route.path
        if prefix in ("/", path):
            return True
        return path.startswith(prefix if prefix.endswith("/") else prefix + "/")


class RouteTable:
    """Routes of every service, most specific first."""

    def __init__(self, routes: Mapping[str, Iterable[Route]]) -> None:
        entries = [_Entry(route, service) for service, rs in routes.items() for route in rs]
        # Longer paths first; for the same path, a route naming a host first.
        entries.sort(key=lambda e: (len(e.route.path), e.route.host is not None), reverse=True)
        self._entries = entries

    def ordered(self) -> list[tuple[Route, str]]:
        """(route, service) in the order they are tried: the first match wins."""
        return [(e.route, e.service) for e in self._entries]

    def match(self, host: str, path: str) -> str | None:
        """The service for a request to `host` (port removed, lower case) and `path`."""
        host = host.split(":", 1)[0].lower()
        path = path.split("?", 1)[0] or "/"
        for entry in self._entries:
            if entry.matches(host, path):
                return entry.service
        return None


@dataclass
class Split:
    """The share of a service's requests that the canary track gets.

    `choose()` returns the track for the next request: over any RESOLUTION consecutive
    requests the canary gets exactly `canary_thousandths` of them, evenly spread.
    """

    canary_thousandths: int = 0
    _count: int = field(default=0, repr=False)

    @classmethod
    def percent(cls, share: float) -> Split:
        """A split giving the canary `share` percent (0-100, 0.1% resolution)."""
        if not 0 <= share <= 100:
            raise ValueError(f"a traffic share is between 0% and 100%, not {share}%")
        return cls(round(share * RESOLUTION / 100))

    @property
    def canary_percent(self) -> float:
        return self.canary_thousandths * 100 / RESOLUTION

    def choose(self) -> Track:
        index = self._count
        self._count = (index + 1) % RESOLUTION
        # Request i goes to the canary when floor((i+1)*w/R) > floor(i*w/R): an even
        # interleave of w canary requests in every R.
        weight = self.canary_thousandths
        if (index + 1) * weight // RESOLUTION > index * weight // RESOLUTION:
            return Track.CANARY
        return Track.STABLE
