"""One handler turns every failure into an OperationOutcome with the right status."""

from __future__ import annotations

import logging

import orjson
from flask import Flask, Response
from werkzeug.exceptions import HTTPException

from fhir_pub.errors import FhirPubError
from fhir_pub.validation.issues import Issue, operation_outcome

log = logging.getLogger(__name__)
FHIR_JSON = "application/fhir+json; charset=utf-8"
# How werkzeug's own errors (unknown route, wrong method, ...) read as issue types.
HTTP_CODES = {
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    413: "too-long",
    415: "not-supported",
}


def outcome_response(status: int, code: str, message: str, expression: str | None = None) -> Response:
    """The one error shape: an OperationOutcome with one issue, as FHIR JSON."""
    issue = Issue("error" if status < 500 else "fatal", code, message, expression, layer="request")
    body = orjson.dumps(operation_outcome([issue]))
    return Response(body, status=status, content_type=FHIR_JSON)


def register(app: Flask) -> None:
    """Install the handlers on an app."""

    @app.errorhandler(FhirPubError)
    def fhir_pub_error(error: FhirPubError) -> Response:
        response = outcome_response(error.status, error.code, error.diagnostics, error.expression)
        response.headers.update(error.headers)
        return response

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        response = outcome_response(
            status, HTTP_CODES.get(status, "processing"), error.description or error.name
        )
        if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
            response.headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return response

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unexpected error")
        return outcome_response(500, "exception", "internal error (logged); the request was not completed")
