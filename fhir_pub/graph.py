"""The reference graph of a publication: which resource points at which, and whether R5 allows it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from fhir_core.fhirabstractmodel import FHIRAbstractModel

from fhir_pub.model import walk

ANY_RESOURCE = "Resource"


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


def links(model: FHIRAbstractModel) -> Iterator[Link]:
    """Yield every literal reference in ``model``.

    A ``CodeableReference`` carries the allowed target types on the element that holds it, not on
    its inner ``reference``, so the types are taken from the outer element.
    """
    inner_of_codeable: set[str] = set()
    for element in walk(model):
        kind = type(element.value).__name__
        allowed = tuple(element.meta.get("enum_reference_types", ()))
        if kind == "CodeableReference" and element.value.reference is not None:
            inner = f"{element.path}.reference"
            inner_of_codeable.add(inner)
            if element.value.reference.reference:
                yield Link(inner, element.value.reference.reference, allowed)
        elif kind == "Reference" and element.path not in inner_of_codeable and element.value.reference:
            yield Link(element.path, element.value.reference, allowed)
