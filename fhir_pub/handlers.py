"""Transport-free handlers: a typed request and the store in, a typed answer out; no Flask here.

Each FHIR interaction the endpoint serves (capabilities, read, vread, search, history, ``$validate``) is one
function taking a :class:`Context` and its own arguments and returning an :class:`Answer`, or raising a
:class:`fhir_pub.errors.FhirPubError`. The web layer (``fhir_pub.web``) turns an HTTP request into a call,
negotiates the format once and renders the answer once; another transport could call the same functions.

https://hl7.org/fhir/R5/http.html
"""

from __future__ import annotations

import math
import re
import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from email.utils import formatdate
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlencode

import orjson

from fhir_pub.capability import BULK_DATA, EXPORT, VALIDATE
from fhir_pub.errors import Invalid, NotFound, NotSupported, TooManyRequests
from fhir_pub.export import OUTPUT_FORMATS, ExportRequest, check_type_filters
from fhir_pub.jobs import ACTIVE, JobStore
from fhir_pub.search import bundle
from fhir_pub.search import versions as search_versions
from fhir_pub.search.dates import micros, now_micros, parse_instant
from fhir_pub.search.engine import Result
from fhir_pub.search.request import MAX_COUNT, MAX_OFFSET, SearchRequest, parse, whole_number
from fhir_pub.store import Store, Stored
from fhir_pub.validation import Validator, candidate_from_bytes, earlier
from fhir_pub.validation.issues import Issue, operation_outcome

Pairs = tuple[tuple[str, str], ...]
FhirVersion = Literal["5.0", "4.3", "4.0"]
# The FHIR versions served (as the fhirVersion media-type parameter names them): name and release. R5 is
# the default base; R4B and R4 are also served at [base]/R4B and [base]/R4 (read, vread, metadata).
VERSION_NAMES: dict[FhirVersion, tuple[str, str]] = {
    "5.0": ("R5", "5.0.0"),
    "4.3": ("R4B", "4.3.0"),
    "4.0": ("R4", "4.0.1"),
}
BASE_SUFFIXES: dict[FhirVersion, str] = {"4.3": "/R4B", "4.0": "/R4"}
ValidateMode = Literal["create", "update", "delete", "profile"]
MODES: frozenset[str] = frozenset({"create", "update", "delete", "profile"})
# Parameters a search's links do not repeat as asked: paging and sort are written as applied, format not.
RELINKED = frozenset({"_count", "_offset", "_format", "_pretty", "_sort"})


@dataclass(frozen=True, slots=True)
class Context:
    """What every handler knows of a request besides its own arguments.

    ``base`` is the public FHIR base URL (no trailing slash), ``params`` the request's parameters in
    order, ``strict`` whether ``Prefer: handling=strict`` asked for unknown parameters to be errors.
    """

    store: Store
    base: str
    params: Pairs = ()
    strict: bool = False
    budget: float | None = None
    max_includes: int = 1000
    fhir_version: FhirVersion = "5.0"  # asked with the fhirVersion media-type parameter or a [base]/R4B URL


@dataclass(frozen=True, slots=True)
class Answer:
    """A FHIR JSON answer: the body, its status, and what HTTP caching says of it.

    ``version`` (a weak ETag) and ``last_modified`` are set for a resource read, ``location`` is the
    ``Content-Location`` (of the version read, or of an export's status); ``headers`` are any others.
    """

    body: bytes
    status: int = 200
    version: str | None = None
    last_modified: str | None = None
    location: str | None = None
    headers: tuple[tuple[str, str], ...] = ()
    media: str | None = None  # None: FHIR JSON, rendered as negotiated; else sent as is ("": no body)
    fhir_version: FhirVersion = "5.0"  # the version of the body (named in Content-Type when not R5)


def capability(context: Context) -> Answer:
    """The CapabilityStatement as the build generated it, ``implementation.url`` the base served at.

    At R4B and R4 it is this version's own: its ``fhirVersion``, the types converted to it, and only
    the interactions served there (read, vread).
    """
    if context.fhir_version != "5.0":
        return Answer(_converted_capability(context), fhir_version=context.fhir_version)
    return Answer(_capability(context.store.capability, context.base))


