"""Run a SearchRequest against the built index: SQL per filter, ANDed; sort, page, include."""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from fhir_pub.errors import TooCostly
from fhir_pub.search.dates import Range
from fhir_pub.search.index import TABLES, normalize, words
from fhir_pub.search.parameters import TEXT_SEARCH
from fhir_pub.search.request import Filter, Include, InvalidSearch, SearchRequest, Value

MAX_INCLUDES = 1000  # included resources per page; more are cut, with a too-costly warning (outcome entry)
PROGRESS_STEPS = 1000
# Index rows counted, at most, to find the most selective filter of a search: first a few (a filter under
# that is the driver), then, if every filter has more, up to the larger limit.
PROBE_FIRST, PROBE_LIMIT = 64, 1000
MAX_ITERATE = 4
DAY = 86_400_000_000

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


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


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


Expand = Callable[[str], "frozenset[tuple[str, str]] | None"]


def _value_condition(
    f: Filter, value: Value, base_url: str, now: int, expand: Expand | None = None
) -> tuple[str, list[Any]]:
    kind = f.param.type
    if kind == "token" and f.modifier in {"in", "not-in"}:
        members = expand(value.code) if expand is not None else None
        if members is None:
            raise InvalidSearch(
                f"{f.name}:{f.modifier}={value.code}: that value set is unknown or cannot be enumerated"
            )
        if not members:
            return "0", []
        pairs = sorted(members)
        return f"(system, code) IN (VALUES {','.join(['(?, ?)'] * len(pairs))})", [
            p for pair in pairs for p in pair
        ]
    if kind == "token":
        if f.modifier == "text":
            word = _like(words(value.code))
            return "(text LIKE ? ESCAPE '\\' OR text LIKE ? ESCAPE '\\')", [f"{word}%", f"% {word}%"]
        if f.modifier == "code-text":
            return "code LIKE ? ESCAPE '\\'", [f"{_like(value.code)}%"]
        if value.system is None:
            return "code = ?", [value.code]
        if value.system == "":
            return "(system IS NULL AND code = ?)", [value.code]
        if value.code == "":
            return "system = ?", [value.system]
        return "(system = ? AND code = ?)", [value.system, value.code]
    if kind == "string":
        if f.modifier == "exact":
            return "value = ?", [value.code]
        pattern = _like(normalize(value.code))
        return "norm LIKE ? ESCAPE '\\'", [f"%{pattern}%" if f.modifier == "contains" else f"{pattern}%"]
    if kind == "reference":
        reference = value.code
        if base_url and reference.startswith(base_url.rstrip("/") + "/"):
            reference = reference[len(base_url.rstrip("/")) + 1 :]
        parts = reference.split("/")
        if len(parts) == 2 and parts[0][:1].isupper() and "://" not in reference:
            return "(target_type = ? AND target_id = ?)", parts
        if "/" not in reference and ":" not in reference:
            if f.target_type:
                return "(target_type = ? AND target_id = ?)", [f.target_type, reference]
            return "target_id = ?", [reference]
        return "url = ?", [reference.split("|", 1)[0]]
    if kind == "date" and value.range is not None:
        return date_condition(value.prefix or "eq", value.range, now)
    if kind == "uri":
        if f.modifier == "above":
            return "? LIKE value || '%'", [value.code]
        if f.modifier == "below":
            return "value LIKE ? ESCAPE '\\'", [f"{_like(value.code)}%"]
        return "value = ?", [value.code]
    raise ValueError(f"no index for {kind} parameters")


def filter_sql(
    resource_type: str,
    f: Filter,
    base_url: str,
    now: int,
    expand: Expand | None = None,
    *,
    correlated: bool = False,
) -> tuple[str, list[Any]]:
    """``r.id IN (...)`` (or NOT IN) for one filter occurrence: its values ORed; chains as nested lookups.

    ``correlated`` (for a plain positive filter) asks for ``EXISTS (...)`` instead, a lookup of the
    resource's own index rows: SQLite gathers every id of an ``IN`` subquery first, which for a filter
    that most resources match (``type=warning``) costs as much as the type is large.
    """
    if f.hops:
        return _chain_sql(f, base_url, now, expand)
    if f.param.code in TEXT_SEARCH:
        return _text_sql(resource_type, f)
    if f.modifier == "missing":
        present = "SELECT id FROM search_present WHERE type = ? AND param = ?"
        operator = "NOT IN" if f.values[0].code == "true" else "IN"
        return f"r.id {operator} ({present})", [resource_type, f.param.code]
    matching, args = matching_sql(resource_type, f, base_url, now, expand)
    if correlated and probeable(f):
        return f"EXISTS ({matching} AND id = r.id)", args
    operator = "NOT IN" if f.modifier in {"not", "not-in"} else "IN"
    return f"r.id {operator} ({matching})", args


def probeable(f: Filter) -> bool:
    """A plain positive filter on one index table (no chain, full text, :missing or negation)."""
    return not f.hops and f.param.code not in TEXT_SEARCH and f.modifier not in {"missing", "not", "not-in"}


def matching_sql(
    resource_type: str, f: Filter, base_url: str, now: int, expand: Expand | None = None
) -> tuple[str, list[Any]]:
    """The ids of ``resource_type``'s index rows that match one plain filter (its values ORed)."""
    table, where, args = index_condition(resource_type, f, base_url, now, expand)
    return f"SELECT id FROM {table} WHERE {where}", args


