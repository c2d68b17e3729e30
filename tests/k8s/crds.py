"""The Gateway API CRDs (v1.2.1, standard channel, vendored beside this file) as the 1.20
test control plane can hold them.

1.20 refuses them as shipped: their CEL rules (`x-kubernetes-validations`, 1.25 on) are
unknown to it, and it rejects `default: ""` on a field that also has a pattern or a
minimum length (`...backendRefs.items.properties[group].default: Invalid value: "null"`).
Both are removed as the files are read; the files stay as published.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import yaml

__all__ = ["GATEWAY_API", "gateway_api_crds", "install_gateway_api"]

GATEWAY_API = Path(__file__).with_name("gateway-api-v1.2.1")
DEADLINE = 60.0  # only stops a run that would hang


def _strip(node: Any) -> Any:
    if isinstance(node, dict):
        return {
            key: _strip(value)
            for key, value in node.items()
            if key != "x-kubernetes-validations" and not (key == "default" and value == "")
        }
    if isinstance(node, list):
        return [_strip(item) for item in node]
    return node


def gateway_api_crds() -> list[dict[str, Any]]:
    """Every CRD of the vendored release, stripped for a server older than 1.25."""
    return [_strip(yaml.safe_load(path.read_text())) for path in sorted(GATEWAY_API.glob("*.yaml"))]


def install_gateway_api(api_client: Any) -> None:
    """Create the CRDs (those not there yet) and wait until each is Established."""
    from kubernetes import client
    from kubernetes.client.rest import ApiException

    extensions = client.ApiextensionsV1Api(api_client)
    names = []
    for crd in gateway_api_crds():
        names.append(crd["metadata"]["name"])
        try:
            extensions.create_custom_resource_definition(crd)
        except ApiException as e:
            if e.status != 409:
                raise
    deadline = time.monotonic() + DEADLINE
    for name in names:
        while True:
            status = extensions.read_custom_resource_definition(name).status
            if any(c.type == "Established" and c.status == "True" for c in status.conditions or []):
                break
            if time.monotonic() > deadline:
                raise TimeoutError(f"CRD {name} not Established after {DEADLINE:.0f} s")
            time.sleep(0.1)