# What R4B and R4 serve (fhir_pub.search.versions for the search parameters); $validate checks that
# version's structure, and R4B's invariants (validation.earlier), by release.
VALIDATE_CHECKS = {"4.3.0": "structure, datatypes and invariants", "4.0.1": "structure and datatypes"}
VALIDATE_SKIPS = {"4.3.0": "bindings", "4.0.1": "invariants or bindings"}
CONVERTED_TYPE_INTERACTIONS = ("read", "vread", "history-instance", "history-type", "search-type")
CONVERTED_SYSTEM_INTERACTIONS = ("history-system", "search-system")


def _converted_capability(context: Context) -> bytes:
    return converted_capability(context.store, context.fhir_version, context.base)


def converted_capability(store: Store, version: FhirVersion, base: str | None) -> bytes:
    """The CapabilityStatement of R4B or R4: the converted types, what is served there, and no more.

    Its search parameters, includes and revincludes are the R5 statement's, less those not served at
    that version (``Store.registry_at``), in that version's type names. ``base`` is the base it is
    served at (None for a static copy, which cannot know its own: no ``url``, no ``implementation.url``).
    """
    r5 = orjson.loads(store.capability)
    name, release = VERSION_NAMES[version]
    kinds = store.converted_types(version)
    registry = store.registry_at(version)
    by_type = {entry["type"]: entry for entry in r5["rest"][0]["resource"]}
    resources = []
    for kind in kinds:
        r5_kind = search_versions.R5_TYPES[version].get(kind, kind)
        own = by_type.get(r5_kind, {})

        def served(value: str) -> bool:
            source, _, code = value.partition(":")
            r5_source = search_versions.R5_TYPES[version].get(source, source)
            return value == "*" or (
                search_versions.served_type(version, r5_source) in kinds
                and registry.get(r5_source, code) is not None
            )

        def renamed(value: str) -> str:
            source, colon, code = value.partition(":")
            return search_versions.served_type(version, source) + colon + code

        entry: dict[str, Any] = {
            "type": kind,
            "interaction": [{"code": code} for code in CONVERTED_TYPE_INTERACTIONS],
            "versioning": "versioned",
            "readHistory": True,
            "updateCreate": False,
            "conditionalRead": "full-support",
        }
        includes = [v for v in own.get("searchInclude", []) if served(renamed(v))]
        revincludes = [renamed(v) for v in own.get("searchRevInclude", []) if served(renamed(v))]
        params = [
            search_versions.defined_at(version, kind, p)
            for p in own.get("searchParam", [])
            if registry.get(r5_kind, p["name"]) is not None
        ]
        if version == "4.0" and kind == "Basic":  # search_versions.basic_code_matches
            params = sorted([*params, search_versions.BASIC_CODE], key=lambda p: p["name"])
        entry.update({"searchInclude": [renamed(v) for v in includes]} if includes else {})
        entry.update({"searchRevInclude": revincludes} if revincludes else {})
        entry.update({"searchParam": params} if params else {})
        resources.append(entry)
    statement = {
        "resourceType": "CapabilityStatement",
        "text": {
            "status": "generated",
            "div": f'<div xmlns="http://www.w3.org/1999/xhtml">fhir-pub at FHIR {name} ({release}): '
            f"{', '.join(CONVERTED_TYPE_INTERACTIONS)} of {', '.join(kinds)}; $export; $validate "
            f"(FHIR {name}'s {VALIDATE_CHECKS[release]}).</div>",
        },
        **({"url": f"{base}/metadata"} if base is not None else {}),
        "name": f"FhirPub{name}",
        "status": "active",
        "date": r5["date"],
        "publisher": r5.get("publisher", "fhir-pub"),
        "kind": "instance",
        "instantiates": [BULK_DATA],
        "software": r5.get("software", {"name": "fhir-pub"}),
        "implementation": {
            "description": f"fhir-pub, FHIR {name}",
            **({"url": base} if base is not None else {}),
        },
        "fhirVersion": release,
        "format": ["json", "xml"],
        "rest": [
            {
                "mode": "server",
                "documentation": f"Read-only. $validate checks FHIR {name}'s {VALIDATE_CHECKS[release]}, "
                f"not its {VALIDATE_SKIPS[release]} (validation.earlier). Search parameters whose "
                f"element is an extension at FHIR {name} are not served here (docs/versions.md).",
                "resource": resources,
                "interaction": [{"code": code} for code in CONVERTED_SYSTEM_INTERACTIONS],
                "operation": [EXPORT, VALIDATE],  # [type]/$export too, as at R5 (the _type shorthand)
            }
        ],
    }
    return orjson.dumps(statement)


