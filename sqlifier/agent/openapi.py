"""The agent's API as an OpenAPI 3.1 description: the contract the API is checked against.

Every route the agent answers is listed here, with the JSON schema of its request body;
`api.py` validates each body against that schema before anything runs, so the description
cannot drift from what the agent accepts. `GET /v1/openapi.json` returns this document.

The schemas use a small part of JSON Schema, the part `requests.py` checks: objects with
`required` and `properties`, and properties of type string, boolean, integer or number
(with `minimum`, `maximum`, `enum`, `minLength`, and "null" beside a type for an
optional value).
"""

from __future__ import annotations

from typing import Any

__all__ = ["OPENAPI", "body_schema"]

_STRING = {"type": "string", "minLength": 1}
_OPTIONAL_STRING = {"type": ["string", "null"]}
_FLAG = {"type": ["boolean", "null"]}
_SECONDS = {"type": ["number", "null"], "minimum": 0}


def _post(summary: str, required: list[str], **properties: dict[str, Any]) -> dict[str, Any]:
    schema = {"type": "object", "required": required, "properties": properties}
    return {
        "post": {
            "summary": summary,
            "requestBody": {"content": {"application/json": {"schema": schema}}},
        }
    }


def _get(summary: str) -> dict[str, Any]:
    return {"get": {"summary": summary}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "sqlifier agent", "version": "1"},
    "paths": {
        "/v1/status": _get("The agent's phase and every instance"),
        "/v1/openapi.json": _get("This description"),
        "/v1/scale": _post(
            "Run N instances of a service",
            ["service", "instances"],
            service=_STRING,
            instances={"type": "integer", "minimum": 0, "maximum": 1000},
        ),
        "/v1/restart": _post(
            "Replace a service's instances one at a time", ["service"], service=_STRING
        ),
        "/v1/traffic": _post(
            "Give a service's canary track a share of its requests",
            ["service", "canary_percent"],
            service=_STRING,
            canary_percent={"type": "number", "minimum": 0, "maximum": 100},
        ),
        "/v1/shutdown": _post("Stop every service, then the agent", []),
        "/v1/rules": _get("Every rule and service: state, values, last firing"),
        "/v1/rules/explain": _post(
            "Why a rule did or did not fire (for one service, or each)",
            ["rule"],
            rule=_STRING,
            service=_OPTIONAL_STRING,
        ),
        "/v1/rules/pause": _post(
            "Stop a rule, or all rules, from acting", [], rule=_OPTIONAL_STRING
        ),
        "/v1/rules/resume": _post("Let a rule, or all rules, act again", [], rule=_OPTIONAL_STRING),
        "/v1/deploy": _post(
            "Deploy a made release: approval, lock, then the canary rollout",
            ["service", "version"],
            service=_STRING,
            version=_STRING,
            reason=_OPTIONAL_STRING,
            approve=_FLAG,
            lock_wait=_SECONDS,
            approval_timeout=_SECONDS,
            fix=_FLAG,
        ),
        "/v1/deploy/approve": _post("Second approval of a deploy", ["id"], id=_STRING),
        "/v1/deploy/status": _post("A deploy's or rollback's record", ["id"], id=_STRING),
        "/v1/rollout": _post(
            "Abort, pause or resume a rollout",
            ["service", "action"],
            service=_STRING,
            action={"type": "string", "enum": ["abort", "pause", "resume"]},
            reason=_OPTIONAL_STRING,
        ),
        "/v1/rollback": _post(
            "Roll a service back: traffic first",
            ["service"],
            service=_STRING,
            to=_OPTIONAL_STRING,
            force=_FLAG,
            approve=_FLAG,
            reason=_OPTIONAL_STRING,
            lock_wait=_SECONDS,
        ),
        "/v1/dashboard/login": _post("A one-time login link to the web dashboard", []),
        "/v1/secrets/rotate": _post(
            "Deliver a local secret's new version: restarts its services", ["name"], name=_STRING
        ),
    },
}


def body_schema(path: str, method: str) -> dict[str, Any] | None:
    """The JSON schema of a route's request body, or None when it takes none."""
    operation = OPENAPI["paths"].get(path, {}).get(method.lower(), {})
    body = operation.get("requestBody")
    if body is None:
        return None
    schema: dict[str, Any] = body["content"]["application/json"]["schema"]
    return schema
