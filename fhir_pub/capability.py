"""What the server offers, declared once: the routes serve it and the CapabilityStatement describes it.

The search parameters offered are those whose type ``fhir_pub.search.types.TYPES`` supports, the same
registry the parser, the index and the engine ask.

https://hl7.org/fhir/R5/capabilitystatement.html
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from fhir_pub import __version__
from fhir_pub.search.parameters import Registry, SearchParam
from fhir_pub.search.types import TYPES

FHIR_VERSION = "5.0.0"
# Interactions every published type supports (https://hl7.org/fhir/R5/http.html).
TYPE_INTERACTIONS = ("read", "vread", "history-instance", "history-type", "search-type")
SYSTEM_INTERACTIONS = ("history-system", "search-system")
# Operations, with their canonical definitions (https://hl7.org/fhir/R5/operationslist.html).
VALIDATE = {"name": "validate", "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate"}
EXPORT = {"name": "export", "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"}
BULK_DATA = "http://hl7.org/fhir/uv/bulkdata/CapabilityStatement/bulk-data"
FORMATS = ("json", "xml")
PROFILE = "http://fhir-pub.org/fhir/StructureDefinition/fhir-pub-capabilitystatement"


def capability_statement(
    types: Mapping[str, list[str]],
    built_at: str,
    search: Mapping[str, list[dict[str, str]]] | None = None,
    includes: Mapping[str, list[str]] | None = None,
    revincludes: Mapping[str, list[str]] | None = None,
    guides: Sequence[str] = (),
) -> dict[str, Any]:
    """The CapabilityStatement for a publication.

    ``types`` maps each resource type to its profiles; ``search`` to its supported parameters (name,
    definition, type); ``includes`` and ``revincludes`` to the ``_include``/``_revinclude`` values it takes;
    ``guides`` are the canonical URLs of the ImplementationGuides it serves.
    """
    search, includes, revincludes = search or {}, includes or {}, revincludes or {}
    return {
        "resourceType": "CapabilityStatement",
        "id": "fhir-pub",
        "meta": {"profile": [PROFILE]},
        "text": {
            "status": "generated",
            "div": '<div xmlns="http://www.w3.org/1999/xhtml"><p>fhir-pub: a read-only FHIR R5 '
            f"publication of {len(types)} resource types.</p></div>",
        },
        "name": "FhirPubServer",
        "title": "fhir-pub read-only publication server",
        "status": "active",
        "experimental": False,
        "date": built_at,
        "publisher": "fhir-pub",
        "description": "A read-only FHIR R5 endpoint serving one immutable, validated publication.",
        "kind": "instance",
        "instantiates": [BULK_DATA],
        "software": {"name": "fhir-pub", "version": __version__},
        "implementation": {"description": "fhir-pub publication"},  # its url is the base it is served at
        "fhirVersion": FHIR_VERSION,
        **({"implementationGuide": list(guides)} if guides else {}),
        "format": list(FORMATS),
        "rest": [
            {
                "mode": "server",
                "resource": [
                    {
                        "type": resource_type,
                        **({"profile": profiles[0]} if len(profiles) == 1 else {}),
                        **({"supportedProfile": profiles} if profiles else {}),
                        "interaction": [{"code": code} for code in TYPE_INTERACTIONS],
                        "versioning": "versioned",
                        "readHistory": True,
                        "updateCreate": False,
                        "conditionalRead": "full-support",
                        **({"searchInclude": includes[resource_type]} if includes.get(resource_type) else {}),
                        **(
                            {"searchRevInclude": revincludes[resource_type]}
                            if revincludes.get(resource_type)
                            else {}
                        ),
                        **({"searchParam": search[resource_type]} if search.get(resource_type) else {}),
                        "operation": [VALIDATE],
                    }
                    for resource_type, profiles in sorted(types.items())
                ],
                "interaction": [{"code": code} for code in SYSTEM_INTERACTIONS],
                # The IG defines system, Patient and Group $export; [type]/$export is our shorthand for
                # _type, so it is declared once, at system level.
                "operation": [VALIDATE, EXPORT],
            }
        ],
    }


def searchable(param: SearchParam, failed: Mapping[str, str]) -> bool:
    """Whether a SearchParameter is searchable here, in the file and in the CapabilityStatement alike.

    A type TYPES does not have (number, quantity, composite) is neither, so a search on it is an unknown
    parameter (ignored and reported, or a 400 when strict), never a 500. ``failed``: the parameters
    whose expression could not be evaluated at build time, by url.
    """
    kind = TYPES.get(param.type)
    return kind is not None and kind.offers(param) and param.url not in failed


def search_capability(
    params: Registry, types: set[str], failed: Mapping[str, str]
) -> tuple[dict[str, list[dict[str, str]]], dict[str, list[str]], dict[str, list[str]]]:
    """Per type: the parameters the index supports, and the ``_include``/``_revinclude`` values."""
    search: dict[str, list[dict[str, str]]] = {}
    includes: dict[str, list[str]] = {}
    revincludes: dict[str, list[str]] = {}
    for kind in sorted(types):
        offered = [p for p in params.for_type(kind).values() if searchable(p, failed)]
        search[kind] = [
            {"name": p.code, "definition": p.url, "type": p.type}
            for p in sorted(offered, key=lambda p: p.code)
        ]
        references = sorted(p.code for p in offered if p.type == "reference")
        includes[kind] = ["*", *(f"{kind}:{code}" for code in references)]
    for kind in sorted(types):
        for source in sorted(types):
            for p in sorted(params.for_type(source).values(), key=lambda p: p.code):
                if p.type == "reference" and p.url not in failed and (not p.targets or kind in p.targets):
                    revincludes.setdefault(kind, []).append(f"{source}:{p.code}")
    return search, includes, revincludes
