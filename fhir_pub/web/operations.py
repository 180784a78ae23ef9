"""FHIR operations over HTTP: ``$validate`` (https://hl7.org/fhir/R5/resource-operation-validate.html).

The body is read here (JSON or XML); ``fhir_pub.handlers.validate`` does the rest.
"""

from __future__ import annotations

from typing import Any

import orjson
from flask import Blueprint, Response, request

from fhir_pub import handlers
from fhir_pub.errors import Invalid, UnsupportedMediaType
from fhir_pub.web import fhir, formats
from fhir_pub.web.state import app_state

blueprint = Blueprint("operations", __name__)
# The answer's format and version are negotiated before the body is read: an unserved one is a 406.
blueprint.before_request(lambda: (formats.negotiated(request), None)[1])
JSON_BODIES = {"application/fhir+json", "application/json"}
XML_BODIES = {"application/fhir+xml", "application/xml", "text/xml"}


def _body() -> Any:
    """The request body as JSON: FHIR JSON as sent, or FHIR XML read into it."""
    if request.mimetype not in JSON_BODIES | XML_BODIES:
        raise UnsupportedMediaType(
            f"{request.mimetype or 'no content type'}: $validate reads application/fhir+json or +xml"
        )
    data = request.get_data(cache=False)
    if request.mimetype in XML_BODIES:
        return formats.resource_from_xml(data)
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"the body is not valid JSON: {exc.msg}") from exc


def _validate(resource_type: str | None) -> Response:
    state = app_state()
    asked = handlers.validate_arguments(_body())
    # At [base]/R4B and [base]/R4, or asked with fhirVersion, the resource is validated in that version
    version = fhir.fhir_version(fhir.ALL_VERSIONS)
    context = handlers.Context(state.store, fhir.public_base(), fhir_version=version)
    return formats.respond(handlers.validate(context, state.validator(), resource_type, asked), request)


@blueprint.post("/$validate")
def validate_system() -> Response:
    """``POST [base]/$validate``: a resource of any type."""
    return _validate(None)


@blueprint.post("/<resource_type>/$validate")
def validate_type(resource_type: str) -> Response:
    """``POST [base]/[type]/$validate``: a resource of that type."""
    return _validate(resource_type)
