"""URI parameters: the whole URI, or ``:above`` / ``:below`` it.

https://hl7.org/fhir/R5/search.html#uri
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fhir_pub.search.syntax import like
from fhir_pub.search.types.base import Context, ParamType, Row, Value

if TYPE_CHECKING:
    from fhir_pub.search.request import Filter


class Uri(ParamType):
    """Indexed as the value itself."""

    name = "uri"
    modifiers = frozenset({"missing", "above", "below"})
    table = "search_uri"
    schema = """
CREATE TABLE search_uri (type TEXT, id TEXT, param TEXT, value TEXT);
CREATE INDEX search_uri_source ON search_uri (type, id, param, value);
CREATE INDEX search_uri_value ON search_uri (type, param, value);
"""
    sort = ("value", "value")

    def rows(self, kind: str, rid: str, code: str, value: Any) -> Iterator[Row]:
        """One row for a string value."""
        if isinstance(value, str):
            yield kind, rid, code, value

    def condition(self, f: Filter, value: Value, context: Context) -> tuple[str, list[Any]]:
        """Equal; ``:above`` a prefix of the value; ``:below`` starting with it."""
        if f.modifier == "above":
            return "? LIKE value || '%'", [value.code]
        if f.modifier == "below":
            return "value LIKE ? ESCAPE '\\'", [f"{like(value.code)}%"]
        return "value = ?", [value.code]
