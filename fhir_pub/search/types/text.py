"""Full text, the special parameters ``_text`` (the narrative) and ``_content`` (every string as well).

https://hl7.org/fhir/R5/search.html#_text. Indexed once per resource, not per parameter (``row``, which
index.Indexer adds), in an FTS5 table whose columns these parameters search.
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from fhir_pub.search.types.base import ParamType, Row

if TYPE_CHECKING:
    from fhir_pub.search.parameters import SearchParam
    from fhir_pub.search.request import Filter

TABLE = "search_text"
# The full-text columns each parameter searches: _content is the whole resource, its narrative included.
COLUMNS = {"_text": "narrative", "_content": "{narrative content}"}
_TAG = re.compile(r"<[^>]*>")


def narrative_text(resource: Mapping[str, Any]) -> str:
    """The words of a resource's narrative (tags removed, entities decoded)."""
    text = resource.get("text")
    div = text.get("div") if isinstance(text, dict) else None
    return " ".join(html.unescape(_TAG.sub(" ", div)).split()) if isinstance(div, str) else ""


def _content_strings(value: Any, key: str, out: list[str]) -> None:
    """Append the strings inside ``value`` but the narrative's ``div``, in document order."""
    if isinstance(value, str):
        if key != "div":
            out.append(value)
    elif isinstance(value, dict):
        for name, item in value.items():
            _content_strings(item, name, out)
    elif isinstance(value, list):
        for item in value:
            _content_strings(item, key, out)


def row(resource: Mapping[str, Any]) -> Row:
    """The full-text row of a resource: type, id, its narrative's words, and its other strings."""
    content: list[str] = []  # the narrative's words are in their own column only: indexed once
    _content_strings(resource, "", content)
    return resource["resourceType"], resource["id"], narrative_text(resource), " ".join(content)


class FullText(ParamType):
    """The special parameters this server implements: no modifiers, no prefixes, not sortable."""

    name = "special"
    modifiers = frozenset()
    schema = """
CREATE VIRTUAL TABLE search_text USING fts5(type UNINDEXED, id UNINDEXED, narrative, content);
"""

    def offers(self, param: SearchParam) -> bool:
        """Only ``_text`` and ``_content`` of the special parameters."""
        return param.code in COLUMNS

    def search_sql(self, resource_type: str, f: Filter) -> tuple[str, list[Any]]:
        """Every word of a value occurs (values ORed); words are quoted, so no FTS syntax leaks in."""
        column = COLUMNS[f.param.code]
        queries = []
        for value in f.values:
            terms = re.findall(r"\w+", value.code)
            if terms:
                queries.append(" ".join('"' + term.replace('"', '""') + '"' for term in terms))
        if not queries:
            return "0", []
        match = f"{column} : ({' OR '.join(f'({q})' for q in queries)})"
        return "r.id IN (SELECT id FROM search_text WHERE search_text MATCH ? AND type = ?)", [
            match,
            resource_type,
        ]
