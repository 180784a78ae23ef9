"""Snapshots of our profiles: each differential applied to the snapshot of its R5 base StructureDefinition.

https://hl7.org/fhir/R5/profiling.html#snapshot: a snapshot lists every element of the type, the base's
definitions with the differential's changes applied. Our differentials change cardinalities, ``pattern[x]``,
bindings and types, add constraints (``fhirpub-*``), slice a Coding list by ``system``, and reach into the
elements of a datatype (``DocumentReference.type.coding``): that datatype's own snapshot is then unfolded
below the element, as HL7's snapshot generators do. The R5 base snapshots come from
``fhir_pub/r5-snapshots.json.gz``, which ``scripts/r5-snapshots`` writes from hl7.fhir.r5.core 5.0.0
(the types our profiles constrain, and those they unfold).
"""

from __future__ import annotations

import copy
import gzip
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from fhir_pub.errors import FhirPubError

BASES = Path(__file__).with_name("r5-snapshots.json.gz")
R5 = "http://hl7.org/fhir/StructureDefinition/"
Element = dict[str, Any]
# Type name -> the snapshot elements of its R5 StructureDefinition.
Bases = Callable[[str], list[Element]]
# The element properties a differential states and the snapshot takes as they are (replacing the base's).
REPLACED = frozenset(
    {
        "sliceName",
        "slicing",
        "short",
        "definition",
        "comment",
        "requirements",
        "alias",
        "min",
        "max",
        "type",
        "binding",
        "mustSupport",
        "isModifier",
        "isModifierReason",
        "isSummary",
        "condition",
        "maxLength",
        "meaningWhenMissing",
        "label",
        "code",
        "extension",
    }
)
VALUES = ("pattern", "fixed", "defaultValue", "minValue", "maxValue")


class SnapshotError(FhirPubError):
    """A differential that cannot be applied to its base (an unknown element, a restated constraint)."""

    code = "structure"
    status = 422


@cache
def bundled_bases() -> Mapping[str, list[Element]]:
    """The R5 base snapshots this package carries, by type name (read once)."""
    document = orjson.loads(gzip.decompress(BASES.read_bytes()))
    types: dict[str, list[Element]] = document["types"]
    return types


def bundled(type_name: str) -> list[Element]:
    """The R5 snapshot elements of ``type_name`` from :func:`bundled_bases`; SnapshotError if not there."""
    found = bundled_bases().get(type_name)
    if found is None:
        raise SnapshotError(
            f"no R5 base snapshot for {type_name} in {BASES.name}: run scripts/r5-snapshots to add the "
            "types of new profiles"
        )
    return found


def generate(profile: Mapping[str, Any], bases: Bases = bundled) -> list[Element]:
    """The snapshot elements of ``profile`` (a constraint on an R5 type): the base's, differential applied.

    Each differential element, in order, is found by id in the snapshot (unfolding a datatype or adding a
    slice where it names one not there yet), then its properties replace the base's; its constraints are
    added after the base's, each with the profile as ``source``. A constraint key the element already has
    is a SnapshotError (eld-14: keys are unique per element), unless it restates the same expression.
    """
    url, name = str(profile.get("url")), str(profile.get("id"))
    base = str(profile.get("baseDefinition", ""))
    if profile.get("derivation") != "constraint" or base != f"{R5}{profile.get('type')}":
        raise SnapshotError(f"{name}: only constraints on an R5 type are supported (base {base})")
    elements = copy.deepcopy(bases(str(profile["type"])))
    for change in profile.get("differential", {}).get("element", []):
        index = _place(elements, str(change["id"]), bases, name)
        target = elements[index]
        if change.get("path", target["path"]) != target["path"]:
            raise SnapshotError(f"{name}: {change['id']} has path {change['path']}, not {target['path']}")
        _apply(target, change, url, name)
    return elements


def _apply(target: Element, change: Mapping[str, Any], url: str, name: str) -> None:
    """Apply one differential element's properties to its snapshot element."""
    for key, value in change.items():
        if key in ("id", "path"):
            continue
        if key == "constraint":
            have = {c["key"]: c for c in target.get("constraint", [])}
            for constraint in value:
                same = have.get(constraint["key"])
                if same is not None:
                    if same.get("expression") != constraint.get("expression"):
                        raise SnapshotError(
                            f"{name}: {change['id']} redefines constraint {constraint['key']} (eld-14)"
                        )
                    continue
                target.setdefault("constraint", []).append(
                    {**constraint, "source": constraint.get("source", url)}
                )
        elif key in REPLACED or key.startswith(VALUES):
            if key.startswith(VALUES):  # one value of each kind: a pattern replaces the base's pattern
                prefix = next(p for p in VALUES if key.startswith(p))
                for old in [k for k in target if k.startswith(prefix)]:
                    del target[old]
            target[key] = copy.deepcopy(value)
        else:
            raise SnapshotError(f"{name}: {change['id']}.{key} is not something this generator applies")


def _place(elements: list[Element], element_id: str, bases: Bases, name: str) -> int:
    """The position of ``element_id`` in ``elements``, unfolding a datatype or adding a slice to make it."""
    for index, element in enumerate(elements):
        if element["id"] == element_id:
            return index
    parent_id, _, last = element_id.rpartition(".")
    if not parent_id:
        raise SnapshotError(f"{name}: {element_id} is not an element of the base type")
    if ":" in last:  # a new slice of an element: after that element and the slices it already has
        sliced_id = f"{parent_id}.{last.split(':', 1)[0]}"
        at = _place(elements, sliced_id, bases, name)
        sliced = elements[at]
        end = _subtree_end(elements, at)
        entry = {k: copy.deepcopy(v) for k, v in sliced.items() if k not in ("slicing", "sliceName")}
        entry["id"], entry["sliceName"] = element_id, last.split(":", 1)[1]
        elements.insert(end, entry)
        return end
    at = _place(elements, parent_id, bases, name)
    parent = elements[at]
    if _subtree_end(elements, at) == at + 1:  # no children yet: unfold the element's datatype
        types = parent.get("type", [])
        if len(types) != 1:
            raise SnapshotError(f"{name}: {element_id}: {parent_id} has not exactly one type to unfold")
        kind = str(types[0]["code"])
        children = []
        for child in bases(kind)[1:]:
            unfolded = copy.deepcopy(child)
            unfolded["id"] = f"{parent_id}{child['id'][len(kind) :]}"
            unfolded["path"] = f"{parent['path']}{child['path'][len(kind) :]}"
            children.append(unfolded)
        elements[at + 1 : at + 1] = children
    for index in range(at + 1, _subtree_end(elements, at)):
        if elements[index]["id"] == element_id:
            return index
    raise SnapshotError(f"{name}: {element_id} is not an element of the base type")


def _subtree_end(elements: list[Element], at: int) -> int:
    """The position after the element at ``at``, its children and its slices (and theirs)."""
    own = elements[at]["id"]
    end = at + 1
    while end < len(elements) and elements[end]["id"].startswith((f"{own}.", f"{own}:")):
        end += 1
    return end


def with_snapshot(profile: Mapping[str, Any], bases: Bases = bundled) -> dict[str, Any]:
    """The profile with its generated ``snapshot`` (placed before ``differential``, as R5 orders them)."""
    elements = generate(profile, bases)
    out: dict[str, Any] = {}
    for key, value in profile.items():
        if key == "snapshot":
            continue
        if key == "differential":
            out["snapshot"] = {"element": elements}
        out[key] = value
    return out
