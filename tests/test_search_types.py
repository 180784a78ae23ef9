"""The search-parameter types (fhir_pub.search.types): each one's table, sort key and totals agree."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing

import pytest

from fhir_pub.artifact import SCHEMA, statements
from fhir_pub.search.index import INDEX_SCHEMA, TOTALS_SCHEMA, write_totals
from fhir_pub.search.parameters import SearchParam
from fhir_pub.search.request import Filter
from fhir_pub.search.types import TYPES, Context, ParamType

INDEXED = [t for t in TYPES.values() if t.table is not None]


def _columns(db: sqlite3.Connection, table: str) -> list[str]:
    return [row[1] for row in db.execute(f"PRAGMA table_info({table})")]


@pytest.fixture
def db() -> sqlite3.Connection:
    """An empty publication schema with its index tables and stored totals."""
    connection = sqlite3.connect(":memory:")
    for statement in statements(SCHEMA + INDEX_SCHEMA):
        connection.execute(statement)
    write_totals(connection)
    return connection


class TestRegistry:
    """One registry: every type is under its own name, and declares what it indexes."""

    def test_names(self) -> None:
        """Each type is registered under the SearchParameter.type code it serves."""
        assert {name for name, t in TYPES.items() if t.name != name} == set()
        assert set(TYPES) == {"token", "string", "reference", "date", "uri", "special"}

    @pytest.mark.parametrize("kind", INDEXED, ids=lambda t: t.name)
    def test_table(self, kind: ParamType, db: sqlite3.Connection) -> None:
        """Its schema creates its table, which starts with (type, id, param) and holds its sort keys."""
        created = re.findall(r"CREATE TABLE (\w+)", kind.schema)
        assert created == [kind.table]
        columns = _columns(db, str(kind.table))
        assert columns[:3] == ["type", "id", "param"]
        if kind.sort is not None:
            assert set(kind.sort) <= set(columns)

    @pytest.mark.parametrize("kind", [t for t in INDEXED if t.totals is not None], ids=lambda t: t.name)
    def test_totals(self, kind: ParamType, db: sqlite3.Connection) -> None:
        """The stored totals' condition is the type's own for a whole value, and its lookup runs."""
        assert kind.totals is not None
        assert kind.totals.table in TOTALS_SCHEMA
        param = SearchParam("p", kind.name, "", "https://example.org/p", ("Patient",))
        value = kind.parse("Patient/x" if kind.name == "reference" else "s|c", "p")
        sql, args = kind.condition(Filter("p", param, None, (value,)), value, Context("", 0))
        assert sql == kind.totals.condition
        with closing(db.execute(kind.totals.lookup, ["Patient", "p", *args])) as cursor:
            assert cursor.fetchall() == []

    @pytest.mark.parametrize("kind", INDEXED, ids=lambda t: t.name)
    def test_modifiers(self, kind: ParamType) -> None:
        """Every indexed type takes :missing; only dates take prefixes."""
        assert "missing" in kind.modifiers
        assert kind.prefixed == (kind.name == "date")
