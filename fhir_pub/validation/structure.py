"""Layer 1: structure, as fhir.resources (R5) parses it (the graph, layer 4, is the GraphCheck)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import Any

from pydantic import ValidationError

from fhir_pub.definitions import ElementInfo, Node, elements, walk_json
from fhir_pub.model import parse
from fhir_pub.validation.issues import Issue
from fhir_pub.validation.schema import fhirpath_of

PYDANTIC_CODES = {
    "extra_forbidden": "structure",
    "missing": "required",
    "model_field_validation.missing": "required",
}


def structure_issues(
    resource: Mapping[str, Any], source: str | None, nodes: Sequence[Node] | None = None
) -> list[Issue]:
    """Parse with fhir.resources and turn each error into an issue at its element."""
    root = str(resource.get("resourceType"))
    try:
        parse(resource)
    except ValidationError as exc:
        found = []
        for error in exc.errors():
            where = [
                part
                for part in error["loc"]
                if isinstance(part, int) or (isinstance(part, str) and part.isidentifier())
            ]
            expression = fhirpath_of(root, where)
            code = PYDANTIC_CODES.get(error["type"], "value")
            found.append(
                Issue(
                    "error",
                    code,
                    f"{expression}: {error['msg']}",
                    expression,
                    source,
                    error["type"],
                    "structure",
                )
            )
        return found
    except (
        TypeError,
        ValueError,
        KeyError,
        AttributeError,
        RecursionError,
    ) as exc:  # the models reject odd input oddly
        return [
            Issue(
                "error",
                "structure",
                f"{root}: not a valid resource ({type(exc).__name__})",
                root,
                source,
                None,
                "structure",
            )
        ]
    return list(json_type_issues(resource, source, nodes))


JSON_TYPES: dict[str, tuple[type, ...]] = {
    "boolean": (bool,),
    "integer": (int,),
    "integer64": (int, str),
    "positiveInt": (int,),
    "unsignedInt": (int,),
    "decimal": (int, float),
}


def json_type_issues(
    resource: Mapping[str, Any], source: str | None, nodes: Sequence[Node] | None = None
) -> Iterator[Issue]:
    """Primitive values must have their JSON type: ``true``, not ``"yes"`` (fhir.resources coerces both).

    https://hl7.org/fhir/R5/json.html#primitive: booleans and numbers are JSON booleans and numbers;
    every other primitive is a JSON string.
    """
    for node in nodes if nodes is not None else walk_json(resource):
        known = _primitives(node.type_name)
        for name, value in node.value.items():
            found = known.get(name)
            if found is None:
                continue
            info, expected = found
            values = value if isinstance(value, list) and info.is_list else [value]
            for index, item in enumerate(values):
                if item is None:
                    continue
                if (isinstance(item, bool) and bool not in expected) or not isinstance(item, expected):
                    where = f"{node.expression}.{name}" + (f"[{index}]" if info.is_list else "")
                    message = (
                        f"{where} must be a JSON {info.type_name}, not {type(item).__name__} {item!r:.40}"
                    )
                    yield Issue("error", "structure", message, where, source, "json-type", "structure")


@cache
def _primitives(type_name: str) -> dict[str, tuple[ElementInfo, tuple[type, ...]]]:
    """The primitive elements of a type, each with the JSON types its values may have."""
    return {
        name: (info, JSON_TYPES.get(info.type_name, (str,)))
        for name, info in elements(type_name).items()
        if info.is_primitive
    }
