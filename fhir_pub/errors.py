"""The one error type of fhir-pub, carrying what an OperationOutcome issue needs."""

from __future__ import annotations


class FhirPubError(Exception):
    """An error that fhir-pub reports to its user as an OperationOutcome issue.

    ``code`` is an issue-type code (http://hl7.org/fhir/R5/valueset-issue-type.html) and
    ``status`` the HTTP status a server answers with.
    """

    code = "exception"
    status = 500

    def __init__(
        self, diagnostics: str, *, expression: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = expression
        self.headers = headers or {}


class PublicationError(FhirPubError):
    """The publication on disk cannot be read as a set of FHIR resources."""

    code = "structure"
    status = 422


class Invalid(FhirPubError):
    """A request that cannot be run as sent (a bad parameter or body): 400."""

    code = "invalid"
    status = 400


class TooCostly(FhirPubError):
    """A request that would take more than the server spends on one answer: 400 ``too-costly``.

    A 4xx, not a 5xx: the publication is immutable, so the same request would cost the same again; the
    client has to narrow it. https://hl7.org/fhir/R5/http.html#search: 400 when a search cannot be processed.
    """

    code = "too-costly"
    status = 400


class UnsupportedMediaType(FhirPubError):
    """A request body in a format this server does not read: 415."""

    code = "not-supported"
    status = 415


class TooManyRequests(FhirPubError):
    """Too many requests or jobs at once: 429, with Retry-After."""

    code = "throttled"
    status = 429


class Gone(FhirPubError):
    """Something that existed and has expired: 410."""

    code = "expired"
    status = 410


class NotFound(FhirPubError):
    """No resource, version or route at this address."""

    code = "not-found"
    status = 404


class NotSupported(FhirPubError):
    """A resource type, interaction or operation this publication does not offer."""

    code = "not-supported"
    status = 404


class MethodNotAllowed(FhirPubError):
    """A write to a read-only publication."""

    code = "not-supported"
    status = 405


class NotAcceptable(FhirPubError):
    """A format this server cannot produce."""

    code = "not-supported"
    status = 406
