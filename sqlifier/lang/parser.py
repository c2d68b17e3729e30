"""The parser: tokens to a RuleFile, by hand-written recursive descent.

Grammar (docs/language.md has the user's version):

    rule      := [RULE name] ON trigger [FOR duration] [IF condition]
                 DO action {, action} {LIMIT n | COOLDOWN duration | DRY RUN} [;]
    trigger   := signal_test {(AND | OR) signal_test}        parentheses allowed
    signal_test := name '(' [cmp value [,]] [args] ')' [cmp value]
    condition := NOT condition | condition (AND | OR) condition | '(' condition ')'
               | operand cmp operand | operand [NOT] IN '(' values ')' | operand [NOT] LIKE 'p'
    action    := SCALE target TO expr | ROLLBACK target TO (previous_stable | previous | 'v')
               | RESTART target | (ABORT | PAUSE | RESUME) ROLLOUT target
               | NOTIFY 'message' | RUN 'command'
    target    := [service] ('name' | service.name)

A syntax error abandons the statement it is in: it becomes a diagnostic and parsing
resumes after the next `;` (or at a line that starts with RULE or ON), so one run reports
the errors of every statement.

Tokens are plain tuples read by position (`tok[KIND] is _OP and tok[TEXT] == "("`, see
tokens.RawToken), and messages for errors are built only when there is an error: the
parser runs for every token of every rule file.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import TypeVar, cast

from sqlifier.diagnostics import Diagnostic
from sqlifier.lang import ast, collector
from sqlifier.lang.errors import ParseError, did_you_mean, quote
from sqlifier.lang.signals import SIGNALS
from sqlifier.lang.source import Source, Span
from sqlifier.lang.tokens import COL, KIND, LINE, OFFSET, TEXT, VALUE, Kind, RawToken, scan
from sqlifier.lang.units import UNIT_WORDS, UNITS, Type

_new = tuple.__new__
# Module-level names for the token kinds: the parser tests them on every token.
_IDENT, _NUMBER, _QUANTITY, _STRING, _OP, _ERROR, _EOF = (
    Kind.IDENT,
    Kind.NUMBER,
    Kind.QUANTITY,
    Kind.STRING,
    Kind.OP,
    Kind.ERROR,
    Kind.EOF,
)

__all__ = ["MAX_DEPTH", "MAX_NUMBER", "parse", "parse_trigger"]

MAX_DEPTH = 64
_WORD = re.compile(r"[A-Za-z0-9_]+")
MAX_NUMBER = 1e15

_CMP = frozenset(("=", "!=", "<>", "<", "<=", ">", ">="))
# After a signal's parentheses and in conditions, '==' is read too, to explain it.
_CMP_OR_DOUBLE = _CMP | {"=="}
_ACTIONS = ("SCALE", "ROLLBACK", "RESTART", "ABORT", "PAUSE", "RESUME", "NOTIFY", "RUN")
_ACTION_LIST = (
    "SCALE, ROLLBACK, RESTART, ABORT ROLLOUT, PAUSE ROLLOUT, RESUME ROLLOUT, NOTIFY or RUN"
)
_TAIL = ("LIMIT", "COOLDOWN", "DRY")
_RESERVED = frozenset(("RULE", "ON", "FOR", "IF", "DO", "LIMIT", "COOLDOWN", "AND", "OR", "NOT"))
_DURATION_UNITS = frozenset(unit for unit, (kind, _) in UNITS.items() if kind is Type.DURATION)
# A number token is digits and at most one '.'; a quantity's unit starts with neither.
_NUMBER_CHARS = "0123456789."

T = TypeVar("T")


def parse(source: Source) -> tuple[ast.RuleFile, list[Diagnostic]]:
    """Parse a whole file; return the rules that parsed and a diagnostic per bad statement."""
    with collector.paused():
        return _Parser(source).parse_file()


def parse_trigger(source: Source) -> tuple[ast.Trigger | None, list[Diagnostic]]:
    """Parse signal tests alone (`error_rate() < 1% AND latency(p99) < 300ms`), as written
    in a rollout's analysis."""
    parser = _Parser(source)
    try:
        trigger = parser.trigger()
        if parser.tok[KIND] is not _EOF:
            raise parser.error("AND, OR or the end of the expression", choices=("AND", "OR"))
    except ParseError as exc:
        return None, [Diagnostic.at(source, exc.span, exc.message, hint=exc.hint)]
    return trigger, []


