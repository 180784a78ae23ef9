"""The conformance resources in ``profiles/``: StructureDefinitions and ValueSets, by canonical URL."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from fhir_pub.errors import PublicationError
from fhir_pub.publication import bundled_dir, read_json, resource_files

Resource = dict[str, Any]
CANONICAL_BASE = "http://fhir-pub.org/fhir"
R5_BASE = "http://hl7.org/fhir/StructureDefinition/"


@dataclass(frozen=True)
class Conformance:
    """Every conformance resource of a publication, keyed by canonical URL."""

    root: Path
    by_url: dict[str, Resource] = field(default_factory=dict)

    def of_type(self, resource_type: str) -> list[Resource]:
        """Return the resources of one type, ordered by URL."""
        return [r for url, r in sorted(self.by_url.items()) if r["resourceType"] == resource_type]

    @cached_property
    def resource_profiles(self) -> dict[str, Resource]:
        """The resource profiles (StructureDefinition kind=resource), by URL."""
        return {sd["url"]: sd for sd in self.of_type("StructureDefinition") if sd.get("kind") == "resource"}

    @cached_property
    def datatype_profiles(self) -> dict[str, Resource]:
        """The datatype profiles, by the datatype they constrain.

        By this project's convention (profiles/README.md) a datatype profile applies to every element of
        its type in every resource validated against one of our resource profiles.
        """
        return {
            sd["type"]: sd
            for sd in self.of_type("StructureDefinition")
            if sd.get("kind") in {"complex-type", "primitive-type"} and sd.get("derivation") == "constraint"
        }

    def expand(self, url: str) -> frozenset[tuple[str, str]] | None:
        """Return the (system, code) pairs of a value set, or None when it cannot be enumerated here.

        Supports ``include.concept``, ``include.valueSet`` and whole code systems whose CodeSystem is in
        ``profiles/`` with ``content = complete``; ``exclude`` and filters make a set non-enumerable.
        """
        return self._expand(url.split("|", 1)[0], frozenset())

    def _expand(self, url: str, seen: frozenset[str]) -> frozenset[tuple[str, str]] | None:
        value_set = self.by_url.get(url)
        if value_set is None or value_set["resourceType"] != "ValueSet" or url in seen:
            return None
        compose = value_set.get("compose", {})
        if compose.get("exclude"):
            return None
        codes: set[tuple[str, str]] = set()
        for include in compose.get("include", []):
            if include.get("filter"):
                return None
            part = self._include(include, seen | {url})
            if part is None:
                return None
            codes |= part
        return frozenset(codes)

    def _include(self, include: Resource, seen: frozenset[str]) -> set[tuple[str, str]] | None:
        system = include.get("system")
        members: set[tuple[str, str]] | frozenset[tuple[str, str]] | None = None
        if system and include.get("concept"):
            members = {(system, c["code"]) for c in include["concept"]}
        elif system:
            code_system = self.by_url.get(system)
            if code_system is None or code_system.get("content") != "complete":
                return None
            members = {(system, code) for code in _codes(code_system.get("concept", []))}
        for nested in include.get("valueSet", []):
            part = self._expand(nested, seen)
            if part is None:
                return None
            members = part if members is None else members & part
        return set(members) if members is not None else set()


def _codes(concepts: list[Resource]) -> Iterator[str]:
    for concept in concepts:
        yield concept["code"]
        yield from _codes(concept.get("concept", []))


def load_conformance(root: Path | None = None) -> Conformance:
    """Read every conformance resource below ``root`` (default: the bundled ``profiles/``)."""
    root = root if root is not None else bundled_dir("profiles")
    by_url: dict[str, Resource] = {}
    for path in resource_files(root):
        resource = read_json(path)
        url = resource.get("url") if isinstance(resource, dict) else None
        if not url:
            raise PublicationError(f"{path}: a conformance resource needs a canonical url")
        if url in by_url:
            raise PublicationError(f"{path}: duplicate canonical url {url}")
        by_url[url] = resource
    return Conformance(root=root, by_url=by_url)