def index_condition(
    resource_type: str, f: Filter, base_url: str, now: int, expand: Expand | None = None, alias: str = ""
) -> tuple[str, str, list[Any]]:
    """The index table of one plain filter and the condition its matching rows meet (values ORed).

    ``alias`` qualifies the type and param columns; the value columns are named only by this table.
    """
    table, column = TABLES[f.param.type], f"{alias}." if alias else ""
    conditions, args = [], [resource_type, f.param.code]
    for value in f.values:
        sql, value_args = _value_condition(f, value, base_url, now, expand)
        conditions.append(sql)
        args.extend(value_args)
    return table, f"{column}type = ? AND {column}param = ? AND ({' OR '.join(conditions)})", args


def _text_sql(resource_type: str, f: Filter) -> tuple[str, list[Any]]:
    """Full text: every word of a value occurs (values ORed); words are quoted, so no FTS syntax leaks in."""
    column = TEXT_SEARCH[f.param.code]
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


def _chain_sql(f: Filter, base_url: str, now: int, expand: Expand | None) -> tuple[str, list[Any]]:
    """Resolve the chain from its far end: the leaf's matches, then each hop back to the searched type."""
    last = f.hops[-1]
    end_type = last.source_type if last.reverse else last.target_type
    leaf = Filter(f.name, f.param, f.modifier, f.values, f.target_type)
    leaf_sql, args = filter_sql(end_type, leaf, base_url, now, expand)
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


# The conditions on a whole indexed value (system and code, or type and id): a value index gives the ids
# that match one of them in order. For each, the lookup of the match count the build stores for values
# many resources share (index.TOTALS_SCHEMA); a value missing there has fewer matches than
# index.TOTAL_MIN, and is counted.
FULL_KEY = {
    "(system = ? AND code = ?)": "SELECT n FROM search_token_total WHERE type = ? AND param = ? "
    "AND system = ? AND code = ?",
    "(target_type = ? AND target_id = ?)": "SELECT n FROM search_reference_total WHERE type = ? "
    "AND param = ? AND target_type = ? AND target_id = ?",
}

SORT_COLUMN = {"token": "code", "string": "norm", "date": "low", "uri": "value", "reference": "target_id"}


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
            return self._search(request, now)
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

    def _search(self, request: SearchRequest, now: int) -> Result:
        matches: list[Key] = []
        total, more = 0, False
        skip, take = request.offset, request.count
        # _total=none: the page alone, and one row past it to tell whether more follow; several types (or
        # _summary=count) need the counts. https://hl7.org/fhir/R5/search.html#total
        counted = request.total != "none" or len(request.types) > 1 or request.summary == "count"
        for resource_type in request.types:
            source, where, args = self._where(resource_type, request, now)
            # From an index table, a resource may match on several rows: its id is counted once.
            distinct = "DISTINCT " if source != "resource" else ""
            count = self._stored_total(resource_type, request, now) if counted else None
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

    def _where(self, resource_type: str, request: SearchRequest, now: int) -> tuple[str, str, list[Any]]:
        """The table the matches come from, aliased ``r``, and the WHERE clause with its arguments.

        The most selective plain filter drives: it is gathered, and the other plain filters are lookups of
        each match's own rows. A driver on one whole value (FULL_KEY) is read from its value index, which
        gives the matching ids in order: the page costs its size, not the matches'. Any other driver is
        a list of ids that the type's keys (resource_key) are checked against.
        """
        plain = [i for i, f in enumerate(request.filters) if probeable(f)]
        driver = plain[0] if plain else None
        if len(plain) > 1:
            sizes = {i: self._probe(resource_type, request.filters[i], now, PROBE_FIRST) for i in plain}
            if min(sizes.values()) >= PROBE_FIRST:
                sizes = {i: self._probe(resource_type, request.filters[i], now, PROBE_LIMIT) for i in plain}
            driver = min(plain, key=lambda i: (sizes[i], i))
        if driver is not None and self._full_key(request.filters[driver], now) is not None:
            source, where, args = index_condition(
                resource_type, request.filters[driver], self.base_url, now, self.expand, alias="r"
            )
            clauses, skipped = [where], driver
        else:
            source, clauses, args, skipped = "resource", ["r.type = ?"], [resource_type], None
        for index, f in enumerate(request.filters):
            if index != skipped:
                correlated = driver is not None and index in plain and index != driver
                sql, more = filter_sql(
                    resource_type, f, self.base_url, now, self.expand, correlated=correlated
                )
                clauses.append(sql)
                args.extend(more)
        return source, " AND ".join(clauses), args

    def _full_key(self, f: Filter, now: int) -> tuple[str, list[Any]] | None:
        """For a filter on one whole value (FULL_KEY), its stored total's lookup and the value's arguments."""
        if not probeable(f) or f.modifier is not None or len(f.values) != 1:
            return None
        sql, args = _value_condition(f, f.values[0], self.base_url, now, self.expand)
        lookup = FULL_KEY.get(sql)
        return None if lookup is None else (lookup, args)

    def _stored_total(self, resource_type: str, request: SearchRequest, now: int) -> int | None:
        """The total the build stored for a search of one shared value, or None: count the matches."""
        found = self._full_key(request.filters[0], now) if len(request.filters) == 1 else None
        if not self.totals or found is None:
            return None
        lookup, args = found
        row = self._db().execute(lookup, [resource_type, request.filters[0].param.code, *args]).fetchone()
        return None if row is None else int(row[0])

    def _probe(self, resource_type: str, f: Filter, now: int, limit: int) -> int:
        """How many index rows match a filter, counted up to ``limit`` (cheap, whatever the size)."""
        matching, args = matching_sql(resource_type, f, self.base_url, now, self.expand)
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
            column = SORT_COLUMN.get(param.type)
            if column is None:
                continue
            table = TABLES[param.type]
            pick = "MAX" if descending else "MIN"
            if param.type == "date" and descending:
                column = "high"
            key = f"SELECT {pick}({column}) FROM {table} WHERE type = ? AND id = r.id AND param = ?"
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
