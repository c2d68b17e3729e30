"""Property tests: generated rules round-trip through the printer; no input crashes.

Rules are generated as syntax trees (any shape the parser can produce, meaningful or not),
printed, parsed back and compared. Random text, random bytes and random token soup go
through decoding, parsing, checking and formatting and must end in diagnostics or
success, never in an exception.
"""

from __future__ import annotations

import os
from string import ascii_letters, ascii_lowercase, digits

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from sqlifier.lang import Source, UndecodableError, check, decode, format_file, parse_source
from sqlifier.lang import ast as a
from sqlifier.lang.parser import _RESERVED
from sqlifier.lang.tokens import tokenize
from sqlifier.lang.units import UNITS, Type, unit_type

# SQLIFIER_EXAMPLES=5000 runs a deeper search than the suite's default.
SCALE = int(os.environ.get("SQLIFIER_EXAMPLES", "150")) / 150
FAST = settings(
    max_examples=int(150 * SCALE), deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

# --- syntax trees ----------------------------------------------------------------------

words = st.builds(
    str.__add__,
    st.sampled_from(ascii_lowercase),
    st.text(alphabet=ascii_lowercase + digits + "_", max_size=6),
).filter(lambda w: w.upper() not in _RESERVED)
numbers = st.one_of(
    st.integers(min_value=0, max_value=10**9),
    st.decimals(min_value=0, max_value=10**6, places=3, allow_nan=False).map(float),
)
signed = st.one_of(numbers, numbers.map(lambda n: -n))
texts = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\n\r"),
    max_size=20,
).filter(lambda s: not any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in s))
durations = st.builds(a.Quantity, numbers, st.sampled_from(["ms", "s", "m", "h", "d"]))
quantities = st.builds(a.Quantity, numbers, st.sampled_from(list(UNITS)))
names = st.lists(words, min_size=1, max_size=3).map(lambda parts: a.Name(tuple(parts)))
literals = st.one_of(
    st.builds(a.Number, signed),
    st.builds(a.Quantity, signed, st.sampled_from(list(UNITS))),
    st.builds(a.String, texts),
)
signal_args = st.lists(
    st.one_of(
        st.builds(a.Arg, st.none(), st.one_of(literals, words.map(lambda w: a.Name((w,))))),
        st.builds(a.Arg, words, st.one_of(literals, words.map(lambda w: a.Name((w,))))),
    ),
    max_size=3,
).map(tuple)
cmp_ops = st.sampled_from(["=", "!=", "<", "<=", ">", ">="])


def _expr(children: st.SearchStrategy[a.Expr]) -> st.SearchStrategy[a.Expr]:
    return st.one_of(
        st.builds(a.Binary, st.sampled_from(["+", "-", "*", "/"]), children, children),
        st.builds(a.Unary, st.just("-"), children).filter(
            lambda u: not isinstance(u.operand, a.Number)
        ),
        st.builds(
            a.Call,
            st.sampled_from(["ceil", "floor", "min", "max"]),
            st.lists(st.builds(a.Arg, st.none(), children), min_size=1, max_size=3).map(tuple),
        ),
    )


expressions = st.recursive(
    st.one_of(
        st.builds(a.Number, signed),
        quantities,
        names,
        st.builds(a.Call, st.sampled_from(["cpu", "rps", "latency"]), signal_args),
    ),
    _expr,
    max_leaves=8,
)

signal_tests = st.builds(
    a.SignalTest,
    words,
    signal_args,
    st.one_of(st.none(), st.builds(a.Comparison, cmp_ops, literals)),
    st.one_of(st.none(), st.builds(a.Comparison, cmp_ops, literals)),
)


def _bool(children: st.SearchStrategy[a.Trigger]) -> st.SearchStrategy[a.Trigger]:
    def flat(op: str, items: list[a.Trigger]) -> a.BoolOp:
        out: list[a.Trigger] = []
        for item in items:
            if isinstance(item, a.BoolOp) and item.op == op:
                out.extend(item.operands)  # type: ignore[arg-type]
            else:
                out.append(item)
        return a.BoolOp(op, tuple(out))

    return st.builds(
        flat, st.sampled_from(["AND", "OR"]), st.lists(children, min_size=2, max_size=3)
    )


triggers = st.recursive(signal_tests, _bool, max_leaves=5)
atoms = st.one_of(
    st.builds(a.Compare, cmp_ops, st.one_of(names, literals), st.one_of(names, literals)),
    st.builds(
        a.InList, names, st.lists(literals, min_size=1, max_size=3).map(tuple), st.booleans()
    ),
    st.builds(a.Like, names, st.builds(a.String, texts), st.booleans()),
)


def _condition(children: st.SearchStrategy[a.Condition]) -> st.SearchStrategy[a.Condition]:
    return st.one_of(_bool(children), st.builds(a.Not, children))  # type: ignore[arg-type]


