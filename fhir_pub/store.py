"""Read access to a built publication: one SQLite file, opened read-only and immutable."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fhir_pub.artifact import check_format
from fhir_pub.conformance import Conformance
from fhir_pub.errors import PublicationError
from fhir_pub.search.engine import MAX_INCLUDES, Engine
from fhir_pub.search.index import TOTALS_SCHEMA
from fhir_pub.search.parameters import Registry, SearchParam
from fhir_pub.search.versions import R5_TYPES, served_registry

READ_BATCH = 500  # ids per statement of a batched read


class Resources(Mapping[str, Mapping[str, Any]]):
    """A publication's resources by key ``Type/id``, each read and parsed when asked for (not held)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def __getitem__(self, key: str) -> Mapping[str, Any]:
        kind, _, rid = key.partition("/")
        stored = self._store.read(kind, rid) if rid and "/" not in rid else None
        if stored is None:
            raise KeyError(key)
        parsed: Mapping[str, Any] = orjson.loads(stored.body)
        return parsed

    def __contains__(self, key: object) -> bool:
        """Whether the publication holds ``Type/id``: one primary-key probe, nothing read or parsed."""
        if not isinstance(key, str):
            return False
        kind, _, rid = key.partition("/")
        if not rid or "/" in rid:
            return False
        found = (
            self._store.connection()
            .execute("SELECT 1 FROM resource WHERE type = ? AND id = ?", (kind, rid))
            .fetchone()
        )
        return found is not None

    def __iter__(self) -> Iterator[str]:
        rows = self._store.connection().execute("SELECT type || '/' || id FROM resource ORDER BY type, id")
        return (row[0] for row in rows)

    def __len__(self) -> int:
        return self._store.count()


@dataclass(frozen=True)
class Stored:
    """One resource as served: its canonical JSON bytes and what HTTP caching needs."""

    body: bytes
    version: str
    last_updated: str


# The most of a publication memory-mapped (SQLite caps it at its SQLITE_MAX_MMAP_SIZE, 2 GiB by default).
MMAP_SIZE = 1 << 40


