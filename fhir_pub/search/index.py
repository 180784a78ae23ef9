"""Build-time search index: each SearchParameter's FHIRPath evaluated once per resource, stored as rows.

Expressions are compiled once per resource type, to plain Python where they stay within the simple subset
of FHIRPath (``fhir_pub.search.extract``), else with fhirpathpy.

Rows are typed by parameter type (https://hl7.org/fhir/R5/search.html#ptypes): tokens keep system, code
and human text; strings a normalized form for the default starts-with match; references the target type,
id or URL; dates their range; URIs their value. A parameter whose expression cannot be evaluated on some
resource is reported, and the server then does not claim to support it.
"""

from __future__ import annotations

import html
import re
import sqlite3
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from fhir_pub.search.dates import InvalidDate, parse_range
from fhir_pub.search.extract import Extractor, Unsupported, compile_native
from fhir_pub.search.parameters import Registry, SearchParam
from fhir_pub.validation.fhirpath import RESOLVABLE, compile_expression

# The value indexes end with the id, so a filter's ids come from the index alone. The *_source indexes
# find one resource's own rows: the sort keys of the matches (engine._order). resource_key holds only
# the keys of the resource table (whose rows carry the bodies), so checking and counting matches reads a
# small B-tree instead of the bodies' pages: at 100,000 resources a count of 761 matches fell from 16 ms
# to 2 ms. _include follows search_reference_source and _revinclude (and "what refers to this")
# search_reference_reverse, both covering: SQLite prefers a covering index, and would otherwise walk every
# reference of the type through search_reference_target.
INDEX_SCHEMA = """
CREATE TABLE search_token (type TEXT, id TEXT, param TEXT, system TEXT, code TEXT, text TEXT);
CREATE TABLE search_string (type TEXT, id TEXT, param TEXT, norm TEXT, value TEXT);
CREATE TABLE search_reference (type TEXT, id TEXT, param TEXT, target_type TEXT, target_id TEXT, url TEXT);
CREATE TABLE search_date (type TEXT, id TEXT, param TEXT, low INTEGER, high INTEGER);
CREATE TABLE search_uri (type TEXT, id TEXT, param TEXT, value TEXT);
CREATE TABLE search_present (type TEXT, id TEXT, param TEXT, PRIMARY KEY (type, param, id)) WITHOUT ROWID;
CREATE VIRTUAL TABLE search_text USING fts5(type UNINDEXED, id UNINDEXED, narrative, content);
CREATE INDEX search_token_code ON search_token (type, param, code, system, id);
CREATE INDEX search_string_norm ON search_string (type, param, norm, id);
CREATE INDEX search_reference_target ON search_reference (type, param, target_id, target_type, id);
CREATE INDEX search_reference_source ON search_reference (type, id, param, target_type, target_id);
CREATE INDEX search_reference_reverse ON search_reference (target_id, target_type, type, param, id);
CREATE INDEX search_token_source ON search_token (type, id, param, code);
CREATE INDEX search_string_source ON search_string (type, id, param, norm);
CREATE INDEX search_date_source ON search_date (type, id, param, low, high);
CREATE INDEX search_uri_source ON search_uri (type, id, param, value);
CREATE INDEX resource_key ON resource (type, id);
CREATE INDEX search_date_low ON search_date (type, param, low, high);
CREATE INDEX search_uri_value ON search_uri (type, param, value);
"""
# Match counts of the indexed values that many resources share, so that the total of a search for one
# of them is one lookup instead of a count of every match (a code that 7,000 resources share took 13 ms
# to count at a million resources). Values with fewer matches are counted live, which is cheap, and keep
# these tables small. Exactly the conditions engine.FULL_KEY names.
TOTAL_MIN = 64
TOTALS_SCHEMA = {
    "search_token_total": "type TEXT NOT NULL, param TEXT NOT NULL, system TEXT NOT NULL, "
    "code TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (type, param, system, code)",
    "search_reference_total": "type TEXT NOT NULL, param TEXT NOT NULL, target_type TEXT NOT NULL, "
    "target_id TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (type, param, target_type, target_id)",
}


