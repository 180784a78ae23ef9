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
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import orjson

from fhir_pub import __version__
from fhir_pub.artifact import FORMAT_VERSION, PAGE_SIZE, SCHEMA, statements, write_ndjson
from fhir_pub.atomic import replacing, scratches
from fhir_pub.capability import capability_statement, search_capability, searchable
from fhir_pub.conformance import Conformance, load_conformance
from fhir_pub.errors import FhirPubError, PublicationError
from fhir_pub.graph import key_of
from fhir_pub.parallel import cores, ordered_map, spans
from fhir_pub.processes import alive
from fhir_pub.publication import bundled_dir, resource_files
from fhir_pub.reuse import Kept, Previous, Reaches, Record, Reuser, Stored, encode, reuse_key
from fhir_pub.search.dates import parse_range
from fhir_pub.search.index import INDEX_SCHEMA, TABLES, Indexer, IndexRows, write_totals
from fhir_pub.search.parameters import registry
from fhir_pub.search.types import TYPES, text
from fhir_pub.validation import Candidate, Issue, Report, Validator, earlier
from fhir_pub.validation.validator import (
    CHUNK,
    MAX_BYTES,
    Checked,
    GraphCheck,
    candidate_from_bytes,
    declared_profiles,
    read_candidate,
    resolving,
    workers_for,
)
from fhir_pub.versions import TARGET_NAMES, TARGETS, ConversionError, convert

# Files a reader asks the kernel to fetch ahead of the one it reads. A cold 100,000-resource corpus built
# in 33 s with read-ahead and 43 s without (the workers waited on the disk); a cached one is no slower.
READ_AHEAD = 128


class BuildError(FhirPubError):
    """The publication does not validate, so nothing was built."""

    code = "invalid"
    status = 422

    def __init__(self, report: Report, made: str = "built") -> None:
        errors = f"{report.errors} error{'s' if report.errors != 1 else ''}"
        super().__init__(f"the publication has {errors}; nothing was {made}")
        self.report = report


@dataclass(frozen=True)
class Built:
    """What a build produced."""

    path: Path
    resources: int  # the publication's own (resources/)
    digest: str
    attached: list[str]
    conformance: int = 0  # served beside them (profiles/)
    reused: int = 0  # of ``resources``, how many were taken over from the previous publication


def _digest_file(digest: Any, relative: str, file_digest: bytes) -> None:
    digest.update(relative.encode() + b"\0" + file_digest + b"\0")


def source_digest(resources_dir: Path, profiles_dir: Path, verified_codes: Path | None = None) -> str:
    """A digest of every source file (and this fhir-pub version): equal digests build equal publications.

    Each file counts by its path and its own SHA-256, so a build can fold in the files it reads anyway;
    it is the ``digest`` a build stores, so a publication can tell whether its sources changed since.
    """
    digest = hashlib.sha256(__version__.encode())
    for root in (resources_dir, profiles_dir):
        for path in resource_files(root):
            _digest_file(
                digest, path.relative_to(root).as_posix(), hashlib.sha256(path.read_bytes()).digest()
            )
    if verified_codes is not None:
        _digest_file(
            digest, f"../{verified_codes.name}", hashlib.sha256(verified_codes.read_bytes()).digest()
        )
    return digest.hexdigest()


class Attachments:
    """Leaflet copies from a folder, to embed in DocumentReference attachments.

    A file matches an attachment when its name is the last segment of the attachment's url, or its stem is
    the DocumentReference's id. ``data`` is base64, ``size`` an integer64 (a JSON string), ``hash`` the
    base64 SHA-1 (https://hl7.org/fhir/R5/datatypes.html#Attachment).
    """

    def __init__(self, folder: Path) -> None:
        self.files = {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}
        self.stems = {p.stem: p for p in self.files.values()}

    def embed(self, resource: dict[str, Any]) -> list[str]:
        """Embed the matching copies into one resource (changed in place); return what was attached."""
        if resource.get("resourceType") != "DocumentReference":
            return []
        done = []
        for content in resource.get("content", []):
            attachment = content.get("attachment", {})
            name = PurePosixPath(urlsplit(str(attachment.get("url", ""))).path).name
            found = self.files.get(name) if name else None
            found = found or self.stems.get(str(resource["id"]))
            if found is None:
                continue
            data = found.read_bytes()
            attachment["data"] = base64.b64encode(data).decode("ascii")
            attachment["size"] = str(len(data))
            attachment["hash"] = base64.b64encode(hashlib.sha1(data).digest()).decode("ascii")
            done.append(f"{found.name} -> DocumentReference/{resource['id']} ({len(data):,} bytes)")
        return done


