"""Parse and check speed of the rule language on a generated file of 10,000 rules.

    .venv/bin/python benchmarks/parse_check.py [--rules 10000] [--repeat 5]

Pinned to one core. Prints rules/second for each stage (tokenize, parse, check, format),
the same rules written as TOML and read by the standard library's `tomllib` run side by
side as a baseline, and the ratio to the target of 20,000 rules/s for parse + check.

Two floors follow: work that any parse of these rules into this syntax tree does, timed
alone. "find the tokens" is the tokenizer's regular expression with nothing done for its
matches; "make the nodes" calls the constructors of every node and span of the parsed
tree (plain slotted classes and named tuples) with their finished values, in a plain loop.
"""

from __future__ import annotations

import argparse
import os
import random
import time
import tomllib
from collections.abc import Callable

from sqlifier.lang import Source, check, collector, format_file, parse_source
from sqlifier.lang.source import Span
from sqlifier.lang.tokens import _TOKEN, tokenize

TARGET = 20_000

SERVICES = [f"svc-{i}" for i in range(100)]

TEMPLATES = [
    "RULE scale-{i}\nON high_cpu(>{p}%) FOR {m}m\nIF service.name = '{s}'\n"
    "DO SCALE service.name TO instances + 2\nLIMIT 20;",
    "RULE rollback-{i}\nON log_error(level='critical', service='{s}') > {n} FOR 1m\n"
    "DO ROLLBACK service '{s}' TO previous_stable;",
    "RULE latency-{i}\nON latency(p99, service='{s}') > {n}0ms FOR {m}m\n"
    "DO NOTIFY 'p99 of {{service.name}} is {{value}}',\n   ABORT ROLLOUT '{s}'\nCOOLDOWN 10m;",
    "RULE autoscale-{i}\nON cpu(service='{s}') > {p}% OR rps(service='{s}') > {n}00\n"
    "DO SCALE '{s}' TO max(ceil(instances * cpu() / 60%), 2)\nLIMIT 30\nCOOLDOWN 2m;",
    "RULE night-{i}\nON schedule('0 {h} * * mon-fri')\n"
    "IF time.weekday NOT IN ('sat', 'sun') AND service.labels.tier = 'web'\n"
    "DO SCALE '{s}' TO 1;",
]


def generate(count: int, seed: int = 7) -> str:
    rng = random.Random(seed)
    rules = []
    for i in range(count):
        template = TEMPLATES[i % len(TEMPLATES)]
        rules.append(
            template.format(
                i=i,
                s=rng.choice(SERVICES),
                p=rng.randint(50, 95),
                m=rng.randint(1, 10),
                n=rng.randint(2, 50),
                h=rng.randint(0, 23),
            )
        )
    return "\n\n".join(rules) + "\n"


def as_toml(count: int) -> str:
    """The same number of rules as a TOML configuration would spell them."""
    blocks = []
    for i in range(count):
        blocks.append(
            f'[rules.scale-{i}]\nsignal = "cpu"\nop = ">"\nthreshold = "80%"\nfor = "3m"\n'
            f"condition = \"service.name = 'svc-{i % 100}'\"\n"
            f'actions = [{{ scale = "service.name", to = "instances + 2" }}]\nlimit = 20\n'
        )
    return "\n".join(blocks)


def constructions(tree: object) -> tuple[list[tuple[type, dict[str, object]]], list[Span]]:
    """Every node of `tree` as (class, its attributes), and every span in it."""
    calls: list[tuple[type, dict[str, object]]] = []
    spans: list[Span] = []

    def visit(value: object) -> None:
        if isinstance(value, Span):
            spans.append(value)
        elif hasattr(type(value), "_compared"):  # a node of the syntax tree
            fields = {name: getattr(value, name) for name in type(value).__slots__}
            calls.append((type(value), fields))
            for item in fields.values():
                visit(item)
        elif isinstance(value, tuple):
            for item in value:
                visit(item)

    for rule in getattr(tree, "rules", ()):
        visit(rule)
    return calls, spans


def make_nodes(calls: list[tuple[type, dict[str, object]]], spans: list[Span]) -> None:
    new = tuple.__new__
    with collector.paused():
        for span in spans:
            new(Span, tuple(span))
        for cls, fields in calls:
            cls(**fields)


def best(stage: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        stage()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rules", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

    text = generate(args.rules)
    source = Source(text, "bench.sql")
    parsed, diagnostics = parse_source(source)
    assert not diagnostics, diagnostics[0].render()
    assert len(parsed.rules) == args.rules
    found = check([(source, parsed)], SERVICES)
    assert not found, found[0].render()
    toml_text = as_toml(args.rules)
    calls, spans = constructions(parsed)

    n = args.rules
    stages = [
        ("tokenize", lambda: tokenize(text)),
        ("parse", lambda: parse_source(source)),
        ("check", lambda: check([(source, parsed)], SERVICES)),
        ("parse + check", lambda: check([(source, parse_source(source)[0])], SERVICES)),
        ("format", lambda: format_file(parsed)),
        ("baseline: tomllib, same rules as TOML", lambda: tomllib.loads(toml_text)),
        ("floor: find the tokens (regex alone)", lambda: _TOKEN.findall(text)),
        ("floor: make the nodes and spans", lambda: make_nodes(calls, spans)),
    ]
    print(f"{n} rules, {len(text) / 1e6:.2f} MB of rules text; best of {args.repeat}; one core")
    print(f"{len(calls) / n:.1f} nodes and {len(spans) / n:.1f} spans a rule\n")
    print(f"{'stage':40} {'seconds':>9} {'rules/s':>11}")
    rates = {}
    for name, stage in stages:
        seconds = best(stage, args.repeat)
        rates[name] = n / seconds
        print(f"{name:40} {seconds:9.3f} {rates[name]:11,.0f}")
    print()
    both = rates["parse + check"]
    print(f"parse + check vs target {TARGET:,} rules/s:   {both / TARGET:.2f}x")
    baseline = rates["baseline: tomllib, same rules as TOML"]
    print(f"parse + check vs tomllib on the same rules: {both / baseline:.2f}x")
    floor = 1 / (
        1 / rates["floor: find the tokens (regex alone)"]
        + 1 / rates["floor: make the nodes and spans"]
    )
    print(f"the two floors together: {floor:,.0f} rules/s, {floor / TARGET:.2f}x the target")


if __name__ == "__main__":
    main()
