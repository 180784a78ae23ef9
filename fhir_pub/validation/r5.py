"""What the official R5 definitions say that fhir.resources' models do not: invariants and element order.

``r5-definitions.json`` beside this module is written by ``scripts/r5-definitions`` from the package
hl7.fhir.r5.core 5.0.0 (https://hl7.org/fhir/R5/downloads.html; the specification is CC0). R4B's
invariants, for the converted R4B forms (``fhir_pub.validation.earlier``), are in ``r4b-definitions.json``,
written by ``scripts/r4b-definitions`` from hl7.fhir.r4b.core 4.3.0 (https://hl7.org/fhir/R4B/downloads.html)
in the same shape, less the element order.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from fhir_pub.definitions import element_at

R5_DEFINITIONS = Path(__file__).with_name("r5-definitions.json")
R4B_DEFINITIONS = Path(__file__).with_name("r4b-definitions.json")
DEFINITIONS = {"5.0": R5_DEFINITIONS, "4.3": R4B_DEFINITIONS}  # by FHIR release


@cache
def _types(release: str = "5.0") -> dict[str, Any]:
    types: dict[str, Any] = orjson.loads(DEFINITIONS[release].read_bytes())["types"]
    return types


@cache
def core_types(release: str = "5.0") -> frozenset[str]:
    """The names of the release's types: resources, datatypes and primitives (not backbone elements)."""
    return frozenset(_types(release))


@cache
def datatypes(release: str = "5.0") -> tuple[str, ...]:
    """The release's datatypes and primitives: its types that do not specialize Resource."""
    types = _types(release)

    def is_resource(name: str | None) -> bool:
        while name is not None and name != "Resource":
            name = types.get(name, {}).get("base")
        return name == "Resource"

    return tuple(name for name in types if not is_resource(name))


@cache
def r4b_model() -> dict[str, Any]:
    """The FHIRPath model for R4B: fhirpathpy's R4 one, with R4B's choice elements, bases, references.

    fhirpathpy has no R4B model. Its R4 model would leave out what R4B added (``valueCodeableReference``
    is no ``value`` to it, so ext-1 would fail on a sound extension); R4B's own definitions replace those
    parts. Element types by path (``path2Type``) stay R4's, which R4B's datatypes share; the paths of
    resources R4B added are untyped there, as an unknown path is.
    """
    from fhirpathpy.models import models

    types = _types("4.3")
    model = dict(models["r4"])
    model["choiceTypePaths"] = {
        path: t for entry in types.values() for path, t in entry.get("choices", {}).items()
    }
    model["pathsDefinedElsewhere"] = {
        path: target for entry in types.values() for path, target in entry.get("elsewhere", {}).items()
    }
    model["type2Parent"] = {name: entry["base"] for name, entry in types.items() if entry["base"]}
    return model


@cache
def base_constraints(type_name: str, release: str = "5.0") -> tuple[tuple[str, Mapping[str, str]], ...]:
    """The invariants of a type in R5 (or R4B, 4.3) as (element path, constraint), those of its bases first.

    An inherited constraint is defined once, on the type that defines it (dom-2..dom-6 on DomainResource),
    and laid onto ``type_name`` here: the path ``DomainResource`` becomes ``Organization``. Unknown types
    have none.
    """
    types = _types(release)
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