def attach(resources: list[dict[str, Any]], folder: Path) -> list[str]:
    """Embed leaflet copies from ``folder`` into DocumentReference attachments; return what was attached."""
    attachments = Attachments(folder)
    return [line for resource in resources for line in attachments.embed(resource)]


def _listing(root: Path) -> list[str]:
    """The ``*.json`` files below ``root`` as relative POSIX paths, in ``resource_files`` order.

    Strings, not Path objects: a million of them is what a large publication holds in memory. Plain string
    order is path order for ``Type/id.json`` (type names are letters, which sort after ``/``). Folders are
    not followed through symbolic links; files are. The kind of most entries comes with the folder's
    listing, so a million files cost no million ``stat`` calls (1.2 s instead of 7 to 8).
    """
    found: list[str] = []
    folders = [(root, "")]
    while folders:
        folder, prefix = folders.pop()
        try:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        folders.append((Path(entry.path), f"{prefix}{entry.name}/"))
                    elif entry.name.endswith(".json") and entry.is_file():
                        found.append(prefix + entry.name)
        except OSError as exc:
            raise PublicationError(f"cannot read the folder {folder}: {exc.strerror}") from exc
    found.sort()
    return found


def _key_of_path(relative: str) -> str | None:
    """``Type/id`` for a file at ``Type/id.json``; None for a file anywhere else."""
    parts = relative.split("/")
    return f"{parts[0]}/{parts[1][: -len('.json')]}" if len(parts) == 2 else None


class _Files(Mapping[str, Mapping[str, Any]]):
    """The publication's resources by ``Type/id``, read from their files on demand (``resolve()``).

    Which keys exist is known from the file names, so membership and a reference's type cost nothing;
    only what ``resolve()`` actually reads is loaded, and the last few are kept. ``files`` holds the
    ``Type/id.json`` names (the listing's own strings: no second string per resource).
    """

    CACHED = 1024

    def __init__(self, root: Path, files: set[str], attachments: Attachments | None) -> None:
        self.root, self.files, self.attachments = root, files, attachments
        self._cache: OrderedDict[str, Mapping[str, Any] | None] = OrderedDict()

    def type_of(self, reference: str) -> str | None:
        """The type of the resource a reference names, if the publication holds it."""
        return reference.split("/", 1)[0] if reference in self else None

    def __getitem__(self, key: str) -> Mapping[str, Any]:
        if key not in self:
            raise KeyError(key)
        if key in self._cache:
            self._cache.move_to_end(key)
            found = self._cache[key]
        else:
            found = read_candidate(self.root / f"{key}.json")[0].resource
            if found is not None and self.attachments is not None:
                self.attachments.embed(found)
            self._cache[key] = found
            if len(self._cache) > self.CACHED:
                self._cache.popitem(last=False)
        if found is None or key_of(found) != key:
            raise KeyError(key)
        return found

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and key.count("/") == 1 and f"{key}.json" in self.files

    def digest(self, key: str) -> bytes | None:
        """The SHA-256 of the file that holds ``key`` now, or None if the publication has none."""
        if key not in self:
            return None
        try:
            return hashlib.sha256((self.root / f"{key}.json").read_bytes()).digest()
        except OSError:
            return None

    def __iter__(self) -> Iterator[str]:
        return (name[: -len(".json")] for name in self.files)

    def __len__(self) -> int:
        return len(self.files)


ConvertedRows = list[tuple[str, str, str, str, str, bytes]]


@dataclass
class _Clean:
    """One clean resource of a chunk: checked here (with its converted forms), or taken over (``kept``)."""

    index: int
    resource: dict[str, Any]
    record: bytes | None  # what the reuse table keeps of it
    converted: ConvertedRows = field(default_factory=list)
    kept: Record | None = None
    stored: Stored | None = None


