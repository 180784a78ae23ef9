"""Reference parameters: ``Type/id``, an id (with ``:Type``), or a URL (canonicals and absolute references).

https://hl7.org/fhir/R5/search.html#reference. The same rows answer ``_include``, ``_revinclude``, chains
and ``_has`` (engine): search_reference_source and search_reference_reverse are covering indexes for
them, as SQLite would otherwise walk every reference of the type through search_reference_target.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fhir_pub.search.types.base import Context, ParamType, Row, Totals, Value

if TYPE_CHECKING:
    from fhir_pub.search.request import Filter


def references(value: Any) -> Iterator[tuple[str | None, str | None, str | None]]:
    """(target type, target id, url) of one value: a relative Reference, or anything else by its URL."""
    if isinstance(value, str):  # canonical or uri
        yield None, None, value.split("|", 1)[0]
    elif isinstance(value, dict):
        if isinstance(value.get("reference"), dict):  # CodeableReference
            yield from references(value["reference"])
        elif isinstance(value.get("reference"), str):
            ref = value["reference"]
            parts = ref.split("/")
            relative = len(parts) == 2 or (len(parts) == 4 and parts[2] == "_history")  # Type/id[/_history/v]
            if relative and parts[0][:1].isupper():
                yield parts[0], parts[1], None
            else:
                yield None, None, ref


class Reference(ParamType):
    """Indexed as the target's type and id, or as a URL; sorted by the target id."""

    name = "reference"
    modifiers = frozenset({"missing"})
    type_modifier = True
    table = "search_reference"
    schema = """
CREATE TABLE search_reference (type TEXT, id TEXT, param TEXT, target_type TEXT, target_id TEXT, url TEXT);
CREATE INDEX search_reference_target ON search_reference (type, param, target_id, target_type, id);
CREATE INDEX search_reference_source ON search_reference (type, id, param, target_type, target_id);
CREATE INDEX search_reference_reverse ON search_reference (target_id, target_type, type, param, id);
"""
    sort = ("target_id", "target_id")
    totals = Totals(
        table="search_reference_total",
        columns="type TEXT NOT NULL, param TEXT NOT NULL, target_type TEXT NOT NULL, "
        "target_id TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (type, param, target_type, target_id)",
        fill="INSERT INTO search_reference_total SELECT type, param, target_type, target_id, "
        "COUNT(DISTINCT id) FROM search_reference WHERE target_type IS NOT NULL AND target_id IS NOT NULL "
        "GROUP BY type, param, target_id, target_type HAVING COUNT(DISTINCT id) >= ?",
        condition="(target_type = ? AND target_id = ?)",
        lookup="SELECT n FROM search_reference_total WHERE type = ? AND param = ? AND target_type = ? "
        "AND target_id = ?",
    )

    def rows(self, kind: str, rid: str, code: str, value: Any) -> Iterator[Row]:
        """One row per reference: target type and id, or URL."""
        return ((kind, rid, code, t, i, u) for t, i, u in references(value))

    def condition(self, f: Filter, value: Value, context: Context) -> tuple[str, list[Any]]:
        """``Type/id`` (also under this server's base URL), an id of any (or the modifier's) type, a URL."""
        reference = value.code
        if context.base_url and reference.startswith(context.base_url.rstrip("/") + "/"):
            reference = reference[len(context.base_url.rstrip("/")) + 1 :]
        parts = reference.split("/")
        if len(parts) == 2 and parts[0][:1].isupper() and "://" not in reference:
            return "(target_type = ? AND target_id = ?)", parts
        if "/" not in reference and ":" not in reference:
            if f.target_type:
                return "(target_type = ? AND target_id = ?)", [f.target_type, reference]
            return "target_id = ?", [reference]
        return "url = ?", [reference.split("|", 1)[0]]