def write_totals(db: sqlite3.Connection, minimum: int = TOTAL_MIN) -> None:
    """(Re)compute the match counts of the values ``minimum`` resources share (TOTALS_SCHEMA)."""
    for table, columns in TOTALS_SCHEMA.items():
        db.execute(f"DROP TABLE IF EXISTS {table}")
        db.execute(f"CREATE TABLE {table} ({columns}) WITHOUT ROWID")
    db.execute(
        "INSERT INTO search_token_total SELECT type, param, system, code, COUNT(DISTINCT id) "
        "FROM search_token WHERE system IS NOT NULL AND code IS NOT NULL GROUP BY type, param, code, system "
        "HAVING COUNT(DISTINCT id) >= ?",
        (minimum,),
    )
    db.execute(
        "INSERT INTO search_reference_total SELECT type, param, target_type, target_id, COUNT(DISTINCT id) "
        "FROM search_reference WHERE target_type IS NOT NULL AND target_id IS NOT NULL "
        "GROUP BY type, param, target_id, target_type HAVING COUNT(DISTINCT id) >= ?",
        (minimum,),
    )


TABLES = {
    "token": "search_token",
    "string": "search_string",
    "reference": "search_reference",
    "date": "search_date",
    "uri": "search_uri",
}
INDEXED_TYPES = frozenset(TABLES)
MIN_TIME, MAX_TIME = -(2**62), 2**62


def normalize(text: str) -> str:
    """Case- and accent-insensitive form for string search: NFKD without combining marks, casefolded."""
    if text.isascii():  # NFKD leaves ASCII as it is, and none of it is a combining mark
        return " ".join(text.casefold().split())
    decomposed = unicodedata.normalize("NFKD", text)
    return " ".join("".join(c for c in decomposed if not unicodedata.combining(c)).casefold().split())


@lru_cache(maxsize=4096)  # the same codes' displays recur across a publication's resources
def words(text: str) -> str:
    """Normalized text with punctuation as spaces, for word matches (token ``:text``)."""
    return " ".join(re.sub(r"[^\w]+", " ", normalize(text)).split())


_ANY_RESOURCE = re.compile(r"\b(?:Resource|DomainResource)\.")


def for_type(expression: str, resource_type: str) -> str:
    """``Resource.id`` as ``ClinicalUseDefinition.id``: fhirpathpy matches a leading type name exactly."""
    return _ANY_RESOURCE.sub(f"{resource_type}.", expression)


def _tokens(value: Any) -> Iterator[tuple[str | None, str | None, str | None]]:
    if isinstance(value, (bool, str, int, float)):
        yield None, str(value).lower() if isinstance(value, bool) else str(value), None
    elif isinstance(value, dict):
        if "concept" in value or ("reference" in value and "coding" not in value and "system" not in value):
            if isinstance(value.get("concept"), dict):
                yield from _tokens(value["concept"])
        elif "coding" in value or ("text" in value and "value" not in value):
            text = value.get("text")
            codings = [c for c in value.get("coding", []) if isinstance(c, dict)]
            for coding in codings:
                yield coding.get("system"), coding.get("code"), text or coding.get("display")
            if not codings and isinstance(text, str):
                yield None, None, text
        elif "code" in value or "system" in value:
            yield value.get("system"), value.get("code"), value.get("display")
        elif "value" in value:  # Identifier, ContactPoint
            kind = value.get("type", {}).get("text") if isinstance(value.get("type"), dict) else None
            yield value.get("system"), str(value["value"]), kind


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):  # HumanName, Address: every string part
        for part in value.values():
            yield from _strings(part)
    elif isinstance(value, list):
        for part in value:
            yield from _strings(part)


def _references(value: Any) -> Iterator[tuple[str | None, str | None, str | None]]:
    if isinstance(value, str):  # canonical or uri
        yield None, None, value.split("|", 1)[0]
    elif isinstance(value, dict):
        if isinstance(value.get("reference"), dict):  # CodeableReference
            yield from _references(value["reference"])
        elif isinstance(value.get("reference"), str):
            ref = value["reference"]
            parts = ref.split("/")
            relative = len(parts) == 2 or (len(parts) == 4 and parts[2] == "_history")  # Type/id[/_history/v]
            if relative and parts[0][:1].isupper():
                yield parts[0], parts[1], None
            else:
                yield None, None, ref


def _dates(value: Any) -> Iterator[tuple[int, int]]:
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


