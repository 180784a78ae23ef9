"""The shape of R5 types (elements, their types, cardinality) read from the fhir.resources models."""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from functools import cache
from typing import Any

from fhir.resources import get_fhir_model_class
from fhir.resources.R4B import get_fhir_model_class as r4b_model_class
from fhir_core.fhirabstractmodel import FHIRAbstractModel

PRIMITIVE_BY_MARKER = {
    "Base64Binary": "base64Binary",
    "Boolean": "boolean",
    "Canonical": "canonical",
    "Code": "code",
    "Date": "date",
    "DateTime": "dateTime",
    "Decimal": "decimal",
    "Id": "id",
    "Instant": "instant",
    "Integer": "integer",
    "Integer64": "integer64",
    "Markdown": "markdown",
    "Oid": "oid",
    "PositiveInt": "positiveInt",
    "String": "string",
    "Time": "time",
    "UnsignedInt": "unsignedInt",
    "Uri": "uri",
    "Url": "url",
    "Uuid": "uuid",
    "Xhtml": "xhtml",
}


@dataclass(frozen=True)
class ElementInfo:
    """One element of a type as it appears in FHIR JSON."""

    name: str
    type_name: str
    is_list: bool
    is_primitive: bool
    meta: typing.Mapping[str, Any]
    # min >= 1 in R5: fhir.resources marks a required primitive with element_required and makes a
    # required complex element (Provenance.agent, say) a field without a default.
    required: bool = False

    @property
    def model(self) -> type[FHIRAbstractModel] | None:
        """The fhir.resources class of a complex element, or None for primitives."""
        return None if self.is_primitive else model_class(self.type_name)


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """Return the item type of a field annotation and whether the field is a list."""
    is_list = False
    while True:
        origin = typing.get_origin(annotation)
        if origin in (typing.Union, types.UnionType):
            annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
        elif origin is list:
            is_list = True
            annotation = typing.get_args(annotation)[0]
        else:
            return annotation, is_list


def _type_name(annotation: Any) -> tuple[str, bool]:
    if typing.get_origin(annotation) is typing.Annotated:
        marker = typing.get_args(annotation)[1]
        return PRIMITIVE_BY_MARKER.get(type(marker).__name__, "string"), True
    name = getattr(annotation, "__name__", str(annotation))
    if name.endswith("Type"):
        name = name[: -len("Type")]
    if name in {"bool", "str", "int", "float", "Decimal"}:
        return {"bool": "boolean", "int": "integer", "float": "decimal", "Decimal": "decimal"}.get(
            name, "string"
        ), True
    return name, False


@cache
def model_class(type_name: str, release: str = "5.0") -> type[FHIRAbstractModel]:
    """Return the fhir.resources class for a resource, datatype or backbone element name.

    ``release`` 4.3 or 4.0 gives fhir.resources' R4B class: it has no R4 models, and the types this
    publisher converts to R4 are R4's in R4B too (docs/versions.md), Basic included.
    """
    model: type[FHIRAbstractModel] = (
        get_fhir_model_class(type_name) if release == "5.0" else r4b_model_class(type_name)
    )
    return model


@cache
def elements(type_name: str, release: str = "5.0") -> dict[str, ElementInfo]:
    """Return the elements of a type keyed by their JSON name, in definition order (R5, or R4B's)."""
    out: dict[str, ElementInfo] = {}
    for field_name, info in model_class(type_name, release).model_fields.items():
        if field_name == "fhir_comments" or field_name.endswith("__ext"):
            continue
        item, is_list = _unwrap(info.annotation)
        name, primitive = _type_name(item)
        json_name = info.alias or field_name
        meta = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        required = info.is_required() or bool(meta.get("element_required"))
        out[json_name] = ElementInfo(json_name, name, is_list, primitive, meta, required)
    return out


@cache
def mandatory(type_name: str, release: str = "5.0") -> frozenset[str]:
    """The JSON names of a type's elements with min >= 1, every type of a mandatory choice among them.

    A choice element (``MedicationAdministration.occurence[x]``) is one field per type in fhir.resources,
    none of them required on its own; ``one_of_many_required`` says the choice is.
    """
    return frozenset(
        name
        for name, info in elements(type_name, release).items()
        if info.required or info.meta.get("one_of_many_required")
    )


def is_resource_type(name: str, release: str = "5.0") -> bool:
    """Whether ``name`` is a resource type of R5 (or R4B's, for 4.3 and 4.0), not a datatype or backbone."""
    try:
        cls = model_class(name, release)
    except (KeyError, ValueError, AttributeError):
        return False
    return any(base.__name__ == "Resource" for base in cls.__mro__) and cls.__name__ == name


def element_at(path: str, release: str = "5.0") -> ElementInfo | None:
    """Return the element at a dotted path such as ``ClinicalUseDefinition.warning.code``, or None."""
    head, *rest = path.split(".")
    current: ElementInfo | None = None
    type_name = head
    for name in rest:
        found = elements(type_name, release).get(name)
        if found is None:
            return None
        current, type_name = found, found.type_name
    return current


class Node(typing.NamedTuple):
    """One value found in a resource's JSON, typed by the R5 definitions.

    ``expression`` locates it (``Provenance.entity[0].what``); ``path`` is its element path without
    indexes (``Provenance.entity.what``), the key that ElementDefinitions use. (A named tuple: a resource
    has dozens, and every layer walks them.)
    """

    expression: str
    path: str
    type_name: str
    value: Any
    info: ElementInfo | None


@cache
def complex_elements(type_name: str, release: str = "5.0") -> dict[str, ElementInfo]:
    """The elements of a type that hold complex values (the ones :func:`walk_json` descends into)."""
    return {name: info for name, info in elements(type_name, release).items() if not info.is_primitive}


def walk_json(resource: typing.Mapping[str, Any], release: str = "5.0") -> typing.Iterator[Node]:
    """Yield the resource itself and every complex value below it, with its R5 type (or R4B's, for 4.3).

    Unknown elements are skipped (structure validation reports them); primitives are not yielded.
    Contained resources are walked as resources of their own type.
    """
    root = str(resource["resourceType"])
    yield Node(root, root, root, resource, None)
    stack: list[tuple[str, str, str, typing.Mapping[str, Any]]] = [(root, root, root, resource)]
    while stack:
        expression, path, type_name, node = stack.pop()
        known = complex_elements(type_name, release)
        for name, value in node.items():
            info = known.get(name)
            if info is None:
                continue
            items = value if isinstance(value, list) else [value]
            for index, item in enumerate(items):
                if not isinstance(item, dict):
                    continue
                child_type = info.type_name
                child_path = f"{path}.{name}"
                if child_type == "Resource" and "resourceType" in item:
                    child_type = child_path = str(item["resourceType"])
                child_expression = f"{expression}.{name}[{index}]" if info.is_list else f"{expression}.{name}"
                if child_type in {"Resource", "DomainResource"} or not _known_type(child_type, release):
                    continue
                yield Node(child_expression, child_path, child_type, item, info)
                stack.append((child_expression, child_path, child_type, item))


@cache
def _known_type(type_name: str, release: str = "5.0") -> bool:
    try:
        model_class(type_name, release)
    except (KeyError, ValueError, AttributeError):
        return False
    return True


@cache
def is_backbone(type_name: str, release: str = "5.0") -> bool:
    """Whether a type is a backbone element of one resource (inline), rather than a reusable datatype."""
    return any(base.__name__ == "BackboneElement" for base in model_class(type_name, release).__mro__)
