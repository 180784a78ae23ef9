"""Run a SearchRequest against the built index: SQL per filter, ANDed; sort, page, include."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fhir_pub.errors import TooCostly
from fhir_pub.search.request import Filter, Include, SearchRequest
from fhir_pub.search.types import TYPES, Context
from fhir_pub.search.types.base import Expand

MAX_INCLUDES = 1000  # included resources per page; more are cut, with a too-costly warning (outcome entry)
PROGRESS_STEPS = 1000
# Index rows counted, at most, to find the most selective filter of a search: first a few (a filter under
# that is the driver), then, if every filter has more, up to the larger limit.
PROBE_FIRST, PROBE_LIMIT = 64, 1000
MAX_ITERATE = 4

Key = tuple[str, str]  # (type, id)


@dataclass(frozen=True)
class Result:
    """What a search found: the total (None: not counted), this page's matches, and what the includes added.

    ``more``: whether matches follow this page.
    """

    total: int | None
    matches: list[Key]
    included: list[Key]
    notes: list[str]
    more: bool


def filter_sql(
    resource_type: str, f: Filter, context: Context, *, correlated: bool = False
) -> tuple[str, list[Any]]:
    """``r.id IN (...)`` (or NOT IN) for one filter occurrence: its values ORed; chains as nested lookups.

    ``correlated`` (for a plain positive filter) asks for ``EXISTS (...)`` instead, a lookup of the
    resource's own index rows: SQLite gathers every id of an ``IN`` subquery first, which for a filter
    that most resources match (``type=warning``) costs as much as the type is large.
    """
    if f.hops:
        return _chain_sql(f, context)
    kind = TYPES[f.param.type]
    if kind.table is None:
        return kind.search_sql(resource_type, f)
    if f.modifier == "missing":
        present = "SELECT id FROM search_present WHERE type = ? AND param = ?"
        operator = "NOT IN" if f.values[0].code == "true" else "IN"
        return f"r.id {operator} ({present})", [resource_type, f.param.code]
    matching, args = matching_sql(resource_type, f, context)
    if correlated and probeable(f):
        return f"EXISTS ({matching} AND id = r.id)", args
    operator = "NOT IN" if f.modifier in {"not", "not-in"} else "IN"
    return f"r.id {operator} ({matching})", args


def probeable(f: Filter) -> bool:
    """A plain positive filter on one index table (no chain, full text, :missing or negation)."""
    return (
        not f.hops
        and TYPES[f.param.type].table is not None
        and f.modifier not in {"missing", "not", "not-in"}
    )


def matching_sql(resource_type: str, f: Filter, context: Context) -> tuple[str, list[Any]]:
    """The ids of ``resource_type``'s index rows that match one plain filter (its values ORed)."""
    table, where, args = index_condition(resource_type, f, context)
    return f"SELECT id FROM {table} WHERE {where}", args


def index_condition(
    resource_type: str, f: Filter, context: Context, alias: str = ""
) -> tuple[str, str, list[Any]]:
    """The index table of one plain filter and the condition its matching rows meet (values ORed).

    ``alias`` qualifies the type and param columns; the value columns are named only by this table.
    """
    kind, column = TYPES[f.param.type], f"{alias}." if alias else ""
    conditions, args = [], [resource_type, f.param.code]
    for value in f.values:
        sql, value_args = kind.condition(f, value, context)
        conditions.append(sql)
        args.extend(value_args)
    return str(kind.table), f"{column}type = ? AND {column}param = ? AND ({' OR '.join(conditions)})", args


def _chain_sql(f: Filter, context: Context) -> tuple[str, list[Any]]:
    """Resolve the chain from its far end: the leaf's matches, then each hop back to the searched type."""
    last = f.hops[-1]
    end_type = last.source_type if last.reverse else last.target_type
    leaf = Filter(f.name, f.param, f.modifier, f.values, f.target_type)
    leaf_sql, args = filter_sql(end_type, leaf, context)
    inner = f"SELECT r.id FROM resource r WHERE r.type = ? AND {leaf_sql}"
    args = [end_type, *args]
    for hop in reversed(f.hops):
        if hop.reverse:  # _has: the targets that resources of source_type refer to
            inner = (
                "SELECT target_id FROM search_reference WHERE type = ? AND param = ? AND target_type = ? "
                f"AND id IN ({inner})"
            )
        else:  # chain: the sources that refer to matching targets
            inner = (
                "SELECT id FROM search_reference WHERE type = ? AND param = ? AND target_type = ? "
                f"AND target_id IN ({inner})"
            )
        args = [hop.source_type, hop.param.code, hop.target_type, *args]
    return f"r.id IN ({inner})", args


