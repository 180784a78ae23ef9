"""The FHIR REST routes: thin functions that negotiate, ask the store, and answer.

https://hl7.org/fhir/R5/http.html
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, current_app, request

from fhir_pub.errors import MethodNotAllowed, NotAcceptable, NotFound, NotSupported
from fhir_pub.store import Store, Stored

blueprint = Blueprint("fhir", __name__)
FHIR_JSON = "application/fhir+json; charset=utf-8"
JSON_TYPES = ("application/fhir+json", "application/json")
# _format values that mean JSON (https://hl7.org/fhir/R5/http.html#mime-type)
JSON_FORMATS = {"json", "application/json", "application/fhir+json"}
WRITES = ["POST", "PUT", "PATCH", "DELETE"]


def _store() -> Store:
    store: Store = current_app.extensions["fhir_pub"]["store"]
    return store


def _negotiate() -> None:
    """Only JSON is produced; ``_format`` overrides ``Accept``; anything else is 406."""
    fmt = request.args.get("_format")
    if fmt is not None:
        # An unescaped "+" in a query string arrives as a space: "application/fhir json".
        if fmt.split(";", 1)[0].strip().replace(" ", "+") not in JSON_FORMATS:
            raise NotAcceptable(f"_format={fmt!r}: this server produces JSON (application/fhir+json) only")
        return
    if request.accept_mimetypes and not request.accept_mimetypes.best_match(JSON_TYPES):
        raise NotAcceptable(
            f"Accept: {request.headers.get('Accept')}: this server produces application/fhir+json"
        )


def _resource_response(stored: Stored) -> Response:
    response = Response(stored.body, content_type=FHIR_JSON)
    response.set_etag(stored.version, weak=True)
    response.last_modified = datetime.fromisoformat(stored.last_updated)
    response.headers["Content-Location"] = request.base_url
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
    return Response(_store().capability, content_type=FHIR_JSON)


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


@blueprint.route("", methods=WRITES)  # transaction and batch too
@blueprint.route("/", methods=WRITES)
@blueprint.route("/<path:anything>", methods=WRITES)
def write(**_: Any) -> Response:
    """Every write verb: the publication is read-only."""
    raise MethodNotAllowed(f"{request.method} is not allowed: this FHIR endpoint is read-only")
