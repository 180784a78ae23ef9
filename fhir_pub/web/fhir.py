"""The FHIR REST routes: thin functions that negotiate, ask the store, and answer.

https://hl7.org/fhir/R5/http.html
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import urlencode

import orjson
from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from fhir_pub.errors import MethodNotAllowed, NotFound, NotSupported, UnsupportedMediaType
from fhir_pub.openapi import openapi
from fhir_pub.search.bundle import entry, searchset, subset, with_entries
from fhir_pub.search.dates import micros, now_micros, parse_instant
from fhir_pub.search.engine import Result
from fhir_pub.search.request import MAX_COUNT, MAX_OFFSET, SearchRequest, parse, whole_number
from fhir_pub.store import Store, Stored
from fhir_pub.validation.issues import Issue, operation_outcome
from fhir_pub.web import formats

blueprint = Blueprint("fhir", __name__)
FHIR_JSON = "application/fhir+json; charset=utf-8"
WRITES = ["POST", "PUT", "PATCH", "DELETE"]


def _store() -> Store:
    store: Store = current_app.extensions["fhir_pub"]["store"]
    return store


def _negotiate() -> None:
    """Refuse early (406) what cannot be produced; the app renders the rest (``web.formats``)."""
    formats.requested(request)


def _resource_response(stored: Stored) -> Response:
    response = Response(stored.body, content_type=FHIR_JSON)
    response.set_etag(stored.version, weak=True)
    response.last_modified = datetime.fromisoformat(stored.last_updated)
    # The public address of this version: the configured or forwarded base, not necessarily the request's.
    path = request.path.split("/fhir", 1)[1] if "/fhir" in request.path else request.path
    response.headers["Content-Location"] = f"{_base()}{path}"
    response.make_conditional(request)
    return response


def _checked_type(resource_type: str) -> None:
    if resource_type not in _store().types:
        raise NotSupported(
            f"this publication has no resource type {resource_type!r}", expression=resource_type
        )


@blueprint.get("/metadata")
def metadata() -> Response:
    """The CapabilityStatement, as the build generated it."""
    _negotiate()
    return Response(_capability(_store().capability, _base()), content_type=FHIR_JSON)


@lru_cache(maxsize=16)
def _capability(stored: bytes, base: str) -> bytes:
    """The stored CapabilityStatement with ``implementation.url``: the base URL it is served at."""
    document = orjson.loads(stored)
    document["implementation"]["url"] = base
    return orjson.dumps(document)


@blueprint.get("/openapi.json")
def openapi_document() -> Response:
    """The endpoint described in OpenAPI 3.1, derived from the CapabilityStatement."""
    document = openapi(orjson.loads(_store().capability), _base())
    return Response(orjson.dumps(document), content_type="application/json")


@blueprint.route("/<resource_type>/<resource_id>", methods=["GET", "HEAD"])
def read(resource_type: str, resource_id: str) -> Response:
    """Read (and HEAD): the current version, with ETag and Last-Modified; 304 when the client has it."""
    _negotiate()
    _checked_type(resource_type)
    stored = _store().read(resource_type, resource_id)
    if stored is None:
        raise NotFound(f"{resource_type}/{resource_id} is not in this publication")
    return _resource_response(stored)


@blueprint.route("/<resource_type>/<resource_id>/_history/<version_id>", methods=["GET", "HEAD"])
def vread(resource_type: str, resource_id: str, version_id: str) -> Response:
    """Vread: one version of a resource (a publication keeps only the versions it publishes)."""
    _negotiate()
    _checked_type(resource_type)
    stored = _store().read(resource_type, resource_id)
    if stored is None:
        raise NotFound(f"{resource_type}/{resource_id} is not in this publication")
    if stored.version != version_id:
        raise NotFound(
            f"{resource_type}/{resource_id} has no version {version_id!r} (current: {stored.version})"
        )
    return _resource_response(stored)


def _base() -> str:
    """The public FHIR base URL: configured, or this request's (worked out once per request)."""
    base: str | None = g.get("fhir_base")
    if base is None:
        base = g.fhir_base = formats.base_url(current_app.extensions["fhir_pub"]["settings"], request)
    return base


