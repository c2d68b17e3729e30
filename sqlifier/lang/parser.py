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
"""

from __future__ import annotations

import gc
import re
from collections.abc import Callable
from typing import TypeVar, cast

from sqlifier.lang import ast
from sqlifier.lang.errors import Diagnostic, ParseError, did_you_mean, quote
from sqlifier.lang.signals import SIGNALS
from sqlifier.lang.source import Source, Span
from sqlifier.lang.tokens import Kind, Token, tokenize
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
_ACTIONS = ("SCALE", "ROLLBACK", "RESTART", "ABORT", "PAUSE", "RESUME", "NOTIFY", "RUN")
_ACTION_LIST = (
    "SCALE, ROLLBACK, RESTART, ABORT ROLLOUT, PAUSE ROLLOUT, RESUME ROLLOUT, NOTIFY or RUN"
)
_TAIL = ("LIMIT", "COOLDOWN", "DRY")
_RESERVED = frozenset(("RULE", "ON", "FOR", "IF", "DO", "LIMIT", "COOLDOWN", "AND", "OR", "NOT"))

T = TypeVar("T")


def parse(source: Source) -> tuple[ast.RuleFile, list[Diagnostic]]:
    """Parse a whole file; return the rules that parsed and a diagnostic per bad statement."""
    # Parsing allocates many small objects and frees none of them: the cycle collector
    # would scan them over and over for nothing (about a fifth of the time on large files).
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _Parser(source).parse_file()
    finally:
        if enabled:
            gc.enable()


def parse_trigger(source: Source) -> tuple[ast.Trigger | None, list[Diagnostic]]:
    """Parse signal tests alone (`error_rate() < 1% AND latency(p99) < 300ms`), as written
    in a rollout's analysis."""
    parser = _Parser(source)
    try:
        trigger = parser.trigger()
        if parser.tok.kind is not _EOF:
            raise parser.error("AND, OR or the end of the expression", choices=("AND", "OR"))
    except ParseError as exc:
        return None, [Diagnostic.at(source, exc.span, exc.message, hint=exc.hint)]
    return trigger, []


