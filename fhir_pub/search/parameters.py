"""Search parameters: read from the SearchParameter resources in ``profiles/`` (one source of truth).

The same definitions drive query parsing, indexing at build time, and the CapabilityStatement; what
each parameter *type* supports is its module's (``fhir_pub.search.types``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from fhir_pub.conformance import Conformance


@dataclass(frozen=True)
class SearchParam:
    """One search parameter for one resource type."""

    code: str
    type: str
    expression: str
    url: str
    base: tuple[str, ...]
    targets: tuple[str, ...] = ()


class Registry:
    """Every search parameter, by resource type and code (``Resource`` for the common ones)."""

    def __init__(self, params: Iterable[SearchParam]) -> None:
        self.by_type: dict[str, dict[str, SearchParam]] = {}
        for param in params:
            for base in param.base:
                self.by_type.setdefault(base, {})[param.code] = param

    def subset(self, keep: Callable[[str, str], bool]) -> Registry:
        """The registry of the parameters ``keep(type, code)`` accepts (fhir_pub.search.versions)."""
        out = Registry(())
        out.by_type = {
            kind: {code: p for code, p in by_code.items() if keep(kind, code)}
            for kind, by_code in self.by_type.items()
        }
        return out

    def all(self) -> list[SearchParam]:
        """Every parameter once."""
        return list({p.url: p for by_code in self.by_type.values() for p in by_code.values()}.values())

    def get(self, resource_type: str, code: str) -> SearchParam | None:
        """The parameter ``code`` of a type, its own or common to every resource."""
        for base in (resource_type, "DomainResource", "Resource"):
            found = self.by_type.get(base, {}).get(code)
            if found is not None:
                return found
        return None

    def for_type(self, resource_type: str) -> dict[str, SearchParam]:
        """All parameters that apply to a type, common ones included."""
        return {
            **self.by_type.get("Resource", {}),
            **self.by_type.get("DomainResource", {}),
            **self.by_type.get(resource_type, {}),
        }


def _from_resource(resource: Mapping[str, Any]) -> SearchParam:
    return SearchParam(
        code=str(resource["code"]),
        type=str(resource["type"]),
        expression=str(resource.get("expression", "")),
        url=str(resource["url"]),
        base=tuple(resource.get("base", [])),
        targets=tuple(resource.get("target", [])),
    )


def registry(conformance: Conformance) -> Registry:
    """The registry of every SearchParameter in a Conformance registry."""
    return Registry(_from_resource(r) for r in conformance.of_type("SearchParameter"))
