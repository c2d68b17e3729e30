"""When a workload counts as ready, read from its status alone (no cluster needed)."""

from __future__ import annotations

from typing import Any

import pytest

from sqlifier.platform.kubernetes.wait import is_ready


def workload(kind: str, wanted: int, generation: int = 2, **status: int) -> dict[str, Any]:
    return {
        "kind": kind,
        "metadata": {"generation": generation},
        "spec": {"replicas": wanted},
        "status": {"observedGeneration": 2, **status},
    }


@pytest.mark.parametrize(
    ("obj", "ready"),
    [
        (workload("Deployment", 2, replicas=2, updatedReplicas=2, availableReplicas=2), True),
        # the controller has not seen the latest spec yet
        (workload("Deployment", 2, 3, replicas=2, updatedReplicas=2, availableReplicas=2), False),
        # an old pod is still there beside the new ones
        (workload("Deployment", 2, replicas=3, updatedReplicas=2, availableReplicas=2), False),
        (workload("Deployment", 2, replicas=2, updatedReplicas=2, availableReplicas=1), False),
        (workload("Deployment", 0), True),
        (workload("StatefulSet", 2, readyReplicas=2, updatedReplicas=2), True),
        (workload("StatefulSet", 2, readyReplicas=2, updatedReplicas=1), False),
        (workload("StatefulSet", 2, readyReplicas=1, updatedReplicas=2), False),
    ],
)
def test_readiness_of_a_workload(obj: dict[str, Any], ready: bool) -> None:
    assert is_ready(obj) is ready
