"""The reference graph of a publication: which resource points at which, and whether R5 allows it."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

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
    """The relative reference ``Type/id`` of a resource."""
    return f"{resource.get('resourceType')}/{resource.get('id')}"


@dataclass
class Graph:
    """Who refers to whom in a set of resources, and which leaflets each resource is traced to."""

    links: dict[str, list[Link]] = field(default_factory=dict)
    referenced_by: dict[str, list[str]] = field(default_factory=dict)
    used_by: dict[str, set[str]] = field(default_factory=dict)
    sources: dict[str, list[str]] = field(default_factory=dict)

    def environment(self, key: str) -> dict[str, list[str]]:
        """The FHIRPath environment our invariants read for one resource.

        ``%referencedBy``: who refers to it; ``%referrerTypes``: their types, each once, sorted (a value
        many resources share, so invariants on it are cheap to memoize); ``%sources``: the DocumentReferences
        its Provenance names as sources.
        """
        referrers = self.referenced_by.get(key, [])
        return {
            "referencedBy": referrers,
            "referrerTypes": sorted({r.split("/", 1)[0] for r in referrers}),
            "sources": self.sources.get(key, []),
        }


def build_graph(
    resources: Iterable[Mapping[str, Any]], nodes: Mapping[int, Sequence[Node]] | None = None
) -> Graph:
    """Collect every link between the resources, the referrers of each, and the sources of each.

    ``nodes`` may hold each resource's walk, by ``id(resource)``, to save walking it again.
    """
    graph = Graph()
    for resource in resources:
        key = key_of(resource)
        found = list(links(resource, (nodes or {}).get(id(resource))))
        graph.links[key] = found
        for link in found:
            graph.referenced_by.setdefault(link.reference, []).append(key)
            if not (
                resource.get("resourceType") in ANNOTATION_TYPES
                and link.path.startswith(f"{key.split('/')[0]}.target")
            ):
                graph.used_by.setdefault(link.reference, set()).add(key)
        if resource.get("resourceType") == "Provenance":
            sources = [
                entity["what"]["reference"]
                for entity in resource.get("entity", [])
                if isinstance(entity, dict)
                and entity.get("role") == "source"
                and isinstance(entity.get("what"), dict)
                and isinstance(entity["what"].get("reference"), str)
            ]
            for target in resource.get("target", []):
                if isinstance(target, dict) and isinstance(target.get("reference"), str):
                    graph.sources.setdefault(target["reference"], []).extend(sources)
    return graph
