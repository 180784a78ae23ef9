"""The reference graph of a publication: who points at whom, whether R5 allows it, the publication rules."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from fhir_pub.conformance import CANONICAL_BASE
from fhir_pub.definitions import Node, walk_json

ANY_RESOURCE = "Resource"
# The publication's roots: nothing needs to point at them. Provenance annotates other resources, and
# its ``target`` is not a use: a resource that only its Provenance points at is still an orphan.
ROOT_TYPES = frozenset({"MedicationKnowledge"})
ANNOTATION_TYPES = frozenset({"Provenance"})


@dataclass(frozen=True)
class Link:
    """A literal reference found in a resource, with the target types R5 allows at that element."""

    path: str
    reference: str
    allowed: tuple[str, ...]

    @property
    def target_type(self) -> str:
        """The resource type named by a relative reference ``Type/id``."""
        return self.reference.split("/", 1)[0]

    def allows(self, resource_type: str) -> bool:
        """Whether R5 allows this element to point at ``resource_type``."""
        return ANY_RESOURCE in self.allowed or resource_type in self.allowed


def links(resource: Mapping[str, Any], nodes: Iterable[Node] | None = None) -> Iterator[Link]:
    """Yield every literal reference in a resource (as JSON), with the types R5 allows there.

    A ``CodeableReference`` carries the allowed target types on the element that holds it, not on its
    inner ``reference``, so the types are taken from the outer element.
    """
    inner_of_codeable: set[str] = set()
    for node in nodes if nodes is not None else walk_json(resource):
        if node.info is None:
            continue
        allowed = tuple(node.info.meta.get("enum_reference_types", ()))
        if node.type_name == "CodeableReference":
            inner = node.value.get("reference")
            inner_of_codeable.add(f"{node.expression}.reference")
            if isinstance(inner, dict) and isinstance(inner.get("reference"), str):
                yield Link(f"{node.expression}.reference", inner["reference"], allowed)
        elif node.type_name == "Reference" and node.expression not in inner_of_codeable:
            reference = node.value.get("reference")
            if isinstance(reference, str):
                yield Link(node.expression, reference, allowed)


def key_of(resource: Mapping[str, Any]) -> str:
    """The relative reference ``Type/id`` of a resource; ``Type/`` for one with no id."""
    identity = resource.get("id")
    return f"{resource.get('resourceType')}/{identity if isinstance(identity, str) else ''}"


@dataclass(frozen=True)
class Facts:
    """What the graph layer keeps of one resource: its key and its references, not its content.

    ``references``: every literal reference, in document order; ``uses``: those that make their target
    used (all but a Provenance's ``target``); ``sources``: for a Provenance, each target with the
    DocumentReferences it names as sources.
    """

    key: str
    kind: str
    references: tuple[str, ...]
    uses: tuple[str, ...]
    sources: tuple[tuple[str, tuple[str, ...]], ...] = ()


def facts_of(resource: Mapping[str, Any], found: Iterable[Link]) -> Facts:
    """The graph facts of one resource, from its links."""
    key, kind = key_of(resource), str(resource.get("resourceType"))
    references, uses = [], []
    for link in found:
        references.append(link.reference)
        if not (kind in ANNOTATION_TYPES and link.path.startswith(f"{kind}.target")):
            uses.append(link.reference)
    sources: list[tuple[str, tuple[str, ...]]] = []
    if kind == "Provenance":
        named = tuple(
            entity["what"]["reference"]
            for entity in _items(resource.get("entity"))
            if isinstance(entity, dict)
            and entity.get("role") == "source"
            and isinstance(entity.get("what"), dict)
            and isinstance(entity["what"].get("reference"), str)
        )
        sources = [
            (target["reference"], named)
            for target in _items(resource.get("target"))
            if isinstance(target, dict) and isinstance(target.get("reference"), str)
        ]
    return Facts(key, kind, tuple(references), tuple(uses), tuple(sources))


def _items(value: Any) -> list[Any]:
    """A list element's items; whatever else an invalid resource holds there counts as nothing."""
    return value if isinstance(value, list) else []


ENVIRONMENT = ("referencedBy", "referrerTypes", "sources")


class Referrals:
    """Who refers to whom in a set of resources, kept as keys only (memory grows with ids, not content).

    Keys are interned, so the many places one key is kept share one string. ``wanted`` names the
    environment variables some invariant reads: referrer lists are only kept when ``referencedBy`` is.
    """

    def __init__(self, wanted: Iterable[str] = ENVIRONMENT) -> None:
        self.wanted = frozenset(wanted)
        self.referrers: dict[str, list[str]] = {}
        self.referrer_types: dict[str, frozenset[str]] = {}
        self.sources: dict[str, tuple[str, ...]] = {}
        self.used: set[str] = set()
        self._types: dict[frozenset[str], frozenset[str]] = {}
        self._sources: dict[tuple[str, ...], tuple[str, ...]] = {}

    def add(self, facts: Facts) -> None:
        """Record one resource's references."""
        key = sys.intern(facts.key)
        for reference in facts.references:
            reference = sys.intern(reference)
            if "referencedBy" in self.wanted:
                self.referrers.setdefault(reference, []).append(key)
            types = self.referrer_types.get(reference, frozenset())
            if facts.kind not in types:
                merged = types | {facts.kind}
                self.referrer_types[reference] = self._types.setdefault(merged, merged)
        self.used.update(sys.intern(r) for r in facts.uses)
        for target, named in facts.sources:
            target = sys.intern(target)
            joined = self.sources.get(target, ()) + named
            self.sources[target] = self._sources.setdefault(joined, joined)

    def shape(self, key: str) -> tuple[int, int] | None:
        """What identifies ``environment(key)``: equal shapes, equal environments; None if unknown.

        Referrer types and sources are interned, so their identities stand for their values; referrer
        lists are not, so when ``referencedBy`` is wanted there is no shape.
        """
        if "referencedBy" in self.wanted:
            return None
        return id(self.referrer_types.get(key)), id(self.sources.get(key))

    def environment(self, key: str) -> dict[str, list[str]]:
        """The FHIRPath environment our invariants read for one resource.

        ``%referencedBy``: who refers to it; ``%referrerTypes``: their types, each once, sorted (a value
        many resources share, so invariants on it are cheap to memoize); ``%sources``: the DocumentReferences
        its Provenance names as sources.
        """
        return {
            "referencedBy": list(self.referrers.get(key, [])),
            "referrerTypes": sorted(self.referrer_types.get(key, ())),
            "sources": list(self.sources.get(key, ())),
        }


CLINICAL_USE_PROFILES = tuple(
    f"{CANONICAL_BASE}/StructureDefinition/fhir-pub-clinical-use-{kind}"
    for kind in ("indication", "contraindication", "interaction", "undesirable-effect", "warning")
)
FACT_BEARING_PROFILES = (
    *CLINICAL_USE_PROFILES,
    *(
        f"{CANONICAL_BASE}/StructureDefinition/fhir-pub-{name}"
        for name in ("medicationknowledge", "medication", "group")
    ),
)


@dataclass(frozen=True)
class PublicationRule:
    """A rule on one resource that only the whole publication can decide (who refers to it, who traces it).

    FHIRPath has no variable for another resource's references to this one, so these are not profile
    invariants: the graph layer applies each to every resource declaring one of ``profiles``, once the
    whole set is read (profiles/README.md, "Publication rules").
    """

    key: str
    human: str
    profiles: tuple[str, ...]
    needs_referrer: str | None = None  # the rule holds when a resource of this type refers to it
    needs_source: bool = False  # the rule holds when a Provenance names a source DocumentReference for it

    def holds(self, referrals: Referrals, key: str) -> bool:
        """Whether the resource ``key`` keeps this rule in the graph ``referrals`` records."""
        if self.needs_referrer is not None and self.needs_referrer not in referrals.referrer_types.get(
            key, ()
        ):
            return False
        return not (self.needs_source and not referrals.sources.get(key))


PUBLICATION_RULES = (
    PublicationRule(
        "fhirpub-cud-1",
        "Every ClinicalUseDefinition is reachable from a MedicationKnowledge (clinicalUseIssue)",
        CLINICAL_USE_PROFILES,
        needs_referrer="MedicationKnowledge",
    ),
    PublicationRule(
        "fhirpub-prov-1",
        "Every fact-bearing resource is traced by a Provenance to at least one source DocumentReference "
        "(entity.role = source)",
        FACT_BEARING_PROFILES,
        needs_source=True,
    ),
)


def rules_for(profiles: Iterable[str]) -> tuple[PublicationRule, ...]:
    """The publication rules that apply to a resource declaring ``profiles`` (canonicals, ``|version`` ok)."""
    declared = {url.split("|", 1)[0] for url in profiles}
    return tuple(rule for rule in PUBLICATION_RULES if declared.intersection(rule.profiles))