def _strict() -> bool:
    # https://hl7.org/fhir/R5/search.html#errors: Prefer: handling=strict turns ignored parameters into errors
    return formats.preferences(request).get("handling") == "strict"


def _links(
    path: str, pairs: Sequence[tuple[str, str]], req: SearchRequest, result: Result
) -> list[tuple[str, str]]:
    """Self shows only what was applied; first/previous/next/last page through the same search.

    An uncounted search (``_total=none``) has no ``last`` link: its end is known only on reaching it.
    """
    ignored = {key for key, _ in req.ignored}
    dropped = {"_count", "_offset", "_format", "_pretty", "_sort"}
    applied = [(k, v) for k, v in pairs if k not in ignored and k.split(":", 1)[0] not in dropped]
    if req.sort:
        applied.append(("_sort", ",".join(("-" if desc else "") + p.code for p, desc in req.sort)))

    def url(offset: int) -> str:
        query = [*applied, ("_count", str(req.count)), *([("_offset", str(offset))] if offset else [])]
        return f"{_base()}{path}?{urlencode(query)}"

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


def _search(types: Sequence[str], path: str, pairs: Sequence[tuple[str, str]]) -> Response:
    store = _store()
    req = parse(types, pairs, store.registry, strict=_strict())
    settings = current_app.extensions["fhir_pub"]["settings"]
    budget, most = settings.search_timeout, settings.max_includes
    engine = store.engine(_base(), budget=budget, max_includes=most)
    result = engine.search(req, now_micros())
    entries: list[bytes] = []
    if req.summary != "count":
        for mode, keys in (("match", result.matches), ("include", result.included)):
            for kind, rid in keys:
                stored = store.read(kind, rid)
                if stored is None:
                    continue
                body = stored.body
                if req.elements is not None or req.summary in {"true", "text", "data"}:
                    body = subset(body, req.summary, req.elements)
                entries.append(entry(f"{_base()}/{kind}/{rid}", body, mode))
    warnings = [
        Issue("warning", "not-supported", f"ignored {key}: {why}", key, layer="search")
        for key, why in req.ignored
    ]
    warnings += [Issue("warning", "too-costly", note, layer="search") for note in result.notes]
    if warnings:
        outcome = orjson.dumps(operation_outcome(warnings))
        # A urn:uuid fullUrl (R5 bundle.html#bundle-unique), the same for the same answer.
        name = uuid.uuid5(uuid.NAMESPACE_URL, f"{_base()}/{path}?{urlencode(pairs)}#{outcome.decode()}")
        entries.append(entry(f"urn:uuid:{name}", outcome, "outcome"))
    total = None if req.total == "none" else result.total
    return Response(searchset(entries, total, _links(path, pairs, req, result)), content_type=FHIR_JSON)


@blueprint.get("/<resource_type>")
def search_type(resource_type: str) -> Response:
    """Search one type: ``GET [base]/[type]?params``."""
    _negotiate()
    _checked_type(resource_type)
    return _search([resource_type], f"/{resource_type}", list(request.args.items(multi=True)))


@blueprint.post("/<resource_type>/_search")
def search_post(resource_type: str) -> Response:
    """Search by POST: parameters in a form body (and the query string)."""
    _negotiate()
    _checked_type(resource_type)
    return _search([resource_type], f"/{resource_type}", _form_pairs())


@blueprint.get("")
@blueprint.get("/")
def search_system() -> Response:
    """Search across types: ``GET [base]?_type=A,B&params`` (all types without ``_type``)."""
    _negotiate()
    requested = [t for value in request.args.getlist("_type") for t in value.split(",") if t]
    for kind in requested:
        _checked_type(kind)
    types = sorted(set(requested)) if requested else sorted(_store().types)
    return _search(types, "", list(request.args.items(multi=True)))


@blueprint.post("/_search")
def search_system_post() -> Response:
    """System search by POST (https://hl7.org/fhir/R5/http.html#search): a form body, as GET [base]?."""
    _negotiate()
    pairs = _form_pairs()
    requested = [t for key, value in pairs if key == "_type" for t in value.split(",") if t]
    for kind in requested:
        _checked_type(kind)
    types = sorted(set(requested)) if requested else sorted(_store().types)
    return _search(types, "", pairs)


