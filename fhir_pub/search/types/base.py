"""What a search-parameter type is here: one class per type, asked by the parser, the indexer and the engine.

https://hl7.org/fhir/R5/search.html#ptypes. A type says which modifiers and prefixes it accepts, how a
value is parsed, which index rows a value of the resource gives (its table and their columns), the SQL
condition a search value puts on those rows, the column results sort by, and, for the conditions on a
whole value that many resources share, where the build stores their match counts.

Every value table starts with ``(type, id, param)``, and its value indexes end with the id, so a filter's
ids come from the index alone; its ``*_source`` index finds one resource's own rows (the sort keys of the
matches, engine._order).
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from fhir_pub.search.dates import PREFIXES, Range
from fhir_pub.search.syntax import unescape

if TYPE_CHECKING:
    from fhir_pub.search.parameters import SearchParam
    from fhir_pub.search.request import Filter

Expand = Callable[[str], "frozenset[tuple[str, str]] | None"]
Row = tuple[Any, ...]


@dataclass(frozen=True)
class Value:
    """One OR-alternative of a parameter value: its prefix (dates) and unescaped parts."""

    raw: str
    prefix: str | None = None
    system: str | None = None  # token: text before an unescaped "|", "" for "|code"; None without "|"
    code: str = ""  # token: the code; other types: the whole value
    range: Range | None = None  # dates


@dataclass(frozen=True)
class Context:
    """What a condition depends on besides its filter.

    The base URL (references given as absolute URLs to this server), now (``ap`` dates) and the value
    set expansion (token ``:in``).
    """

    base_url: str
    now: int
    expand: Expand | None = None


@dataclass(frozen=True)
class Totals:
    """Match counts the build stores for the whole values many resources share (index.write_totals).

    ``condition`` is the type's condition on one whole value; ``lookup`` reads its count, with the
    type, the parameter, then the condition's arguments; ``fill`` computes the table, with the minimum.
    """

    table: str
    columns: str
    fill: str
    condition: str
    lookup: str


class ParamType(ABC):
    """One search-parameter type. A type without a ``table`` is searched by ``search_sql`` alone."""

    name: ClassVar[str]  # the SearchParameter.type code
    modifiers: ClassVar[frozenset[str]]  # https://hl7.org/fhir/R5/search.html#modifiers
    prefixed: ClassVar[bool] = False  # takes eq, gt, ... (https://hl7.org/fhir/R5/search.html#prefix)
    type_modifier: ClassVar[bool] = False  # takes a resource type as modifier (subject:Medication)
    table: ClassVar[str | None] = None  # its index table
    schema: ClassVar[str] = ""  # CREATE statements of the table, then of its indexes
    sort: ClassVar[tuple[str, str] | None] = None  # sort key column ascending, descending; None: unsortable
    totals: ClassVar[Totals | None] = None

    def offers(self, param: SearchParam) -> bool:
        """Whether this server searches ``param`` (of this type)."""
        return True

    def split_prefix(self, raw: str) -> tuple[str | None, str]:
        """The prefix of a value, if the type takes one and the value has one, and the rest."""
        if self.prefixed and raw[:2] in PREFIXES and len(raw) > 2:
            return raw[:2], raw[2:]
        return None, raw

    def parse(self, raw: str, name: str) -> Value:
        """One non-empty OR-alternative of a value of parameter ``name``; InvalidSearch if malformed."""
        prefix, rest = self.split_prefix(raw)
        return Value(raw, prefix, None, unescape(rest))

    def rows(self, kind: str, rid: str, code: str, value: Any) -> Iterator[Row]:
        """The rows of ``table`` for one value of parameter ``code`` on resource ``kind/rid``."""
        return iter(())

    def condition(self, f: Filter, value: Value, context: Context) -> tuple[str, list[Any]]:
        """SQL on ``table``'s value columns for one value of a filter, and its arguments."""
        raise ValueError(f"no index for {self.name} parameters")

    def search_sql(self, resource_type: str, f: Filter) -> tuple[str, list[Any]]:
        """For a type without ``table``: a condition on ``r.id`` for the whole filter, and its arguments."""
        raise ValueError(f"no index for {self.name} parameters")
