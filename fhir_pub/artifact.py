"""The publication file's format: its tables, page size and format version, and the check serving makes.

A publication is one SQLite file that a build writes once and serving only reads. The search index's own
tables are declared beside the code that fills them (``fhir_pub.search.index``); this module owns the
rest, and the version that names the whole layout.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from fhir_pub.errors import PublicationError

# Stored in PRAGMA user_version. 2: ``resource.updated`` (lastUpdated as UTC microseconds) orders history
# and answers ``_since`` (files before it compared those instants as text), and the ``link`` table.
# 3: the ``converted`` table, each resource in FHIR R4B and R4 (fhir_pub.versions).
# 4: the ``reuse`` table and ``info.reuse_key``: what a later build may take over (fhir_pub.reuse).
FORMAT_VERSION = 4
# ``reuse``: per resource file (``Type/id.json``), the SHA-256 of its bytes and the record of its validation
# a later build takes over when nothing it depends on changed (NULL: always checked again); its rowid is
# the resource's row in ``search_text`` (one row each per resource, written in the same order).
# ``updated`` is meta.lastUpdated as microseconds since the epoch (UTC), so history and ``_since`` compare
# instants, not their text (01:00+02:00 is before 23:30Z of the day before). The two indexes page history
# in its order (newest first, then type and id) without sorting the table: of everything, or of one type.
SCHEMA = """
CREATE TABLE resource (
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    last_updated TEXT NOT NULL,
    body BLOB NOT NULL,
    updated INTEGER NOT NULL,
    PRIMARY KEY (type, id)
) WITHOUT ROWID;
CREATE TABLE converted (
    fhir_version TEXT NOT NULL,
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    last_updated TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (fhir_version, type, id)
) WITHOUT ROWID;
CREATE TABLE info (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
CREATE TABLE link (target TEXT NOT NULL, type TEXT NOT NULL, id TEXT NOT NULL);
CREATE TABLE reuse (path TEXT NOT NULL UNIQUE, digest BLOB NOT NULL, record BLOB);
CREATE INDEX link_target ON link (target, type, id);
CREATE INDEX resource_updated ON resource (updated DESC, type, id);
CREATE INDEX resource_type_updated ON resource (type, updated DESC, id);
"""
# Each type's resources as NDJSON, in id order, cut into chunks of whole lines: an export with no filter
# copies these instead of assembling a line per resource.
NDJSON_SCHEMA = """
CREATE TABLE ndjson (
    type TEXT NOT NULL,
    seq INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    chunk BLOB NOT NULL
);
CREATE UNIQUE INDEX ndjson_order ON ndjson (type, seq);
"""
NDJSON_CHUNK = 4 << 20
# A resource row holds its JSON (about 1.7 KB in the synthetic corpus): with SQLite's default 4 KiB pages
# most rows spill into overflow pages. With 16 KiB pages the resource table was written 2.8 times faster
# and the 100,000-resource file was 24% smaller; searches and reads were no slower.
PAGE_SIZE = 16384


def statements(script: str) -> list[str]:
    """The SQL statements of a schema script (ours hold no ``;`` inside a statement)."""
    return [part.strip() for part in script.split(";") if part.strip()]


def write_ndjson(db: sqlite3.Connection, chunk_size: int = NDJSON_CHUNK) -> None:
    """(Re)compute the ``ndjson`` table from the ``resource`` table."""
    db.execute("DROP TABLE IF EXISTS ndjson")
    for statement in statements(NDJSON_SCHEMA):
        db.execute(statement)
    types = [row[0] for row in db.execute("SELECT DISTINCT type FROM resource ORDER BY type")]
    for kind in types:
        seq, parts, size = 0, list[bytes](), 0
        for (body,) in db.execute("SELECT body FROM resource WHERE type = ? ORDER BY id", (kind,)):
            parts.append(body)
            size += len(body) + 1
            if size >= chunk_size:
                db.execute("INSERT INTO ndjson VALUES (?, ?, ?, ?)", (kind, seq, len(parts), _lines(parts)))
                seq, parts, size = seq + 1, [], 0
        if parts:
            db.execute("INSERT INTO ndjson VALUES (?, ?, ?, ?)", (kind, seq, len(parts), _lines(parts)))


def _lines(parts: list[bytes]) -> bytes:
    return b"\n".join(parts) + b"\n"


def check_format(db: sqlite3.Connection, path: Path) -> None:
    """Refuse a file of another format with a message that says what to do."""
    found = db.execute("PRAGMA user_version").fetchone()[0]
    if found != FORMAT_VERSION:
        raise PublicationError(
            f"{path}: built in publication format {found}, and this fhir-pub reads format "
            f"{FORMAT_VERSION}: rebuild it with fhir-pub build"
        )
