"""Mutants of valid resources, each broken in one known way, to measure what the validator catches.

From a resource the official build accepts, :func:`mutants` derives at most one mutant of each kind:

- ``code``: a ``code`` under a required R5 binding (``r5-bindings.json``) replaced by a non-member;
- ``concept``: the code of a Coding or CodeableConcept under a required R5 binding replaced by a
  non-member, its system kept (every coding of the ValueSet, so no translation still satisfies it);
- ``required``: an element R5 gives min 1 (the fhir.resources models, generated from the official
  definitions) removed;
- ``datatype``: a primitive given a value of the wrong kind (a string where a boolean or a number goes,
  a non-date where a date goes);
- ``invariant``: a simple R5 invariant broken where it applies (per-1: a Period ending before it starts;
  ext-1: an extension with both a value and extensions; ref-1: a local reference to nothing contained).

Each mutant says what was changed and where, so a missed one can be listed and looked at. The choice is
deterministic (the first candidate in the resource's walk order), so a run is reproducible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import orjson

from fhir_pub.definitions import Node, elements, mandatory, walk_json
from fhir_pub.validation.bindings import codings_of, location, required_codes, required_concepts

KINDS = ("code", "concept", "required", "datatype", "invariant")
NOT_A_CODE = "not-a-member-code"
# The wrong value given to a primitive of each type: the wrong JSON type, or a string no lexical form has.
BROKEN_VALUES: dict[str, Any] = {
    "boolean": "true",
    "integer": "1",
    "positiveInt": "1",
    "unsignedInt": "1",
    "decimal": "1.5",
    "date": "not-a-date",
    "dateTime": "not-a-date",
    "instant": "not-an-instant",
}


@dataclass(frozen=True)
class Mutant:
    """One resource broken in one way: the kind, where (a FHIRPath), what was done, the broken resource."""

    kind: str
    where: str
    change: str
    resource: dict[str, Any]


def _copy(resource: Mapping[str, Any]) -> dict[str, Any]:
    copied: dict[str, Any] = orjson.loads(orjson.dumps(resource))
    return copied


# A finder looks at one node of the copy and, if it can break it, breaks it in place and says how.
Finder = Callable[[Node], tuple[str, str] | None]


def _first(resource: Mapping[str, Any], kind: str, finder: Finder) -> Mutant | None:
    copied = _copy(resource)
    for node in walk_json(copied):
        found = finder(node)
        if found is not None:
            where, change = found
            return Mutant(kind, where, change, copied)
    return None


def _code(node: Node) -> tuple[str, str] | None:
    for name, value in node.value.items():
        allowed = required_codes(node.path, node.type_name, name)
        if allowed is None or not isinstance(value, (str, list)):
            continue
        if isinstance(value, list):
            index = next((i for i, v in enumerate(value) if isinstance(v, str)), None)
            if index is None:
                continue
            value[index] = NOT_A_CODE
            where = f"{node.expression}.{name}[{index}]"
        else:
            node.value[name] = NOT_A_CODE
            where = f"{node.expression}.{name}"
        return where, f"code replaced by {NOT_A_CODE!r} (not in the required ValueSet)"
    return None


def _concept(node: Node) -> tuple[str, str] | None:
    for name, value in node.value.items():
        allowed = required_concepts(node.path, node.type_name, name)
        info = elements(node.type_name).get(name)
        if allowed is None or info is None:
            continue
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            if not isinstance(item, dict):
                continue
            members = [
                c for c in codings_of(item, info.type_name) if (c.get("system"), c.get("code")) in allowed
            ]
            if not members:
                continue
            for coding in members:
                coding["code"] = NOT_A_CODE
            where = location(node, name, index if isinstance(value, list) else None)
            return (
                where,
                f"{info.type_name} code replaced by {NOT_A_CODE!r} (system kept; not in the ValueSet)",
            )
    return None


def _required(node: Node) -> tuple[str, str] | None:
    needed = mandatory(node.type_name)
    for name in list(node.value):
        if name in needed:
            choice = elements(node.type_name)[name].meta.get("one_of_many_required")
            if choice and sum(other in needed and other in node.value for other in node.value) > 1:
                continue  # a choice given twice: removing one leaves the other
            del node.value[name]
            node.value.pop(f"_{name}", None)
            return f"{node.expression}.{name}", "required element removed (min 1 in R5)"
    return None


def _datatype(node: Node) -> tuple[str, str] | None:
    known = elements(node.type_name)
    for name, value in node.value.items():
        info = known.get(name)
        if info is None or not info.is_primitive or info.type_name not in BROKEN_VALUES:
            continue
        if info.is_list or value is None:
            continue
        broken = BROKEN_VALUES[info.type_name]
        node.value[name] = broken
        return f"{node.expression}.{name}", f"{info.type_name} given {broken!r}"
    return None


def _invariant(node: Node) -> tuple[str, str] | None:
    value = node.value
    if node.type_name == "Period":
        start, end = value.get("start"), value.get("end")
        if isinstance(start, str) and isinstance(end, str) and len(start) == len(end) and start < end:
            value["start"], value["end"] = end, start
            return node.expression, "per-1 broken: start and end swapped"
    has_value = any(k.startswith("value") for k in value)
    if node.type_name == "Extension" and has_value and "extension" not in value and "url" in value:
        value["extension"] = [{"url": "http://example.org/broken", "valueString": "x"}]
        return node.expression, "ext-1 broken: a value and extensions"
    return None


def _reference(node: Node) -> tuple[str, str] | None:
    if node.type_name == "Reference" and isinstance(node.value.get("reference"), str):
        node.value["reference"] = "#not-contained"
        return f"{node.expression}.reference", "ref-1 broken: a local reference to nothing contained"
    return None


def mutants(resource: Mapping[str, Any]) -> Iterator[Mutant]:
    """At most one mutant of each kind of :data:`KINDS`, where the resource has something to break."""
    finders: tuple[tuple[str, Finder], ...] = (
        ("code", _code),
        ("concept", _concept),
        ("required", _required),
        ("datatype", _datatype),
    )
    for kind, finder in finders:
        found = _first(resource, kind, finder)
        if found is not None:
            yield found
    broken = _first(resource, "invariant", _invariant) or _first(resource, "invariant", _reference)
    if broken is not None:
        yield broken