def _span(first: RawToken, last: RawToken) -> Span:
    """From the start of token `first` to the end of token `last` (tokens are one line)."""
    return _new(Span, (first[LINE], first[COL], last[LINE], last[COL] + len(last[TEXT])))


def _token_span(tok: RawToken) -> Span:
    line, col = tok[LINE], tok[COL]
    return _new(Span, (line, col, line, col + len(tok[TEXT])))


def _span_to(first: RawToken, last: Span) -> Span:
    """From the start of token `first` to the end of `last`."""
    return _new(Span, (first[LINE], first[COL], last[2], last[3]))


def _end(tok: RawToken) -> int:
    """The offset just after the token."""
    return tok[OFFSET] + len(tok[TEXT])


def _end_col(tok: RawToken) -> int:
    return tok[COL] + len(tok[TEXT])


def _is_op(tok: RawToken, op: str) -> bool:
    return tok[TEXT] == op and tok[KIND] is _OP


class _Parser:
    __slots__ = ("comments", "depth", "diagnostics", "pos", "source", "tok", "tokens")

    def __init__(self, source: Source) -> None:
        self.source = source
        self.tokens, self.comments = scan(source.text)
        self.pos = 0
        self.tok = self.tokens[0]
        self.depth = 0
        self.diagnostics: list[Diagnostic] = []

    # --- token helpers ------------------------------------------------------------------

    def advance(self) -> RawToken:
        tok = self.tok
        if tok[KIND] is not _EOF:
            self.pos += 1
            self.tok = self.tokens[self.pos]
        return tok

    def peek(self, ahead: int = 1) -> RawToken:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def next_token(self) -> RawToken:
        """The token after the current one, which must not be EOF (EOF is the last)."""
        return self.tokens[self.pos + 1]

    def at_word(self, word: str) -> bool:
        tok = self.tok
        return tok[VALUE] == word and tok[KIND] is _IDENT

    def at_op(self, op: str) -> bool:
        tok = self.tok
        return tok[TEXT] == op and tok[KIND] is _OP

    def prev_span(self) -> Span:
        return _token_span(self.tokens[self.pos - 1])

    def span_from(self, first: RawToken) -> Span:
        """From the start of token `first` to the end of the token just consumed."""
        # _span(first, last), written out: this runs for most nodes.
        last = self.tokens[self.pos - 1]
        return _new(Span, (first[LINE], first[COL], last[LINE], last[COL] + len(last[TEXT])))

    def expect_op(self, op: str, expected: str) -> RawToken:
        tok = self.tok
        if tok[TEXT] == op and tok[KIND] is _OP:
            return self.advance()
        raise self.error(expected)

    def expect_word(self, word: str, expected: str) -> RawToken:
        tok = self.tok
        if tok[VALUE] == word and tok[KIND] is _IDENT:
            return self.advance()
        raise self.error(expected, choices=(word,))

    def error(
        self, expected: str, hint: str | None = None, choices: tuple[str, ...] = ()
    ) -> ParseError:
        """A 'expected X, found Y' error at the current token (or its own error)."""
        tok = self.tok
        if tok[KIND] is _ERROR:
            message, own_hint = cast("tuple[str, str | None]", tok[VALUE])
            return ParseError(_token_span(tok), message, own_hint)
        span = _token_span(tok)
        if tok[KIND] is _EOF and self.pos > 0:
            prev = self.tokens[self.pos - 1]
            span = Span(prev[LINE], _end_col(prev), prev[LINE], _end_col(prev) + 1)
        found = _describe(tok)
        unit = self.unit_word_after(tok)
        if unit is not None:
            found = quote(f"{tok[TEXT]} {self.peek()[TEXT]}")
            span = span.to(_token_span(self.peek()))
            hint = hint or f"write the number and the unit together: {tok[TEXT]}{unit}"
        if hint is None and tok[KIND] is _IDENT and choices and tok[VALUE] not in choices:
            hint = did_you_mean(tok[TEXT], choices)
        return ParseError(span, f"expected {expected}, found {found}", hint)

    def unit_word_after(self, tok: RawToken) -> str | None:
        """The unit meant by `3 minutes` (a number, a space, a unit word), or None."""
        if tok[KIND] is not _NUMBER or tok is not self.tok:
            return None
        word = self.next_token()
        if word[KIND] is not _IDENT or word[LINE] != tok[LINE]:
            return None
        text = word[TEXT]
        return UNIT_WORDS.get(text.lower()) or (text if text in UNITS else None)

    def enter(self, tok: RawToken) -> None:
        """One level deeper into an expression, at `tok`."""
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError(
                _token_span(tok), f"expressions nest too deeply (more than {MAX_DEPTH} levels)"
            )

    # --- file and recovery --------------------------------------------------------------

    def parse_file(self) -> tuple[ast.RuleFile, list[Diagnostic]]:
        rules: list[ast.Rule] = []
        while self.tok[KIND] is not _EOF:
            if self.at_op(";"):
                self.advance()
                continue
            start = self.pos
            try:
                rules.append(self.rule())
            except ParseError as exc:
                self.diagnostics.append(
                    Diagnostic.at(self.source, exc.span, exc.message, hint=exc.hint)
                )
                self.depth = 0
                self.recover(start)
        file = ast.RuleFile(self.source.path, tuple(rules), tuple(self.comments))
        return file, self.diagnostics

    def recover(self, start: int) -> None:
        """Skip to after the next `;`, or to a RULE/ON that starts a line."""
        if self.pos == start:
            self.advance()
        tokens = self.tokens
        while self.tok[KIND] is not _EOF:
            tok = self.tok
            if tok[KIND] is _OP and tok[TEXT] == ";":
                self.advance()
                return
            if (
                tok[KIND] is _IDENT
                and tok[VALUE] in ("RULE", "ON")
                and tokens[self.pos - 1][LINE] < tok[LINE]
            ):
                return
            self.advance()

    # --- rules --------------------------------------------------------------------------

    def rule(self) -> ast.Rule:
        first = self.tok
        clauses: list[tuple[str, Span]] = []
        name, on = self.rule_head(clauses)
        trigger = self.trigger()
        for_ = None
        if self.at_word("FOR"):
            self.advance()
            for_ = self.duration("FOR")
        clauses.append(("on", self.span_from(on)))
        condition = None
        if self.at_word("IF"):
            if_tok = self.advance()
            condition = self.condition()
            clauses.append(("if", self.span_from(if_tok)))
        if not self.at_word("DO"):
            raise self.no_do(for_ is not None, condition is not None)
        do = self.advance()
        actions = [self.action()]
        clauses.append(("do0", self.span_from(do)))
        while self.at_op(","):
            self.advance()
            start = self.tok
            actions.append(self.action())
            clauses.append((f"do{len(actions) - 1}", self.span_from(start)))
        limit, cooldown, dry_run = self.tail(clauses)
        self.end_of_rule()
        span = self.span_from(first)
        # Positional: keyword arguments make this call, once per rule, a third slower.
        return ast.Rule(
            trigger,
            tuple(actions),
            name,
            for_,
            condition,
            limit,
            cooldown,
            dry_run,
            span,
            tuple(clauses),
        )

    def no_do(self, has_for: bool, has_condition: bool) -> ParseError:
        """The error for a rule whose trigger or condition is not followed by DO."""
        expected = "IF or DO" if has_for else "FOR, IF or DO"
        if has_condition:
            expected = "AND, OR or DO"
        hint = None
        if self.tok[KIND] is _IDENT and self.tok[VALUE] in _ACTIONS:
            hint = f"write DO before {self.tok[TEXT]}"
        elif self.at_word("FOR"):
            hint = "FOR comes right after the trigger: ON ... FOR 3m IF ... DO ..."
        return self.error(
            f"{expected} after the {'condition' if has_condition else 'trigger'}",
            hint,
            choices=("FOR", "IF", "DO", "AND", "OR"),
        )

    def rule_head(self, clauses: list[tuple[str, Span]]) -> tuple[str | None, RawToken]:
        """`[RULE name] ON`: the name, and the ON token."""
        first = self.tok
        if self.at_word("ON"):
            return None, self.advance()
        if not self.at_word("RULE"):
            hint = None
            if first[KIND] is _IDENT and first[TEXT].lower() in SIGNALS:
                hint = f"start the rule with ON: ON {first[TEXT].lower()}(...)"
            raise self.error("ON or RULE to start a rule", hint, choices=("ON", "RULE"))
        self.advance()
        name = self.rule_name()
        clauses.append(("rule", self.span_from(first)))
        if self.at_word("ON"):
            return name, self.advance()
        if self.at_op("-"):
            raise self.error(
                "ON after the rule name",
                "a rule name is letters, digits, _ and - (each part after a - starts with "
                "a letter or digit, and holds no % or .)",
            )
        if self.tok[KIND] is _IDENT:
            raise self.error(
                "ON after the rule name",
                f"a rule name has no spaces: write {name}-{self.tok[TEXT]}",
                choices=("ON",),
            )
        return name, self.expect_word("ON", "ON after the rule name")

    def rule_name(self) -> str:
        tok = self.tok
        after = self.peek()
        hyphenated = after[TEXT] == "-" and after[OFFSET] == _end(tok)
        if tok[KIND] is not _IDENT or (tok[VALUE] in _RESERVED and not hyphenated):
            raise self.error("a rule name after RULE (letters, digits, _ and -)")
        self.advance()
        name = tok[TEXT]
        # Hyphenated names (`scale-up`, `scale-2x`) arrive as several tokens written
        # without spaces.
        while hyphenated:
            dash = self.tok
            part = self.next_token()
            if (
                part[KIND] not in (_IDENT, _NUMBER, _QUANTITY)
                or part[OFFSET] != _end(dash)
                or not _WORD.fullmatch(part[TEXT])
            ):
                break
            self.advance()
            name += "-" + self.advance()[TEXT]
            after = self.tok
            hyphenated = after[TEXT] == "-" and after[OFFSET] == _end(part)
        return name

    def tail(
        self, clauses: list[tuple[str, Span]]
    ) -> tuple[ast.Number | None, ast.Quantity | None, bool]:
        limit: ast.Number | None = None
        cooldown: ast.Quantity | None = None
        dry_run = False
        seen: set[str] = set()
        while self.tok[KIND] is _IDENT and self.tok[VALUE] in _TAIL:
            word = self.advance()
            key = str(word[VALUE])
            if key in seen:
                raise ParseError(
                    _token_span(word), f"{'DRY RUN' if key == 'DRY' else key} is given twice"
                )
            seen.add(key)
            if key == "LIMIT":
                limit = self.limit()
                clauses.append(("limit", self.span_from(word)))
            elif key == "COOLDOWN":
                cooldown = self.duration("COOLDOWN")
                clauses.append(("cooldown", self.span_from(word)))
            else:
                self.expect_word("RUN", "RUN after DRY (DRY RUN)")
                dry_run = True
                clauses.append(("dry_run", self.span_from(word)))
        return limit, cooldown, dry_run

    def end_of_rule(self) -> None:
        tok = self.tok
        if tok[KIND] is _EOF or (tok[KIND] is _OP and tok[TEXT] == ";"):
            self.advance()
            return
        if tok[KIND] is _IDENT and tok[VALUE] in ("ON", "RULE"):
            raise self.error("';' to end the rule before the next one")
        previous = self.tokens[self.pos - 1]
        if tok[TEXT] == "," and tok[KIND] is _OP:
            raise self.error(
                f"';' after {previous[TEXT]}",
                "list every action before LIMIT, COOLDOWN and DRY RUN",
            )
        raise self.error(
            "',', LIMIT, COOLDOWN, DRY RUN or ';' after the action",
            choices=("LIMIT", "COOLDOWN", "DRY"),
        )

    def limit(self) -> ast.Number:
        tok = self.tok
        if tok[KIND] is not _NUMBER:
            raise self.error("a whole number of instances after LIMIT, like 20")
        self.advance()
        return ast.Number(_checked_number(tok), _token_span(tok))

    def duration(self, keyword: str) -> ast.Quantity:
        start = self.tok
        negative = start[TEXT] == "-" and start[KIND] is _OP
        if negative:
            self.advance()
        tok = self.tok
        if tok[KIND] is _QUANTITY:
            unit = tok[TEXT].lstrip(_NUMBER_CHARS)
            if unit in _DURATION_UNITS:
                self.advance()
                amount = _checked_number(tok)
                return ast.Quantity(-amount if negative else amount, unit, _span(start, tok))
            if unit not in UNITS:
                raise _unknown_unit(tok)
        hint = None
        if tok[KIND] is _NUMBER and self.unit_word_after(tok) is None:
            hint = f"add a unit: {tok[TEXT]}s, {tok[TEXT]}m or {tok[TEXT]}h"
        raise self.error(f"a duration after {keyword} (like 3m or 30s)", hint)

    # --- trigger ------------------------------------------------------------------------

    def trigger(self) -> ast.Trigger:
        return self.chain("OR", self.trigger_and)

    def trigger_and(self) -> ast.Trigger:
        return self.chain("AND", self.trigger_atom)

    def chain(self, word: str, operand: Callable[[], T]) -> T:
        first = self.tok
        item = operand()
        if not self.at_word(word):
            return item
        items = [item]
        while self.at_word(word):
            self.advance()
            items.append(operand())
        flat: list[object] = []
        for item in items:
            if isinstance(item, ast.BoolOp) and item.op == word:
                flat.extend(item.operands)
            else:
                flat.append(item)
        return ast.BoolOp(word, tuple(flat), self.span_from(first))  # type: ignore[arg-type,return-value]

    def trigger_atom(self) -> ast.Trigger:
        tok = self.tok
        if tok[KIND] is _IDENT and tok[VALUE] not in _RESERVED:
            return self.signal_test()
        if tok[TEXT] == "(" and tok[KIND] is _OP:
            self.enter(tok)
            self.advance()
            inner = self.trigger()
            self.expect_op(")", "')' to close the '(' of the trigger")
            self.depth -= 1
            return inner
        raise self.error("a signal test like cpu() > 80% or high_cpu(>80%)")

    def signal_test(self) -> ast.SignalTest:
        name_tok = self.advance()
        name = name_tok[TEXT].lower()
        if not self.at_op("("):
            raise self.error(
                f"'(' after {name}",
                "signals are written with parentheses, like cpu() > 80% or high_cpu(>80%)",
            )
        self.advance()
        inner = None
        tok = self.tok
        if tok[KIND] is _OP and tok[TEXT] in _CMP:
            inner = self.comparison()
            if self.at_op(","):
                self.advance()
        args = self.args(name, word_values=True)
        outer = None
        tok = self.tok
        if tok[KIND] is _OP and tok[TEXT] in _CMP_OR_DOUBLE:
            outer = self.comparison()
        span = self.span_from(name_tok)
        return ast.SignalTest(name, args, inner, outer, span, _token_span(name_tok))

    def comparison(self) -> ast.Comparison:
        op_tok = self.advance()
        if op_tok[TEXT] == "==":
            raise ParseError(
                _token_span(op_tok), "'==' is not a comparison here", "use = to compare"
            )
        op = "!=" if op_tok[TEXT] == "<>" else op_tok[TEXT]
        value = self.literal()
        if value is None:
            raise self.error(f"a value to compare with after '{op_tok[TEXT]}'")
        return ast.Comparison(op, value, self.span_from(op_tok))

    def args(self, owner: str, word_values: bool) -> tuple[ast.Arg, ...]:
        """Arguments up to and including ')': `name=value` or positional."""
        if self.at_op(")"):
            self.advance()
            return ()
        args: list[ast.Arg] = []
        while True:
            start = self.tok
            if start[KIND] is _IDENT and _is_op(self.next_token(), "="):
                self.advance()
                self.advance()
                name = start[TEXT].lower()
                value = self.literal(words=True)
                if value is None:
                    raise self.error(f"a value for {name}=")
                args.append(ast.Arg(name, value, self.span_from(start)))
            else:
                if word_values:
                    value = self.literal(words=True)
                    if value is None:
                        raise self.error("an argument")
                else:
                    value = self.expr()
                args.append(ast.Arg(None, value, self.span_from(start)))
            tok = self.tok
            if tok[KIND] is _OP:
                if tok[TEXT] == ",":
                    self.advance()
                    continue
                if tok[TEXT] == ")":
                    self.advance()
                    return tuple(args)
            raise self.error(f"',' or ')' in the arguments of {owner}()")

    # --- values and expressions ---------------------------------------------------------

    def literal(self, words: bool = False) -> ast.Expr | None:
        """A number, quantity or string, optionally negative; with `words`, a bare word.

        None when the current token starts none of them; the caller says what it expected.
        """
        tok = self.tok
        kind = tok[KIND]
        if kind is _STRING:
            self.advance()
            return ast.String(str(tok[VALUE]), _token_span(tok))
        if kind is _NUMBER or kind is _QUANTITY:
            return self.number(tok)
        if kind is _IDENT:
            if words and tok[VALUE] not in _RESERVED:
                self.advance()
                return ast.Name((tok[TEXT].lower(),), _token_span(tok))
            return None
        if kind is _OP and tok[TEXT] == "-":
            self.advance()
            value = self.tok
            if value[KIND] is _NUMBER or value[KIND] is _QUANTITY:
                node = self.number(value)
                span = _span_to(tok, node.span)
                if isinstance(node, ast.Number):
                    return ast.Number(-node.value, span)
                return ast.Quantity(-node.amount, node.unit, span)
            raise self.error("a number after '-'")
        return None

    def number(self, tok: RawToken) -> ast.Number | ast.Quantity:
        if tok[KIND] is _NUMBER:
            unit_word = self.unit_word_after(tok)
            if unit_word is not None:
                written = quote(f"{tok[TEXT]} {self.peek()[TEXT]}")
                raise ParseError(
                    _token_span(tok).to(_token_span(self.peek())),
                    f"a space between a number and its unit: {written}",
                    f"write the number and the unit together: {tok[TEXT]}{unit_word}",
                )
            self.advance()
            return ast.Number(_checked_number(tok), _token_span(tok))
        self.advance()
        amount = _checked_number(tok)
        unit = tok[TEXT].lstrip(_NUMBER_CHARS)
        if unit not in UNITS:
            raise _unknown_unit(tok)
        return ast.Quantity(amount, unit, _token_span(tok))

    def expr(self) -> ast.Expr:
        depth = self.depth
        left = self.term()
        tok = self.tok
        while tok[KIND] is _OP and tok[TEXT] in ("+", "-"):
            # Each operator nests the tree one level deeper (a + b + c is (a + b) + c).
            self.enter(tok)
            self.advance()
            right = self.term()
            left = ast.Binary(tok[TEXT], left, right, left.span.to(right.span))
            tok = self.tok
        self.depth = depth
        return left

    def term(self) -> ast.Expr:
        depth = self.depth
        left = self.unary()
        tok = self.tok
        while tok[KIND] is _OP and tok[TEXT] in ("*", "/"):
            self.enter(tok)
            self.advance()
            right = self.unary()
            left = ast.Binary(tok[TEXT], left, right, left.span.to(right.span))
            tok = self.tok
        self.depth = depth
        return left

    def unary(self) -> ast.Expr:
        tok = self.tok
        if tok[KIND] is _OP and tok[TEXT] == "-":
            self.enter(tok)
            self.advance()
            operand = self.unary()
            self.depth -= 1
            span = _span_to(tok, operand.span)
            if isinstance(operand, ast.Number):
                return ast.Number(-operand.value, span)
            return ast.Unary("-", operand, span)
        return self.primary()

    def primary(self) -> ast.Expr:
        tok = self.tok
        kind = tok[KIND]
        if kind is _IDENT and tok[VALUE] not in _RESERVED:
            if _is_op(self.next_token(), "("):
                self.advance()
                self.advance()
                name = tok[TEXT].lower()
                args = self.args(name, word_values=name in SIGNALS)
                return ast.Call(name, args, self.span_from(tok))
            return self.name()
        if kind is _NUMBER or kind is _QUANTITY or kind is _STRING:
            value = self.literal()
            assert value is not None  # a number, a quantity or a string is a literal
            return value
        if tok[TEXT] == "(" and kind is _OP:
            self.enter(tok)
            self.advance()
            inner = self.expr()
            self.expect_op(")", "')' to close the '('")
            self.depth -= 1
            return inner
        raise self.error("a number, instances, a signal like cpu() or '('")

    def name(self) -> ast.Name:
        first = self.advance()
        if not self.at_op("."):
            return ast.Name((first[TEXT].lower(),), _token_span(first))
        parts = [first[TEXT].lower()]
        while self.at_op("."):
            self.advance()
            part = self.tok
            if part[KIND] is not _IDENT:
                raise self.error(f"a field name after '{'.'.join(parts)}.'")
            self.advance()
            # Label keys keep their case: service.labels.Tier is the label "Tier".
            parts.append(part[TEXT] if parts[-1] == "labels" else part[TEXT].lower())
        return ast.Name(tuple(parts), self.span_from(first))

    # --- condition ----------------------------------------------------------------------

    def condition(self) -> ast.Condition:
        return self.chain("OR", self.condition_and)

    def condition_and(self) -> ast.Condition:
        return self.chain("AND", self.condition_atom)

    def condition_atom(self) -> ast.Condition:
        tok = self.tok
        if tok[KIND] is _IDENT and tok[VALUE] == "NOT":
            self.enter(tok)
            self.advance()
            operand = self.condition_atom()
            self.depth -= 1
            return ast.Not(operand, _span_to(tok, operand.span))
        if tok[KIND] is _OP and tok[TEXT] == "(":
            self.enter(tok)
            self.advance()
            inner = self.condition()
            self.expect_op(")", "')' to close the '(' of the condition")
            self.depth -= 1
            return inner
        left = self.operand()
        op_tok = self.tok
        if op_tok[KIND] is _OP and op_tok[TEXT] in _CMP_OR_DOUBLE:
            if op_tok[TEXT] == "==":
                raise ParseError(
                    _token_span(op_tok), "'==' is not a comparison here", "use = to compare"
                )
            self.advance()
            right = self.operand()
            op = "!=" if op_tok[TEXT] == "<>" else op_tok[TEXT]
            return ast.Compare(op, left, right, left.span.to(right.span))
        negated = False
        if self.at_word("NOT"):
            self.advance()
            negated = True
            if not (self.at_word("IN") or self.at_word("LIKE")):
                raise self.error("IN or LIKE after NOT", choices=("IN", "LIKE"))
        if self.at_word("IN"):
            self.advance()
            values = self.value_list()
            return ast.InList(left, values, negated, left.span.to(self.prev_span()))
        if self.at_word("LIKE"):
            self.advance()
            pattern = self.tok
            if pattern[KIND] is not _STRING:
                raise self.error("a pattern in quotes after LIKE, like 'img-%'")
            self.advance()
            node = ast.String(str(pattern[VALUE]), _token_span(pattern))
            return ast.Like(left, node, negated, left.span.to(_token_span(pattern)))
        raise self.error(
            "a comparison (=, !=, <, <=, >, >=, IN or LIKE)", choices=("IN", "LIKE", "NOT")
        )

    def operand(self) -> ast.Expr:
        tok = self.tok
        if tok[KIND] is _IDENT and tok[VALUE] not in _RESERVED:
            if _is_op(self.next_token(), "("):
                raise ParseError(
                    _token_span(tok),
                    f"signals are tested in ON, not in IF: "
                    f"move {tok[TEXT].lower()}() to the trigger",
                    "IF tests fields such as service.name or time.hour",
                )
            return self.name()
        value = self.literal()
        if value is None:
            raise self.error("a field like service.name or a value")
        return value

    def value_list(self) -> tuple[ast.Expr, ...]:
        self.expect_op("(", "'(' to start the list after IN, like IN ('a', 'b')")
        values = [self.list_value()]
        while self.at_op(","):
            self.advance()
            values.append(self.list_value())
        self.expect_op(")", "',' or ')' in the IN list")
        return tuple(values)

    def list_value(self) -> ast.Expr:
        value = self.literal()
        if value is None:
            raise self.error("a value in the IN list")
        return value

    # --- actions ------------------------------------------------------------------------

    def action(self) -> ast.Action:
        tok = self.tok
        verb = tok[VALUE] if tok[KIND] is _IDENT else None
        if verb not in _ACTIONS:
            raise self.error(f"an action ({_ACTION_LIST})", choices=_ACTIONS)
        self.advance()
        if verb == "SCALE":
            target = self.target()
            self.expect_word("TO", "TO after the service in SCALE, like SCALE service.name TO 4")
            to = self.expr()
            return ast.Scale(target, to, self.span_from(tok))
        if verb == "ROLLBACK":
            return self.rollback(tok)
        if verb == "RESTART":
            return ast.Restart(self.target(), self.span_from(tok))
        if verb in ("ABORT", "PAUSE", "RESUME"):
            if not self.at_word("ROLLOUT"):  # the message is only built for the error
                self.expect_word("ROLLOUT", f"ROLLOUT after {verb} ({verb} ROLLOUT service.name)")
            self.advance()
            return ast.Rollout(str(verb), self.target(), self.span_from(tok))
        text = self.tok
        what = "message" if verb == "NOTIFY" else "command"
        if text[KIND] is not _STRING:
            raise self.error(f"a {what} in quotes after {verb}, like {verb} '...'")
        self.advance()
        string = ast.String(str(text[VALUE]), _token_span(text))
        if verb == "NOTIFY":
            return ast.Notify(string, _span(tok, text))
        return ast.Run(string, _span(tok, text))

    def rollback(self, verb: RawToken) -> ast.Rollback:
        target = self.target()
        self.expect_word("TO", "TO after the service in ROLLBACK, like TO previous_stable")
        tok = self.tok
        if tok[KIND] is _STRING:
            self.advance()
            version = ast.String(str(tok[VALUE]), _token_span(tok))
            return ast.Rollback(target, ast.RollbackTo.VERSION, version, _span(verb, tok))
        if tok[KIND] is _IDENT and tok[TEXT].lower() in ("previous_stable", "previous"):
            self.advance()
            to = ast.RollbackTo(tok[TEXT].lower())
            return ast.Rollback(target, to, None, _span(verb, tok))
        raise self.error(
            "previous_stable, previous or a version in quotes after TO",
            choices=("previous_stable", "previous"),
        )

    def target(self) -> ast.Target:
        tok = self.tok
        service_word = False
        if (
            tok[VALUE] == "SERVICE"
            and tok[KIND] is _IDENT
            and (
                self.next_token()[KIND] is _STRING
                or (self.next_token()[VALUE] == "SERVICE" and self.peek(2)[TEXT] == ".")
            )
        ):
            self.advance()
            service_word = self.tok[KIND] is _STRING
        value = self.tok
        if value[KIND] is _STRING:
            self.advance()
            return ast.Target(str(value[VALUE]), service_word, _span(tok, value))
        if (
            value[VALUE] == "SERVICE"
            and value[KIND] is _IDENT
            and self.next_token()[TEXT] == "."
            and self.peek(2)[VALUE] == "NAME"
        ):
            self.advance()
            self.advance()
            end = self.advance()
            return ast.Target(None, False, _span(value, end))
        hint = None
        if value[KIND] is _IDENT and value[VALUE] not in ("SERVICE", "TO"):
            hint = f"write the service name in quotes: '{value[TEXT]}'"
        raise self.error("service.name or a service name in quotes, like 'checkout'", hint)


