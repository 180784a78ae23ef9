"""Date parameters: every value a range ``[low, high)`` in microseconds, compared by prefix.

https://hl7.org/fhir/R5/search.html#date; the range semantics are ``fhir_pub.search.dates``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fhir_pub.search.dates import InvalidDate, Range, parse_range
from fhir_pub.search.syntax import unescape
from fhir_pub.search.types.base import Context, ParamType, Row, Value

if TYPE_CHECKING:
    from fhir_pub.search.request import Filter

MIN_TIME, MAX_TIME = -(2**62), 2**62  # the open ends of a Period
DAY = 86_400_000_000


def dates(value: Any) -> Iterator[tuple[int, int]]:
    """(low, high) of one value: a date, dateTime or instant, or a Period (open ends unbounded)."""
    if isinstance(value, str):
        try:
            span = parse_range(value)
        except InvalidDate:
            return
        yield span.low, span.high
    elif isinstance(value, dict) and ("start" in value or "end" in value):  # Period
        low = parse_range(value["start"]).low if isinstance(value.get("start"), str) else MIN_TIME
        high = parse_range(value["end"]).high if isinstance(value.get("end"), str) else MAX_TIME
        yield low, high


def date_condition(prefix: str, value: Range, now: int) -> tuple[str, list[Any]]:
    """SQL over ``low``/``high`` for one date prefix: the same rules as ``dates.matches``."""
    inside = "(low >= ? AND high <= ?)"
    if prefix == "eq":
        return inside, [value.low, value.high]
    if prefix == "ne":
        return f"NOT {inside}", [value.low, value.high]
    if prefix == "gt":
        return "high > ?", [value.high]
    if prefix == "lt":
        return "low < ?", [value.low]
    if prefix == "ge":
        return f"(high > ? OR {inside})", [value.high, value.low, value.high]
    if prefix == "le":
        return f"(low < ? OR {inside})", [value.low, value.low, value.high]
    if prefix == "sa":
        return "low >= ?", [value.high]
    if prefix == "eb":
        return "high <= ?", [value.low]
    slack = max(DAY, abs(now - value.low) // 10)  # ap: https://hl7.org/fhir/R5/search.html#prefix
    return "(low < ? AND high > ?)", [value.high + slack, value.low - slack]


class Date(ParamType):
    """Indexed as ``low`` and ``high``; sorted by ``low`` ascending, ``high`` descending."""

    name = "date"
    modifiers = frozenset({"missing"})
    prefixed = True
    table = "search_date"
    schema = """
CREATE TABLE search_date (type TEXT, id TEXT, param TEXT, low INTEGER, high INTEGER);
CREATE INDEX search_date_source ON search_date (type, id, param, low, high);
CREATE INDEX search_date_low ON search_date (type, param, low, high);
"""
    sort = ("low", "high")

    def parse(self, raw: str, name: str) -> Value:
        """A prefix (``eq`` if none) and a date, dateTime or instant, as its range."""
        prefix, rest = self.split_prefix(raw)
        # An unescaped "+" (a time zone offset) arrives as a space; dates hold no spaces otherwise.
        text = unescape(rest).replace(" ", "+")
        return Value(raw, prefix or "eq", None, text, parse_range(text))

    def rows(self, kind: str, rid: str, code: str, value: Any) -> Iterator[Row]:
        """One row per date or Period: its range."""
        return ((kind, rid, code, low, high) for low, high in dates(value))

    def condition(self, f: Filter, value: Value, context: Context) -> tuple[str, list[Any]]:
        """The value's prefix compares its range with each row's."""
        if value.range is None:
            raise ValueError(f"{f.name}: a date value without its range")
        return date_condition(value.prefix or "eq", value.range, context.now)
