"""The conformance resources in ``profiles/``: StructureDefinitions and ValueSets, by canonical URL."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from fhir_pub.errors import PublicationError
from fhir_pub.narrative import render
from fhir_pub.publication import bundled_dir, read_json, resource_files

Resource = dict[str, Any]
CANONICAL_BASE = "http://fhir-pub.org/fhir"
# Every code the publication may use, each confirmed against a published source (profiles/README.md).
VERIFIED_CODES = f"{CANONICAL_BASE}/ValueSet/verified-codes"
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

    def draws_on(self, url: str, other: str) -> bool:
        """Whether value set ``url`` is ``other`` or includes it, directly or through nested value sets."""
        todo, seen = [url.split("|", 1)[0]], set()
        while todo:
            current = todo.pop()
            if current == other:
                return True
            value_set = self.by_url.get(current)
            if current in seen or value_set is None or value_set["resourceType"] != "ValueSet":
                continue
            seen.add(current)
            for include in value_set.get("compose", {}).get("include", []):
                todo.extend(nested.split("|", 1)[0] for nested in include.get("valueSet", []))
        return False

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


def load_conformance(root: Path | None = None, verified_codes: Path | None = None) -> Conformance:
    """Read every conformance resource below ``root`` (default: the bundled ``profiles/``).

    ``verified_codes``, a project's own ``verified-codes.json``, adds its codes to the profiles'
    verified-codes value set (see :func:`extend_verified`).
    """
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
    if verified_codes is not None:
        extended = extend_verified(by_url.get(VERIFIED_CODES), verified_codes)
        if extended is not None:
            by_url[VERIFIED_CODES] = extended
    return Conformance(root=root, by_url=by_url)


# Where a verified code records the source that confirmed it (profiles/README.md, ValueSet/).
CONCEPT_COMMENTS = "http://hl7.org/fhir/StructureDefinition/valueset-concept-comments"


def verified_source(concept: Resource) -> str | None:
    """The source a verified concept records, from its ``valueset-concept-comments`` extension."""
    for extension in concept.get("extension", []):
        if isinstance(extension, dict) and extension.get("url") == CONCEPT_COMMENTS:
            value = extension.get("valueString")
            return value if isinstance(value, str) and value.strip() else None
    return None


def read_verified_codes(path: Path) -> list[tuple[str, Resource]]:
    """The (system, concept) pairs of a project's ``verified-codes.json``, checked.

    The file has the shape of ``profiles/ValueSet/verified-codes.json``: ``compose.include`` lists one
    ``system`` with its ``concept`` entries, each a ``code``, its ``display`` and the source that verified
    the pair (a ``valueset-concept-comments`` extension). PublicationError names what is missing.
    """
    document = read_json(path)
    compose = document.get("compose") if isinstance(document, dict) else None
    includes = compose.get("include") if isinstance(compose, dict) else None
    if not isinstance(includes, list) or document.get("resourceType") != "ValueSet":
        raise PublicationError(f"{path}: needs the shape of a ValueSet with compose.include (a list)")
    found: list[tuple[str, Resource]] = []
    seen: set[tuple[str, str]] = set()
    for number, include in enumerate(includes):
        where = f"{path}: compose.include[{number}]"
        system = include.get("system") if isinstance(include, dict) else None
        concepts = include.get("concept") if isinstance(include, dict) else None
        if not isinstance(system, str) or not system or not isinstance(concepts, list):
            raise PublicationError(f"{where} needs a system and a list of concept")
        for index, concept in enumerate(concepts):
            code = concept.get("code") if isinstance(concept, dict) else None
            display = concept.get("display") if isinstance(concept, dict) else None
            if not isinstance(code, str) or not code or not isinstance(display, str) or not display:
                raise PublicationError(f"{where}.concept[{index}] needs a code and its display")
            if verified_source(concept) is None:
                raise PublicationError(
                    f"{where}.concept[{index}] ({system} {code}) needs the source that verified it "
                    f"(an extension {CONCEPT_COMMENTS} with a valueString)"
                )
            if (system, code) in seen:
                raise PublicationError(f"{where}.concept[{index}]: {system} {code} is listed twice")
            seen.add((system, code))
            found.append((system, concept))
    return found


def extend_verified(value_set: Resource | None, path: Path) -> Resource | None:
    """The verified-codes value set with the codes of a project's ``verified-codes.json`` added.

    A code the value set already holds stays as it is there; the value set is copied, never changed.
    Profiles without the value set can take no codes (PublicationError), but an empty file is fine.
    """
    added = read_verified_codes(path)
    if value_set is None:
        if added:
            raise PublicationError(f"{path}: the profiles have no {VERIFIED_CODES} to add these codes to")
        return None
    out = copy.deepcopy(value_set)
    includes: list[Resource] = out.setdefault("compose", {}).setdefault("include", [])
    by_system = {i["system"]: i for i in includes if i.get("system") and not i.get("valueSet")}
    for system, concept in added:
        include = by_system.get(system)
        if include is None:
            include = by_system[system] = {"system": system, "concept": []}
            includes.append(include)
        concepts = include.setdefault("concept", [])
        if all(c.get("code") != concept["code"] for c in concepts):
            concepts.append(copy.deepcopy(concept))
    if added and isinstance(out.get("text"), dict):  # it is served: its narrative lists the codes it holds
        out["text"] = {**out["text"], "div": render(out)}
    return out
