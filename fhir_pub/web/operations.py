"""FHIR operations: ``$validate`` (https://hl7.org/fhir/R5/resource-operation-validate.html)."""

from __future__ import annotations

import threading
from typing import Any

import orjson
from flask import Blueprint, Response, current_app, request

from fhir_pub.conformance import Conformance
from fhir_pub.errors import Invalid, UnsupportedMediaType
from fhir_pub.store import Store
from fhir_pub.validation import Validator, candidate_from_bytes
from fhir_pub.validation.issues import Issue, operation_outcome
from fhir_pub.web import formats

blueprint = Blueprint("operations", __name__)
FHIR_JSON = "application/fhir+json; charset=utf-8"
JSON_BODIES = {"application/fhir+json", "application/json"}
XML_BODIES = {"application/fhir+xml", "application/xml", "text/xml"}
MODES = {"create", "update", "delete", "profile"}
_lock = threading.Lock()


def _validator() -> tuple[Validator, Store]:
    """The validator for the publication's own profiles (made once), and the publication it checks against."""
    state = current_app.extensions["fhir_pub"]
    store: Store = state["store"]
    with _lock:
        if "validator" not in state:
            conformance = Conformance(store.path, {r["url"]: r for r in store.conformance()})
            state["validator"] = Validator(conformance)
    return state["validator"], store


def _arguments(body: Any) -> tuple[dict[str, Any], str, str | None]:
    """The resource, mode and profile from a raw resource or a Parameters body."""
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        return body, "create", None
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
        raise Invalid(f"mode {mode!r}: expected one of {', '.join(sorted(MODES))}", expression="mode")
    return resource, mode, profile


def _validate(resource_type: str | None) -> Response:
    if request.mimetype not in JSON_BODIES | XML_BODIES:
        raise UnsupportedMediaType(
            f"{request.mimetype or 'no content type'}: $validate reads application/fhir+json or +xml"
        )
    data = request.get_data(cache=False)
    if request.mimetype in XML_BODIES:  # the CapabilityStatement declares xml: bodies too
        body: Any = formats.resource_from_xml(data)
    else:
        try:
            body = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise Invalid(f"the body is not valid JSON: {exc.msg}") from exc
    resource, mode, profile = _arguments(body)
    validator, store = _validator()
    if profile is not None and profile.split("|", 1)[0] not in validator.schemas:
        raise Invalid(f"profile {profile} is not known to this publisher", expression="profile")
    if (
        resource_type is not None
        and isinstance(resource, dict)
        and resource.get("resourceType") != resource_type
    ):
        raise Invalid(f"the body is a {resource.get('resourceType')!r}, not a {resource_type}")
    if mode == "delete":
        issue = Issue(
            "error", "not-supported", "this publication is read-only: nothing can be deleted", layer="request"
        )
        return Response(orjson.dumps(operation_outcome([issue])), content_type=FHIR_JSON)
    candidate = candidate_from_bytes(orjson.dumps(resource), "resource")
    # The resource joins the publication in place of any published version of it; only what it refers
    # to and what refers to it are read, so a check costs the same at any publication size.
    report = validator.validate(
        [candidate], profile=profile.split("|", 1)[0] if profile else None, publication=store
    )
    return Response(orjson.dumps(report.outcome()), content_type=FHIR_JSON)


@blueprint.post("/$validate")
def validate_system() -> Response:
    """``POST [base]/$validate``: a resource of any type."""
    return _validate(None)


@blueprint.post("/<resource_type>/$validate")
def validate_type(resource_type: str) -> Response:
    """``POST [base]/[type]/$validate``: a resource of that type."""
    return _validate(resource_type)
