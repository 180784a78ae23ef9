"""Bulk export: one NDJSON file per resource type, and the manifest that lists them.

The Bulk Data Access IG 2.0.0 (https://hl7.org/fhir/uv/bulkdata/STU2/export.html) shapes both the files
and the manifest; the server's ``$export`` and ``fhir-pub export`` share this code. Files are written in a
scratch folder, flushed to disk and moved into place whole, so neither a reader nor a crash ever leaves a
half-written export.
"""

from __future__ import annotations

import gzip as gzip_module
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote

import orjson

from fhir_pub.atomic import new_folder
from fhir_pub.errors import Invalid
from fhir_pub.search import versions as search_versions
from fhir_pub.search.bundle import subset
from fhir_pub.search.dates import micros, now_micros
from fhir_pub.search.dates import parse_instant as parse_instant  # where the CLI and bulk routes find it
from fhir_pub.search.request import MAX_COUNT, SearchRequest, parse
from fhir_pub.store import Store

OUTPUT_FORMATS = {"application/fhir+ndjson", "application/ndjson", "ndjson"}
Progress = Callable[[int], None]
# Search result parameters (https://hl7.org/fhir/R5/search.html#modifyingresults): not filters.
RESULT_PARAMETERS = {
    "_count",
    "_offset",
    "_sort",
    "_summary",
    "_elements",
    "_include",
    "_revinclude",
    "_total",
    "_contained",
    "_containedType",
    "_graph",
    "_maxresults",
    "_score",
    "_format",
    "_pretty",
}


@dataclass(frozen=True)
class ExportRequest:
    """What to export (https://hl7.org/fhir/uv/bulkdata/STU2/export.html#query-parameters)."""

    types: tuple[str, ...] = ()
    since: datetime | None = None
    type_filters: tuple[str, ...] = ()
    elements: tuple[str, ...] = ()
    gzip: bool = False
    # 4.3 or 4.0: the files hold the build's R4B or R4 forms, types and filters in that version's names
    fhir_version: str = "5.0"


