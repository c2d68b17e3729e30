"""`sqlifier render`: the manifests a Kubernetes environment applies, in apply order.

    render(stack, env, releases)
                        the objects, as plain data, in a fixed order:
        the agent's ServiceAccount, Role, RoleBinding;
        per service, dependencies first: its Secret (keys only), its NetworkPolicy
        (isolated services, render_policy.py), its Service, its Deployment or
        StatefulSet, its HTTPRoutes;
        the ConfigMap of the stack file and rules, and the agent's Deployment last.
    to_yaml(objects)    one YAML stream, objects separated by `---`
    to_json(objects)    one Kubernetes List
    write_dir(objects, folder, command)
                        one file per object, named so that their order is the apply order

For apply, a Secret is sent filled instead: render_secrets.filled_secret resolves its keys
through sqlifier's secret providers.

The same stack file and the same environment always give the same text: what `plan`
compares and a reviewer diffs. No secret value is ever rendered (render_secrets.py).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sqlifier.errors import UserError
from sqlifier.platform.kubernetes.render_agent import (
    agent_deployment,
    agent_rbac,
    rule_reason,
    stack_config,
)
from sqlifier.platform.kubernetes.render_common import Manifest, Target
from sqlifier.platform.kubernetes.render_policy import harden, network_policy, service_urls
from sqlifier.platform.kubernetes.render_routes import http_routes
from sqlifier.platform.kubernetes.render_secrets import secret_name, secret_object
from sqlifier.platform.kubernetes.render_workloads import service_object, workload
from sqlifier.stack.envfile import read_env_file
from sqlifier.stack.model import Service, Stack

__all__ = ["HEADER", "file_names", "render", "start_order", "to_json", "to_yaml", "write_dir"]

HEADER = "# Rendered by sqlifier"  # the first line of each file write_dir writes


def render(stack: Stack, env: str, releases: Mapping[str, str] | None = None) -> list[Manifest]:
    """The objects of environment `env`, in apply order. `releases` names the version (the
    image tag) each service runs; a service it does not name runs its image as written.
    UserError when `env` is not a Kubernetes environment or a file it reads is missing."""
    target = Target.of(stack, env)
    services = stack.services_for(env)
    env_file = _env_file(stack, env)
    routes = http_routes(target, services)
    ordered = [services[name] for name in start_order(services)]
    objects = agent_rbac(
        target,
        [secret_name(s.name) for s in ordered if s.secrets],
        [route["metadata"]["name"] for s in ordered for route in routes[s.name]],
    )
    for service in ordered:
        secret = secret_object(target, service)
        if secret is not None:
            objects.append(secret)
        policy = network_policy(target, service, services)  # before its pods run
        if policy is not None:
            objects.append(policy)
        objects.append(service_object(target, service))
        version = (releases or {}).get(service.name)
        urls = service_urls(target, services, service.name)  # the env file's and env win
        objects.append(harden(workload(target, service, version, {**urls, **env_file}), service))
        objects.extend(routes[service.name])
    files = _stack_files(stack)
    objects.append(stack_config(target, files))
    metrics = stack.metrics[1] if stack.metrics is not None else None
    objects.append(agent_deployment(target, stack.path.name, list(files), metrics))
    return objects


def start_order(services: Mapping[str, Service]) -> list[str]:
    """Service names, each after the services it depends on (then as written)."""
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str) -> None:
        if name in order or name in visiting or name not in services:
            return  # a cycle (refused by check) cannot loop
        visiting.add(name)
        for dependency in services[name].depends_on:
            visit(dependency)
        order.append(name)

    for name in services:
        visit(name)
    return order


def _env_file(stack: Stack, env: str) -> dict[str, str]:
    env_file = stack.environment(env).env_file
    if env_file is None:
        return {}
    return read_env_file(stack.root / env_file, env_file)


def _stack_files(stack: Stack) -> dict[str, str]:
    """The stack file and its rule files, by path in the stack's folder."""
    files: dict[str, str] = {}
    for path in [stack.path, *stack.rule_files()]:
        shown = path.relative_to(stack.root).as_posix()
        try:
            files[shown] = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UserError(f"{shown}: cannot read it for the agent's ConfigMap: {exc}") from None
    return files


# --- output ---------------------------------------------------------------------------


def to_yaml(objects: list[Manifest]) -> str:
    """The objects as one YAML stream, each starting with `---`."""
    return "".join(f"---\n{_dump(obj)}" for obj in objects)


def to_json(objects: list[Manifest]) -> str:
    """The objects as a Kubernetes List, in JSON."""
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}, indent=2) + "\n"


def file_names(objects: list[Manifest]) -> list[str]:
    """A file name per object: its place in the apply order, kind and name."""
    width = len(str(len(objects)))
    return [
        f"{index:0{width}d}-{obj['kind'].lower()}-{obj['metadata']['name']}.yaml"
        for index, obj in enumerate(objects, start=1)
    ]


def write_dir(objects: list[Manifest], folder: Path, command: str) -> list[Path]:
    """One file per object in `folder` (made if missing); the files an earlier render
    wrote there are removed first, any other file is left alone."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for old in sorted(folder.glob("*.yaml")):
            with old.open(encoding="utf-8", errors="replace") as file:
                if file.readline().startswith(HEADER):
                    old.unlink()
        written = []
        for name, obj in zip(file_names(objects), objects, strict=True):
            path = folder / name
            path.write_text(
                f"{HEADER} ({command}); edits are lost on the next render.\n{_dump(obj)}",
                encoding="utf-8",
            )
            written.append(path)
    except OSError as exc:
        raise UserError(f"{folder}: cannot write the manifests: {exc.strerror or exc}") from None
    return written


def _dump(obj: Manifest) -> str:
    import yaml  # noqa: PLC0415 (render only)

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> Any:
        # A file's text (the stack file in the agent's ConfigMap) reads as a block.
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    def items(dumper: yaml.SafeDumper, value: list[Any]) -> Any:
        # A short list of plain values (verbs, a command) on one line: [get, list, watch].
        flow = all(not isinstance(i, dict | list) for i in value) and len(str(value)) < 70
        return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)

    Dumper.add_representer(str, text)
    Dumper.add_representer(list, items)
    out: str = yaml.dump(obj, Dumper=Dumper, sort_keys=False, width=100, allow_unicode=True)
    if obj.get("kind") == "Role":
        out = _with_reasons(out, [rule_reason(rule) for rule in obj.get("rules", [])])
    return out


def _with_reasons(text: str, reasons: list[str]) -> str:
    """A Role's YAML with why each rule is there, as a comment above it."""
    import textwrap  # noqa: PLC0415

    lines = []
    pending = iter(reasons)
    for line in text.splitlines(keepends=True):
        if line.startswith("- apiGroups:"):
            why = next(pending, "")
            lines += [f"# {part}\n" for part in textwrap.wrap(why, 90)]
        lines.append(line)
    return "".join(lines)