def _form_pairs() -> list[tuple[str, str]]:
    """The query string's and the form body's parameters of a POST search (415 for another body)."""
    if request.content_length and request.mimetype != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType(
            f"{request.mimetype}: POST _search takes application/x-www-form-urlencoded"
        )
    return [*request.args.items(multi=True), *request.form.items(multi=True)]


@blueprint.route("", methods=WRITES)  # transaction and batch too
@blueprint.route("/", methods=WRITES)
@blueprint.route("/<path:anything>", methods=[*WRITES, "GET", "HEAD"])
def write(**_: Any) -> Response:
    """Every write verb: the publication is read-only. A read of an address no route serves: 404."""
    if request.method in {"GET", "HEAD"}:
        # Without this, werkzeug would answer a GET on an unknown deep path (traversal attempts,
        # unknown operations) with 405 because the write rule matches it; http.html: unknown is 404.
        raise NotFound(f"nothing is served at {request.path[:200]}")
    allowed = allowed_methods()
    raise MethodNotAllowed(
        f"{request.method} is not allowed: this FHIR endpoint is read-only (this URL accepts {allowed})",
        headers={"Allow": allowed},  # RFC 9110 15.5.6: a 405 names the methods the URL supports
    )


def allowed_methods() -> str:
    """The methods this request's URL really accepts, for ``Allow`` (the write catch-all does not count)."""
    adapter = current_app.url_map.bind_to_environ(request.environ)
    allowed = []
    for method in ("GET", "HEAD", "POST"):
        try:
            endpoint, _ = adapter.match(request.path, method=method)
        except HTTPException:
            continue
        if endpoint != "fhir.write":
            allowed.append(method)
    return ", ".join([*allowed, "OPTIONS"])


def _history(resource_type: str | None, resource_id: str | None) -> Response:
    """A history Bundle: each version with the request that made it and its response metadata."""
    # https://hl7.org/fhir/R5/http.html#history: _count, _since (instant) and _at narrow it.
    since_text = request.args.get("_since")
    since = None if since_text is None else micros(parse_instant(since_text))
    count = whole_number("_count", request.args.get("_count", "20"), MAX_COUNT)
    offset = whole_number("_offset", request.args.get("_offset", "0"), MAX_OFFSET)
    total, versions = _store().history(resource_type, resource_id, since, count, offset)
    if resource_id is not None and total == 0 and since is None:
        raise NotFound(f"{resource_type}/{resource_id} is not in this publication")
    entries = []
    for kind, rid, stored in versions:
        body = orjson.dumps(
            {
                "fullUrl": f"{_base()}/{kind}/{rid}",
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
    head = orjson.dumps(
        {
            "resourceType": "Bundle",
            "type": "history",
            "total": total,
            "link": _history_links(path, count, offset, total),
        }
    )
    return Response(with_entries(head, entries), content_type=FHIR_JSON)


def _history_links(path: str, count: int, offset: int, total: int) -> list[dict[str, str]]:
    kept = [(k, v) for k, v in request.args.items(multi=True) if k in {"_since", "_at"}]

    def url(at: int) -> str:
        query = [*kept, ("_count", str(count)), *([("_offset", str(at))] if at else [])]
        return f"{_base()}{path}?{urlencode(query)}"

    links = [{"relation": "self", "url": url(offset)}]
    if count and offset + count < total:
        links.append({"relation": "next", "url": url(offset + count)})
    if count and offset > 0:
        links.append({"relation": "previous", "url": url(max(0, offset - count))})
    return links


@blueprint.get("/<resource_type>/<resource_id>/_history")
def history_instance(resource_type: str, resource_id: str) -> Response:
    """The history of one resource."""
    _negotiate()
    _checked_type(resource_type)
    return _history(resource_type, resource_id)


@blueprint.get("/<resource_type>/_history")
def history_type(resource_type: str) -> Response:
    """The history of every resource of a type."""
    _negotiate()
    _checked_type(resource_type)
    return _history(resource_type, None)


@blueprint.get("/_history")
def history_system() -> Response:
    """The history of the whole publication."""
    _negotiate()
    return _history(None, None)
