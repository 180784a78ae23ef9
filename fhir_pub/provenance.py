"""Where each part of a resource comes from: its Provenance targets, element by element.

A Provenance names its sources (``entity``, role ``source``) and what they state (``target``). A target
with R5 ``targetPath`` extensions points at elements of the resource, so one resource can trace each
fact-bearing element to the sources that state it; a target without them covers the whole resource.
https://hl7.org/fhir/extensions/StructureDefinition-targetPath.html
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fhir_pub.narrative import target_paths

WHOLE = ""  # the part a target without targetPath covers


def sources_by_part(key: str, provenances: Iterable[Mapping[str, Any]]) -> dict[str, list[Mapping[str, Any]]]:
    """Map each part of resource ``key`` (a targetPath, or ``WHOLE``) to the source references stating it.

    Parts come in the order the Provenances list them; each source is named once per part.
    """
    parts: dict[str, list[Mapping[str, Any]]] = {}
    for provenance in provenances:
        if provenance.get("resourceType") != "Provenance":
            continue
        named = [
            entity["what"]
            for entity in provenance.get("entity", [])
            if isinstance(entity, Mapping)
            and entity.get("role") == "source"
            and isinstance(entity.get("what"), Mapping)
            and isinstance(entity["what"].get("reference"), str)
        ]
        for target in provenance.get("target", []):
            if not isinstance(target, Mapping) or target.get("reference") != key:
                continue
            for part in target_paths(target) or [WHOLE]:
                known = parts.setdefault(part, [])
                known.extend(s for s in named if s not in known)
    return parts


def element_paths(value: Any, path: str) -> list[str]:
    """Every element path in ``value``, with indexes, in document order."""
    if isinstance(value, Mapping):
        return [path, *(p for key, item in value.items() for p in element_paths(item, f"{path}.{key}"))]
    if isinstance(value, list):
        return [p for i, item in enumerate(value) for p in element_paths(item, f"{path}[{i}]")]
    return [path]


def in_document_order(
    resource: Mapping[str, Any], parts: dict[str, list[Mapping[str, Any]]]
) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """The parts of ``sources_by_part`` in the order their elements come in the resource; the whole first."""
    order = {
        path: i
        for i, path in reversed(list(enumerate(element_paths(resource, str(resource.get("resourceType"))))))
    }
    return sorted(parts.items(), key=lambda item: -1 if item[0] == WHOLE else order.get(item[0], len(order)))