def _describe(tok: RawToken) -> str:
    if tok[KIND] is _EOF:
        return "the end of the file"
    if tok[KIND] is _STRING:
        return "the string " + quote(str(tok[VALUE]))
    return quote(tok[TEXT])


def _number_text(tok: RawToken) -> str:
    text = tok[TEXT]
    return text[: len(text) - len(text.lstrip(_NUMBER_CHARS))]


def _checked_number(tok: RawToken) -> int | float:
    value = tok[VALUE]
    assert isinstance(value, (int, float))
    if value > MAX_NUMBER:
        raise ParseError(_token_span(tok), f"the number {quote(_number_text(tok))} is too large")
    return value


def _unknown_unit(tok: RawToken) -> ParseError:
    number = _number_text(tok)
    unit = tok[TEXT][len(number) :]
    known = ", ".join(UNITS)
    word = UNIT_WORDS.get(unit.lower())
    if word:
        hint = f"write {number}{word}"
    else:
        hint = did_you_mean(unit, UNITS) or f"valid units: {known}"
        if hint.startswith("did you mean"):
            hint = f"did you mean {number}{hint[len('did you mean ') + 1 : -2]}?"
    return ParseError(_token_span(tok), f"unknown unit {quote(unit)} in {quote(tok[TEXT])}", hint)