@dataclass
class ExportResult:
    """Files written: (type, file name, line count), plus any problems to report in the manifest."""

    files: list[tuple[str, str, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _filter_query(store: Store, text: str, offset: int, version: str = "5.0") -> tuple[SearchRequest, bool]:
    """One ``_typeFilter`` as a strict search (an unknown parameter is a 400, as in any strict search).

    At R4B or R4 the type and parameters are that version's (``fhir_pub.search.versions``); the flag
    is False when nothing can match (R4's ``Basic?code=`` naming another code).
    """
    kind, _, query = text.partition("?")
    if kind not in types_at(store, version):
        raise Invalid(
            f"_typeFilter={text!r}: {kind!r} is not a type of this publication{_at(version)}",
            expression="_typeFilter",
        )
    pairs = parse_qsl(query, keep_blank_values=True)  # the IG: each filter is itself a URL-encoded query
    shaping = sorted({name.split(":", 1)[0] for name, _ in pairs} & RESULT_PARAMETERS)
    if shaping:
        raise Invalid(
            f"_typeFilter={text!r}: {', '.join(shaping)} shape search results; a filter only selects",
            expression="_typeFilter",
        )
    paging = [("_count", str(MAX_COUNT)), ("_offset", str(offset)), ("_total", "none")]  # pages, no counts
    if version == "5.0":
        return parse([kind], [*pairs, *paging], store.registry, strict=True), True
    registry = store.registry_at(version)
    return search_versions.parse_at(version, [kind], [*pairs, *paging], registry, strict=True)


def types_at(store: Store, version: str) -> frozenset[str] | tuple[str, ...]:
    """The types of the publication at a FHIR version (R4's Basic for the clinical uses)."""
    return store.types if version == "5.0" else store.converted_types(version)


def _at(version: str) -> str:
    return "" if version == "5.0" else f" at FHIR {version}"


def elements_for(kind: str, elements: Sequence[str]) -> list[str]:
    """The ``_elements`` that apply to a type: plain names, and ``[type].[name]`` for this type.

    A type none of them applies to is exported whole.
    """
    out = []
    for element in elements:
        owner, dot, name = element.partition(".")
        if not dot:
            out.append(element)
        elif owner == kind and name:
            out.append(name)
    return out


def check_type_filters(store: Store, filters: Sequence[str], version: str = "5.0") -> None:
    """Raise Invalid for a ``_typeFilter`` that is not a valid search here (before a job starts).

    Each is run once, as some problems show only then (a value set ``:in`` names that is not stored).
    """
    engine = store.engine()
    now = now_micros()
    for text in filters:
        engine.search(_filter_query(store, text, 0, version)[0], now)


def _filtered_ids(store: Store, filters: Sequence[str], version: str) -> dict[str, set[str] | None]:
    """For each type named in ``_typeFilter``, the ids its queries match (ORed), through the search engine."""
    out: dict[str, set[str] | None] = {}
    engine = store.engine()
    now = now_micros()
    for text in filters:
        kind = text.partition("?")[0]
        offset, found = 0, set[str]()
        while True:
            request, can_match = _filter_query(store, text, offset, version)
            if not can_match:
                break
            result = engine.search(request, now)
            found.update(rid for _, rid in result.matches)
            offset += MAX_COUNT
            if not result.more:
                break
        previous = out.get(kind)
        out[kind] = found if previous is None else previous | found
    return out


def _open(path: Path, compressed: bool) -> Any:
    return gzip_module.open(path, "wb", compresslevel=5) if compressed else path.open("wb")


def export(
    store: Store,
    request: ExportRequest,
    folder: Path,
    progress: Progress | None = None,
    manifest_for: Callable[[ExportResult], dict[str, Any]] | None = None,
    extra: Mapping[str, bytes] | None = None,
) -> ExportResult:
    """Write the NDJSON files of ``request`` into ``folder`` (created whole, replacing nothing).

    With ``manifest_for``, ``manifest.json`` is written too, and ``extra`` files (such as the error
    file), all before the folder appears.
    """
    if folder.exists():
        raise Invalid(f"{folder} exists already; an export writes a new folder")
    version = request.fhir_version
    served = types_at(store, version)
    types = list(request.types) or sorted(served)
    unknown = [t for t in types if t not in served]
    if unknown:
        raise Invalid(
            f"_type: {', '.join(unknown)} not in this publication{_at(version)}", expression="_type"
        )
    allowed = _filtered_ids(store, request.type_filters, version)
    since = request.since
    result = ExportResult()
    with new_folder(folder) as scratch:
        for kind in types:
            wanted = allowed.get(kind)
            name = f"{kind}.ndjson" + (".gz" if request.gzip else "")
            count = 0
            elements = elements_for(kind, request.elements)
            whole = (
                version == "5.0"
                and wanted is None
                and not elements
                and (since is None or (oldest := store.oldest(kind)) is None or oldest > micros(since))
            )
            chunks = store.ndjson(kind) if whole else None
            with _open(scratch / name, request.gzip) as sink:
                for chunk, lines in chunks or ():  # no filter: the build's NDJSON, copied
                    sink.write(chunk)
                    count += lines
                    if progress is not None:
                        progress(lines)
                rows = store.bodies(kind) if version == "5.0" else store.converted_bodies(version, kind)
                for rid, body, updated in () if chunks is not None else rows:
                    if (since is not None and updated <= micros(since)) or (
                        wanted is not None and rid not in wanted
                    ):
                        continue
                    if elements:
                        body = subset(body, None, elements, version)
                    sink.write(body + b"\n")
                    count += 1
                    if progress is not None:
                        progress(1)
            if count:
                result.files.append((kind, name, count))
            else:
                (scratch / name).unlink()
        for name, data in (extra or {}).items():
            (scratch / name).write_bytes(data)
        if manifest_for is not None:
            (scratch / "manifest.json").write_bytes(
                orjson.dumps(manifest_for(result), option=orjson.OPT_INDENT_2)
            )
    return result


def file_url(folder: Path, base_url: str | None) -> Callable[[str], str]:
    """The absolute URL of each file an export writes into ``folder``, for its manifest.

    https://hl7.org/fhir/uv/bulkdata/export.html: ``output[].url`` is the absolute path to the file.
    Under ``base_url`` when the folder will be served from there, else the written file's ``file://`` URI.
    """
    if base_url is not None:
        base = base_url.rstrip("/")
        return lambda name: f"{base}/{quote(name)}"
    where = folder.resolve()
    return lambda name: (where / name).as_uri()


def manifest(
    result: ExportResult,
    transaction_time: str,
    request_url: str,
    file_url: Callable[[str], str],
    error_url: str | None,
    since: bool = False,
) -> dict[str, Any]:
    """The completion manifest (https://hl7.org/fhir/uv/bulkdata/STU2/export.html#response---complete-status).

    With ``_since`` the manifest has ``deleted`` too; it is always empty, as a publication never deletes.
    """
    body = {
        "transactionTime": transaction_time,
        "request": request_url,
        "requiresAccessToken": False,
        "output": [
            {"type": kind, "url": file_url(name), "count": count} for kind, name, count in result.files
        ],
        "error": [{"type": "OperationOutcome", "url": error_url}] if error_url else [],
    }
    if since:
        body["deleted"] = []
    return body