class Store:
    """The publication's resources and precomputed documents; safe to share between threads."""

    def __init__(self, path: Path) -> None:
        if not path.is_file():
            raise PublicationError(f"{path}: no built publication here (run fhir-pub build)")
        self.path = path
        self._local = threading.local()
        self._value_sets: Conformance | None = None
        self._converted_types: dict[str, tuple[str, ...]] = {}
        self._registries: dict[str, Registry] = {}
        try:
            check_format(self.connection(), path)
            self.types = frozenset(
                row[0] for row in self.connection().execute("SELECT DISTINCT type FROM resource")
            )
            self.capability = self.info("capability")
            tables = {
                row[0]
                for row in self.connection().execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
            self._has_ndjson = "ndjson" in tables
            # Publications built before the stored totals count every search's matches.
            self.has_totals = set(TOTALS_SCHEMA) <= tables
            params = orjson.loads(self.info("search_params"))
        except sqlite3.DatabaseError as exc:
            raise PublicationError(f"{path}: not a fhir-pub publication ({exc})") from exc
        self.registry = Registry(
            SearchParam(
                p["code"], p["type"], p["expression"], p["url"], tuple(p["base"]), tuple(p["targets"])
            )
            for p in params
        )

    def connection(self) -> sqlite3.Connection:
        """The read-only connection of the calling thread."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # immutable=1: the file never changes while served, so SQLite takes no locks at all.
            db = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True, check_same_thread=False)
            # Pages are read from the kernel's page cache in place (memory-mapped, shared by every thread
            # and worker) instead of copied into each connection's own cache: a random read of 100,000
            # resources costs 17 µs in SQLite instead of 26.
            db.execute(f"PRAGMA mmap_size = {MMAP_SIZE}")
            self._local.db = db
        return db

    def info(self, key: str) -> bytes:
        """A document the build stored (``capability``, ``digest`` ...)."""
        row = self.connection().execute("SELECT value FROM info WHERE key = ?", (key,)).fetchone()
        if row is None:
            raise PublicationError(f"{self.path}: the build stored no {key}")
        return bytes(row[0])

    @property
    def resources(self) -> Resources:
        """Every resource by ``Type/id``, read when asked for (``validation.validator.Published``)."""
        return Resources(self)

    def referrers(self, key: str) -> Iterator[dict[str, Any]]:
        """The resources with a literal reference to ``key`` (``Type/id``), from the ``link`` table."""
        rows = self.connection().execute(
            "SELECT r.body FROM link l JOIN resource r ON r.type = l.type AND r.id = l.id "
            "WHERE l.target = ? ORDER BY l.type, l.id",
            (key,),
        )
        return (orjson.loads(row[0]) for row in rows)

    def conformance(self) -> list[dict[str, Any]]:
        """The conformance resources the publication was built and validated with."""
        return list(orjson.loads(self.info("conformance")))

    def expand(self, url: str) -> frozenset[tuple[str, str]] | None:
        """The (system, code) pairs of a value set the build stored, or None (for ``:in`` / ``:not-in``)."""
        if self._value_sets is None:
            self._value_sets = Conformance(self.path, {r["url"]: r for r in self.conformance()})
        return self._value_sets.expand(url)

    def engine(
        self, base_url: str = "", *, budget: float | None = None, max_includes: int = MAX_INCLUDES
    ) -> Engine:
        """A search engine over this publication (its value sets, and its stored totals if it has them)."""
        return Engine(
            self.connection,
            base_url,
            self.expand,
            budget=budget,
            max_includes=max_includes,
            totals=self.has_totals,
        )

    def history(
        self,
        resource_type: str | None,
        resource_id: str | None,
        since: int | None,
        count: int,
        offset: int,
        among: Sequence[str] | None = None,
    ) -> tuple[int, list[tuple[str, str, Stored]]]:
        """Versions newest first (one per resource here): of everything, of a type, or of one resource.

        ``since`` is an instant in microseconds since the epoch (``search.dates.micros``): only versions
        updated after it. The order is the ``resource_updated`` indexes' own, so a page is read, not sorted.
        ``among``: only resources of these types (those converted to R4B or R4, for a history there).
        """
        where, args = ["1 = 1"], list[str | int]()
        if among is not None:
            where.append(f"type IN ({','.join('?' * len(among))})")
            args.extend(among)
        if resource_type is not None:
            where.append("type = ?")
            args.append(resource_type)
        if resource_id is not None:
            where.append("id = ?")
            args.append(resource_id)
        if since is not None:
            where.append("updated > ?")
            args.append(since)
        clause = " AND ".join(where)
        total = self.connection().execute(f"SELECT COUNT(*) FROM resource WHERE {clause}", args).fetchone()[0]
        rows = self.connection().execute(
            f"SELECT type, id, body, version, last_updated FROM resource WHERE {clause} "
            "ORDER BY updated DESC, type, id LIMIT ? OFFSET ?",
            [*args, count, offset],
        )
        return total, [(r[0], r[1], Stored(bytes(r[2]), r[3], r[4])) for r in rows]

    def converted_history(
        self,
        fhir_version: str,
        renamed: Mapping[str, str],
        resource_type: str | None,
        resource_id: str | None,
        since: int | None,
        count: int,
        offset: int,
    ) -> tuple[int, list[tuple[str, str, Stored]]]:
        """The history of the resources converted to a version, in :meth:`history`'s order, their forms there.

        ``resource_type`` is the R5 type; ``renamed`` maps an R5 type to the version's name of it (R4's
        Basic), and the rows answered carry the version's name. A resource without a form there is left out.
        """
        served = (
            "r.type"
            if not renamed
            else ("CASE r.type " + " ".join("WHEN ? THEN ?" for _ in renamed) + " ELSE r.type END")
        )
        join_args: list[str | int] = [fhir_version, *(name for pair in renamed.items() for name in pair)]
        where, args = ["1 = 1"], list[str | int]()
        if resource_type is not None:
            where.append("r.type = ?")
            args.append(resource_type)
        if resource_id is not None:
            where.append("r.id = ?")
            args.append(resource_id)
        if since is not None:
            where.append("r.updated > ?")
            args.append(since)
        source = (
            f"FROM resource r JOIN converted c ON c.fhir_version = ? AND c.type = {served} AND c.id = r.id "
            f"WHERE {' AND '.join(where)}"
        )
        db = self.connection()
        total = db.execute(f"SELECT COUNT(*) {source}", [*join_args, *args]).fetchone()[0]
        rows = db.execute(
            f"SELECT c.type, c.id, c.body, c.version, c.last_updated {source} "
            "ORDER BY r.updated DESC, r.type, r.id LIMIT ? OFFSET ?",
            [*join_args, *args, count, offset],
        )
        return total, [(r[0], r[1], Stored(bytes(r[2]), r[3], r[4])) for r in rows]

    def all_of(self, resource_type: str) -> list[dict[str, Any]]:
        """Every resource of one type, parsed, by id."""
        rows = self.connection().execute(
            "SELECT body FROM resource WHERE type = ? ORDER BY id", (resource_type,)
        )
        return [orjson.loads(row[0]) for row in rows]

    def references_from(self, resource_type: str, resource_id: str) -> list[tuple[str, str, str]]:
        """(parameter, type, id) of what a resource refers to, per the search index."""
        rows = self.connection().execute(
            "SELECT DISTINCT param, target_type, target_id FROM search_reference "
            "WHERE type = ? AND id = ? AND target_id IS NOT NULL ORDER BY param, target_type, target_id",
            (resource_type, resource_id),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def references_to(self, resource_type: str, resource_id: str) -> list[tuple[str, str, str]]:
        """(parameter, type, id) of what refers to a resource, per the search index."""
        rows = self.connection().execute(
            "SELECT DISTINCT param, type, id FROM search_reference "
            "WHERE target_type = ? AND target_id = ? ORDER BY type, param, id",
            (resource_type, resource_id),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def ndjson(self, resource_type: str) -> Iterator[tuple[bytes, int]] | None:
        """A type's resources as NDJSON chunks (bytes, lines), in id order; None if the build has none."""
        if not self._has_ndjson:
            return None
        rows = self.connection().execute(
            "SELECT chunk, lines FROM ndjson WHERE type = ? ORDER BY seq", (resource_type,)
        )
        return ((bytes(chunk), int(lines)) for chunk, lines in rows)

    def oldest(self, resource_type: str) -> int | None:
        """The earliest lastUpdated of a type's resources, in microseconds since the epoch (None if none)."""
        row = (
            self.connection()
            .execute("SELECT MIN(updated) FROM resource WHERE type = ?", (resource_type,))
            .fetchone()
        )
        return None if row is None else row[0]

    def count(self, types: tuple[str, ...] | None = None) -> int:
        """How many resources, of the given types or of all."""
        if not types:
            return int(self.connection().execute("SELECT COUNT(*) FROM resource").fetchone()[0])
        marks = ",".join("?" * len(types))
        return int(
            self.connection()
            .execute(f"SELECT COUNT(*) FROM resource WHERE type IN ({marks})", types)
            .fetchone()[0]
        )

    def count_converted(self, fhir_version: str, resource_type: str) -> int:
        """How many resources of a type (the version's name of it) the build converted to ``fhir_version``."""
        return int(
            self.connection()
            .execute(
                "SELECT COUNT(*) FROM converted WHERE fhir_version = ? AND type = ?",
                (fhir_version, resource_type),
            )
            .fetchone()[0]
        )

    def bodies(self, resource_type: str) -> Iterator[tuple[str, bytes, int]]:
        """(id, canonical bytes, lastUpdated in microseconds) of every resource of a type, by id, streamed."""
        rows = self.connection().execute(
            "SELECT id, body, updated FROM resource WHERE type = ? ORDER BY id", (resource_type,)
        )
        for rid, body, updated in rows:
            yield rid, bytes(body), updated

    def converted_bodies(self, fhir_version: str, resource_type: str) -> Iterator[tuple[str, bytes, int]]:
        """As :meth:`bodies`, for the R4B (``4.3``) or R4 (``4.0``) forms of a type named as there."""
        r5_type = R5_TYPES[fhir_version].get(resource_type, resource_type)
        rows = self.connection().execute(
            "SELECT c.id, c.body, r.updated FROM converted c JOIN resource r ON r.type = ? AND r.id = c.id "
            "WHERE c.fhir_version = ? AND c.type = ? ORDER BY c.id",
            (r5_type, fhir_version, resource_type),
        )
        for rid, body, updated in rows:
            yield rid, bytes(body), updated

    def stored(self, resource_type: str) -> Iterator[tuple[str, Stored]]:
        """(id, what a read answers) of every resource of a type, by id, streamed."""
        rows = self.connection().execute(
            "SELECT id, body, version, last_updated FROM resource WHERE type = ? ORDER BY id",
            (resource_type,),
        )
        for rid, body, version, last_updated in rows:
            yield rid, Stored(bytes(body), version, last_updated)

    def stored_converted(self, fhir_version: str, resource_type: str) -> Iterator[tuple[str, Stored]]:
        """As :meth:`stored`, for the R4B (``4.3``) or R4 (``4.0``) forms of a type named as there."""
        rows = self.connection().execute(
            "SELECT id, body, version, last_updated FROM converted WHERE fhir_version = ? AND type = ? "
            "ORDER BY id",
            (fhir_version, resource_type),
        )
        for rid, body, version, last_updated in rows:
            yield rid, Stored(bytes(body), version, last_updated)

    def read(self, resource_type: str, resource_id: str) -> Stored | None:
        """The current version of one resource, or None."""
        row = (
            self.connection()
            .execute(
                "SELECT body, version, last_updated FROM resource WHERE type = ? AND id = ?",
                (resource_type, resource_id),
            )
            .fetchone()
        )
        return None if row is None else Stored(bytes(row[0]), row[1], row[2])

    def read_many(self, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], bytes]:
        """The current bodies of many resources by ``(type, id)``; absent keys are left out."""
        return self._bodies("SELECT id, body FROM resource WHERE type = ?", (), keys)

    def read_converted(self, fhir_version: str, resource_type: str, resource_id: str) -> Stored | None:
        """A resource in FHIR R4B (``4.3``) or R4 (``4.0``), as the build converted it, or None."""
        row = (
            self.connection()
            .execute(
                "SELECT body, version, last_updated FROM converted "
                "WHERE fhir_version = ? AND type = ? AND id = ?",
                (fhir_version, resource_type, resource_id),
            )
            .fetchone()
        )
        return None if row is None else Stored(bytes(row[0]), row[1], row[2])

    def read_converted_many(
        self, fhir_version: str, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], bytes]:
        """The R4B (``4.3``) or R4 (``4.0``) bodies of many resources by ``(type, id)`` in that version."""
        return self._bodies(
            "SELECT id, body FROM converted WHERE fhir_version = ? AND type = ?", (fhir_version,), keys
        )

    def _bodies(
        self, select: str, leading: tuple[str, ...], keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], bytes]:
        """Bodies by ``(type, id)`` from ``select`` (which ends in ``type = ?``), absent keys left out.

        One indexed statement per type and batch (``type = ? AND id IN (...)`` searches the primary key; a
        row-value ``IN`` would scan the table).
        """
        ids: dict[str, list[str]] = {}
        for kind, rid in keys:
            ids.setdefault(kind, []).append(rid)
        found: dict[tuple[str, str], bytes] = {}
        for kind, wanted in ids.items():
            unique = list(dict.fromkeys(wanted))
            for start in range(0, len(unique), READ_BATCH):
                batch = unique[start : start + READ_BATCH]
                rows = self.connection().execute(
                    f"{select} AND id IN ({','.join('?' * len(batch))})", [*leading, kind, *batch]
                )
                found.update(((kind, rid), bytes(body)) for rid, body in rows)
        return found

    def registry_at(self, fhir_version: str) -> Registry:
        """The search parameters served at a FHIR version (``fhir_pub.search.versions``; made once)."""
        found = self._registries.get(fhir_version)
        if found is None:
            found = self._registries[fhir_version] = served_registry(self.registry, fhir_version)
        return found

    def converted_types(self, fhir_version: str) -> tuple[str, ...]:
        """The resource types served at FHIR ``fhir_version`` (4.3 or 4.0), sorted (read once)."""
        found = self._converted_types.get(fhir_version)
        if found is None:
            rows = self.connection().execute(
                "SELECT DISTINCT type FROM converted WHERE fhir_version = ? ORDER BY type", (fhir_version,)
            )
            found = self._converted_types[fhir_version] = tuple(row[0] for row in rows)
        return found