@lru_cache(maxsize=16)
def _capability(stored: bytes, base: str) -> bytes:
    document = orjson.loads(stored)
    document["implementation"]["url"] = base
    return orjson.dumps(document)


def checked_type(store: Store, resource_type: str) -> None:
    """NotSupported unless the publication holds resources of this type."""
    if resource_type not in store.types:
        raise NotSupported(f"this publication has no resource type {resource_type!r}")


def _current(context: Context, resource_type: str, resource_id: str) -> Stored:
    if context.fhir_version != "5.0":
        name = VERSION_NAMES[context.fhir_version][0]
        if resource_type not in context.store.converted_types(context.fhir_version):
            raise NotSupported(f"this publication has no resource type {resource_type!r} at FHIR {name}")
        found = context.store.read_converted(context.fhir_version, resource_type, resource_id)
        if found is None:
            raise NotFound(f"{resource_type}/{resource_id} is not in this publication at FHIR {name}")
        return found
    checked_type(context.store, resource_type)
    stored = context.store.read(resource_type, resource_id)
    if stored is None:
        raise NotFound(f"{resource_type}/{resource_id} is not in this publication")
    return stored


def _resource(context: Context, stored: Stored, path: str) -> Answer:
    return Answer(
        stored.body,
        version=stored.version,
        last_modified=stored.last_updated,
        location=f"{context.base}{path}",
        fhir_version=context.fhir_version,
    )


def read(context: Context, resource_type: str, resource_id: str) -> Answer:
    """Read: the current version."""
    stored = _current(context, resource_type, resource_id)
    return _resource(context, stored, f"/{resource_type}/{resource_id}")


def vread(context: Context, resource_type: str, resource_id: str, version_id: str) -> Answer:
    """Vread: one version of a resource (a publication keeps only the versions it publishes)."""
    stored = _current(context, resource_type, resource_id)
    if stored.version != version_id:
        raise NotFound(
            f"{resource_type}/{resource_id} has no version {version_id!r} (current: {stored.version})"
        )
    return _resource(context, stored, f"/{resource_type}/{resource_id}/_history/{version_id}")


