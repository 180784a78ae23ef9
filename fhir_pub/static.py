"""Static export: the CapabilityStatement and every read as files, for any web server, CDN or object store.

The layout under the folder keeps the URL path as the file path wherever a file system allows it:

- ``fhir/metadata``: the CapabilityStatement, as ``GET [base]/metadata`` answers it;
- ``fhir/{type}/{id}``: each resource, as a read answers it (https://hl7.org/fhir/R5/http.html#read);
- ``vread/{type}/{id}/{versionId}``: each version, as a vread answers it
  (https://hl7.org/fhir/R5/http.html#vread). A file system cannot hold both the file ``fhir/T/id`` and a
  folder ``fhir/T/id/_history``, so the web server maps ``/fhir/T/id/_history/v`` here (``nginx_config``);
  an object store, whose keys are flat, can take them at their own URLs;
- ``errors/not-found``: the OperationOutcome to answer any 404 with;
- ``fhir/R4B/...``, ``fhir/R4/...`` and ``vread/R4B/...``, ``vread/R4/...``: the same at FHIR R4B and R4
  (the build's converted forms, that version's CapabilityStatement), as ``[base]/R4B`` and ``[base]/R4``
  answer them. No resource type has a digit in its name, so these folders meet none.

Bodies are the build's bytes, exactly what the server answers in JSON. Names have no extension (they are
the URL's), so the web server must declare the type, ``application/fhir+json; charset=utf-8``. Each file's
mtime is its resource's lastUpdated (the build time for the others): Last-Modified then matches the
server's, and exporting one build twice gives the same files, mtimes included.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import orjson

from fhir_pub.atomic import new_folder
from fhir_pub.errors import PublicationError
from fhir_pub.handlers import BASE_SUFFIXES, converted_capability
from fhir_pub.store import Store, Stored
from fhir_pub.validation.issues import Issue, operation_outcome

METADATA = "fhir/metadata"
NOT_FOUND = "errors/not-found"
# Names become paths: only what FHIR allows, so none can climb out of the folder or hide in it.
# https://hl7.org/fhir/R5/datatypes.html#id (ids and versionIds); resource types are letters.
_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_TYPE = re.compile(r"[A-Z][A-Za-z]{0,63}")
NOT_FOUND_BODY = orjson.dumps(
    operation_outcome(
        [
            Issue(
                "error",
                "not-found",
                "not in this publication; this static copy answers metadata, reads ([type]/[id]) and "
                "vreads ([type]/[id]/_history/[vid]) only",
                layer="request",
            )
        ]
    )
)


@dataclass(frozen=True)
class StaticResult:
    """What a static export wrote: how many resources, and how many files in all."""

    resources: int
    files: int


def _timestamp(instant: str) -> float:
    return datetime.fromisoformat(instant).timestamp()


def _name(pattern: re.Pattern[str], text: str, what: str) -> str:
    if pattern.fullmatch(text) is None or text in {".", ".."}:
        raise PublicationError(f"{what} {text!r} cannot be a file name (not a valid FHIR {what})")
    return text


def _write(path: Path, body: bytes, mtime: float) -> None:
    try:
        with path.open("xb") as sink:  # never over another file
            sink.write(body)
    except FileExistsError as exc:  # FHIR ids are case-sensitive; some file systems are not
        raise PublicationError(
            f"{path.name}: another resource's file has this name on this file system"
        ) from exc
    os.utime(path, (mtime, mtime))


def write_static(store: Store, folder: Path, progress: Callable[[int], None] | None = None) -> StaticResult:
    """Write the static files of ``store`` into ``folder`` (a new or empty folder; it appears whole)."""
    built = _timestamp(store.info("built_at").decode())
    resources = 0
    with new_folder(folder) as scratch:
        (scratch / "fhir").mkdir()
        (scratch / "errors").mkdir()
        _write(scratch / METADATA, store.capability, built)
        _write(scratch / NOT_FOUND, NOT_FOUND_BODY, built)
        for kind in sorted(store.types):
            _write_type(scratch / "fhir", scratch / "vread", kind, store.stored(kind))
            resources += store.count((kind,))
            if progress is not None:
                progress(store.count((kind,)))
        files = 2 * resources + 2
        for version, suffix in BASE_SUFFIXES.items():  # the same reads at R4B and R4
            name = suffix.strip("/")
            reads, vreads = scratch / "fhir" / name, scratch / "vread" / name
            reads.mkdir(parents=True)
            _write(reads / "metadata", converted_capability(store, version, None), built)
            for kind in store.converted_types(version):
                files += 2 * _write_type(reads, vreads, kind, store.stored_converted(version, kind))
            files += 1
    return StaticResult(resources, files)


def _write_type(reads: Path, vreads: Path, kind: str, stored: Iterable[tuple[str, Stored]]) -> int:
    """Each resource of a type at ``reads/T/id`` and ``vreads/T/id/version``; how many."""
    (reads / _name(_TYPE, kind, "resource type")).mkdir()
    count = 0
    for rid, one in stored:
        mtime = _timestamp(one.last_updated)
        _write(reads / kind / _name(_ID, rid, "id"), one.body, mtime)
        versions = vreads / kind / rid
        versions.mkdir(parents=True)
        _write(versions / _name(_ID, one.version, "versionId"), one.body, mtime)
        count += 1
    return count


_VREAD = "([A-Za-z]+)/([A-Za-z0-9.-]+)/_history/([A-Za-z0-9.-]+)"


def _version_locations() -> str:
    """The R4B and R4 bases: their vreads mapped alike, their Content-Type naming the version."""
    out = []
    for version, suffix in BASE_SUFFIXES.items():
        name = suffix.strip("/")
        media = f"application/fhir+json; charset=utf-8; fhirVersion={version}"
        vread = f'"^/fhir/{name}/{_VREAD}$" /vread/{name}/$1/$2/$3'
        out.append(f"""    location /fhir/{name}/ {{
        rewrite {vread} last;
        default_type "{media}";
        charset off;
        try_files $uri =404;
    }}
    location /vread/{name}/ {{
        internal;
        default_type "{media}";
        charset off;
        try_files $uri =404;
    }}
""")
    return "".join(out)


def nginx_config(root: str) -> str:
    """The lines of an nginx ``server`` block (a site of its own) that serve an export in ``root`` at /fhir.

    Every file is FHIR JSON (the empty ``types`` also keeps an id with a dot from being typed by its
    "extension"), at ``/fhir/R4B/`` and ``/fhir/R4/`` naming its ``fhirVersion``; vreads are mapped to
    ``vread/``; anything else, search included, is a 404 with the
    OperationOutcome of ``errors/not-found``.
    """
    return f"""    root {root};
    types {{ }}
    default_type application/fhir+json;
    charset utf-8;
    charset_types application/fhir+json;
    gzip on;
    gzip_types application/fhir+json;
    gzip_vary on;
    add_header X-Content-Type-Options nosniff always;
    add_header Access-Control-Allow-Origin * always;
    error_page 404 /{NOT_FOUND};
    location /fhir/ {{
        rewrite "^/fhir/([A-Za-z]+)/([A-Za-z0-9.-]+)/_history/([A-Za-z0-9.-]+)$" /vread/$1/$2/$3 last;
        try_files $uri =404;
    }}
    location /vread/ {{
        internal;
        try_files $uri =404;
    }}
{_version_locations()}    location /errors/ {{
        internal;
    }}
    location / {{
        return 404;
    }}
"""
