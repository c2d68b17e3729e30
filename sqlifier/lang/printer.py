"""The printer: canonical text for rules, keeping each comment beside its clause.

Canonical form: keywords upper case, signals and fields lower case, one clause per line
in the order RULE, ON ... FOR, IF, DO (one action per line), LIMIT, COOLDOWN, DRY RUN, and
one blank line between rules — the layout of the seed examples:

    ON high_cpu(>80%) FOR 3m
    IF service.name = 'image-processor-svc'
    DO SCALE service.name TO instances + 2
    LIMIT 20;

A comment on its own line stays above the clause that follows it; a comment after code
stays at the end of that clause's line. Printing is idempotent and keeps meaning:
parse(print(x)) == parse(x).
"""

from __future__ import annotations

from decimal import Decimal

from sqlifier.lang import ast
from sqlifier.lang.source import Span
from sqlifier.lang.tokens import Comment

__all__ = [
    "format_action",
    "format_condition",
    "format_expr",
    "format_file",
    "format_rule",
    "format_trigger",
]

_PRECEDENCE = {"+": 1, "-": 1, "*": 2, "/": 2}


# --- values and expressions ------------------------------------------------------------


def format_number(value: int | float) -> str:
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        return format(Decimal(repr(value)), "f")
    return str(value)