class _Parser:
    def __init__(self, source: Source) -> None:
        self.source = source
        self.tokens, self.comments = tokenize(source.text)
        self.pos = 0
        self.tok = self.tokens[0]
        self.depth = 0
        self.diagnostics: list[Diagnostic] = []

    # --- token helpers ------------------------------------------------------------------

    def advance(self) -> Token:
        tok = self.tok
        if tok.kind is not _EOF:
            self.pos += 1
            self.tok = self.tokens[self.pos]
        return tok

    def peek(self, ahead: int = 1) -> Token:
        return self.tokens[min(self.pos + ahead, len(self.tokens) - 1)]

    def at_word(self, word: str) -> bool:
        return self.tok.value == word and self.tok.kind is _IDENT

    def prev_span(self) -> Span:
        return self.tokens[self.pos - 1].span

    def span_from(self, first: Token) -> Span:
        """From the start of token `first` to the end of the token just consumed."""
        prev = self.tokens[self.pos - 1]
        return _new(Span, (first[4], first[5], prev[4], prev[5] + len(prev[1])))

    def expect_op(self, op: str, expected: str) -> Token:
        if self.tok.text == op and self.tok.kind is _OP:
            return self.advance()
        raise self.error(expected)

    def expect_word(self, word: str, expected: str) -> Token:
        if self.at_word(word):
            return self.advance()
        raise self.error(expected, choices=(word,))

    def error(
        self, expected: str, hint: str | None = None, choices: tuple[str, ...] = ()
    ) -> ParseError:
        """A 'expected X, found Y' error at the current token (or its own error)."""
        tok = self.tok
        if tok.kind is _ERROR:
            message, own_hint = cast("tuple[str, str | None]", tok.value)
            return ParseError(tok.span, message, own_hint)
        span = tok.span
        if tok.kind is _EOF and self.pos > 0:
            prev = self.tokens[self.pos - 1]
            span = Span(prev.line, prev.end_col, prev.line, prev.end_col + 1)
        found = _describe(tok)
        unit = self.unit_word_after(tok)
        if unit is not None:
            found = quote(f"{tok.text} {self.peek().text}")
            span = span.to(self.peek().span)
            hint = hint or f"write the number and the unit together: {tok.text}{unit}"
        if hint is None and tok.kind is _IDENT and choices and tok.value not in choices:
            hint = did_you_mean(tok.text, choices)
        return ParseError(span, f"expected {expected}, found {found}", hint)

    def unit_word_after(self, tok: Token) -> str | None:
        """The unit meant by `3 minutes` (a number, a space, a unit word), or None."""
        if tok.kind is not _NUMBER or tok is not self.tok:
            return None
        word = self.peek()
        if word.kind is not _IDENT or word.line != tok.line:
            return None
        text = word.text
        return UNIT_WORDS.get(text.lower()) or (text if text in UNITS else None)

    def enter(self, span: Span) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise ParseError(span, f"expressions nest too deeply (more than {MAX_DEPTH} levels)")

    # --- file and recovery --------------------------------------------------------------

    def parse_file(self) -> tuple[ast.RuleFile, list[Diagnostic]]:
        rules: list[ast.Rule] = []
        while self.tok.kind is not _EOF:
            if self.tok.text == ";" and self.tok.kind is _OP:
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
        while self.tok.kind is not _EOF:
            tok = self.tok
            if tok.kind is _OP and tok.text == ";":
                self.advance()
                return
            if (
                tok.kind is _IDENT
                and tok.value in ("RULE", "ON")
                and tokens[self.pos - 1].end_line < tok.line
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
            expected = "IF or DO" if for_ else "FOR, IF or DO"
            if condition is not None:
                expected = "AND, OR or DO"
            hint = None
            if self.tok.kind is _IDENT and self.tok.value in _ACTIONS:
                hint = f"write DO before {self.tok.text}"
            elif self.at_word("FOR"):
                hint = "FOR comes right after the trigger: ON ... FOR 3m IF ... DO ..."
            raise self.error(
                f"{expected} after the {'condition' if condition else 'trigger'}",
                hint,
                choices=("FOR", "IF", "DO", "AND", "OR"),
            )
        do = self.advance()
        actions = [self.action()]
        clauses.append(("do0", self.span_from(do)))
        while self.tok.text == "," and self.tok.kind is _OP:
            self.advance()
            start = self.tok.span
            actions.append(self.action())
            clauses.append((f"do{len(actions) - 1}", start.to(self.prev_span())))
        limit, cooldown, dry_run = self.tail(clauses)
        self.end_of_rule()
        return ast.Rule(
            trigger=trigger,
            actions=tuple(actions),
            name=name,
            for_=for_,
            condition=condition,
            limit=limit,
            cooldown=cooldown,
            dry_run=dry_run,
            span=self.span_from(first),
            clauses=tuple(clauses),
        )

    def rule_head(self, clauses: list[tuple[str, Span]]) -> tuple[str | None, Token]:
        """`[RULE name] ON`: the name, and the ON token."""
        first = self.tok
        if self.at_word("ON"):
            return None, self.advance()
        if not self.at_word("RULE"):
            hint = None
            if first.kind is _IDENT and first.text.lower() in SIGNALS:
                hint = f"start the rule with ON: ON {first.text.lower()}(...)"
            raise self.error("ON or RULE to start a rule", hint, choices=("ON", "RULE"))
        self.advance()
        name = self.rule_name()
        clauses.append(("rule", self.span_from(first)))
        if self.tok.text == "-" and self.tok.kind is _OP:
            raise self.error(
                "ON after the rule name",
                "a rule name is letters, digits, _ and - (each part after a - starts with "
                "a letter or digit, and holds no % or .)",
            )
        if not self.at_word("ON") and self.tok.kind is _IDENT:
            raise self.error(
                "ON after the rule name",
                f"a rule name has no spaces: write {name}-{self.tok.text}",
                choices=("ON",),
            )
        return name, self.expect_word("ON", "ON after the rule name")

    def rule_name(self) -> str:
        tok = self.tok
        hyphenated = self.peek().text == "-" and self.peek().offset == tok.end
        if tok.kind is not _IDENT or (tok.value in _RESERVED and not hyphenated):
            raise self.error("a rule name after RULE (letters, digits, _ and -)")
        self.advance()
        name = tok.text
        # Hyphenated names (`scale-up`, `scale-2x`) arrive as several tokens written
        # without spaces.
        while (
            self.tok.text == "-"
            and self.tok.offset == self.tokens[self.pos - 1].end
            and self.peek().kind in (_IDENT, _NUMBER, _QUANTITY)
            and self.peek().offset == self.tok.end
            and _WORD.fullmatch(self.peek().text)
        ):
            self.advance()
            name += "-" + self.advance().text
        return name

    def tail(
        self, clauses: list[tuple[str, Span]]
    ) -> tuple[ast.Number | None, ast.Quantity | None, bool]:
        limit: ast.Number | None = None
        cooldown: ast.Quantity | None = None
        dry_run = False
        seen: set[str] = set()
        while self.tok.kind is _IDENT and self.tok.value in _TAIL:
            word = self.advance()
            key = str(word.value)
            if key in seen:
                raise ParseError(word.span, f"{'DRY RUN' if key == 'DRY' else key} is given twice")
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
        if tok.kind is _EOF or (tok.kind is _OP and tok.text == ";"):
            self.advance()
            return
        if tok.kind is _IDENT and tok.value in ("ON", "RULE"):
            raise self.error("';' to end the rule before the next one")
        previous = self.tokens[self.pos - 1]
        if tok.text == "," and tok.kind is _OP:
            raise self.error(
                f"';' after {previous.text}",
                "list every action before LIMIT, COOLDOWN and DRY RUN",
            )
        raise self.error(
            "',', LIMIT, COOLDOWN, DRY RUN or ';' after the action",
            choices=("LIMIT", "COOLDOWN", "DRY"),
        )

    def limit(self) -> ast.Number:
        tok = self.tok
        if tok.kind is not _NUMBER:
            raise self.error("a whole number of instances after LIMIT, like 20")
        self.advance()
        return ast.Number(_checked_number(tok), tok.span)

    def duration(self, keyword: str) -> ast.Quantity:
        start = self.tok
        negative = start.text == "-" and start.kind is _OP
        if negative:
            self.advance()
        tok = self.tok
        if tok.kind is _QUANTITY:
            unit = tok.text[len(_number_text(tok)) :]
            if UNITS.get(unit, (None,))[0] is Type.DURATION:
                self.advance()
                amount = _checked_number(tok)
                return ast.Quantity(-amount if negative else amount, unit, start.span.to(tok.span))
            if unit not in UNITS:
                raise _unknown_unit(tok)
        hint = None
        if tok.kind is _NUMBER and self.unit_word_after(tok) is None:
            hint = f"add a unit: {tok.text}s, {tok.text}m or {tok.text}h"
        raise self.error(f"a duration after {keyword} (like 3m or 30s)", hint)

    # --- trigger ------------------------------------------------------------------------

    def trigger(self) -> ast.Trigger:
        return self.chain("OR", lambda: self.chain("AND", self.trigger_atom))

    def chain(self, word: str, operand: Callable[[], T]) -> T:
        first = self.tok.span
        items = [operand()]
        while self.at_word(word):
            self.advance()
            items.append(operand())
        if len(items) == 1:
            return items[0]
        flat: list[object] = []
        for item in items:
            if isinstance(item, ast.BoolOp) and item.op == word:
                flat.extend(item.operands)
            else:
                flat.append(item)
        return ast.BoolOp(word, tuple(flat), first.to(self.prev_span()))  # type: ignore[arg-type,return-value]

    def trigger_atom(self) -> ast.Trigger:
        tok = self.tok
        if tok.text == "(" and tok.kind is _OP:
            self.enter(tok.span)
            self.advance()
            inner = self.trigger()
            self.expect_op(")", "')' to close the '(' of the trigger")
            self.depth -= 1
            return inner
        if tok.kind is _IDENT and tok.value not in _RESERVED:
            return self.signal_test()
        raise self.error("a signal test like cpu() > 80% or high_cpu(>80%)")

    def signal_test(self) -> ast.SignalTest:
        name_tok = self.advance()
        name = name_tok.text.lower()
        if not (self.tok.text == "(" and self.tok.kind is _OP):
            raise self.error(
                f"'(' after {name}",
                "signals are written with parentheses, like cpu() > 80% or high_cpu(>80%)",
            )
        self.advance()
        inner = None
        if self.tok.text in _CMP and self.tok.kind is _OP:
            inner = self.comparison()
            if self.tok.text == "," and self.tok.kind is _OP:
                self.advance()
        args = self.args(name, word_values=True)
        outer = None
        if self.tok.kind is _OP and self.tok.text in _CMP | {"=="}:
            outer = self.comparison()
        return ast.SignalTest(name, args, inner, outer, self.span_from(name_tok), name_tok.span)

    def comparison(self) -> ast.Comparison:
        op_tok = self.advance()
        if op_tok.text == "==":
            raise ParseError(op_tok.span, "'==' is not a comparison here", "use = to compare")
        op = "!=" if op_tok.text == "<>" else op_tok.text
        value = self.literal(f"a value to compare with after '{op_tok.text}'")
        return ast.Comparison(op, value, self.span_from(op_tok))

    def args(self, owner: str, word_values: bool) -> tuple[ast.Arg, ...]:
        """Arguments up to and including ')': `name=value` or positional."""
        args: list[ast.Arg] = []
        if self.tok.text == ")" and self.tok.kind is _OP:
            self.advance()
            return ()
        while True:
            start = self.tok
            if start.kind is _IDENT and self.peek().text == "=" and self.peek().kind is _OP:
                self.advance()
                self.advance()
                value = self.literal(f"a value for {start.text.lower()}=", words=True)
                args.append(ast.Arg(start.text.lower(), value, self.span_from(start)))
            else:
                value = self.literal("an argument", words=True) if word_values else self.expr()
                args.append(ast.Arg(None, value, self.span_from(start)))
            if self.tok.kind is _OP and self.tok.text == ",":
                self.advance()
                continue
            if self.tok.kind is _OP and self.tok.text == ")":
                self.advance()
                return tuple(args)
            raise self.error(f"',' or ')' in the arguments of {owner}()")

    # --- values and expressions ---------------------------------------------------------

    def literal(self, expected: str, words: bool = False) -> ast.Expr:
        """A number, quantity or string, optionally negative; with `words`, a bare word."""
        tok = self.tok
        if tok.kind is _OP and tok.text == "-":
            self.advance()
            value = self.tok
            if value.kind in (_NUMBER, _QUANTITY):
                node = self.number(value)
                span = tok.span.to(node.span)
                if isinstance(node, ast.Number):
                    return ast.Number(-node.value, span)
                return ast.Quantity(-node.amount, node.unit, span)
            raise self.error("a number after '-'")
        if tok.kind in (_NUMBER, _QUANTITY):
            return self.number(tok)
        if tok.kind is _STRING:
            self.advance()
            return ast.String(str(tok.value), tok.span)
        if words and tok.kind is _IDENT and tok.value not in _RESERVED:
            self.advance()
            return ast.Name((tok.text.lower(),), tok.span)
        raise self.error(expected)

    def number(self, tok: Token) -> ast.Number | ast.Quantity:
        unit_word = self.unit_word_after(tok)
        if unit_word is not None:
            written = quote(f"{tok.text} {self.peek().text}")
            raise ParseError(
                tok.span.to(self.peek().span),
                f"a space between a number and its unit: {written}",
                f"write the number and the unit together: {tok.text}{unit_word}",
            )
        self.advance()
        amount = _checked_number(tok)
        if tok.kind is _NUMBER:
            return ast.Number(amount, tok.span)
        unit = tok.text[len(_number_text(tok)) :]
        if unit not in UNITS:
            raise _unknown_unit(tok)
        return ast.Quantity(amount, unit, tok.span)

    def expr(self) -> ast.Expr:
        depth = self.depth
        left = self.term()
        while self.tok.kind is _OP and self.tok.text in ("+", "-"):
            # Each operator nests the tree one level deeper (a + b + c is (a + b) + c).
            self.enter(self.tok.span)
            op = self.advance().text
            right = self.term()
            left = ast.Binary(op, left, right, left.span.to(right.span))
        self.depth = depth
        return left

    def term(self) -> ast.Expr:
        depth = self.depth
        left = self.unary()
        while self.tok.kind is _OP and self.tok.text in ("*", "/"):
            self.enter(self.tok.span)
            op = self.advance().text
            right = self.unary()
            left = ast.Binary(op, left, right, left.span.to(right.span))
        self.depth = depth
        return left

    def unary(self) -> ast.Expr:
        tok = self.tok
        if tok.kind is _OP and tok.text == "-":
            self.enter(tok.span)
            self.advance()
            operand = self.unary()
            self.depth -= 1
            if isinstance(operand, ast.Number):
                return ast.Number(-operand.value, tok.span.to(operand.span))
            return ast.Unary("-", operand, tok.span.to(operand.span))
        return self.primary()

    def primary(self) -> ast.Expr:
        tok = self.tok
        if tok.kind is _OP and tok.text == "(":
            self.enter(tok.span)
            self.advance()
            inner = self.expr()
            self.expect_op(")", "')' to close the '('")
            self.depth -= 1
            return inner
        if tok.kind is _IDENT and tok.value not in _RESERVED:
            if self.peek().text == "(" and self.peek().kind is _OP:
                self.advance()
                self.advance()
                name = tok.text.lower()
                args = self.args(name, word_values=name in SIGNALS)
                return ast.Call(name, args, self.span_from(tok))
            return self.name()
        if tok.kind in (_NUMBER, _QUANTITY, _STRING):
            return self.literal("a value")
        raise self.error("a number, instances, a signal like cpu() or '('")

    def name(self) -> ast.Name:
        first = self.advance()
        parts = [first.text.lower()]
        while self.tok.kind is _OP and self.tok.text == ".":
            self.advance()
            part = self.tok
            if part.kind is not _IDENT:
                raise self.error(f"a field name after '{'.'.join(parts)}.'")
            self.advance()
            # Label keys keep their case: service.labels.Tier is the label "Tier".
            parts.append(part.text if parts[-1] == "labels" else part.text.lower())
        return ast.Name(tuple(parts), self.span_from(first))

    # --- condition ----------------------------------------------------------------------

    def condition(self) -> ast.Condition:
        return self.chain("OR", lambda: self.chain("AND", self.condition_atom))

    def condition_atom(self) -> ast.Condition:
        tok = self.tok
        if tok.kind is _IDENT and tok.value == "NOT":
            self.enter(tok.span)
            self.advance()
            operand = self.condition_atom()
            self.depth -= 1
            return ast.Not(operand, tok.span.to(operand.span))
        if tok.kind is _OP and tok.text == "(":
            self.enter(tok.span)
            self.advance()
            inner = self.condition()
            self.expect_op(")", "')' to close the '(' of the condition")
            self.depth -= 1
            return inner
        left = self.operand()
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
            if pattern.kind is not _STRING:
                raise self.error("a pattern in quotes after LIKE, like 'img-%'")
            self.advance()
            node = ast.String(str(pattern.value), pattern.span)
            return ast.Like(left, node, negated, left.span.to(pattern.span))
        op_tok = self.tok
        if op_tok.kind is _OP and op_tok.text in _CMP | {"=="}:
            if op_tok.text == "==":
                raise ParseError(op_tok.span, "'==' is not a comparison here", "use = to compare")
            self.advance()
            right = self.operand()
            op = "!=" if op_tok.text == "<>" else op_tok.text
            return ast.Compare(op, left, right, left.span.to(right.span))
        raise self.error(
            "a comparison (=, !=, <, <=, >, >=, IN or LIKE)", choices=("IN", "LIKE", "NOT")
        )

    def operand(self) -> ast.Expr:
        tok = self.tok
        if tok.kind is _IDENT and tok.value not in _RESERVED:
            if self.peek().text == "(" and self.peek().kind is _OP:
                raise ParseError(
                    tok.span,
                    f"signals are tested in ON, not in IF: "
                    f"move {tok.text.lower()}() to the trigger",
                    "IF tests fields such as service.name or time.hour",
                )
            return self.name()
        return self.literal("a field like service.name or a value")

    def value_list(self) -> tuple[ast.Expr, ...]:
        self.expect_op("(", "'(' to start the list after IN, like IN ('a', 'b')")
        values = [self.literal("a value in the IN list")]
        while self.tok.kind is _OP and self.tok.text == ",":
            self.advance()
            values.append(self.literal("a value in the IN list"))
        self.expect_op(")", "',' or ')' in the IN list")
        return tuple(values)

    # --- actions ------------------------------------------------------------------------

    def action(self) -> ast.Action:
        tok = self.tok
        verb = tok.value if tok.kind is _IDENT else None
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
            self.expect_word("ROLLOUT", f"ROLLOUT after {verb} ({verb} ROLLOUT service.name)")
            return ast.Rollout(str(verb), self.target(), self.span_from(tok))
        text = self.tok
        what = "message" if verb == "NOTIFY" else "command"
        if text.kind is not _STRING:
            raise self.error(f"a {what} in quotes after {verb}, like {verb} '...'")
        self.advance()
        string = ast.String(str(text.value), text.span)
        if verb == "NOTIFY":
            return ast.Notify(string, tok.span.to(text.span))
        return ast.Run(string, tok.span.to(text.span))

    def rollback(self, verb: Token) -> ast.Rollback:
        target = self.target()
        self.expect_word("TO", "TO after the service in ROLLBACK, like TO previous_stable")
        tok = self.tok
        if tok.kind is _STRING:
            self.advance()
            version = ast.String(str(tok.value), tok.span)
            return ast.Rollback(target, ast.RollbackTo.VERSION, version, verb.span.to(tok.span))
        if tok.kind is _IDENT and tok.text.lower() in ("previous_stable", "previous"):
            self.advance()
            to = ast.RollbackTo(tok.text.lower())
            return ast.Rollback(target, to, None, verb.span.to(tok.span))
        raise self.error(
            "previous_stable, previous or a version in quotes after TO",
            choices=("previous_stable", "previous"),
        )

    def target(self) -> ast.Target:
        tok = self.tok
        service_word = False
        if (
            tok.kind is _IDENT
            and tok.value == "SERVICE"
            and (
                self.peek().kind is _STRING
                or (self.peek().value == "SERVICE" and self.peek(2).text == ".")
            )
        ):
            self.advance()
            service_word = self.tok.kind is _STRING
        value = self.tok
        if value.kind is _STRING:
            self.advance()
            return ast.Target(str(value.value), service_word, tok.span.to(value.span))
        if (
            value.kind is _IDENT
            and value.value == "SERVICE"
            and self.peek().text == "."
            and self.peek(2).value == "NAME"
        ):
            self.advance()
            self.advance()
            end = self.advance()
            return ast.Target(None, False, value.span.to(end.span))
        hint = None
        if value.kind is _IDENT and value.value not in ("SERVICE", "TO"):
            hint = f"write the service name in quotes: '{value.text}'"
        raise self.error("service.name or a service name in quotes, like 'checkout'", hint)


def _describe(tok: Token) -> str:
    if tok.kind is _EOF:
        return "the end of the file"
    if tok.kind is _STRING:
        return "the string " + quote(str(tok.value))
    return quote(tok.text)


def _number_text(tok: Token) -> str:
    end = 0
    text = tok.text
    while end < len(text) and (text[end].isdigit() or text[end] == "."):
        end += 1
    return text[:end]


def _checked_number(tok: Token) -> int | float:
    value = tok.value
    assert isinstance(value, int | float)
    if value > MAX_NUMBER:
        raise ParseError(tok.span, f"the number {quote(_number_text(tok))} is too large")
    return value


def _unknown_unit(tok: Token) -> ParseError:
    number = _number_text(tok)
    unit = tok.text[len(number) :]
    known = ", ".join(UNITS)
    word = UNIT_WORDS.get(unit.lower())
    if word:
        hint = f"write {number}{word}"
    else:
        hint = did_you_mean(unit, UNITS) or f"valid units: {known}"
        if hint.startswith("did you mean"):
            hint = f"did you mean {number}{hint[len('did you mean ') + 1 : -2]}?"
    return ParseError(tok.span, f"unknown unit {quote(unit)} in {quote(tok.text)}", hint)