@dataclass
class _Rows:
    """What one chunk adds to the publication file."""

    resources: list[tuple[str, str, str, str, bytes, int]] = field(default_factory=list)
    converted: ConvertedRows = field(default_factory=list)
    reuse: list[tuple[str, bytes, bytes | None]] = field(default_factory=list)
    reused: int = 0
    index: IndexRows = field(default_factory=IndexRows)
    digests: list[tuple[str, bytes]] = field(default_factory=list)
    profiles: dict[str, set[str]] = field(default_factory=dict)
    attached: list[str] = field(default_factory=list)
    misplaced: list[str] = field(default_factory=list)


class _Reader:
    """Reads the publication's files, and turns the checked ones into rows.

    Runs where the build's spans of work run (forked workers for a large publication): each file is
    read and parsed once, and validated, indexed and serialised in the same process.
    """

    def __init__(self, root: Path, files: list[str], files_map: _Files, indexer: Indexer) -> None:
        self.root, self.files, self.resolvable, self.indexer = root, files, files_map, indexer
        self._folder = f"{root}{os.sep}"  # paths as strings: pathlib costs more than the read, per file
        self._read: dict[int, tuple[bytes, list[str]]] = {}
        self._advised = 0
        self._order: dict[str, list[tuple[str, str]]] = {}

    def source(self, index: int) -> str:
        """The file resource ``index`` is read from."""
        return str(self.root / self.files[index])

    def raw(self, index: int) -> bytes | None:
        """The bytes of one file (None if it cannot be read whole: :meth:`read` then says why)."""
        self._read_ahead(index)
        try:
            with open(self._folder + self.files[index], "rb", buffering=0) as file:  # noqa: PTH123
                if os.fstat(file.fileno()).st_size > MAX_BYTES:
                    return None
                data = file.readall()
        except OSError:
            return None
        self._read[index] = (hashlib.sha256(data).digest(), [])
        return data

    def read(self, index: int, data: bytes | None = None) -> Candidate:
        """Read (unless ``data`` holds its bytes) and parse one file, its leaflet copies embedded."""
        if data is None:
            self._read_ahead(index)
            candidate, data = read_candidate(self.root / self.files[index])
        else:
            candidate = candidate_from_bytes(data, self.source(index))
        attached: list[str] = []
        if candidate.resource is not None and self.resolvable.attachments is not None:
            attached = self.resolvable.attachments.embed(candidate.resource)
        self._read[index] = (hashlib.sha256(data or b"").digest(), attached)
        return candidate

    def _read_ahead(self, index: int) -> None:
        """Have the kernel start reading the next files from disk, so that reading them does not wait."""
        if not hasattr(os, "posix_fadvise"):  # not on macOS
            return
        stop = min(index + READ_AHEAD, len(self.files))
        for ahead in range(max(index + 1, self._advised), stop):
            try:
                fd = os.open(self._folder + self.files[ahead], os.O_RDONLY | os.O_NONBLOCK)
            except OSError:
                continue  # reading it will report the problem
            try:
                if os.fstat(fd).st_size <= MAX_BYTES:  # an oversized file is refused unread
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
            finally:
                os.close(fd)
        self._advised = max(self._advised, stop)

    def digest(self, index: int) -> bytes:
        """The SHA-256 of file ``index``, once :meth:`raw` or :meth:`read` read it."""
        return self._read[index][0]

    def rows(self, clean: list[_Clean], previous: Previous | None) -> _Rows:
        """The rows of a chunk's clean resources: the resource, its index rows, its file's digest.

        The rows of those taken over are copied from ``previous``, in the order a cold build writes them.
        """
        out = _Rows()
        kept = None
        if previous is not None and any(entry.kept is not None for entry in clean):
            taken = [entry for entry in clean if entry.stored is not None and entry.kept is not None]
            keys = [_key_pair(self.files[entry.index]) for entry in taken]
            numbers = [entry.stored.number for entry in taken if entry.stored is not None]
            kept = previous.kept(keys, numbers, TABLES)
        for entry in clean:
            index, resource, record = entry.index, entry.resource, entry.record
            relative = self.files[index]
            digest, attached = self._read.pop(index)
            out.digests.append((relative, digest))
            out.attached.extend(attached)
            if entry.kept is not None and entry.stored is not None and kept is not None and previous:
                key = _key_pair(relative)
                out.resources.append(kept.resource[key])
                out.converted.extend(previous.converted(key[1], entry.kept.forms))
                self._copy_index(key, entry.stored.number, resource, kept, out.index)
                out.reuse.append((relative, digest, None if out.index.failed else record))
                out.reused += 1
                out.profiles.setdefault(key[0], set()).update(declared_profiles(resource))
                continue
            key_text = key_of(resource)
            if not resource.get("id"):
                out.misplaced.append(f"{self.source(index)}: not a FHIR resource (needs resourceType and id)")
                continue
            if _key_of_path(relative) != key_text:
                expected = f"{resource['resourceType']}/{resource['id']}.json"
                out.misplaced.append(f"{self.source(index)}: holds {key_text}, so it belongs at {expected}")
                continue
            meta = resource["meta"]  # the profiles require versionId and lastUpdated
            row = (resource["resourceType"], resource["id"], meta["versionId"], meta["lastUpdated"])
            updated = parse_range(meta["lastUpdated"]).low  # an instant (the profiles): its exact moment
            out.resources.append((*row, orjson.dumps(resource), updated))
            out.converted.extend(entry.converted)
            out.profiles.setdefault(resource["resourceType"], set()).update(declared_profiles(resource))
            self.indexer.add(resource, out.index)
            # A parameter that failed in this chunk is skipped for the rest of it: rows that depend on
            # the chunk are not kept for reuse, nor are a resource's embedded leaflet copies.
            out.reuse.append((relative, digest, None if out.index.failed or attached else record))
        self._read.clear()
        return out

    def _copy_index(
        self, key: tuple[str, str], number: int, resource: Mapping[str, Any], kept: Kept, out: IndexRows
    ) -> None:
        """Add a taken-over resource's index rows from the previous publication, as :class:`Indexer` would.

        The parameters that failed earlier in this chunk are skipped (the indexer skips them too), and the
        ``search_present`` rows follow from the rows kept, in the order of the type's parameters.
        """
        kind, rid = key
        text_row = kept.text.get(number)
        out.rows[text.TABLE].append(
            text_row if text_row is not None and text_row[:2] == key else text.row(resource)
        )
        order = self._order.get(kind)
        if order is None:
            order = self._order[kind] = [
                (p.code, p.url)
                for p in self.indexer.registry.for_type(kind).values()
                if p.type in TYPES and TYPES[p.type].table is not None
            ]
        skipped = {code for code, url in order if url in out.failed}
        present: set[str] = set()
        for table in TABLES:
            rows = [row for row in kept.index_rows(table, key) if row[2] not in skipped]
            out.rows[table].extend(rows)
            present.update(row[2] for row in rows)
        out.rows["search_present"].extend((kind, rid, code) for code, _ in order if code in present)


