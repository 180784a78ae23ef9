"""Build-time search index: each SearchParameter's FHIRPath evaluated once per resource, stored as rows.

Expressions are compiled once per resource type, to plain Python where they stay within the simple subset
of FHIRPath (``fhir_pub.search.extract``), else with fhirpathpy.

Each parameter type's module (``fhir_pub.search.types``) declares its table and turns a value into its
rows (https://hl7.org/fhir/R5/search.html#ptypes). A parameter whose expression cannot be evaluated on
some resource is reported, and the server then does not claim to support it.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fhir_pub.search.extract import Extractor, Unsupported, compile_native
from fhir_pub.search.parameters import Registry, SearchParam
from fhir_pub.search.types import TYPES, ParamType, text
from fhir_pub.validation.fhirpath import RESOLVABLE, compile_expression

# Besides each type's table: which parameters a resource has values for (``:missing``), and the keys of
# the resource table alone (resource_key, whose rows carry the bodies), so checking and counting matches
# reads a small B-tree instead of the bodies' pages: at 100,000 resources a count of 761 matches fell
# from 16 ms to 2 ms.
INDEX_SCHEMA = (
    "".join(t.schema for t in TYPES.values())
    + """
CREATE TABLE search_present (type TEXT, id TEXT, param TEXT, PRIMARY KEY (type, param, id)) WITHOUT ROWID;
CREATE INDEX resource_key ON resource (type, id);
"""
)
# Match counts of the indexed values that many resources share, so that the total of a search for one
# of them is one lookup instead of a count of every match (a code that 7,000 resources share took 13 ms
# to count at a million resources). Values with fewer matches are counted live, which is cheap, and keep
# these tables small. Each type with ``totals`` names the one condition they answer.
TOTAL_MIN = 64
TOTALS_SCHEMA = {t.totals.table: t.totals.columns for t in TYPES.values() if t.totals is not None}


def write_totals(db: sqlite3.Connection, minimum: int = TOTAL_MIN) -> None:
    """(Re)compute the match counts of the values ``minimum`` resources share (TOTALS_SCHEMA)."""
    for kind in TYPES.values():
        if kind.totals is not None:
            db.execute(f"DROP TABLE IF EXISTS {kind.totals.table}")
            db.execute(f"CREATE TABLE {kind.totals.table} ({kind.totals.columns}) WITHOUT ROWID")
            db.execute(kind.totals.fill, (minimum,))


TABLES = [t.table for t in TYPES.values() if t.table is not None]
INDEXED_TYPES = frozenset(name for name, t in TYPES.items() if t.table is not None)


_ANY_RESOURCE = re.compile(r"\b(?:Resource|DomainResource)\.")


def for_type(expression: str, resource_type: str) -> str:
    """``Resource.id`` as ``ClinicalUseDefinition.id``: fhirpathpy matches a leading type name exactly."""
    return _ANY_RESOURCE.sub(f"{resource_type}.", expression)


@dataclass
class IndexRows:
    """Rows for the index tables, and the parameters that could not be evaluated somewhere."""

    rows: dict[str, list[tuple[Any, ...]]] = field(
        default_factory=lambda: {t: [] for t in [*TABLES, "search_present", text.TABLE]}
    )
    failed: dict[str, str] = field(default_factory=dict)  # param url -> why


Compiled = tuple[SearchParam, ParamType, Extractor]


def extractors(registry: Registry, resource_type: str) -> list[Compiled]:
    """The indexed parameters of one type and their types, each compiled once: natively or with fhirpathpy."""
    out = []
    for param in registry.for_type(resource_type).values():
        kind = TYPES.get(param.type)
        if kind is None or kind.table is None:
            continue
        expression = for_type(param.expression, resource_type)
        try:
            extractor = compile_native(expression, resource_type)
        except Unsupported:
            extractor = _with_fhirpathpy(expression)
        out.append((param, kind, extractor))
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
        self._by_type: dict[str, list[Compiled]] = {}

    def add(self, resource: Mapping[str, Any], out: IndexRows) -> None:
        """Evaluate every applicable parameter on ``resource``, adding its rows to ``out``.

        A parameter that fails is recorded in ``out.failed`` and not evaluated again for ``out``.
        """
        kind, rid = resource["resourceType"], resource["id"]
        out.rows[text.TABLE].append(text.row(resource))
        if kind not in self._by_type:
            self._by_type[kind] = extractors(self.registry, kind)
        token = RESOLVABLE.set(self.resolvable)  # for expressions fhirpathpy evaluates
        try:
            for param, param_type, extractor in self._by_type[kind]:
                if param.url in out.failed:
                    continue
                try:
                    values = extractor(resource, self.resolvable)
                except Exception as exc:  # an expression that cannot run: the parameter is not offered
                    out.failed[param.url] = f"{type(exc).__name__}: {exc}"[:200]
                    continue
                _add(out, kind, rid, param, param_type, values)
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


def _add(
    out: IndexRows, kind: str, rid: str, param: SearchParam, param_type: ParamType, values: list[Any]
) -> None:
    table = out.rows[str(param_type.table)]
    before = len(table)
    for value in values:
        table.extend(param_type.rows(kind, rid, param.code, value))
    if len(table) > before:
        out.rows["search_present"].append((kind, rid, param.code))