@dataclass
class IndexRows:
    """Rows for the index tables, and the parameters that could not be evaluated somewhere."""

    rows: dict[str, list[tuple[Any, ...]]] = field(
        default_factory=lambda: {t: [] for t in [*TABLES.values(), "search_present", "search_text"]}
    )
    failed: dict[str, str] = field(default_factory=dict)  # param url -> why


def extractors(registry: Registry, resource_type: str) -> list[tuple[SearchParam, Extractor]]:
    """The indexed parameters of one type, each compiled once: natively, else with fhirpathpy."""
    out = []
    for param in registry.for_type(resource_type).values():
        if param.type not in INDEXED_TYPES:
            continue
        expression = for_type(param.expression, resource_type)
        try:
            extractor = compile_native(expression, resource_type)
        except Unsupported:
            extractor = _with_fhirpathpy(expression)
        out.append((param, extractor))
    return out


def _with_fhirpathpy(expression: str) -> Extractor:
    try:
        function = compile_expression(expression)
    except Exception as exc:
        problem = exc

        def failing(resource: Mapping[str, Any], resolvable: Mapping[str, Any]) -> list[Any]:
            raise problem

        return failing

    def evaluate(resource: Mapping[str, Any], resolvable: Mapping[str, Any]) -> list[Any]:
        values: list[Any] = function(resource, {"resource": resource, "rootResource": resource})
        return values

    return evaluate


class Indexer:
    """Index rows of one resource at a time; each type's expressions compiled on first use."""

    def __init__(self, registry: Registry, resolvable: Mapping[str, Mapping[str, Any]]) -> None:
        self.registry = registry
        self.resolvable = resolvable  # what ``resolve()`` reaches: the whole publication
        self._by_type: dict[str, list[tuple[SearchParam, Extractor]]] = {}

    def add(self, resource: Mapping[str, Any], out: IndexRows) -> None:
        """Evaluate every applicable parameter on ``resource``, adding its rows to ``out``.

        A parameter that fails is recorded in ``out.failed`` and not evaluated again for ``out``.
        """
        kind, rid = resource["resourceType"], resource["id"]
        narrative = narrative_text(resource)
        content: list[str] = []  # the narrative's words are in their own column only: indexed once
        _content_strings(resource, "", content)
        out.rows["search_text"].append((kind, rid, narrative, " ".join(content)))
        if kind not in self._by_type:
            self._by_type[kind] = extractors(self.registry, kind)
        token = RESOLVABLE.set(self.resolvable)  # for expressions fhirpathpy evaluates
        try:
            for param, extractor in self._by_type[kind]:
                if param.url in out.failed:
                    continue
                try:
                    values = extractor(resource, self.resolvable)
                except Exception as exc:  # an expression that cannot run: the parameter is not offered
                    out.failed[param.url] = f"{type(exc).__name__}: {exc}"[:200]
                    continue
                _add(out, kind, rid, param, values)
        finally:
            RESOLVABLE.reset(token)


def index(resources: Iterable[Mapping[str, Any]], registry: Registry) -> IndexRows:
    """Evaluate every applicable parameter on every resource (``resolve()`` reaches the whole set)."""
    resources = list(resources)
    out = IndexRows()
    indexer = Indexer(registry, {f"{r['resourceType']}/{r['id']}": r for r in resources})
    for resource in resources:
        indexer.add(resource, out)
    return out


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


def _add(out: IndexRows, kind: str, rid: str, param: SearchParam, values: list[Any]) -> None:
    table = TABLES[param.type]
    before = len(out.rows[table])
    for value in values:
        if param.type == "token":
            out.rows[table].extend(
                (kind, rid, param.code, s, c, words(t) if t else None) for s, c, t in _tokens(value)
            )
        elif param.type == "string":
            out.rows[table].extend((kind, rid, param.code, normalize(s), s) for s in _strings(value))
        elif param.type == "reference":
            out.rows[table].extend((kind, rid, param.code, t, i, u) for t, i, u in _references(value))
        elif param.type == "date":
            out.rows[table].extend((kind, rid, param.code, low, high) for low, high in _dates(value))
        elif param.type == "uri" and isinstance(value, str):
            out.rows[table].append((kind, rid, param.code, value))
    if len(out.rows[table]) > before:
        out.rows["search_present"].append((kind, rid, param.code))