def _key_pair(relative: str) -> tuple[str, str]:
    """(type, id) of the file ``Type/id.json``."""
    kind, _, name = relative.partition("/")
    return kind, name[: -len(".json")]


def build(
    out: Path,
    resources_dir: Path | None = None,
    profiles_dir: Path | None = None,
    attach_dir: Path | None = None,
    workers: int | None = None,
    verified_codes: Path | None = None,
    reuse: Path | None = None,
    built_at: datetime | None = None,
) -> Built:
    """Validate, then write the publication to ``out`` atomically; BuildError on any validation error.

    ``verified_codes``, a project's ``verified-codes.json``, adds its codes to the profiles' own.

    ``reuse``: a previous publication (it may be ``out`` itself) whose unchanged resources keep their
    validation result and converted forms (``fhir_pub.reuse``); one of another format or built from
    other profiles, codes or code is ignored. Either way the file written is the one a cold build
    writes. ``built_at`` (default: now) is the time the file records, to the second.

    The files are read once and streamed in chunks (validated, indexed and written as they come), in
    ``workers`` processes (default: one per core) for a large publication; only ids and references are
    kept for the whole set. The file written is the same whatever the number of workers.
    """
    resources_dir = resources_dir or bundled_dir("resources")
    profiles_dir = profiles_dir or bundled_dir("profiles")
    if not resources_dir.is_dir():
        raise PublicationError(f"{resources_dir} is not a folder")
    conformance = load_conformance(profiles_dir, verified_codes)
    validator = Validator(conformance)
    params = registry(conformance)
    files = _listing(resources_dir)
    placed = {name for name in files if name.count("/") == 1}
    resolvable = _Files(resources_dir, placed, Attachments(attach_dir) if attach_dir is not None else None)
    reader = _Reader(resources_dir, files, resolvable, Indexer(params, resolvable))
    graph = GraphCheck(validator, resolvable, reader.source)
    reaches = Reaches(validator, params)
    inputs = _inputs(profiles_dir, verified_codes, attach_dir)
    previous = Previous.open(reuse, reuse_key(inputs))
    reuser = None
    if previous is not None:
        reuser = Reuser(previous, resolvable.__contains__, resolvable.digest, resolvable.get)

    def work(span: tuple[int, int]) -> tuple[list[Checked], _Rows]:
        """One span of files, read, checked, and (the clean ones) made into rows, in one process.

        A resource the previous publication holds is taken over when :class:`Reuser` says so: its bytes
        are read and hashed, and parsed only for its declared profiles; nothing is checked or converted.
        """
        checks: list[Checked] = []
        clean: list[_Clean] = []
        known = {} if previous is None else previous.records(files[span[0]], files[span[1] - 1])
        for index in range(*span):
            stored, data = known.get(files[index]), None
            if reuser is not None and stored is not None and stored.record is not None:
                data = reader.raw(index)
                record = None
                if data is not None:
                    record = reuser.take(files[index], reader.digest(index), stored, reader.source, index)
                if record is not None and data is not None:
                    checks.append(record.checked(index))
                    clean.append(_Clean(index, orjson.loads(data), stored.record, kept=record, stored=stored))
                    continue
            candidate = reader.read(index, data)
            checked = validator.check(candidate, index, resolvable.type_of)
            checks.append(checked)
            resource = candidate.resource
            if checked.clean and resource is not None and checked.facts is not None:
                # An error in the R4B form fails the build: the report is not ok (the rows are made).
                converted = list(_converted(resource, checked.invariant, reader.source(index)))
                forms = [(row[0], row[1]) for row in converted]
                made = encode(checked, *reaches.reads(resource, checked.facts), forms)
                clean.append(_Clean(index, resource, made, converted))
        return checks, reader.rows(clean, previous)

    digest = hashlib.sha256(__version__.encode())
    failed: dict[str, str] = {}
    types: dict[str, set[str]] = {}
    attached: list[str] = []
    misplaced: list[str] = []
    count = reused = 0

    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned(out)
    with replacing(out, durable=True) as partial:  # readers see the old file or the whole new one
        db = sqlite3.connect(partial, isolation_level=None)
        try:
            # A scratch file: no journal, no syncs; it is fsynced once complete, then renamed into place.
            db.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # before the first table
            db.execute(f"PRAGMA user_version = {FORMAT_VERSION}")
            # The secondary indexes are built after the workers are done: their sorts may use every core
            # (at 1M resources, 12.6 s instead of 17 to 23).
            db.execute(f"PRAGMA threads = {cores() if workers is None else workers}")
            db.execute("PRAGMA journal_mode = OFF")
            db.execute("PRAGMA synchronous = OFF")
            db.execute("BEGIN")
            schema = statements(SCHEMA + INDEX_SCHEMA)
            later = [s for s in schema if s.upper().startswith(("CREATE INDEX", "CREATE UNIQUE INDEX"))]
            for statement in schema:
                if statement not in later:
                    db.execute(statement)
            with resolving(resolvable):
                made = ordered_map(work, spans(len(files), CHUNK), workers_for(len(files), workers))
                for checks, rows in made:
                    for checked in checks:
                        graph.add(checked)
                    _insert(db, rows, failed)
                    db.executemany("INSERT INTO link VALUES (?, ?, ?)", _links(checks))
                    for relative, file_digest in rows.digests:
                        _digest_file(digest, relative, file_digest)
                    for kind, profiles in rows.profiles.items():
                        types.setdefault(kind, set()).update(profiles)
                    attached.extend(rows.attached)
                    misplaced.extend(rows.misplaced)
                    count += len(rows.resources)
                    reused += rows.reused
            if previous is not None:
                previous.close()
            report = graph.report()
            if not report.ok:
                raise BuildError(report)
            if misplaced:
                raise PublicationError(misplaced[0])
            # The conformance resources are served too (read, search by url, version, name, status), so that
            # a client or validator resolves the canonicals the CapabilityStatement names from this server.
            served = _conformance_rows(conformance, Indexer(params, resolvable), set(types))
            _insert(db, served, failed)
            for kind in served.profiles:
                types.setdefault(kind, set())
            # The profiles' files, then the verified codes (a new code, a new digest): not the leaflet copies.
            for relative, file_digest in inputs:
                if not relative.startswith(ATTACHED):
                    _digest_file(digest, relative, file_digest)
            # Secondary indexes after the bulk insert: one sorted build each, not a million B-tree updates.
            for statement in later:
                db.execute(statement)
            write_totals(db)
            moment = (built_at or datetime.now(UTC)).astimezone(UTC)
            stamp = moment.isoformat(timespec="seconds").replace("+00:00", "Z")
            capability = capability_statement(
                {t: sorted(p) for t, p in sorted(types.items())},
                stamp,
                *search_capability(params, set(types), failed),
                guides=[r["url"] for r in conformance.of_type("ImplementationGuide")],
            )
            offered = [p for p in params.all() if searchable(p, failed)]
            info = {
                "capability": orjson.dumps(capability),
                "conformance": orjson.dumps(list(conformance.by_url.values())),
                "search_params": orjson.dumps([p.__dict__ for p in offered]),
                "digest": digest.hexdigest().encode(),
                "built_at": stamp.encode(),
                "fhir_pub_version": __version__.encode(),
                "reuse_key": reuse_key(inputs).encode(),
            }
            db.executemany("INSERT INTO info VALUES (?, ?)", info.items())
            write_ndjson(db)
            db.execute("COMMIT")
        finally:
            db.close()
    return Built(out, count, digest.hexdigest(), attached, len(served.resources), reused)


