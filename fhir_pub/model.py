"""Parse resources with fhir.resources (R5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fhir_core.fhirabstractmodel import FHIRAbstractModel

from fhir_pub.definitions import model_class


def parse(resource: Mapping[str, Any]) -> FHIRAbstractModel:
    """Parse a resource dict into its fhir.resources R5 model (raises pydantic's ValidationError).

    The class comes from ``model_class``, which looks it up once per type (the lookup imports a module).
    """
    return model_class(str(resource["resourceType"])).model_validate(resource)