def search(context: Context, resource_type: str | None) -> Answer:
    """Search one type (``[base]/[type]?``) or several (``[base]?_type=A,B``; all types without it).

    At R4B and R4 the R5 engine runs with the parameters served there, in R5's type names, and the
    answer holds the converted forms (``fhir_pub.search.versions``).
    """
    store, version = context.store, context.fhir_version
    if resource_type is not None:
        _served_type(context, resource_type)
        types, path = [resource_type], f"/{resource_type}"
    else:
        asked = [t for key, value in context.params if key == "_type" for t in value.split(",") if t]
        for kind in asked:
            _served_type(context, kind)
        every = store.types if version == "5.0" else store.converted_types(version)
        types, path = sorted(set(asked)) if asked else sorted(every), ""
    everything_matches = True
    if version == "5.0":
        req = parse(types, context.params, store.registry, strict=context.strict)
    else:
        registry = store.registry_at(version)
        req, everything_matches = search_versions.parse_at(
            version, types, context.params, registry, strict=context.strict
        )
    engine = store.engine(context.base, budget=context.budget, max_includes=context.max_includes)
    # R4's Basic?code= naming another code than the one every Basic here has finds nothing
    result = engine.search(req, now_micros()) if everything_matches else Result(0, [], [], [], False)
    entries: list[bytes] = []
    if req.summary != "count":
        entries = _entries(context, req, result)
    warnings = [
        Issue("warning", "not-supported", f"ignored {key}: {why}", layer="search") for key, why in req.ignored
    ]
    warnings += [Issue("warning", "too-costly", note, layer="search") for note in result.notes]
    if warnings:
        outcome = orjson.dumps(operation_outcome(warnings))
        # A urn:uuid fullUrl (R5 bundle.html#bundle-unique), the same for the same answer.
        asked_url = f"{context.base}/{path}?{urlencode(context.params)}#{outcome.decode()}"
        entries.append(
            bundle.entry(f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, asked_url)}", outcome, "outcome")
        )
    total = None if req.total == "none" else result.total
    links = _links(context, path, req, result)
    return Answer(bundle.searchset(entries, total, links), fhir_version=version)


def _served_type(context: Context, resource_type: str) -> None:
    """NotSupported unless the publication holds resources of this type at the asked version."""
    if context.fhir_version == "5.0":
        checked_type(context.store, resource_type)
    elif resource_type not in context.store.converted_types(context.fhir_version):
        name = VERSION_NAMES[context.fhir_version][0]
        hint = "; a clinical use is a Basic there" if resource_type == "ClinicalUseDefinition" else ""
        raise NotSupported(f"this publication has no resource type {resource_type!r} at FHIR {name}{hint}")


def _entries(context: Context, req: SearchRequest, result: Result) -> list[bytes]:
    """The matches then the included resources, their bodies read in one batch (converted at R4B, R4)."""
    keyed = [("match", key) for key in result.matches] + [("include", key) for key in result.included]
    version = context.fhir_version
    if version == "5.0":
        bodies = context.store.read_many([key for _, key in keyed])
        return bundle.entries(context.base, keyed, bodies, req.summary, req.elements)
    served = [(mode, (search_versions.served_type(version, kind), rid)) for mode, (kind, rid) in keyed]
    converted = context.store.read_converted_many(version, [key for _, key in served])
    return bundle.entries(context.base, served, converted, req.summary, req.elements, version)


