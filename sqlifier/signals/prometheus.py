"""Reading one value from an external Prometheus, for the signal `prometheus('promql')`.

`query` runs an instant query through Prometheus' HTTP API (`runtime/http.py`) and makes
one number of it, or says why there is none: a rule needs exactly one value, so several
series, no series, NaN and infinities are "no data" with a reason, like a network error
or a timeout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import math
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, unquote, urlencode, urlsplit

from sqlifier.runtime import http

__all__ = ["QueryResult", "query"]

_MAX_ANSWER = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class QueryResult:
    value: float | None  # None: no data
    error: str | None  # why there is no data: "timed out after 2s", "connection refused", ...


async def query(
    base_url: str, promql: str, timeout: float = 2.0, service: str | None = None
) -> QueryResult:
    """Run an instant query at `base_url` (like "http://prometheus:9090") and read its value.

    With `service`, the text `$service` in the query is replaced by the service's name
    first, as in `sum(rate(http_requests_total{job="$service"}[1m]))`; other text is sent
    as written. The whole exchange takes at most `timeout` seconds, which Prometheus is
    also asked to respect. Never raises for network, HTTP or JSON errors: they come back
    as a result without a value and with the reason.
    """
    if service is not None:
        promql = promql.replace("$service", service)
    try:
        async with asyncio.timeout(timeout):
            status, body = await _get(base_url, {"query": promql, "timeout": f"{timeout:g}"})
    except TimeoutError:
        return QueryResult(None, f"timed out after {timeout:g}s")
    except ConnectionRefusedError:
        return QueryResult(None, "connection refused")
    except (OSError, ValueError) as exc:
        return QueryResult(None, _reason(exc))
    return _read(status, body)


async def _get(base_url: str, params: dict[str, str]) -> tuple[int, bytes]:
    """GET {base_url}/api/v1/query: the status and the body of the answer."""
    url = urlsplit(base_url)
    if url.scheme not in ("http", "https") or not url.hostname:
        raise ValueError(f"not an http:// or https:// URL: {base_url!r}")
    port = url.port or (443 if url.scheme == "https" else 80)
    context = ssl.create_default_context() if url.scheme == "https" else None
    reader, writer = await asyncio.open_connection(url.hostname, port, ssl=context)
    target = f"{url.path.rstrip('/')}/api/v1/query?{urlencode(params)}"
    try:
        answer = await http.exchange(
            reader, writer, "GET", target, _headers(url), max_body=_MAX_ANSWER
        )
    except http.TooLarge:
        raise ValueError(f"the answer is larger than {_MAX_ANSWER // (1024 * 1024)} MiB") from None
    except http.NotHttp:
        raise ValueError("not an HTTP answer") from None
    finally:
        with contextlib.suppress(OSError):
            await http.close(writer)
    return answer.status, answer.body


def _headers(url: SplitResult) -> list[tuple[str, str]]:
    headers = [
        ("Host", url.netloc.rpartition("@")[2]),
        ("Accept", "application/json"),
        ("User-Agent", "sqlifier"),
    ]
    if url.username is not None:
        token = f"{unquote(url.username)}:{unquote(url.password or '')}".encode()
        headers.append(("Authorization", f"Basic {base64.b64encode(token).decode()}"))
    return headers


def _read(status: int, body: bytes) -> QueryResult:
    """Prometheus' JSON answer (an error too comes with status 400, 422 or 503)."""
    try:
        answer = json.loads(body)
    except ValueError:
        return QueryResult(None, f"not a Prometheus answer: HTTP {status}, not JSON")
    if not isinstance(answer, dict) or answer.get("status") not in ("success", "error"):
        return QueryResult(None, f"not a Prometheus answer: HTTP {status}")
    if answer["status"] == "error":
        return QueryResult(None, f"query error: {answer.get('errorType')}: {answer.get('error')}")
    try:
        return _value(answer["data"]["resultType"], answer["data"]["result"])
    except (KeyError, IndexError, TypeError, ValueError):
        return QueryResult(None, "not a Prometheus answer: unexpected JSON")


def _value(kind: str, result: Any) -> QueryResult:
    if kind == "scalar":
        return _number(result[1])
    if kind != "vector":
        what = "range vector" if kind == "matrix" else kind
        return QueryResult(None, f"the query returned a {what}; a rule needs a number")
    if not result:
        return QueryResult(None, "the query returned no series")
    if len(result) > 1:
        return QueryResult(
            None,
            f"the query returned {len(result)} series; "
            "a rule needs exactly one (use sum() or a label filter)",
        )
    if "value" not in result[0]:
        return QueryResult(None, "the query returned a histogram; a rule needs a number")
    return _number(result[0]["value"][1])


def _number(text: str) -> QueryResult:
    value = float(text)
    if math.isnan(value):
        return QueryResult(None, "the query returned NaN")
    if math.isinf(value):
        return QueryResult(None, f"the query returned {text}")
    return QueryResult(value, None)


def _reason(exc: OSError | ValueError) -> str:
    if isinstance(exc, ValueError):
        return str(exc)
    return exc.strerror or str(exc) or type(exc).__name__
