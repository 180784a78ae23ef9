"""Parse resources with fhir.resources (R5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir.resources import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel


def parse(resource: Mapping[str, Any]) -> FHIRAbstractModel:
    """Parse a resource dict into its fhir.resources R5 model (raises pydantic's ValidationError)."""
    cls = get_fhir_model_class(str(resource["resourceType"]))
    return cls.model_validate(resource)
