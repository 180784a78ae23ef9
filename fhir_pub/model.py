"""Parse resources with fhir.resources (R5) and walk their elements together with the R5 metadata."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fhir.resources import get_fhir_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel


@dataclass(frozen=True)
class Element:
    """One populated element of a parsed resource.

    ``path`` is a FHIRPath-style location (``ClinicalUseDefinition.subject[0]``); ``meta`` is the
    element's R5 metadata as fhir.resources generated it (``enum_values`` for required codes,
    ``enum_reference_types`` for references).
    """

    path: str
    value: Any
    meta: Mapping[str, Any]


def parse(resource: Mapping[str, Any]) -> FHIRAbstractModel:
    """Parse a resource dict into its fhir.resources R5 model (raises pydantic's ValidationError)."""
    cls = get_fhir_model_class(str(resource["resourceType"]))
    return cls.model_validate(resource)


def walk(model: FHIRAbstractModel, path: str | None = None) -> Iterator[Element]:
    """Yield every populated element below ``model``, depth first, in model field order."""
    base = path if path is not None else model.get_resource_type()
    for name, info in type(model).model_fields.items():
        value = getattr(model, name, None)
        if value is None or name in {"fhir_comments"}:
            continue
        meta: Mapping[str, Any] = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            item_path = f"{base}.{name}[{index}]" if isinstance(value, list) else f"{base}.{name}"
            yield Element(item_path, item, meta)
            if isinstance(item, FHIRAbstractModel):
                yield from walk(item, item_path)