ATTACHED = "attach:"  # the names of leaflet copies among a build's inputs


def _inputs(
    profiles_dir: Path, verified_codes: Path | None, attach_dir: Path | None
) -> list[tuple[str, bytes]]:
    """(name, SHA-256) of every file besides the resources that a build reads: profiles, codes, copies."""
    inputs = [
        (path.relative_to(profiles_dir).as_posix(), hashlib.sha256(path.read_bytes()).digest())
        for path in resource_files(profiles_dir)
    ]
    if verified_codes is not None:
        inputs.append((f"../{verified_codes.name}", hashlib.sha256(verified_codes.read_bytes()).digest()))
    if attach_dir is not None:
        for name, path in Attachments(attach_dir).files.items():
            inputs.append((f"{ATTACHED}{name}", hashlib.sha256(path.read_bytes()).digest()))
    return inputs


def _converted(
    resource: dict[str, Any], issues: list[Issue], source: str
) -> Iterator[tuple[str, str, str, str, str, bytes]]:
    """The resource's rows in the ``converted`` table: its R4B and R4 forms (none where R5 has no match).

    What :func:`check_converted` finds in the R4B form is added to ``issues``.
    """
    for target in TARGETS:
        try:
            other = convert(resource, target)
        except ConversionError:
            continue  # read at that version answers that this resource has no form there
        issues.extend(check_converted(other, source, target))
        meta = other["meta"]
        yield (
            target,
            other["resourceType"],
            other["id"],
            meta["versionId"],
            meta["lastUpdated"],
            orjson.dumps(other),
        )


