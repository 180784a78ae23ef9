"""The one error type of fhir-pub, carrying what an OperationOutcome issue needs."""

from __future__ import annotations


class FhirPubError(Exception):
    """An error that fhir-pub reports to its user as an OperationOutcome issue.

    ``code`` is an issue-type code (http://hl7.org/fhir/R5/valueset-issue-type.html) and
    ``status`` the HTTP status a server answers with.
    """

    code = "exception"
    status = 500

    def __init__(self, diagnostics: str, *, expression: str | None = None) -> None:
        super().__init__(diagnostics)
        self.diagnostics = diagnostics
        self.expression = expression


class PublicationError(FhirPubError):
    """The publication on disk cannot be read as a set of FHIR resources."""

    code = "structure"
    status = 422
