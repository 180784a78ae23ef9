"""Transport-free handlers: a typed request and the store in, a typed answer out; no Flask here.

Each FHIR interaction the endpoint serves (capabilities, read, vread, search, history, ``$validate``) is one
function taking a :class:`Context` and its own arguments and returning an :class:`Answer`, or raising a
:class:`fhir_pub.errors.FhirPubError`. The web layer (``fhir_pub.web``) turns an HTTP request into a call,
negotiates the format once and renders the answer once; another transport could call the same functions.

https://hl7.org/fhir/R5/http.html
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Literal
from urllib.parse import urlencode

import orjson

from fhir_pub.errors import Invalid, NotFound, NotSupported
from fhir_pub.search import bundle
from fhir_pub.search.dates import micros, now_micros, parse_instant
from fhir_pub.search.engine import Result
from fhir_pub.search.request import MAX_COUNT, MAX_OFFSET, SearchRequest, parse, whole_number
from fhir_pub.store import Store, Stored
from fhir_pub.validation import Validator, candidate_from_bytes
from fhir_pub.validation.issues import Issue, operation_outcome

Pairs = tuple[tuple[str, str], ...]
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


@dataclass(frozen=True, slots=True)
class Answer:
    """A FHIR JSON answer: the body, its status, and what HTTP caching says of it.

    ``version`` (a weak ETag) and ``last_modified`` are set for a resource read, ``location`` is the
    ``Content-Location`` of the version read.
    """

    body: bytes
    status: int = 200
    version: str | None = None
    last_modified: str | None = None
    location: str | None = None


def capability(context: Context) -> Answer:
    """The CapabilityStatement as the build generated it, ``implementation.url`` the base served at."""
    return Answer(_capability(context.store.capability, context.base))


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
    """Search one type (``[base]/[type]?``) or several (``[base]?_type=A,B``; all types without it)."""
    store = context.store
    if resource_type is not None:
        checked_type(store, resource_type)
        types, path = [resource_type], f"/{resource_type}"
    else:
        asked = [t for key, value in context.params if key == "_type" for t in value.split(",") if t]
        for kind in asked:
            checked_type(store, kind)
        types, path = sorted(set(asked)) if asked else sorted(store.types), ""
    req = parse(types, context.params, store.registry, strict=context.strict)
    engine = store.engine(context.base, budget=context.budget, max_includes=context.max_includes)
    result = engine.search(req, now_micros())
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
    return Answer(bundle.searchset(entries, total, _links(context, path, req, result)))


def _entries(context: Context, req: SearchRequest, result: Result) -> list[bytes]:
    """The matches then the included resources, their bodies read in one batch."""
    keyed = [("match", key) for key in result.matches] + [("include", key) for key in result.included]
    bodies = context.store.read_many([key for _, key in keyed])
    return bundle.entries(context.base, keyed, bodies, req.summary, req.elements)


def _links(context: Context, path: str, req: SearchRequest, result: Result) -> list[tuple[str, str]]:
    """Self shows only what was applied; first/previous/next/last page through the same search.

    An uncounted search (``_total=none``) has no ``last`` link: its end is known only on reaching it.
    """
    ignored = {key for key, _ in req.ignored}
    applied = [(k, v) for k, v in context.params if k not in ignored and k.split(":", 1)[0] not in RELINKED]
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
    if resource_type is not None:
        checked_type(context.store, resource_type)
    asked = dict(context.params)
    since_text = asked.get("_since")
    since = None if since_text is None else micros(parse_instant(since_text))
    count = whole_number("_count", asked.get("_count", "20"), MAX_COUNT)
    offset = whole_number("_offset", asked.get("_offset", "0"), MAX_OFFSET)
    total, versions = context.store.history(resource_type, resource_id, since, count, offset)
    if resource_id is not None and total == 0 and since is None:
        raise NotFound(f"{resource_type}/{resource_id} is not in this publication")
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
    return Answer(bundle.with_entries(orjson.dumps(head), entries))


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
    """``$validate`` (https://hl7.org/fhir/R5/resource-operation-validate.html): an OperationOutcome, 200."""
    profile = asked.profile.split("|", 1)[0] if asked.profile else None
    if profile is not None and profile not in validator.schemas:
        raise Invalid(f"profile {asked.profile} is not known to this publisher")
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
        return Answer(orjson.dumps(operation_outcome([issue])))
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