def check_converted(form: Mapping[str, Any], source: str | None, target: str = "4.3") -> list[Issue]:
    """The issues of a resource's R4B or R4 form, by that version's own check (``validation.earlier``).

    Issue 16: the converted forms are validated as the R5 ones are: R4B by fhir.resources' R4B models and
    R4B's invariants, R4 by SMART fhirclient's 4.0.1 models in strict mode (an implementation independent
    of fhir.resources; R4's invariants are not checked). Each issue says which form it is about (layer
    ``R4B`` or ``R4``, the message naming the version), so a report reads ``Organization: as converted to
    FHIR R4B, org-1: ...`` under the resource's file.
    """
    name = TARGET_NAMES[target]
    return [
        replace(issue, message=f"as converted to FHIR {name}, {issue.message}", source=source, layer=name)
        for issue in earlier.check(form, target)
    ]


def _insert(db: sqlite3.Connection, rows: _Rows, failed: dict[str, str]) -> None:
    """Write one chunk's resources and index rows; note the parameters that failed on it."""
    db.executemany("INSERT INTO resource VALUES (?, ?, ?, ?, ?, ?)", rows.resources)
    db.executemany("INSERT INTO converted VALUES (?, ?, ?, ?, ?, ?)", rows.converted)
    db.executemany("INSERT INTO reuse VALUES (?, ?, ?)", rows.reuse)
    for table, table_rows in rows.index.rows.items():
        if table_rows:
            marks = ",".join("?" * len(table_rows[0]))
            db.executemany(f"INSERT INTO {table} VALUES ({marks})", table_rows)
    for url, why in rows.index.failed.items():
        failed.setdefault(url, why)


