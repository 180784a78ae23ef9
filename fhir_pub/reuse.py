"""Rebuilds that cost what changed: what a build may take over from a previous publication, and when.

A build stores, for every resource file, the SHA-256 of its bytes and a small record of what validating it
found that the rest of the build needs again (the invariants left for the graph, the issues that are not
errors, and which other resources its invariants may read through ``resolve()``), in the artifact's
``reuse`` table, and in ``info`` the digest of everything else a result depends on (this fhir-pub's code
and the libraries it validates with, the artifact format, the profiles, the verified codes, the leaflet
copies it embeds). A later build whose own such digest is equal takes a resource over from that file
when its bytes are equal, its record says it can be, everything it refers to is still in the publication,
and nothing its invariants may read changed: it keeps the validation result, and its converted forms
are copied, instead of being checked and converted again. The graph layer still runs over the whole set,
and everything else the build writes is computed as in a cold build, in the same order, so the file is
the same.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import sqlite3
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from fhir_pub.artifact import FORMAT_VERSION
from fhir_pub.graph import Facts, links
from fhir_pub.search.parameters import Registry
from fhir_pub.validation.invariants import Deferred
from fhir_pub.validation.issues import Issue
from fhir_pub.validation.validator import Checked, Validator, declared_profiles

# What validation runs on: a new release of any of them may judge the same bytes differently.
LIBRARIES = ("fhir.resources", "fhir-core", "jsonschema", "fhirpathpy", "orjson", "pydantic")
_RESOLVE = re.compile(r"\bresolve\s*\(")
# ``resolve() is T`` reads only whether the target exists and its type, which its key fixes.
_RESOLVE_TYPE = re.compile(r"\bresolve\s*\(\s*\)\s+is\s")
_PLAIN = re.compile(r"^[A-Za-z][A-Za-z0-9]*$")


@cache
def code_digest() -> str:
    """The SHA-256 of this fhir-pub's own files (code and definitions) and of the versions it runs with."""
    digest = hashlib.sha256(f"format {FORMAT_VERSION}; python {sys.version}".encode())
    for name in LIBRARIES:
        try:
            version = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            version = "-"
        digest.update(f"{name} {version}\0".encode())
    package = Path(__file__).resolve().parent
    for path in sorted(package.rglob("*")):
        relative = path.relative_to(package)
        if path.is_file() and "__pycache__" not in relative.parts and relative.parts[0] != "_bundled":
            digest.update(relative.as_posix().encode() + b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def reuse_key(inputs: Iterable[tuple[str, bytes]]) -> str:
    """The digest of everything besides a resource's own bytes that its results depend on.

    ``inputs``: (name, SHA-256) of each such file (profiles, verified codes, leaflet copies), in order.
    """
    digest = hashlib.sha256(code_digest().encode())
    for name, file_digest in inputs:
        digest.update(name.encode() + b"\0" + file_digest + b"\0")
    return digest.hexdigest()


@dataclass(frozen=True)
class Reach:
    """Where one profile's invariants call ``resolve()``: element paths from the resource, and how deep.

    ``everywhere``: an invariant resolves something the analysis cannot place, so every reference of the
    resource counts. ``depth``: how many ``resolve()`` calls one invariant chains at most (the resources
    a resolved one refers to may be read too).
    """

    paths: tuple[tuple[str, ...], ...] = ()
    everywhere: bool = False
    depth: int = 0


class Reaches:
    """What each resource profile's invariants may read of other resources, worked out once per build."""

    def __init__(self, validator: Validator, params: Registry) -> None:
        self.params = params
        self._indexed: dict[str, int] = {}  # by type: how deep its index rows read other resources
        resource_profiles = validator.conformance.resource_profiles
        found: dict[str, tuple[set[tuple[str, ...]], bool, int]] = {}
        self.everywhere = 0  # a datatype's invariant resolves: it may apply anywhere
        for invariant in validator.invariants.all:
            calls = len(_RESOLVE.findall(invariant.expression))
            if not calls:
                continue
            if invariant.profile not in resource_profiles:
                self.everywhere = max(self.everywhere, calls)
                continue
            paths, everywhere, depth = found.setdefault(invariant.profile, (set(), False, 0))
            context = invariant.context.split(".")[1:]
            read = invariant.plan.reads
            placed = [
                (*context, *path[1:-1])
                for path, _, _ in read.paths
                if len(path) >= 2 and path[0] == "" and path[-1] == "reference"
            ]
            unplaceable = (
                read.opaque
                or not placed
                or any(path[0] != "" for path, _, _ in read.paths if path[-1:] == ("reference",))
                or not all(_PLAIN.match(part) for segments in placed for part in segments)
            )
            paths.update(placed)
            found[invariant.profile] = (paths, everywhere or unplaceable, max(depth, calls))
        self.by_profile = {
            url: Reach(tuple(sorted(paths)), everywhere, depth)
            for url, (paths, everywhere, depth) in found.items()
        }

    def reads(self, resource: Mapping[str, Any], facts: Facts) -> tuple[list[str], int]:
        """The resources the invariants of ``resource`` may read (sorted keys), and how deep from there."""
        keys: set[str] = set()
        depth = max(self.everywhere, self.indexed(facts.kind))
        if depth:
            keys.update(facts.references)
        for url in declared_profiles(resource):
            reach = self.by_profile.get(url.split("|", 1)[0])
            if reach is None:
                continue
            depth = max(depth, reach.depth)
            if reach.everywhere:
                keys.update(facts.references)
            for path in reach.paths:
                keys.update(_references_at(resource, path))
        return sorted(key for key in keys if not key.startswith("#")), depth

    def indexed(self, kind: str) -> int:
        """How many ``resolve()`` calls a search parameter of ``kind`` chains that read a target's content.

        The index rows are copied, so a parameter that reads what a reference resolves to (beyond its
        type) makes every reference of the resource count, as a datatype's invariant does.
        """
        if kind not in self._indexed:
            self._indexed[kind] = max(
                (
                    len(_RESOLVE.findall(param.expression))
                    for param in self.params.for_type(kind).values()
                    if len(_RESOLVE.findall(param.expression)) > len(_RESOLVE_TYPE.findall(param.expression))
                ),
                default=0,
            )
        return self._indexed[kind]


def _references_at(value: Any, path: Sequence[str]) -> Iterable[str]:
    """The ``reference`` strings of the Reference elements at ``path`` (through lists) below ``value``."""
    level = [value]
    for part in path:
        below: list[Any] = []
        for item in level:
            child = item.get(part) if isinstance(item, dict) else None
            below.extend(child if isinstance(child, list) else [child] if child is not None else [])
        level = below
    return [
        item["reference"]
        for item in level
        if isinstance(item, dict) and isinstance(item.get("reference"), str)
    ]


def encode(checked: Checked, reads: list[str], depth: int, forms: list[tuple[str, str]]) -> bytes | None:
    """The record of a clean resource's validation, or None when it cannot be reused.

    ``forms``: (FHIR version, type) of each converted form, in the order they were made. Invariants left
    for the graph that read the resource itself are not kept (they would need its elements); such a
    resource is checked again in every build. Empty parts are left out: most records are a few bytes.
    """
    facts = checked.facts
    if facts is None or checked.input or checked.graph or any(i.focus is not None for i in checked.deferred):
        return None
    parts: dict[str, Any] = {
        "f": facts.references,
        "u": facts.uses if facts.uses != facts.references else (),
        "s": facts.sources,
        "d": [[item.number, item.expression, item.type_path] for item in checked.deferred],
        "l": [_issue(i) for i in checked.layered],
        "i": [_issue(i) for i in checked.invariant],
        "r": reads,
        "k": depth if reads else 0,
        "c": forms,
    }
    return orjson.dumps({name: value for name, value in parts.items() if value})


def _issue(issue: Issue) -> list[Any]:
    return [issue.severity, issue.code, issue.message, issue.expression, issue.rule, issue.layer]


@dataclass(frozen=True)
class Record:
    """A stored record, decoded: what :meth:`Validator.check` found, and what it may read elsewhere."""

    deferred: tuple[Deferred, ...]
    layered: list[Issue]
    invariant: list[Issue]
    reads: list[str]
    depth: int
    forms: list[tuple[str, str]]
    facts: Facts

    @classmethod
    def decode(cls, data: bytes, relative: str, source: Callable[[int], str], index: int) -> Record:
        """The record ``data`` holds for file ``index`` (``relative``), its issues at ``source(index)``."""
        parts = orjson.loads(data)
        key = relative[: -len(".json")]
        references = tuple(parts.get("f", ()))
        uses = tuple(parts["u"]) if "u" in parts else references
        sources = tuple((target, tuple(named)) for target, named in parts.get("s", ()))
        facts = Facts(key, key.split("/", 1)[0], references, uses, sources)
        deferred = tuple(
            Deferred(number, where, path, None, None) for number, where, path in parts.get("d", ())
        )

        def issues(rows: list[list[Any]]) -> list[Issue]:
            if not rows:
                return []
            named = source(index)
            return [
                Issue(sev, code, text, at, named, rule, layer) for sev, code, text, at, rule, layer in rows
            ]

        forms = [(version, kind) for version, kind in parts.get("c", ())]
        layered, invariant = issues(parts.get("l", [])), issues(parts.get("i", []))
        return cls(deferred, layered, invariant, parts.get("r", []), parts.get("k", 0), forms, facts)

    def checked(self, index: int) -> Checked:
        """The result :meth:`Validator.check` gave, for resource ``index`` of this build."""
        return Checked(index, [], self.layered, [], self.invariant, self.facts, self.deferred)


@dataclass(frozen=True)
class Stored:
    """One file's row in the previous publication's ``reuse`` table.

    ``number`` is its rowid, which is also its resource's row in ``search_text``: a build adds one row
    to each per resource it writes, in the same order.
    """

    number: int
    digest: bytes
    record: bytes | None


Key = tuple[str, str]  # (type, id)
Numbered = list[tuple[int, tuple[Any, ...]]]  # rows with their rowid


@dataclass
class Kept:
    """The rows of some resources in the previous publication, by (type, id): read a span at a time."""

    resource: dict[Key, tuple[Any, ...]]
    index: dict[str, dict[Key, Numbered]]
    text: dict[int, tuple[Any, ...]]

    def index_rows(self, table: str, key: Key) -> list[tuple[Any, ...]]:
        """The rows ``table`` had for one resource, in the order they were written."""
        return [row for _, row in sorted(self.index[table].get(key, ()))]


ConvertedRow = tuple[str, str, str, str, str, bytes]


class Previous:
    """A previous publication opened for reuse (read-only); None from :meth:`open` when it cannot serve.

    Each process opens its own connection (the build's workers are forked; a connection must not cross).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._db: tuple[int, sqlite3.Connection] | None = None

    @classmethod
    def open(cls, path: Path | None, key: str) -> Previous | None:
        """The publication at ``path`` if it is of this format and was built with the same ``key``."""
        if path is None or not path.is_file():
            return None
        previous = cls(path)
        try:
            db = previous.db()
            if db.execute("PRAGMA user_version").fetchone()[0] != FORMAT_VERSION:
                return None
            row = db.execute("SELECT value FROM info WHERE key = 'reuse_key'").fetchone()
        except sqlite3.Error:  # not SQLite, or not a publication
            return None
        finally:
            previous.close()
        return previous if row is not None and row[0] == key.encode() else None

    def db(self) -> sqlite3.Connection:
        """The connection of the calling process."""
        if self._db is None or self._db[0] != os.getpid():
            uri = f"{self.path.resolve().as_uri()}?mode=ro&immutable=1"
            self._db = (os.getpid(), sqlite3.connect(uri, uri=True, check_same_thread=False))
        return self._db[1]

    def close(self) -> None:
        """Close the calling process's connection."""
        if self._db is not None and self._db[0] == os.getpid():
            self._db[1].close()
        self._db = None

    def records(self, first: str, last: str) -> dict[str, Stored]:
        """What was stored for each file from ``first`` to ``last`` (``Type/id.json``)."""
        query = "SELECT path, rowid, digest, record FROM reuse WHERE path BETWEEN ? AND ?"
        rows = self.db().execute(query, (first, last))
        return {path: Stored(number, bytes(digest), record) for path, number, digest, record in rows}

    def digest(self, relative: str) -> bytes | None:
        """The SHA-256 the file had, or None if it was not in the previous publication."""
        row = self.db().execute("SELECT digest FROM reuse WHERE path = ?", (relative,)).fetchone()
        return None if row is None else bytes(row[0])

    def kept(self, keys: Sequence[Key], numbers: Sequence[int], tables: Sequence[str]) -> Kept:
        """The resource, index and full-text rows of ``keys`` (and of their neighbours), read by range."""
        db = self.db()
        bounds = (*min(keys), *max(keys))
        where = "(type, id) >= (?, ?) AND (type, id) <= (?, ?)"
        resource = {(r[0], r[1]): r for r in db.execute(f"SELECT * FROM resource WHERE {where}", bounds)}
        index: dict[str, dict[Key, Numbered]] = {}
        for table in tables:
            by_key: dict[Key, Numbered] = {}
            for number, *row in db.execute(f"SELECT rowid, * FROM {table} WHERE {where}", bounds):
                by_key.setdefault((row[0], row[1]), []).append((number, tuple(row)))
            index[table] = by_key
        query = "SELECT rowid, * FROM search_text WHERE rowid BETWEEN ? AND ?"
        text = {number: tuple(row) for number, *row in db.execute(query, (min(numbers), max(numbers)))}
        return Kept(resource, index, text)

    def converted(self, rid: str, forms: Sequence[tuple[str, str]]) -> list[ConvertedRow]:
        """The stored converted forms of resource ``rid``, each (FHIR version, type) of ``forms`` in turn."""
        db = self.db()
        query = "SELECT fhir_version, type, id, version, last_updated, body FROM converted"
        query += " WHERE fhir_version = ? AND type = ? AND id = ?"
        return [db.execute(query, (version, kind, rid)).fetchone() for version, kind in forms]


class Reuser:
    """Decides, in the process that reads a file, whether its resource is taken over from ``previous``.

    ``exists`` says whether a reference names a resource of this publication; ``current`` gives the
    SHA-256 of a resource file now (None if there is none), and ``resolve`` a resource by key.
    """

    def __init__(
        self,
        previous: Previous,
        exists: Callable[[str], bool],
        current: Callable[[str], bytes | None],
        resolve: Callable[[str], Mapping[str, Any] | None],
    ) -> None:
        self.previous, self.exists, self.current, self.resolve = previous, exists, current, resolve
        self._steady: dict[str, bool] = {}

    def take(
        self, relative: str, digest: bytes, stored: Stored | None, source: Callable[[int], str], index: int
    ) -> Record | None:
        """The record of file ``index`` (``relative``) if its resource is taken over, else None.

        ``source(index)`` names the file in issues. Else it is checked again.

        Taken over: the same bytes, a record (it was reusable), every reference still names a resource
        of the publication (else checking it again reports the one that does not), and nothing its
        invariants may read changed.
        """
        if stored is None or stored.record is None or stored.digest != digest:
            return None
        record = Record.decode(stored.record, relative, source, index)
        if not all(ref.startswith("#") or self.exists(ref) for ref in record.facts.references):
            return None
        if not all(self.steady(key, record.depth) for key in record.reads):
            return None
        return record

    def steady(self, key: str, depth: int) -> bool:
        """Whether ``key``'s file is unchanged since the previous build (and, to ``depth``, its targets')."""
        known = self._steady.get(f"{depth} {key}")
        if known is not None:
            return known
        now = self.current(key)
        result = now is not None and now == self.previous.digest(f"{key}.json")
        if result and depth > 1:
            target = self.resolve(key)
            references = [] if target is None else [link.reference for link in links(target)]
            result = all(ref.startswith("#") or self.steady(ref, depth - 1) for ref in references)
        self._steady[f"{depth} {key}"] = result
        return result
