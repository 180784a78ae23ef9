"""The FHIR REST routes: each turns an HTTP request into a handler call and renders the answer.

The handlers (``fhir_pub.handlers``) know nothing of HTTP; ``formats.respond`` negotiates and renders.
https://hl7.org/fhir/R5/http.html
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, g, request
from werkzeug.exceptions import HTTPException

from fhir_pub import handlers
from fhir_pub.errors import MethodNotAllowed, NotAcceptable, NotFound, UnsupportedMediaType
from fhir_pub.openapi import openapi
from fhir_pub.web import formats
from fhir_pub.web.state import app_state

blueprint = Blueprint("fhir", __name__)
# Negotiated once, before any work: what cannot be produced is a 406 whatever the request would find.
blueprint.before_request(lambda: (formats.negotiated(request), None)[1])
WRITES = ["POST", "PUT", "PATCH", "DELETE"]


# The blueprint serves R5 at [base] and R4B and R4 at [base]/R4B and [base]/R4 (registered three times).
URL_VERSIONS: dict[str, handlers.FhirVersion] = {
    f"fhir{suffix.replace('/', '_').lower()}": version for version, suffix in handlers.BASE_SUFFIXES.items()
}


ALL_VERSIONS: tuple[handlers.FhirVersion, ...] = tuple(
    handlers.VERSION_NAMES
)  # read, vread, search, history, metadata
R5_ONLY: tuple[handlers.FhirVersion, ...] = ("5.0",)  # everything else, for now


def base_version() -> handlers.FhirVersion | None:
    """The version of the base the request came in at (``[base]/R4B``, ``[base]/R4``); None at R5's.

    Each blueprint serving a version base is registered under its name with that base's suffix
    (``fhir_r4b``, ``bulk_r4b``).
    """
    name = request.blueprint or ""
    return next((v for key, v in URL_VERSIONS.items() if name.endswith(key.removeprefix("fhir"))), None)


def fhir_version(served: Sequence[handlers.FhirVersion]) -> handlers.FhirVersion:
    """The FHIR version to answer in: the base URL's, else the most preferred one asked that is served.

    NotAcceptable (406) when the media types ask only for versions this interaction is not served in.
    """
    asked = formats.asked_versions(request)
    by_url = base_version()
    if by_url is not None:
        if asked and by_url not in asked:
            raise NotAcceptable(f"fhirVersion={asked[0]} asked at the FHIR {by_url} base {request.path[:80]}")
        chosen: handlers.FhirVersion = by_url
    elif not asked:
        chosen = "5.0"
    else:
        usable = [v for v in asked if v in served]
        if not usable:
            shown = ", ".join(f"fhirVersion={v}" for v in asked)
            raise NotAcceptable(f"{shown}: this interaction is served at FHIR R5 (fhirVersion=5.0) only")
        chosen = usable[0]  # type: ignore[assignment]  # one of served
    return chosen


def _context(
    pairs: Sequence[tuple[str, str]] | None = None, served: Sequence[handlers.FhirVersion] = R5_ONLY
) -> handlers.Context:
    """The handlers' view of this request: the store, the public base, the parameters, the preferences."""
    state = app_state()
    return handlers.Context(
        state.store,
        public_base(),
        tuple(request.args.items(multi=True)) if pairs is None else tuple(pairs),
        # https://hl7.org/fhir/R5/search.html#errors: handling=strict turns ignored parameters into errors
        strict=formats.preferences(request).get("handling") == "strict",
        budget=state.settings.search_timeout,
        max_includes=state.settings.max_includes,
        fhir_version=fhir_version(served),
    )


def public_base() -> str:
    """The public FHIR base URL: configured, or this request's (worked out once per request).

    At ``[base]/R4B`` and ``[base]/R4`` it is that version's base.
    """
    base: str | None = g.get("fhir_base")
    if base is None:
        version = base_version()
        suffix = "" if version is None else handlers.BASE_SUFFIXES[version]
        base = g.fhir_base = formats.base_url(app_state().settings, request) + suffix
    return base


@blueprint.get("/metadata")
def metadata() -> Response:
    """The CapabilityStatement, as the build generated it."""
    return formats.respond(handlers.capability(_context(served=ALL_VERSIONS)), request)


@blueprint.get("/openapi.json")
def openapi_document() -> Response:
    """The endpoint described in OpenAPI 3.1, derived from the CapabilityStatement (R5's base only)."""
    if base_version() is not None:  # derived from R5's statement, it would describe the wrong version
        raise NotFound(
            f"no OpenAPI document at {request.path[:80]}: it describes the R5 base, /fhir/openapi.json"
        )
    document = openapi(orjson.loads(app_state().store.capability), public_base())
    return Response(orjson.dumps(document), content_type="application/json")


@blueprint.route("/<resource_type>/<resource_id>", methods=["GET", "HEAD"])
def read(resource_type: str, resource_id: str) -> Response:
    """Read (and HEAD): the current version, with ETag and Last-Modified; 304 when the client has it."""
    return formats.respond(handlers.read(_context(served=ALL_VERSIONS), resource_type, resource_id), request)


@blueprint.route("/<resource_type>/<resource_id>/_history/<version_id>", methods=["GET", "HEAD"])
def vread(resource_type: str, resource_id: str, version_id: str) -> Response:
    """Vread: one version of a resource."""
    answer = handlers.vread(_context(served=ALL_VERSIONS), resource_type, resource_id, version_id)
    return formats.respond(answer, request)


@blueprint.get("/<resource_type>")
def search_type(resource_type: str) -> Response:
    """Search one type: ``GET [base]/[type]?params``."""
    return formats.respond(handlers.search(_context(served=ALL_VERSIONS), resource_type), request)


@blueprint.post("/<resource_type>/_search")
def search_post(resource_type: str) -> Response:
    """Search by POST: parameters in a form body (and the query string)."""
    return formats.respond(
        handlers.search(_context(_form_pairs(), served=ALL_VERSIONS), resource_type), request
    )


@blueprint.get("")
@blueprint.get("/")
def search_system() -> Response:
    """Search across types: ``GET [base]?_type=A,B&params`` (all types without ``_type``)."""
    return formats.respond(handlers.search(_context(served=ALL_VERSIONS), None), request)


@blueprint.post("/_search")
def search_system_post() -> Response:
    """System search by POST (https://hl7.org/fhir/R5/http.html#search): a form body, as GET [base]?."""
    return formats.respond(handlers.search(_context(_form_pairs(), served=ALL_VERSIONS), None), request)


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
        if not endpoint.endswith(".write"):  # the write catch-all of any version's base
            allowed.append(method)
    return ", ".join([*allowed, "OPTIONS"])


@blueprint.get("/<resource_type>/<resource_id>/_history")
def history_instance(resource_type: str, resource_id: str) -> Response:
    """The history of one resource."""
    return formats.respond(
        handlers.history(_context(served=ALL_VERSIONS), resource_type, resource_id), request
    )


@blueprint.get("/<resource_type>/_history")
def history_type(resource_type: str) -> Response:
    """The history of every resource of a type."""
    return formats.respond(handlers.history(_context(served=ALL_VERSIONS), resource_type, None), request)


@blueprint.get("/_history")
def history_system() -> Response:
    """The history of the whole publication."""
    return formats.respond(handlers.history(_context(served=ALL_VERSIONS), None, None), request)