class Engine:
    """Searches one built publication."""

    def __init__(
        self,
        db: Callable[[], sqlite3.Connection],
        base_url: str = "",
        expand: Expand | None = None,
        *,
        budget: float | None = None,
        max_includes: int = MAX_INCLUDES,
        totals: bool = False,
    ) -> None:
        self._db = db
        self.base_url = base_url
        self.expand = expand
        self.budget = budget  # seconds one search may run (None: no limit)
        self.max_includes = max_includes
        self.totals = totals  # the publication stores the totals of shared values (index.TOTALS_SCHEMA)

    def search(self, request: SearchRequest, now: int) -> Result:
        """Run the request: matches for this page, the total, and included resources.

        SQLite refusing a query (a pattern or expression too large for it) is a TooCostly error.
        """
        db = self._db()
        if self.budget is not None:
            deadline = time.monotonic() + self.budget
            # Every 1,000 SQLite VM steps: a nonzero answer interrupts the running statement.
            db.set_progress_handler(lambda: int(time.monotonic() > deadline), PROGRESS_STEPS)
        try:
            return self._search(request, Context(self.base_url, now, self.expand))
        except sqlite3.OperationalError as exc:
            if "interrupted" in str(exc):
                raise TooCostly(
                    f"the search ran longer than this server's budget of {self.budget:g} s; narrow it"
                ) from exc
            # Only SQLite's own limits reach here (the SQL is ours): the search is too big to run.
            raise TooCostly("the search is too complex to run here; use fewer or shorter values") from exc
        finally:
            if self.budget is not None:
                db.set_progress_handler(None, 0)

    def _search(self, request: SearchRequest, context: Context) -> Result:
        matches: list[Key] = []
        total, more = 0, False
        skip, take = request.offset, request.count
        # _total=none: the page alone, and one row past it to tell whether more follow; several types (or
        # _summary=count) need the counts. https://hl7.org/fhir/R5/search.html#total
        counted = request.total != "none" or len(request.types) > 1 or request.summary == "count"
        for resource_type in request.types:
            source, where, args = self._where(resource_type, request, context)
            # From an index table, a resource may match on several rows: its id is counted once.
            distinct = "DISTINCT " if source != "resource" else ""
            count = self._stored_total(resource_type, request, context) if counted else None
            if counted and count is None:
                sql = f"SELECT COUNT({distinct}r.id) FROM {source} r WHERE {where}"
                count = self._db().execute(sql, args).fetchone()[0]
            if take > 0 and (count is None or skip < count):
                order, keys, key_args = self._order(resource_type, request)
                rows = (
                    self._db()
                    .execute(
                        f"SELECT {distinct}r.id{keys} FROM {source} r WHERE {where} "
                        f"ORDER BY {order} LIMIT ? OFFSET ?",
                        [*key_args, *args, take if counted else take + 1, skip],
                    )
                    .fetchall()
                )
                more, rows = len(rows) > take, rows[:take]
                matches.extend((resource_type, row[0]) for row in rows)
                take -= len(rows)
            if count is not None:
                skip = max(0, skip - count)
                total += count
        if counted:
            more = request.offset + request.count < total
        included, notes = self._includes(request.includes, matches)
        return Result(total if counted else None, matches, included, notes, more)

    def _where(
        self, resource_type: str, request: SearchRequest, context: Context
    ) -> tuple[str, str, list[Any]]:
        """The table the matches come from, aliased ``r``, and the WHERE clause with its arguments.

        The most selective plain filter drives: it is gathered, and the other plain filters are lookups of
        each match's own rows. A driver on one whole value (``_full_key``) is read from its value index,
        which gives the matching ids in order: the page costs its size, not the matches'. Any other
        driver is a list of ids that the type's keys (resource_key) are checked against.
        """
        plain = [i for i, f in enumerate(request.filters) if probeable(f)]
        driver = plain[0] if plain else None
        if len(plain) > 1:
            sizes = {i: self._probe(resource_type, request.filters[i], context, PROBE_FIRST) for i in plain}
            if min(sizes.values()) >= PROBE_FIRST:
                sizes = {
                    i: self._probe(resource_type, request.filters[i], context, PROBE_LIMIT) for i in plain
                }
            driver = min(plain, key=lambda i: (sizes[i], i))
        if driver is not None and self._full_key(request.filters[driver], context) is not None:
            source, where, args = index_condition(resource_type, request.filters[driver], context, alias="r")
            clauses, skipped = [where], driver
        else:
            source, clauses, args, skipped = "resource", ["r.type = ?"], [resource_type], None
        for index, f in enumerate(request.filters):
            if index != skipped:
                correlated = driver is not None and index in plain and index != driver
                sql, more = filter_sql(resource_type, f, context, correlated=correlated)
                clauses.append(sql)
                args.extend(more)
        return source, " AND ".join(clauses), args

    @staticmethod
    def _full_key(f: Filter, context: Context) -> tuple[str, list[Any]] | None:
        """For a filter on one whole value, its stored total's lookup and the value's arguments.

        A whole value is the condition of its type's Totals (system and code, or type and id): a value
        index gives the ids that match it in order. The build stores the match counts of those values
        that many resources share; a value missing there has fewer than index.TOTAL_MIN, and is counted.
        """
        if not probeable(f) or f.modifier is not None or len(f.values) != 1:
            return None
        totals = TYPES[f.param.type].totals
        if totals is None:
            return None
        sql, args = TYPES[f.param.type].condition(f, f.values[0], context)
        return (totals.lookup, args) if sql == totals.condition else None

    def _stored_total(self, resource_type: str, request: SearchRequest, context: Context) -> int | None:
        """The total the build stored for a search of one shared value, or None: count the matches."""
        found = self._full_key(request.filters[0], context) if len(request.filters) == 1 else None
        if not self.totals or found is None:
            return None
        lookup, args = found
        row = self._db().execute(lookup, [resource_type, request.filters[0].param.code, *args]).fetchone()
        return None if row is None else int(row[0])

    def _probe(self, resource_type: str, f: Filter, context: Context, limit: int) -> int:
        """How many index rows match a filter, counted up to ``limit`` (cheap, whatever the size)."""
        matching, args = matching_sql(resource_type, f, context)
        sql = f"SELECT COUNT(*) FROM ({matching} LIMIT ?)"
        return int(self._db().execute(sql, [*args, limit]).fetchone()[0])

    @staticmethod
    def _order(resource_type: str, request: SearchRequest) -> tuple[str, str, list[Any]]:
        """ORDER BY, and the sort key columns it names with their arguments.

        Each key is a correlated subquery (the least value, or the greatest when descending, of the
        resource's own index rows), looked up by (type, id, param) for the matching resources only: a
        join on all the type's keys would cost as much as the type is large, whatever the page.
        """
        order, columns, args = [], [], []
        for index, (param, descending) in enumerate(request.sort):
            kind = TYPES[param.type]
            if kind.sort is None:
                continue
            column = kind.sort[1] if descending else kind.sort[0]
            pick = "MAX" if descending else "MIN"
            key = f"SELECT {pick}({column}) FROM {kind.table} WHERE type = ? AND id = r.id AND param = ?"
            columns.append(f", ({key}) AS k{index}")
            args.extend([resource_type, param.code])
            order.append(f"(k{index} IS NULL), k{index} {'DESC' if descending else 'ASC'}")
        order.append("r.id")
        return ", ".join(order), "".join(columns), args

    def _includes(self, includes: Sequence[Include], matches: list[Key]) -> tuple[list[Key], list[str]]:
        seen = set(matches)
        found: list[Key] = []
        notes: list[str] = []
        frontier = list(matches)
        for round_number in range(1 + MAX_ITERATE):
            active = [i for i in includes if round_number == 0 or i.iterate]
            if not active or not frontier:
                break
            new: list[Key] = []
            for include in active:
                for key in self._follow(include, frontier):
                    if key not in seen:
                        seen.add(key)
                        new.append(key)
            if len(found) + len(new) > self.max_includes:
                # https://hl7.org/fhir/R5/search.html#errors: the page is still answered, with an
                # OperationOutcome entry (search.mode = outcome) saying what was left out.
                new = new[: self.max_includes - len(found)]
                notes.append(f"includes stopped at {self.max_includes} resources")
                found.extend(new)
                break
            found.extend(new)
            frontier = new
        existing = self._existing(found)
        return [k for k in found if k in existing], notes

    def _follow(self, include: Include, frontier: list[Key]) -> list[Key]:
        out: list[Key] = []
        by_type: dict[str, list[str]] = {}
        for kind, rid in frontier:
            by_type.setdefault(kind, []).append(rid)
        for kind, ids in by_type.items():
            marks = ",".join("?" * len(ids))
            if not include.reverse:
                if include.source_type not in {"*", kind}:
                    continue
                sql = (
                    f"SELECT target_type, target_id FROM search_reference WHERE type = ? AND id IN ({marks})"
                )
                args: list[Any] = [kind, *ids]
            else:
                sql = (
                    f"SELECT type, id FROM search_reference WHERE target_type = ? AND target_id IN ({marks})"
                )
                args = [kind, *ids]
                if include.source_type != "*":
                    sql += " AND type = ?"
                    args.append(include.source_type)
            if include.param != "*":
                sql += " AND param = ?"
                args.append(include.param)
            if include.target_type and not include.reverse:
                sql += " AND target_type = ?"
                args.append(include.target_type)
            rows = self._db().execute(sql, args)
            out.extend((row[0], row[1]) for row in rows if row[0] and row[1])
        return out

    def _existing(self, keys: list[Key]) -> set[Key]:
        existing: set[Key] = set()
        for start in range(0, len(keys), 400):
            chunk = keys[start : start + 400]
            sql = " OR ".join("(type = ? AND id = ?)" for _ in chunk)
            args = [part for key in chunk for part in key]
            if chunk:
                existing.update(
                    (r[0], r[1])
                    for r in self._db().execute(f"SELECT type, id FROM resource WHERE {sql}", args)
                )
        return existing