def _links(context: Context, path: str, req: SearchRequest, result: Result) -> list[tuple[str, str]]:
    """Self shows only what was applied; first/previous/next/last page through the same search.

    An uncounted search (``_total=none``) has no ``last`` link: its end is known only on reaching it.
    """
    ignored = {key for key, _ in req.ignored}
    version = context.fhir_version
    applied = [
        (k, v)
        for k, v in context.params
        if search_versions.r5_query(version, [(k, v)])[0][0] not in ignored
        and k.split(":", 1)[0] not in RELINKED
    ]
    if req.sort:
        applied.append(("_sort", ",".join(("-" if desc else "") + p.code for p, desc in req.sort)))

    # The links differ only in _offset: the rest of the query is encoded once.
    head = f"{context.base}{path}?{urlencode([*applied, ('_count', str(req.count))])}"

    def url(offset: int) -> str:
        return f"{head}&_offset={offset}" if offset else head

    links = [("self", url(req.offset))]
    if req.count > 0 and req.summary != "count":
        links.append(("first", url(0)))
        if req.offset > 0:
            links.append(("previous", url(max(0, req.offset - req.count))))
        if result.more:
            links.append(("next", url(req.offset + req.count)))
        total = result.total
        if total is not None:
            links.append(("last", url(((total - 1) // req.count) * req.count if total else 0)))
    return links


def history(context: Context, resource_type: str | None, resource_id: str | None) -> Answer:
    """A history Bundle: each version with the request that made it and its response metadata.

    https://hl7.org/fhir/R5/http.html#history: ``_count``, ``_since`` (an instant) and ``_at`` narrow it.
    """
    version = context.fhir_version
    if resource_type is not None:
        _served_type(context, resource_type)
    asked = dict(context.params)
    since_text = asked.get("_since")
    since = None if since_text is None else micros(parse_instant(since_text))
    count = whole_number("_count", asked.get("_count", "20"), MAX_COUNT)
    offset = whole_number("_offset", asked.get("_offset", "0"), MAX_OFFSET)
    if version == "5.0":
        total, versions = context.store.history(resource_type, resource_id, since, count, offset)
    else:  # the converted forms, in the R5 history's order (fhir_pub.search.versions for the names)
        r5_type = None if resource_type is None else search_versions.R5_TYPES[version].get(resource_type)
        renamed = search_versions.SERVED_TYPES[version]
        total, versions = context.store.converted_history(
            version, renamed, r5_type or resource_type, resource_id, since, count, offset
        )
    if resource_id is not None and total == 0 and since is None:
        at = "" if version == "5.0" else f" at FHIR {VERSION_NAMES[version][0]}"
        raise NotFound(f"{resource_type}/{resource_id} is not in this publication{at}")
    entries = []
    for kind, rid, stored in versions:
        body = orjson.dumps(
            {
                "fullUrl": f"{context.base}/{kind}/{rid}",
                "resource": "__resource__",
                "request": {"method": "PUT", "url": f"{kind}/{rid}"},
                "response": {
                    "status": "201",
                    "etag": f'W/"{stored.version}"',
                    "lastModified": stored.last_updated,
                },
            }
        )
        entries.append(body.replace(b'"__resource__"', stored.body, 1))
    path = "/".join(p for p in ("", resource_type, resource_id, "_history") if p is not None)
    head = {
        "resourceType": "Bundle",
        "type": "history",
        "total": total,
        "link": _history_links(context, path, count, offset, total),
    }
    return Answer(bundle.with_entries(orjson.dumps(head), entries), fhir_version=version)


def _history_links(context: Context, path: str, count: int, offset: int, total: int) -> list[dict[str, str]]:
    kept = [(k, v) for k, v in context.params if k in {"_since", "_at"}]

    def url(at: int) -> str:
        query = [*kept, ("_count", str(count)), *([("_offset", str(at))] if at else [])]
        return f"{context.base}{path}?{urlencode(query)}"

    links = [{"relation": "self", "url": url(offset)}]
    if count and offset + count < total:
        links.append({"relation": "next", "url": url(offset + count)})
    if count and offset > 0:
        links.append({"relation": "previous", "url": url(max(0, offset - count))})
    return links


@dataclass(frozen=True, slots=True)
class ValidateRequest:
    """What ``$validate`` was asked: the resource, the mode, and the profile to check it against."""

    resource: Any
    mode: ValidateMode = "create"
    profile: str | None = None


def validate_arguments(body: Any) -> ValidateRequest:
    """The resource, mode and profile from a raw resource or a Parameters body."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return ValidateRequest(body)
    resource, mode, profile = None, "create", None
    for parameter in body.get("parameter", []):
        name = parameter.get("name") if isinstance(parameter, dict) else None
        if name == "resource":
            resource = parameter.get("resource")
        elif name == "mode":
            mode = str(parameter.get("valueCode", ""))
        elif name == "profile":
            profile = parameter.get("valueCanonical") or parameter.get("valueUri")
    if resource is None:
        raise Invalid(
            "Parameters for $validate need a 'resource' parameter", expression="Parameters.parameter"
        )
    if mode not in MODES:
        raise Invalid(f"mode {mode!r}: expected one of {', '.join(sorted(MODES))}")
    return ValidateRequest(resource, mode, profile)  # type: ignore[arg-type]  # checked against MODES


def validate(
    context: Context, validator: Validator, resource_type: str | None, asked: ValidateRequest
) -> Answer:
    """``$validate`` (https://hl7.org/fhir/R5/resource-operation-validate.html): an OperationOutcome, 200.

    At R4B and R4, the resource is checked against that version's own models (``validation.earlier``).
    """
    version = context.fhir_version
    profile = asked.profile.split("|", 1)[0] if asked.profile else None
    if profile is not None and (version != "5.0" or profile not in validator.schemas):
        known = "" if version == "5.0" else f" at FHIR {VERSION_NAMES[version][0]}"
        raise Invalid(f"profile {asked.profile} is not known to this publisher{known}")
    resource = asked.resource
    if (
        resource_type is not None
        and isinstance(resource, dict)
        and resource.get("resourceType") != resource_type
    ):
        raise Invalid(f"the body is a {resource.get('resourceType')!r}, not a {resource_type}")
    if asked.mode == "delete":
        issue = Issue(
            "error", "not-supported", "this publication is read-only: nothing can be deleted", layer="request"
        )
        return Answer(orjson.dumps(operation_outcome([issue])), fhir_version=version)
    if version != "5.0":
        if not isinstance(resource, dict):
            raise Invalid("the body is not a resource (a JSON object)")
        issues = [earlier.mode(version), *earlier.check(resource, version)]
        return Answer(orjson.dumps(operation_outcome(issues)), fhir_version=version)
    candidate = candidate_from_bytes(orjson.dumps(resource), "resource")
    if joins(validator, resource):
        # Publication mode: the resource joins the publication in place of any published version of it;
        # only what it refers to and what refers to it are read, so a check costs the same at any size.
        report = validator.validate([candidate], profile=profile, publication=context.store)
        mode = Issue("information", "informational", PUBLICATION_MODE, None, "resource", "mode", "request")
        report = replace(report, issues=(mode, *report.issues))
    else:
        report = validator.validate_one(candidate, context.store, profile)
    return Answer(orjson.dumps(report.outcome()))


PUBLICATION_MODE = (
    "validated as a member of this publication (it declares one of its profiles): publication rules "
    "(orphans, unique ids, references within the publication) applied"
)


def joins(validator: Validator, resource: Any) -> bool:
    """Whether a posted resource is meant for this publication: it declares one of its profiles."""
    meta = resource.get("meta") if isinstance(resource, dict) else None
    declared = meta.get("profile") if isinstance(meta, dict) else None
    return isinstance(declared, list) and any(
        isinstance(url, str) and url.split("|", 1)[0] in validator.schemas for url in declared
    )


# Bulk Data export (https://hl7.org/fhir/uv/bulkdata/STU2/export.html): kick-off, status, cancel. The
# files themselves are streamed by the web layer.
_TYPE_FILTER_SPLIT = re.compile(r",(?=[A-Z][A-Za-z]+\?)")


def export_request(
    store: Store,
    resource_type: str | None,
    pairs: Sequence[tuple[str, str]],
    lenient: bool,
    version: FhirVersion = "5.0",
) -> tuple[ExportRequest, list[str]]:
    """The export a kick-off asks for, checked against the publication; the warnings of lenient handling.

    At R4B or R4 (``version``) the types and filters are that version's, and the files its forms.
    """
    types: list[str] = []
    elements: list[str] = []
    filters: list[str] = []
    since = None
    warnings = []
    for name, value in pairs:
        if name == "_outputFormat":
            value = value.replace(" ", "+")  # an unencoded "+" in a query string arrives as a space
            if value not in OUTPUT_FORMATS:
                raise Invalid(
                    f"_outputFormat={value!r}: this server writes application/fhir+ndjson", expression=name
                )
        elif name == "_since":
            since = parse_instant(value)
        elif name == "_type":
            types += [t.strip() for t in value.split(",") if t.strip()]
        elif name == "_elements":
            elements += [e.strip() for e in value.split(",") if e.strip()]
        elif name == "_typeFilter":
            filters += [f for f in _TYPE_FILTER_SPLIT.split(value) if f]
        elif lenient:
            warnings.append(f"parameter {name} is not supported and was ignored")
        else:
            raise Invalid(
                f"parameter {name} is not supported (Prefer: handling=lenient ignores it)", expression=name
            )
    if resource_type is not None:
        if types and types != [resource_type]:
            raise Invalid(
                f"_type must name only {resource_type} on [base]/{resource_type}/$export", expression="_type"
            )
        types = [resource_type]
    served = store.types if version == "5.0" else store.converted_types(version)
    unknown = sorted({t for t in [*types, *(f.split("?", 1)[0] for f in filters)] if t not in served})
    if unknown:
        at = "" if version == "5.0" else f" at FHIR {VERSION_NAMES[version][0]}"
        raise Invalid(f"not in this publication{at}: {', '.join(unknown)}", expression="_type")
    check_type_filters(store, filters, version)
    request = ExportRequest(
        tuple(dict.fromkeys(types)),
        since,
        tuple(filters),
        tuple(dict.fromkeys(elements)),
        fhir_version=version,
    )
    return request, warnings


def _informational(text: str, **extra: Any) -> Answer:
    outcome = operation_outcome([Issue("information", "informational", text, layer="bulk")])
    return Answer(orjson.dumps(outcome), status=202, **extra)


def export_kickoff(
    context: Context, jobs: JobStore, resource_type: str | None, kickoff_url: str, lenient: bool
) -> Answer:
    """Start an export job (202, its status URL in Content-Location); 429 when enough are running."""
    asked, warnings = export_request(
        context.store, resource_type, context.params, lenient, context.fhir_version
    )
    jobs.sweep()
    state = jobs.admit(asked, kickoff_url, context.base, warnings)
    if state is None:
        raise TooManyRequests(
            f"{jobs.max_active} exports are running; try again later", headers={"Retry-After": "10"}
        )
    threading.Thread(target=jobs.run, args=(state, context.store, asked), daemon=True).start()
    location = f"{context.base}/$export-status/{state['id']}"
    return _informational("export started", location=location, fhir_version=context.fhir_version)


def _no_job(job_id: str) -> NotFound:
    return NotFound(f"no export job {job_id} (never started, cancelled, or expired)")


def live_job(jobs: JobStore, job_id: str) -> dict[str, Any]:
    """A job that can still be asked about; NotFound for one never started, cancelled or forgotten."""
    jobs.sweep()
    state = jobs.read(job_id)
    if state is None or state["status"] in {"cancelled", "expired"}:
        raise _no_job(job_id)
    return state


def export_status(jobs: JobStore, job_id: str, interval: float) -> Answer:
    """202 while running (X-Progress, Retry-After; 429 when polled too fast); then the manifest."""
    state = live_job(jobs, job_id)
    now = jobs.clock()
    if state["status"] in ACTIVE:  # only a running job is rate limited; a result may be re-read at will
        wait = interval - (now - float(state.get("lastPoll", 0.0)))
        if wait > 0:
            raise TooManyRequests(
                "polled too soon; wait as Retry-After says", headers={"Retry-After": str(math.ceil(wait))}
            )
        if not jobs.polled(job_id, now):
            raise _no_job(job_id)
        progress = (
            ("X-Progress", str(state.get("progress", "running"))),
            ("Retry-After", str(math.ceil(interval))),
        )
        return Answer(b"", status=202, headers=progress, media="")  # an empty body has no media type
    if state["status"] == "failed":  # the job itself failed on the server: the IG asks for a 5xx here
        issue = Issue(
            "error", "exception", f"the export failed: {state.get('error', 'unknown error')}", layer="bulk"
        )
        return Answer(orjson.dumps(operation_outcome([issue])), status=500)
    expires = (("Expires", formatdate(state["expires"], usegmt=True)),)
    return Answer(orjson.dumps(state["manifest"]), headers=expires, media="application/json")


def export_cancel(jobs: JobStore, job_id: str) -> Answer:
    """Cancel a job (running or done): 202; its files are deleted and its status URL answers 404."""
    live_job(jobs, job_id)
    jobs.cancel(job_id)
    return _informational("export cancelled")
