"""Route matching and traffic splits: pure decisions, tested without sockets."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from sqlifier.router.routes import RouteTable, Split, Track
from sqlifier.stack.model import Route

TABLE = RouteTable(
    {
        "storefront": [Route(None, "/"), Route("shop.localhost", "/")],
        "checkout": [Route("shop.localhost", "/checkout"), Route(None, "/api/checkout")],
        "api": [Route(None, "/api")],
    }
)


@pytest.mark.parametrize(
    ("host", "path", "service"),
    [
        ("shop.localhost", "/checkout", "checkout"),
        ("shop.localhost:8080", "/checkout/pay?x=1", "checkout"),
        ("SHOP.localhost", "/", "storefront"),
        ("other.example", "/checkout", "storefront"),
        ("any", "/api/checkout/1", "checkout"),
        ("any", "/api/orders", "api"),
        ("any", "/apix", "storefront"),
        ("any", "/api", "api"),
        ("any", "", "storefront"),
    ],
)
def test_the_longest_matching_route_wins(host: str, path: str, service: str) -> None:
    assert TABLE.match(host, path) == service


def test_no_route_matches_nothing() -> None:
    assert RouteTable({"api": [Route(None, "/api")]}).match("x", "/web") is None


@pytest.mark.parametrize("share", [0.1, 1, 10, 50, 99.9, 100, 0])
def test_a_split_gives_the_canary_exactly_its_share(share: float) -> None:
    split = Split.percent(share)
    tracks = Counter(split.choose() for _ in range(2000))
    assert tracks[Track.CANARY] == round(2000 * share / 100)


def test_canary_requests_are_spread_evenly() -> None:
    split = Split.percent(1)
    canary_at = [i for i in range(1000) if split.choose() is Track.CANARY]
    gaps = {b - a for a, b in itertools.pairwise(canary_at)}
    assert gaps == {100}


def test_a_share_must_be_a_percentage() -> None:
    with pytest.raises(ValueError, match="between 0% and 100%"):
        Split.percent(101)
