"""The toll-free fallback table (ENUMER's ``enumtollfree``), read from a config file.

Used only when no trusted record answers for a number. Each line is one
directive in ENUMER's form; a directive applies to a number when its regexp's
ERE matches the number, e.g.::

    # US toll-free numbers land at a carrier that takes them over SIP
    E2U+sip=100|10|!^\\+1(8(00|33|44|55|66|77|88)[0-9]{7})$!sip:\\1@tollfree.example.net!
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from p2pnode.directory.naptr import NaptrDirective, NaptrError, parse_enumer_directive

__all__ = [
    "MAX_TOLLFREE_RULES",
    "TollFreeError",
    "TollFreeTable",
    "load_tollfree",
    "parse_tollfree",
]

MAX_TOLLFREE_RULES = 1000


class TollFreeError(ValueError):
    """A toll-free table file with a line that is not a directive."""


@dataclass(frozen=True, slots=True)
class TollFreeTable:
    directives: tuple[NaptrDirective, ...] = ()

    def lookup(self, number: str) -> tuple[NaptrDirective, ...]:
        """The directives whose regexp matches ``number`` (``+<digits>``), in table order."""
        return tuple(d for d in self.directives if d.expression.pattern.search(number))


def parse_tollfree(text: str, *, source: str = "toll-free table") -> TollFreeTable:
    directives: list[NaptrDirective] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            directives.append(parse_enumer_directive(line))
        except NaptrError as error:
            raise TollFreeError(f"{source} line {number}: {error}") from None
        if len(directives) > MAX_TOLLFREE_RULES:
            raise TollFreeError(f"{source}: more than {MAX_TOLLFREE_RULES} rules")
    return TollFreeTable(tuple(directives))


def load_tollfree(path: Path) -> TollFreeTable:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise TollFreeError(f"cannot read the toll-free table {path}: {error}") from None
    return parse_tollfree(text, source=str(path))
