"""Build: validate the publication and compile it into one immutable SQLite file that serving opens read-only.

Everything serving needs is precomputed here: each resource's canonical JSON bytes, its version and
last-modified time, and the CapabilityStatement. The file appears under its final name only when
complete (written beside it, then renamed), so a failed or interrupted build never leaves a file the
server would open.
"""

from __future__ import annotations

import base64
import hashlib
import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import orjson

from fhir_pub import __version__
from fhir_pub.capability import capability_statement
from fhir_pub.conformance import load_conformance
from fhir_pub.errors import FhirPubError
from fhir_pub.graph import key_of
from fhir_pub.processes import alive
from fhir_pub.publication import bundled_dir, load, resource_files
from fhir_pub.search.index import INDEX_SCHEMA, INDEXED_TYPES, index
from fhir_pub.search.parameters import TEXT_SEARCH, Registry, registry
from fhir_pub.validation import Candidate, Report, Validator

SCHEMA = """
CREATE TABLE resource (
    type TEXT NOT NULL,
    id TEXT NOT NULL,
    version TEXT NOT NULL,
    last_updated TEXT NOT NULL,
    body BLOB NOT NULL,
    PRIMARY KEY (type, id)
) WITHOUT ROWID;
CREATE TABLE info (key TEXT PRIMARY KEY, value BLOB NOT NULL) WITHOUT ROWID;
"""
# Each type's resources as NDJSON, in id order, cut into chunks of whole lines: an export with no filter
# copies these instead of assembling a line per resource.
NDJSON_SCHEMA = """
CREATE TABLE ndjson (
    type TEXT NOT NULL,
    seq INTEGER NOT NULL,
    lines INTEGER NOT NULL,
    oldest TEXT NOT NULL,
    chunk BLOB NOT NULL
);
CREATE UNIQUE INDEX ndjson_order ON ndjson (type, seq);
"""
NDJSON_CHUNK = 4 << 20


def write_ndjson(db: sqlite3.Connection, chunk_size: int = NDJSON_CHUNK) -> None:
    """(Re)compute the ``ndjson`` table from the ``resource`` table."""
    db.executescript("DROP TABLE IF EXISTS ndjson;" + NDJSON_SCHEMA)
    types = [row[0] for row in db.execute("SELECT DISTINCT type FROM resource ORDER BY type")]
    for kind in types:
        seq, parts, dates, size = 0, list[bytes](), list[str](), 0
        rows = db.execute("SELECT body, last_updated FROM resource WHERE type = ? ORDER BY id", (kind,))
        for body, last_updated in rows:
            parts.append(body)
            dates.append(last_updated)
            size += len(body) + 1
            if size >= chunk_size:
                chunk = (kind, seq, len(parts), min(dates), b"\n".join(parts) + b"\n")
                db.execute("INSERT INTO ndjson VALUES (?, ?, ?, ?, ?)", chunk)
                seq, parts, dates, size = seq + 1, [], [], 0
        if parts:
            chunk = (kind, seq, len(parts), min(dates), b"\n".join(parts) + b"\n")
            db.execute("INSERT INTO ndjson VALUES (?, ?, ?, ?, ?)", chunk)


class BuildError(FhirPubError):
    """The publication does not validate, so nothing was built."""

    code = "invalid"
    status = 422

    def __init__(self, report: Report) -> None:
        super().__init__(f"the publication has {report.errors} errors; nothing was built")
        self.report = report


@dataclass(frozen=True)
class Built:
    """What a build produced."""

    path: Path
    resources: int
    digest: str
    attached: list[str]


def source_digest(resources_dir: Path, profiles_dir: Path) -> str:
    """A digest of every source file (and this fhir-pub version): equal digests build equal publications."""
    digest = hashlib.sha256(__version__.encode())
    for root in (resources_dir, profiles_dir):
        for path in resource_files(root):
            digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def attach(resources: list[dict[str, Any]], folder: Path) -> list[str]:
    """Embed leaflet copies from ``folder`` into DocumentReference attachments; return what was attached.

    A file matches an attachment when its name is the last segment of the attachment's url, or its stem is
    the DocumentReference's id. ``data`` is base64, ``size`` an integer64 (a JSON string), ``hash`` the
    base64 SHA-1 (https://hl7.org/fhir/R5/datatypes.html#Attachment).
    """
    files = {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}
    stems = {p.stem: p for p in files.values()}
    done = []
    for resource in resources:
        if resource.get("resourceType") != "DocumentReference":
            continue
        for content in resource.get("content", []):
            attachment = content.get("attachment", {})
            name = PurePosixPath(urlsplit(str(attachment.get("url", ""))).path).name
            found = files.get(name) if name else None
            found = found or stems.get(str(resource["id"]))
            if found is None:
                continue
            data = found.read_bytes()
            attachment["data"] = base64.b64encode(data).decode("ascii")
            attachment["size"] = str(len(data))
            attachment["hash"] = base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")
            done.append(f"{found.name} -> DocumentReference/{resource['id']} ({len(data):,} bytes)")
    return done