conditions = st.recursive(atoms, _condition, max_leaves=5)
targets = st.one_of(st.just(a.Target(None)), st.builds(a.Target, texts, st.booleans()))
actions = st.one_of(
    st.builds(a.Scale, targets, expressions),
    st.builds(
        a.Rollback, targets, st.sampled_from([a.RollbackTo.PREVIOUS, a.RollbackTo.PREVIOUS_STABLE])
    ),
    st.builds(a.Rollback, targets, st.just(a.RollbackTo.VERSION), st.builds(a.String, texts)),
    st.builds(a.Restart, targets),
    st.builds(a.Rollout, st.sampled_from(["ABORT", "PAUSE", "RESUME"]), targets),
    st.builds(a.Notify, st.builds(a.String, texts)),
    st.builds(a.Run, st.builds(a.String, texts)),
)
rule_names = (
    st.lists(
        st.builds(
            str.__add__, st.sampled_from(ascii_letters), st.text(ascii_letters + digits, max_size=5)
        ),
        min_size=1,
        max_size=3,
    )
    .map("-".join)
    .filter(lambda n: n.split("-")[0].upper() not in _RESERVED)
)
rules = st.builds(
    a.Rule,
    trigger=triggers,
    actions=st.lists(actions, min_size=1, max_size=3).map(tuple),
    name=st.one_of(st.none(), rule_names),
    for_=st.one_of(st.none(), durations),
    condition=st.one_of(st.none(), conditions),
    limit=st.one_of(st.none(), st.builds(a.Number, numbers)),
    cooldown=st.one_of(st.none(), durations),
    dry_run=st.booleans(),
)
files = st.lists(rules, max_size=4).map(lambda rs: a.RuleFile("g.sql", tuple(rs)))


def parse(text: str) -> a.RuleFile:
    parsed, diagnostics = parse_source(Source(text, "g.sql"))
    assert diagnostics == [], [d.render() for d in diagnostics]
    return parsed


@FAST
@given(files)
def test_generated_rules_round_trip_through_the_printer(file: a.RuleFile) -> None:
    text = format_file(file)
    assert parse(text) == file


@FAST
@given(files)
def test_formatting_is_idempotent(file: a.RuleFile) -> None:
    once = format_file(file)
    assert format_file(parse(once)) == once


@FAST
@given(files, st.data())
def test_comments_anywhere_survive_formatting(file: a.RuleFile, data: st.DataObject) -> None:
    text = format_file(file)
    tokens, _ = tokenize(text)
    assume(len(tokens) > 1)
    # Between tokens that have space between them: a comment inside `scale-up` would split
    # the rule name, which is a different rule, not a formatting problem.
    places = [t.offset for t in tokens if t.offset == 0 or text[t.offset - 1] in " \n"]
    offsets = sorted(set(data.draw(st.lists(st.sampled_from(places), min_size=1, max_size=4))))
    commented = text
    for offset in reversed(offsets):
        comment = data.draw(
            st.sampled_from([" /* note */ ", " -- note\n", "\n-- note\n", "/* a\nb */"])
        )
        commented = commented[:offset] + comment + commented[offset:]
    once = format_file(parse(commented))
    assert parse(once) == file
    assert format_file(parse(once)) == once
    assert once.count("note") == commented.count("note")


def _no_crash(text: str) -> None:
    source = Source(text, "r.sql")
    parsed, diagnostics = parse_source(source)
    check([(source, parsed)], ("web",))
    if not diagnostics:
        once = format_file(parsed)
        assert format_file(parse(once)) == once
    for diagnostic in diagnostics:
        assert diagnostic.line >= 1 and diagnostic.col >= 1
        diagnostic.render()


@settings(max_examples=int(500 * SCALE), deadline=None)
@given(st.text(max_size=200))
def test_random_text_ends_in_diagnostics_or_success(text: str) -> None:
    _no_crash(text)


@settings(max_examples=int(300 * SCALE), deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_end_in_diagnostics_or_success(data: bytes) -> None:
    try:
        source = decode(data, "r.sql")
    except UndecodableError as exc:
        assert exc.line >= 1 and exc.col >= 1
        return
    _no_crash(source.text)


TOKENS = [
    "ON",
    "RULE",
    "FOR",
    "IF",
    "DO",
    "LIMIT",
    "COOLDOWN",
    "DRY",
    "RUN",
    "AND",
    "OR",
    "NOT",
    "IN",
    "LIKE",
    "SCALE",
    "TO",
    "ROLLBACK",
    "RESTART",
    "ABORT",
    "PAUSE",
    "RESUME",
    "ROLLOUT",
    "NOTIFY",
    "service",
    "service.name",
    "instances",
    "previous_stable",
    "cpu",
    "high_cpu",
    "log_error",
    "latency",
    "p99",
    "ceil",
    "max",
    "(",
    ")",
    ",",
    ";",
    ".",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "==",
    "+",
    "-",
    "*",
    "/",
    "80%",
    "3m",
    "0s",
    "512MiB",
    "10",
    "2.5",
    "'web'",
    "'x''y'",
    "'",
    "/*",
    "*/",
    "--",
    "\n",
    "@",
    '"a"',
    "3 minutes",
    "{",
]


@settings(max_examples=int(1000 * SCALE), deadline=None)
@given(st.lists(st.sampled_from(TOKENS), max_size=40))
def test_random_token_soup_ends_in_diagnostics_or_success(tokens: list[str]) -> None:
    _no_crash(" ".join(tokens))


@FAST
@given(st.sampled_from(list(UNITS)), numbers)
def test_every_unit_reads_back_as_its_type(unit: str, amount: float) -> None:
    text = format_file(
        a.RuleFile(
            "g",
            (
                a.Rule(
                    trigger=a.SignalTest(
                        "x", (), outer=a.Comparison(">", a.Quantity(amount, unit))
                    ),
                    actions=(a.Restart(a.Target("web")),),
                ),
            ),
        )
    )
    trigger = parse(text).rules[0].trigger
    assert isinstance(trigger, a.SignalTest) and trigger.outer is not None
    value = trigger.outer.value
    assert isinstance(value, a.Quantity)
    assert unit_type(value.unit) in (Type.DURATION, Type.PERCENT, Type.BYTES)
    assert value.amount == amount