def _conformance_rows(conformance: Conformance, indexer: Indexer, published: set[str]) -> _Rows:
    """The rows of the conformance resources, served beside the publication's own.

    Each needs an id and ``meta.versionId`` and ``meta.lastUpdated`` (an instant), as published
    resources do: a read answers with its ETag and Last-Modified.
    """
    out = _Rows()
    for resource in sorted(conformance.by_url.values(), key=lambda r: (r["resourceType"], str(r.get("id")))):
        kind, rid = resource["resourceType"], resource.get("id")
        where = f"{kind}/{rid} in {conformance.root}"
        meta = resource.get("meta")
        if not isinstance(rid, str) or not isinstance(meta, dict):
            raise PublicationError(f"{where}: a conformance resource needs an id and meta (it is served)")
        version, last_updated = meta.get("versionId"), meta.get("lastUpdated")
        if not isinstance(version, str) or not isinstance(last_updated, str):
            raise PublicationError(f"{where}: meta needs versionId and lastUpdated (it is served)")
        if kind in published:
            raise PublicationError(f"{where}: resources/ has {kind} resources too; keep a type in one folder")
        try:
            updated = parse_range(last_updated).low
        except FhirPubError as exc:
            raise PublicationError(f"{where}: meta.lastUpdated {last_updated!r} is not an instant") from exc
        body = orjson.dumps(resource)
        out.resources.append((kind, rid, version, last_updated, body, updated))
        out.profiles.setdefault(kind, set())
        indexer.add(resource, out.index)
    return out


def _remove_abandoned(out: Path) -> None:
    """Delete scratch files of earlier builds of ``out`` whose process is gone (killed mid-write)."""
    for scratch, pid in scratches(out):
        if pid is not None and not alive(pid):
            scratch.unlink(missing_ok=True)


def _links(checks: list[Checked]) -> Iterator[tuple[str, str, str]]:
    """The ``link`` rows of a span: each (reference, referrer type, referrer id) once."""
    for fact in (checked.facts for checked in checks if checked.facts is not None):
        kind, _, rid = fact.key.partition("/")
        for target in dict.fromkeys(fact.references):
            yield target, kind, rid


def bundled_publication(cache_dir: Path) -> Path:
    """The built bundled publication in ``cache_dir``, building it if its sources changed."""
    digest = source_digest(bundled_dir("resources"), bundled_dir("profiles"))
    path = cache_dir / f"bundled-{digest[:16]}-v{FORMAT_VERSION}.sqlite"
    if not path.exists():
        build(path)
    return path