def build(
    out: Path,
    resources_dir: Path | None = None,
    profiles_dir: Path | None = None,
    attach_dir: Path | None = None,
    workers: int | None = None,
) -> Built:
    """Validate, then write the publication to ``out`` atomically; BuildError on any validation error.

    Validation runs in ``workers`` processes (default: one per core) for a large publication; the file
    written is the same whatever the number.
    """
    resources_dir = resources_dir or bundled_dir("resources")
    profiles_dir = profiles_dir or bundled_dir("profiles")
    conformance = load_conformance(profiles_dir)
    validator = Validator(conformance)
    report = validator.validate_paths([resources_dir], workers=workers)
    if not report.ok:
        raise BuildError(report)
    publication = load(resources_dir)
    resources = [entry.resource for entry in publication]
    attached: list[str] = []
    if attach_dir is not None:
        resources = [orjson.loads(orjson.dumps(r)) for r in resources]
        attached = attach(resources, attach_dir)
        report = validator.validate([Candidate(key_of(r), r) for r in resources])
        if not report.ok:
            raise BuildError(report)
    params = registry(conformance)
    rows = index(resources, params)
    digest = source_digest(resources_dir, profiles_dir)
    built_at = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    types: dict[str, set[str]] = {}
    for resource in resources:
        types.setdefault(resource["resourceType"], set()).update(resource["meta"].get("profile", []))
    capability = capability_statement(
        {t: sorted(p) for t, p in types.items()},
        built_at,
        *_search_capability(params, set(types), rows.failed),
    )

    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out)
    partial = out.with_name(f".{out.name}.{os.getpid()}.partial")
    partial.unlink(missing_ok=True)
    try:
        with sqlite3.connect(partial) as db:
            db.executescript(SCHEMA + INDEX_SCHEMA)
            for table, table_rows in rows.rows.items():
                if table_rows:
                    marks = ",".join("?" * len(table_rows[0]))
                    db.executemany(f"INSERT INTO {table} VALUES ({marks})", table_rows)
            db.executemany(
                "INSERT INTO resource VALUES (?, ?, ?, ?, ?)",
                (
                    (
                        r["resourceType"],
                        r["id"],
                        r["meta"]["versionId"],
                        r["meta"]["lastUpdated"],
                        orjson.dumps(r),
                    )
                    for r in resources
                ),
            )
            offered = [p for p in params.all() if p.url not in rows.failed]
            info = {
                "capability": orjson.dumps(capability),
                "conformance": orjson.dumps(list(conformance.by_url.values())),
                "search_params": orjson.dumps([p.__dict__ for p in offered]),
                "digest": digest.encode(),
                "built_at": built_at.encode(),
                "fhir_pub_version": __version__.encode(),
            }
            db.executemany("INSERT INTO info VALUES (?, ?)", info.items())
            write_ndjson(db)
        db.close()
        with partial.open("rb") as handle:
            os.fsync(handle.fileno())
        partial.replace(out)  # atomic: readers see the old file or the whole new one
    finally:
        partial.unlink(missing_ok=True)
    return Built(out, len(resources), digest, attached)


def _remove_abandoned(out: Path) -> None:
    """Delete scratch files of earlier builds of ``out`` whose process is gone (killed mid-write)."""
    for scratch in out.parent.glob(f".{out.name}.*.partial"):
        pid = scratch.name[len(out.name) + 2 : -len(".partial")]
        if pid.isdigit() and not alive(int(pid)):
            scratch.unlink(missing_ok=True)


def _search_capability(
    params: Registry, types: set[str], failed: dict[str, str]
) -> tuple[dict[str, list[dict[str, str]]], dict[str, list[str]], dict[str, list[str]]]:
    """Per type: the parameters the index supports, and the ``_include``/``_revinclude`` values."""
    search: dict[str, list[dict[str, str]]] = {}
    includes: dict[str, list[str]] = {}
    revincludes: dict[str, list[str]] = {}
    for kind in sorted(types):
        offered = [
            p
            for p in params.for_type(kind).values()
            if (p.type in INDEXED_TYPES or p.code in TEXT_SEARCH) and p.url not in failed
        ]
        search[kind] = [
            {"name": p.code, "definition": p.url, "type": p.type}
            for p in sorted(offered, key=lambda p: p.code)
        ]
        references = sorted(p.code for p in offered if p.type == "reference")
        includes[kind] = ["*", *(f"{kind}:{code}" for code in references)]
    for kind in sorted(types):
        for source in sorted(types):
            for p in sorted(params.for_type(source).values(), key=lambda p: p.code):
                if p.type == "reference" and p.url not in failed and (not p.targets or kind in p.targets):
                    revincludes.setdefault(kind, []).append(f"{source}:{p.code}")
    return search, includes, revincludes


def bundled_publication(cache_dir: Path) -> Path:
    """The built bundled publication in ``cache_dir``, building it if its sources changed."""
    digest = source_digest(bundled_dir("resources"), bundled_dir("profiles"))
    path = cache_dir / f"bundled-{digest[:16]}.sqlite"
    if not path.exists():
        build(path)
    return path
