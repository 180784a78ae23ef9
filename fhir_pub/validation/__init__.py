"""Validation of resources against the publication's profiles, in four layers (see ``validator``)."""

from fhir_pub.validation.issues import Issue, operation_outcome
from fhir_pub.validation.validator import (
    Candidate,
    Report,
    Validator,
    candidate_from_bytes,
    candidate_from_file,
)

__all__ = [
    "Candidate",
    "Issue",
    "Report",
    "Validator",
    "candidate_from_bytes",
    "candidate_from_file",
    "operation_outcome",
]