def format_string(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def format_expr(node: ast.Expr, parent: int = 0) -> str:
    """An expression, with the parentheses its structure needs and no more."""
    if isinstance(node, ast.Number):
        return format_number(node.value)
    if isinstance(node, ast.Quantity):
        return format_number(node.amount) + node.unit
    if isinstance(node, ast.String):
        return format_string(node.value)
    if isinstance(node, ast.Name):
        return node.dotted
    if isinstance(node, ast.Call):
        return f"{node.name}({', '.join(_format_arg(a) for a in node.args)})"
    if isinstance(node, ast.Unary):
        inner = format_expr(node.operand, 3)
        return f"-({inner})" if inner.startswith("-") else f"-{inner}"
    precedence = _PRECEDENCE[node.op]
    left = format_expr(node.left, precedence)
    right = format_expr(node.right, precedence + 1)
    text = f"{left} {node.op} {right}"
    return f"({text})" if precedence < parent else text


def _format_arg(arg: ast.Arg) -> str:
    value = format_expr(arg.value)
    return f"{arg.name}={value}" if arg.name else value


# --- trigger and condition -------------------------------------------------------------


def format_trigger(node: ast.Trigger | ast.Condition) -> str:
    """A trigger or a condition: AND binds tighter than OR, parentheses where needed."""
    if isinstance(node, ast.BoolOp):
        parts = []
        for operand in node.operands:
            text = format_trigger(operand)
            if isinstance(operand, ast.BoolOp) and operand.op == "OR" and node.op == "AND":
                text = f"({text})"
            parts.append(text)
        return f" {node.op} ".join(parts)
    if isinstance(node, ast.SignalTest):
        inside = [f"{node.inner.op}{format_expr(node.inner.value)}"] if node.inner else []
        inside += [_format_arg(a) for a in node.args]
        text = f"{node.signal}({', '.join(inside)})"
        if node.outer:
            text += f" {node.outer.op} {format_expr(node.outer.value)}"
        return text
    if isinstance(node, ast.Compare):
        return f"{format_expr(node.left)} {node.op} {format_expr(node.right)}"
    if isinstance(node, ast.InList):
        values = ", ".join(format_expr(v) for v in node.values)
        return f"{format_expr(node.operand)} {'NOT IN' if node.negated else 'IN'} ({values})"
    if isinstance(node, ast.Like):
        keyword = "NOT LIKE" if node.negated else "LIKE"
        return f"{format_expr(node.operand)} {keyword} {format_string(node.pattern.value)}"
    inner = format_trigger(node.operand)
    return f"NOT ({inner})" if isinstance(node.operand, ast.BoolOp) else f"NOT {inner}"


format_condition = format_trigger


# --- actions and rules -----------------------------------------------------------------


def _format_target(target: ast.Target) -> str:
    if target.literal is None:
        return "service.name"
    prefix = "service " if target.service_word else ""
    return prefix + format_string(target.literal)


def format_action(action: ast.Action) -> str:
    if isinstance(action, ast.Scale):
        return f"SCALE {_format_target(action.target)} TO {format_expr(action.to)}"
    if isinstance(action, ast.Rollback):
        version = action.version
        to = format_string(version.value) if version is not None else action.to.value
        return f"ROLLBACK {_format_target(action.target)} TO {to}"
    if isinstance(action, ast.Restart):
        return f"RESTART {_format_target(action.target)}"
    if isinstance(action, ast.Rollout):
        return f"{action.verb} ROLLOUT {_format_target(action.target)}"
    if isinstance(action, ast.Notify):
        return f"NOTIFY {format_string(action.message.value)}"
    return f"RUN {format_string(action.command.value)}"


def _clause_lines(rule: ast.Rule) -> list[tuple[str, str]]:
    lines: list[tuple[str, str]] = []
    if rule.name is not None:
        lines.append(("rule", f"RULE {rule.name}"))
    on = f"ON {format_trigger(rule.trigger)}"
    if rule.for_ is not None:
        on += f" FOR {format_expr(rule.for_)}"
    lines.append(("on", on))
    if rule.condition is not None:
        lines.append(("if", f"IF {format_condition(rule.condition)}"))
    last = len(rule.actions) - 1
    for i, action in enumerate(rule.actions):
        text = ("DO " if i == 0 else "   ") + format_action(action) + ("," if i < last else "")
        lines.append((f"do{i}", text))
    if rule.limit is not None:
        lines.append(("limit", f"LIMIT {format_expr(rule.limit)}"))
    if rule.cooldown is not None:
        lines.append(("cooldown", f"COOLDOWN {format_expr(rule.cooldown)}"))
    if rule.dry_run:
        lines.append(("dry_run", "DRY RUN"))
    return lines


def format_rule(rule: ast.Rule) -> str:
    """One rule in canonical form, ending with ';', without comments."""
    return "\n".join(text for _, text in _clause_lines(rule)) + ";"


# --- files, with comments --------------------------------------------------------------


class _Placed:
    """The comments of one rule: above each clause, and at the end of clause lines."""

    def __init__(self) -> None:
        self.before_rule: list[Comment] = []
        self.above: dict[str, list[Comment]] = {}
        self.after: dict[str, list[Comment]] = {}


def format_file(file: ast.RuleFile) -> str:
    """A whole file in canonical form; empty text for a file with nothing in it."""
    placed = [_Placed() for _ in file.rules]
    trailer = _place_comments(file, placed)
    out: list[str] = []
    for index, (rule, where) in enumerate(zip(file.rules, placed, strict=True)):
        if index:
            out.append("")
        _emit_block(out, where.before_rule)
        if where.before_rule and rule.span.line - where.before_rule[-1].span.end_line > 1:
            out.append("")
        lines = _clause_lines(rule)
        last = len(lines) - 1
        for i, (key, text) in enumerate(lines):
            for comment in where.above.get(key, ()):
                out.append(comment.text)
            if i == last:
                text += ";"
            ends = where.after.get(key, []) + (where.after.get("end", []) if i == last else [])
            spill = _order_line_end(ends)
            if ends:
                text += " " + " ".join(c.text for c in ends)
            out.append(text)
            out.extend(c.text for c in spill)
    if trailer:
        if file.rules and trailer[0].blank_before:
            out.append("")
        _emit_block(out, trailer)
    return "\n".join(out) + "\n" if out else ""


def _order_line_end(ends: list[Comment]) -> list[Comment]:
    """Order the comments that end a line so nothing follows a `--` but more comment.

    Block comments go first; of those that end in `--`, one spanning lines may lead. Any
    other that spans lines cannot follow a `--`, so it is returned to go on its own line.
    """
    ends.sort(key=lambda c: (c.ends_line, "\n" not in c.text))
    spill = []
    seen_line_end = False
    for comment in list(ends):
        if seen_line_end and "\n" in comment.text:
            ends.remove(comment)
            spill.append(comment)
        seen_line_end = seen_line_end or comment.ends_line
    return spill


def _emit_block(out: list[str], comments: list[Comment]) -> None:
    for i, comment in enumerate(comments):
        if i and comment.blank_before:
            out.append("")
        out.append(comment.text)


def _place_comments(file: ast.RuleFile, placed: list[_Placed]) -> list[Comment]:
    """Attach each comment to a rule and clause; return those after the last rule."""
    trailer: list[Comment] = []
    rules = file.rules
    index = 0  # the first rule that does not end before the comment
    for comment in file.comments:
        start = comment.span.start
        while index < len(rules) and rules[index].span.end <= start:
            index += 1
        following = rules[index] if index < len(rules) else None
        if (
            index
            and not comment.own_line
            and rules[index - 1].span.end_line == comment.span.line
            and (following is None or start < following.span.start)
        ):
            placed[index - 1].after.setdefault("end", []).append(comment)
        elif following is None:
            trailer.append(comment)
        elif start < following.span.start:
            placed[index].before_rule.append(comment)
        else:
            _place_inside(following, placed[index], comment)
    return trailer


def _place_inside(rule: ast.Rule, where: _Placed, comment: Comment) -> None:
    start = comment.span.start
    clauses = rule.clauses
    if comment.own_line:
        # Above the clause it sits inside (`DO` / comment / action), else the next one.
        inside = [key for key, span in clauses if span.start < start < span.end]
        following = [key for key, span in clauses if span.start > start]
        key = (inside or following or [clauses[-1][0]])[0]
        where.above.setdefault(key, []).append(comment)
        return
    preceding = [key for key, span in clauses if _starts_before(span, start)]
    key = preceding[-1] if preceding else clauses[0][0]
    where.after.setdefault(key, []).append(comment)


def _starts_before(span: Span, point: tuple[int, int]) -> bool:
    return span.start <= point
