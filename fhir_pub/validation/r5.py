"""What the official R5 definitions say that fhir.resources' models do not: invariants and element order.

``r5-definitions.json`` beside this module is written by ``scripts/r5-definitions`` from the package
hl7.fhir.r5.core 5.0.0 (https://hl7.org/fhir/R5/downloads.html; the specification is CC0).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from fhir_pub.definitions import element_at

R5_DEFINITIONS = Path(__file__).with_name("r5-definitions.json")


@cache
def _types() -> dict[str, Any]:
    types: dict[str, Any] = orjson.loads(R5_DEFINITIONS.read_bytes())["types"]
    return types


@cache
def base_constraints(type_name: str) -> tuple[tuple[str, Mapping[str, str]], ...]:
    """The R5 invariants of a type as (element path, constraint), those of its bases first.

    An inherited constraint is defined once, on the type that defines it (dom-2..dom-6 on DomainResource),
    and laid onto ``type_name`` here: the path ``DomainResource`` becomes ``Organization``. Unknown types
    have none.
    """
    types = _types()
    lineage: list[str] = []
    name: str | None = type_name
    while name in types:
        lineage.append(name)
        name = types[name]["base"]
    out: list[tuple[str, Mapping[str, str]]] = []
    for ancestor in reversed(lineage):
        for path, key, severity, human, expression in types[ancestor]["constraints"]:
            constraint = {"key": key, "severity": severity, "human": human, "expression": expression}
            out.append((type_name + path[len(ancestor) :], constraint))
    return tuple(out)


def element_order(type_name: str, element_id: str) -> tuple[tuple[int, int], ...]:
    """Where an element (by its id, slices included) falls in the order of its type's elements.

    Per step of the id: the element's place among its siblings in R5's snapshot, then 0 for the element
    itself or 1 for a slice of it (slices follow their element). Below an element of a datatype the
    datatype's own order applies (``DocumentReference.type.coding``: Coding's place in CodeableConcept).
    https://hl7.org/fhir/R5/elementdefinition.html#interpretation: a differential keeps the base's order.
    """
    types = _types()
    current, below, plain = type_name, "", type_name
    out = []
    for step in element_id.split(".")[1:]:
        name, _, slice_name = step.partition(":")
        siblings: list[str] = types[current]["children"][below]
        if name not in siblings:  # a choice by one of its types: valueRange for value[x]
            name = next(s for s in siblings if s.endswith("[x]") and name.startswith(s[:-3]))
        out.append((siblings.index(name), 1 if slice_name else 0))
        below = f"{below}.{name}" if below else name
        plain = f"{plain}.{name}"
        if below not in types[current]["children"]:  # a datatype: continue in its own elements
            info = element_at(plain.replace("[x]", ""))
            if info is not None and info.type_name in types:
                current, below = info.type_name, ""
    return tuple(out)
