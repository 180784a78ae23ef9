"""One handler turns every failure into an OperationOutcome with the right status."""

from __future__ import annotations

import logging
import re

import orjson
from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from fhir_pub.errors import FhirPubError
from fhir_pub.handlers import Answer
from fhir_pub.validation.issues import Issue, operation_outcome
from fhir_pub.web import formats

log = logging.getLogger(__name__)
# How werkzeug's own errors (unknown route, wrong method, ...) read as issue types.
HTTP_CODES = {
    404: "not-found",
    405: "not-supported",
    406: "not-supported",
    413: "too-long",
    415: "not-supported",
}


def outcome(status: int, code: str, message: str, expression: str | None = None) -> Answer:
    """The one error shape: an OperationOutcome with one issue.

    ``expression`` is kept only when it is a FHIRPath into a resource; a request's own locations (a query
    parameter such as ``type:below``, a header) are named in the message instead, as R5 asks.
    """
    if expression is not None and not _fhirpath(expression):
        if expression not in message:
            message = f"{expression}: {message}"
        expression = None
    issue = Issue("error" if status < 500 else "fatal", code, message, expression, layer="request")
    return Answer(orjson.dumps(operation_outcome([issue])), status=status)


def outcome_response(status: int, code: str, message: str) -> Response:
    """The error as FHIR JSON, for answers made outside a request's context (the WSGI limits)."""
    return Response(outcome(status, code, message).body, status=status, content_type=formats.FHIR_JSON)


def _fhirpath(expression: str) -> bool:
    """Whether a location reads as a FHIRPath into a resource (``Patient.name[0]``), not a parameter."""
    return (
        bool(re.fullmatch(r"[A-Z][A-Za-z]+(\.[a-z][A-Za-z0-9]*(\[\d+\])?)*", expression))
        and "." in expression
    )


def register(app: Flask) -> None:
    """Install the handlers on an app."""

    @app.errorhandler(FhirPubError)
    def fhir_pub_error(error: FhirPubError) -> Response:
        answer = outcome(error.status, error.code, error.diagnostics, error.expression)
        return formats.respond(answer, request, error.headers)

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        answer = outcome(status, HTTP_CODES.get(status, "processing"), error.description or error.name)
        headers = {}
        if status == 405 and error.valid_methods:  # type: ignore[attr-defined]
            headers["Allow"] = ", ".join(error.valid_methods)  # type: ignore[attr-defined]
        return formats.respond(answer, request, headers)

    @app.errorhandler(Exception)
    def unexpected(error: Exception) -> Response:
        log.exception("unexpected error")
        # Plain FHIR JSON, whatever was asked: rendering is one more thing that could fail here.
        return outcome_response(500, "exception", "internal error (logged); the request was not completed")
