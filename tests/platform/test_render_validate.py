"""Every rendered manifest passes Kubernetes' own schemas: `kubernetes-validate --strict`
for Kubernetes 1.30 (the objects of the core API groups), and the Gateway API's HTTPRoute
schema for the HTTPRoutes, which kubernetes-validate does not hold.

The HTTPRoute is judged twice: by the CRD's own schema when the Gateway API CRDs are
vendored under tests/k8s/ (with unknown fields refused, as --strict does), and always by
the schema below, written from the Gateway API v1 reference for the fields render writes.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from sqlifier.platform.kubernetes.render import render, write_dir
from tests.conftest import BIN
from tests.platform.render_stacks import full, shop

VERSION = "1.30.0"
CRDS = Path(__file__).parents[1] / "k8s"

_NAME = {"type": "string", "pattern": r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 253}
# From the Gateway API v1 HTTPRoute reference: the fields render writes, nothing else.
HTTPROUTE: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "gateway.networking.k8s.io/v1"},
        "kind": {"const": "HTTPRoute"},
        "metadata": {
            "type": "object",
            "additionalProperties": False,
            "required": ["name", "namespace"],
            "properties": {
                "name": {
                    "type": "string",
                    "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                    "maxLength": 253,
                },
                "namespace": _NAME,
                "labels": {
                    "type": "object",
                    "additionalProperties": {"type": "string", "maxLength": 63},
                },
            },
        },
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["rules"],
            "properties": {
                "parentRefs": {
                    "type": "array",
                    "maxItems": 32,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name"],
                        "properties": {
                            "group": {"const": "gateway.networking.k8s.io"},
                            "kind": {"const": "Gateway"},
                            "name": _NAME,
                            "namespace": _NAME,
                        },
                    },
                },
                "hostnames": {
                    "type": "array",
                    "maxItems": 16,
                    "items": {
                        "type": "string",
                        "pattern": r"^(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$",
                    },
                },
                "rules": {
                    "type": "array",
                    "minItems": 1,
                    "maxItems": 16,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "properties": {
                            "matches": {
                                "type": "array",
                                "maxItems": 64,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "properties": {
                                        "path": {
                                            "type": "object",
                                            "additionalProperties": False,
                                            "properties": {
                                                "type": {
                                                    "enum": [
                                                        "Exact",
                                                        "PathPrefix",
                                                        "RegularExpression",
                                                    ]
                                                },
                                                "value": {
                                                    "type": "string",
                                                    "maxLength": 1024,
                                                    "pattern": r"^/([-A-Za-z0-9/._~!$&'()*+,;=:@]|%[0-9a-fA-F]{2})*$",
                                                    "not": {"pattern": r"//|/\./|/\.\./|%2[fF]|#"},
                                                },
                                            },
                                        }
                                    },
                                },
                            },
                            "backendRefs": {
                                "type": "array",
                                "maxItems": 16,
                                "items": {
                                    "type": "object",
                                    "additionalProperties": False,
                                    "required": ["name", "port"],
                                    "properties": {
                                        "group": {"const": ""},
                                        "kind": {"const": "Service"},
                                        "name": _NAME,
                                        "port": {"type": "integer", "minimum": 1, "maximum": 65535},
                                        "weight": {
                                            "type": "integer",
                                            "minimum": 0,
                                            "maximum": 1000000,
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def _objects(tmp_path: Path) -> list[dict[str, Any]]:
    return [*render(shop(), "cluster"), *render(full(tmp_path), "prod")]


def _vendored_crd() -> dict[str, Any] | None:
    found = sorted(CRDS.glob("**/gateway.networking.k8s.io_httproutes.yaml"))
    if not found:
        return None
    crd = yaml.safe_load(found[0].read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    schema: dict[str, Any] = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    _refuse_unknown_fields(schema)
    return schema


def _refuse_unknown_fields(schema: object) -> None:
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
        for value in schema.values():
            _refuse_unknown_fields(value)
    elif isinstance(schema, list):
        for value in schema:
            _refuse_unknown_fields(value)


def test_every_core_object_passes_kubernetes_validate_strict(tmp_path: Path) -> None:
    objects = [o for o in _objects(tmp_path) if o["kind"] != "HTTPRoute"]
    kinds = {o["kind"] for o in objects}
    assert kinds == {
        "ServiceAccount", "Role", "RoleBinding", "Secret", "Service", "Deployment",
        "StatefulSet", "ConfigMap",
    }  # fmt: skip
    for obj in objects:
        kubernetes_validate.validate(obj, VERSION, strict=True)


def test_the_validation_refuses_an_unknown_field(tmp_path: Path) -> None:
    deployment = next(o for o in _objects(tmp_path) if o["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, VERSION, strict=True)


def test_the_rendered_files_pass_the_command_line_validator(tmp_path: Path) -> None:
    written = write_dir(render(shop(), "cluster"), tmp_path / "out", "test")
    result = subprocess.run(
        [str(BIN / "kubernetes-validate"), "--strict", "-k", VERSION, "--no-warn", "--quiet",
         *map(str, written)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_every_httproute_has_the_gateway_api_shape(tmp_path: Path) -> None:
    routes = [o for o in _objects(tmp_path) if o["kind"] == "HTTPRoute"]
    assert len(routes) == 12
    for route in routes:
        jsonschema.validate(route, HTTPROUTE)
    broken = copy.deepcopy(routes[0])
    broken["spec"]["rules"][0]["matches"][0]["path"]["value"] = "/a//b"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, HTTPROUTE)


def test_every_httproute_passes_the_vendored_gateway_api_crd(tmp_path: Path) -> None:
    schema = _vendored_crd()
    if schema is None:
        pytest.skip(f"the Gateway API CRDs are not vendored under {CRDS}")
    for route in (o for o in _objects(tmp_path) if o["kind"] == "HTTPRoute"):
        jsonschema.validate(route, schema)
    broken = copy.deepcopy(next(o for o in _objects(tmp_path) if o["kind"] == "HTTPRoute"))
    broken["spec"]["rules"][0]["backendRefs"][0]["prot"] = 80
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
