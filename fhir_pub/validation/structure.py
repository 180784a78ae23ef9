"""Layer 1: structure, as fhir.resources (R5) parses it (the graph, layer 4, is the GraphCheck)."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterator, Mapping, Sequence
from functools import cache
from typing import Any

from fhir.resources.element import Element
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
# R5's integer64 runs from -2^63 (https://hl7.org/fhir/R5/datatypes.html#integer64); fhir.resources' bound
# is one above it, so it refuses the least value, which HL7's own examples use (Bundle-types,
# minValueInteger64).
INTEGER64_MIN = -(2**63)
MODELS_INTEGER64_MIN = INTEGER64_MIN + 1


# fhir.resources' Extension has no ``_value[x]`` fields, so it refuses the id and extensions of an extension's
# primitive value (https://hl7.org/fhir/R5/json.html#primitive), as in HL7's own CodeSystem examples.
_EXTENSION_PRIMITIVE = re.compile(r"_value[A-Z][A-Za-z0-9]*")


def _errors(exc: ValidationError, resource: Mapping[str, Any]) -> list[Any]:
    """fhir.resources' errors, less where its models refuse what R5 allows (those parts checked otherwise).

    pydantic checks a model's required elements only once its fields are valid, so when every field error
    was such a refusal, the resource is parsed again with those parts set aside, for the errors behind them.
    """
    found: list[Any] = []
    set_aside: list[tuple[tuple[Any, ...], Any]] = []  # where, and what to put there (DROP: remove it)
    for error in exc.errors():
        if _models_mistake(error):
            least = MODELS_INTEGER64_MIN
            set_aside.append((error["loc"], str(least) if isinstance(error["input"], str) else least))
            continue
        element = _extension_primitive(error, resource)
        if element is None:
            found.append(error)
            continue
        set_aside.append((error["loc"], DROP))
        try:  # what the models left unchecked is an Element: an id and extensions
            Element.model_validate(element)
        except ValidationError as inner:
            found += [{**e, "loc": (*error["loc"], *e["loc"])} for e in inner.errors()]
    if set_aside and not found:
        patched = _patched(resource, set_aside)
        if patched is not None:
            try:
                parse(patched)
            except ValidationError as again:
                found = _errors(again, patched)
    return found


DROP = object()


def _patched(resource: Mapping[str, Any], changes: list[tuple[tuple[Any, ...], Any]]) -> Any:
    """A copy of ``resource`` with each change made (a value replaced, or dropped), or None if one is lost."""
    copied: Any = copy.deepcopy(resource)
    for loc, value in changes:
        node = copied
        try:
            for part in loc[:-1]:
                node = node[part]
            if value is DROP:
                del node[loc[-1]]
            else:
                node[loc[-1]] = value
        except (KeyError, IndexError, TypeError):
            return None
    return copied


def _extension_primitive(error: Mapping[str, Any], resource: Mapping[str, Any]) -> Any:
    """The ``_value[x]`` of an Extension the models refused as an unknown element, or None."""
    loc = error["loc"]
    if error["type"] != "extra_forbidden" or len(loc) < 3 or not isinstance(loc[-1], str):
        return None
    info = elements("Extension").get(loc[-1][1:])
    if not _EXTENSION_PRIMITIVE.fullmatch(loc[-1]) or info is None or not info.is_primitive:
        return None
    if not isinstance(loc[-2], int) or loc[-3] not in ("extension", "modifierExtension"):
        return None
    node: Any = resource
    try:
        for part in loc[:-1]:
            node = node[part]
    except (KeyError, IndexError, TypeError):
        return None
    return node[loc[-1]] if isinstance(node, Mapping) and loc[-1] in node else None


def _models_mistake(error: Mapping[str, Any]) -> bool:
    """Whether a fhir.resources error refuses what R5 allows (the one known case: integer64's least value)."""
    if error["type"] != "greater_than_equal" or error.get("ctx", {}).get("ge") != MODELS_INTEGER64_MIN:
        return False
    try:
        return int(error["input"]) == INTEGER64_MIN
    except (TypeError, ValueError):
        return False


def structure_issues(
    resource: Mapping[str, Any], source: str | None, nodes: Sequence[Node] | None = None
) -> list[Issue]:
    """Parse with fhir.resources and turn each error into an issue at its element."""
    root = str(resource.get("resourceType"))
    try:
        parse(resource)
    except ValidationError as exc:
        found = []
        for error in _errors(exc, resource):
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
        if found:
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
