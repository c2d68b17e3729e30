"""The invalid-input corpus: rule texts with the exact diagnostics each must produce.

Format of fixtures/invalid.txt, one case after another:

    === case-name
    <rule text, any number of lines>
    --- expect
    LINE:COL: error: MESSAGE
    hint: HINT                  (only when the diagnostic has a hint)

Run `python -m tests.lang.corpus CASES_FILE` to print a corpus with the current output for
each case (for review when adding cases, never to paper over a change).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from sqlifier.lang import Source, check, parse_source
from sqlifier.lang.errors import Diagnostic

CORPUS = Path(__file__).parent / "fixtures" / "invalid.txt"
# The services of the stack the corpus is checked against.
SERVICES = ("web", "api", "payment-gateway", "image-processor-svc")


@dataclass(frozen=True)
class Case:
    name: str
    text: str
    expected: tuple[str, ...]


def read_cases(path: Path = CORPUS) -> list[Case]:
    cases = []
    for block in path.read_text(encoding="utf-8").split("=== ")[1:]:
        header, _, rest = block.partition("\n")
        text, _, expected = rest.partition("--- expect\n")
        lines = tuple(line for line in expected.splitlines() if line)
        cases.append(Case(header.strip(), text, lines))
    return cases


def diagnose(text: str) -> list[Diagnostic]:
    source = Source(text, "case.sql")
    rules, diagnostics = parse_source(source)
    return [*diagnostics, *check([(source, rules)], SERVICES)]


def describe(diagnostics: list[Diagnostic]) -> tuple[str, ...]:
    lines = []
    for d in diagnostics:
        lines.append(f"{d.line}:{d.col}: {d.severity.value}: {d.message}")
        if d.hint:
            lines.append(f"hint: {d.hint}")
    return tuple(lines)


def _print_corpus(cases_file: Path) -> None:
    for block in cases_file.read_text(encoding="utf-8").split("=== ")[1:]:
        header, _, text = block.partition("\n")
        text = text.partition("--- expect\n")[0]
        sys.stdout.write(f"=== {header.strip()}\n{text}--- expect\n")
        for line in describe(diagnose(text)):
            sys.stdout.write(line + "\n")


if __name__ == "__main__":
    _print_corpus(Path(sys.argv[1]))
