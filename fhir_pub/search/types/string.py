"""String parameters: a case- and accent-insensitive starts-with match by default, ``:exact``, ``:contains``.

https://hl7.org/fhir/R5/search.html#string
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fhir_pub.search.syntax import like
from fhir_pub.search.types.base import Context, ParamType, Row, Value

if TYPE_CHECKING:
    from fhir_pub.search.request import Filter


def normalize(text: str) -> str:
    """Case- and accent-insensitive form for string search: NFKD without combining marks, casefolded."""
    if text.isascii():  # NFKD leaves ASCII as it is, and none of it is a combining mark
        return " ".join(text.casefold().split())
    decomposed = unicodedata.normalize("NFKD", text)
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).casefold().split())


def strings(value: Any) -> Iterator[str]:
    """The strings of one value: itself, or every string part of a HumanName or Address."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for part in value.values():
            yield from strings(part)
    elif isinstance(value, list):
        for part in value:
            yield from strings(part)


class String(ParamType):
    """Indexed as the value and its normalized form (``norm``), which the default match and sort use."""

    name = "string"
    modifiers = frozenset({"missing", "exact", "contains"})
    table = "search_string"
    schema = """
CREATE TABLE search_string (type TEXT, id TEXT, param TEXT, norm TEXT, value TEXT);
CREATE INDEX search_string_norm ON search_string (type, param, norm, id);
CREATE INDEX search_string_source ON search_string (type, id, param, norm);
"""
    sort = ("norm", "norm")

    def rows(self, kind: str, rid: str, code: str, value: Any) -> Iterator[Row]:
        """One row per string: its normalized form and itself."""
        return ((kind, rid, code, normalize(s), s) for s in strings(value))

    def condition(self, f: Filter, value: Value, context: Context) -> tuple[str, list[Any]]:
        """``:exact`` the value itself; otherwise the normalized form starts with (or contains) it."""
        if f.modifier == "exact":
            return "value = ?", [value.code]
        pattern = like(normalize(value.code))
        return "norm LIKE ? ESCAPE '\\'", [f"%{pattern}%" if f.modifier == "contains" else f"{pattern}%"]
