"""Search at FHIR R4B and R4: which R5 parameters are served there, and the query in R5's terms.

A search at R4B or R4 runs the R5 engine on the R5 index (the build indexes each resource once) and
answers the converted forms of what it finds. That is exact only where the element a parameter reads is
where the other version's resource has it too: ``fhir_pub.versions`` moves some elements into
cross-version extensions (``docs/versions.md``), and a parameter on such an element would find resources
by something their R4 or R4B form does not show in that place. Those parameters are not served at that
version: :data:`NOT_SERVED` lists them, each with the reason, and an R4B or R4 search naming one treats
it as any unknown parameter (ignored and reported, or 400 under ``handling=strict``). Every other
parameter keeps its R5 name and definition; none of the publication's parameters is named differently
in R4B or R4 for the same element.

In R4, where a ClinicalUseDefinition is a ``Basic`` of the same id, ``Basic`` is searched as the
clinical uses: ``_id`` and the common parameters, ``identifier`` (``Basic.identifier``), ``subject``
(``Basic.subject``: the first subject; R5's further subjects, in an extension there, match too), and
``code``, which every such Basic has as ``http://hl7.org/fhir/fhir-types|ClinicalUseDefinition``
(:func:`basic_code_matches`). The clinical details are extensions in R4 and are not searchable there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import replace
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from fhir_pub.errors import FhirPubError, Invalid
from fhir_pub.search.parameters import Registry
from fhir_pub.search.request import (
    Filter,
    SearchRequest,
    UnsupportedSearch,
    parse,
    split_unescaped,
    unescape,
)
from fhir_pub.versions import FHIR_TYPES, TARGET_NAMES

CUD = "ClinicalUseDefinition"

# The types a version names differently: served name -> R5 name.
R5_TYPES: Mapping[str, Mapping[str, str]] = {"5.0": {}, "4.3": {}, "4.0": {"Basic": CUD}}
SERVED_TYPES: Mapping[str, Mapping[str, str]] = {
    version: {r5: served for served, r5 in names.items()} for version, names in R5_TYPES.items()
}

# R5 parameters not served at R4B and R4, by R5 type ("Resource" for the common ones), each for a reason.
_BOTH: Mapping[str, Mapping[str, str]] = {
    "Resource": {
        "_profile": "meta.profile is dropped from the converted forms",
        "_content": "the index holds the R5 form's words, element names and profiles included",
    },
    "MedicationKnowledge": {
        "identifier": "MedicationKnowledge.identifier is an extension",
        "source-cost": "MedicationKnowledge.cost is an extension",
    },
    "Medication": {
        "marketingauthorizationholder": "Medication.marketingAuthorizationHolder is an extension",
    },
    "DocumentReference": {
        "attester": "DocumentReference.attester is an extension",
        "based-on": "DocumentReference.basedOn is an extension",
        "bodysite": "DocumentReference.bodySite is an extension",
        "bodysite-reference": "DocumentReference.bodySite is an extension",
        "context": "DocumentReference.context (R5) is an extension",
        "encounter": "DocumentReference.context (R5) is an extension",
        "event-code": "DocumentReference.event is an extension",
        "event-reference": "DocumentReference.event is an extension",
        "facility": "DocumentReference.facilityType is an extension",
        "format-canonical": "DocumentReference.content.profile is an extension",
        "format-code": "DocumentReference.content.profile is an extension",
        "format-uri": "DocumentReference.content.profile is an extension",
        "modality": "DocumentReference.modality is an extension",
        "period": "DocumentReference.period is an extension",
        "relatesto": "DocumentReference.relatesTo is an extension",
        "relation": "DocumentReference.relatesTo is an extension",
        "setting": "DocumentReference.practiceSetting is an extension",
        "subject": "a subject of a type other than Patient, Practitioner, Group or Device is an extension",
        "version": "DocumentReference.version is an extension",
    },
    "Group": {
        "membership": "Group.membership is Group.actual, a boolean, in R4 and R4B",
    },
    "Organization": {
        "address": "Organization.contact.address is not R4's Organization.address",
        "address-city": "Organization.contact.address is not R4's Organization.address",
        "address-country": "Organization.contact.address is not R4's Organization.address",
        "address-postalcode": "Organization.contact.address is not R4's Organization.address",
        "address-state": "Organization.contact.address is not R4's Organization.address",
        "address-use": "Organization.contact.address is not R4's Organization.address",
        "identifier": "Organization.qualification.identifier is an extension",
    },
    "Provenance": {
        "based-on": "Provenance.basedOn is an extension",
        "encounter": "Provenance.encounter is an extension",
        "patient": "Provenance.patient is an extension",
    },
}
NOT_SERVED: Mapping[str, Mapping[str, Mapping[str, str]]] = {"4.3": _BOTH, "4.0": _BOTH}
# R4's Basic, standing for a ClinicalUseDefinition: the parameters of its own that read what the Basic has.
BASIC_PARAMETERS = frozenset({"identifier", "subject"})
# R4's own Basic.code parameter, answered by basic_code_matches (the R5 index has no row for it).
BASIC_CODE = {"name": "code", "definition": "http://hl7.org/fhir/SearchParameter/Basic-code", "type": "token"}


def served_registry(r5: Registry, version: str) -> Registry:
    """The R5 registry less the parameters not served at ``version``; in R4, a clinical use only as Basic."""
    omitted = NOT_SERVED[version]

    def keep(kind: str, code: str) -> bool:
        if version == "4.0" and kind == CUD:
            return code in BASIC_PARAMETERS
        return code not in omitted.get(kind, {})

    return r5.subset(keep)


def _type(version: str, name: str) -> str:
    return R5_TYPES[version].get(name, name)


def served_type(version: str, r5_type: str) -> str:
    """The name a version gives an R5 type (``Basic`` for ClinicalUseDefinition in R4)."""
    return SERVED_TYPES[version].get(r5_type, r5_type)


_TYPE_IN_KEY = re.compile(r"(?<=:)([A-Z][A-Za-z]*)(?=$|[.:])")


def r5_query(version: str, pairs: Sequence[tuple[str, str]]) -> list[tuple[str, str]]:
    """The query with the version's type names in R5's (``subject:Basic``, ``_has:Basic:...``, ``_type``)."""
    if not R5_TYPES[version]:
        return list(pairs)
    out = []
    for key, value in pairs:
        name = key.split(":", 1)[0]
        key = _TYPE_IN_KEY.sub(lambda m: _type(version, m.group(1)), key)
        if name == "_type":
            value = ",".join(_type(version, t) for t in value.split(","))
        elif name in {"_include", "_revinclude"}:
            value = ":".join(
                _type(version, part) if part[:1].isupper() else part for part in value.split(":")
            )
        out.append((key, value))
    return out


def r5_references(version: str, request: SearchRequest) -> SearchRequest:
    """Reference values naming a version's type (``Basic/x`` in R4) in R5's terms, chains' leaves too."""
    renamed = R5_TYPES[version]
    if not renamed:
        return request
    pattern = re.compile(r"(^|/)(" + "|".join(map(re.escape, renamed)) + r")/")

    def rename(f: Filter) -> Filter:
        if f.param.type != "reference":
            return f
        values = tuple(
            replace(v, raw=pattern.sub(lambda m: m.group(1) + renamed[m.group(2)] + "/", v.raw), code=code)
            for v in f.values
            for code in [pattern.sub(lambda m: m.group(1) + renamed[m.group(2)] + "/", v.code)]
        )
        return replace(f, values=values)

    return replace(request, filters=tuple(rename(f) for f in request.filters))


def basic_code_matches(pairs: Sequence[tuple[str, str]]) -> tuple[list[tuple[str, str]], bool]:
    """R4's ``Basic?code=``: the query without it, and whether every Basic here (a clinical use) matches.

    Each such Basic has the one code ``http://hl7.org/fhir/fhir-types|ClinicalUseDefinition``; a value
    matches it as a token does (https://hl7.org/fhir/R4/search.html#token): ``code``, ``system|code``,
    ``|code`` never (the code has a system), ``system|``. Repeated, the parameter is ANDed.
    """
    rest, matches = [], True
    for key, value in pairs:
        name, _, modifier = key.partition(":")
        if name != "code":
            rest.append((key, value))
            continue
        if modifier:
            raise UnsupportedSearch(
                f"{key}: modifiers of Basic's code are not supported here", expression=key
            )
        if not value:
            raise Invalid(f"{key}: empty value", expression=key)
        matches = matches and any(_token_matches(raw) for raw in split_unescaped(value, ","))
    return rest, matches


def _token_matches(raw: str) -> bool:
    parts = [unescape(part) for part in split_unescaped(raw, "|")]
    if len(parts) == 1:
        return parts[0] == CUD
    if len(parts) > 2:
        raise Invalid(f"code={raw!r}: a token is [system]|[code]", expression="code")
    system, code = parts
    return system == FHIR_TYPES and code in {CUD, ""}


def served_terms(version: str, text: str) -> str:
    """A message of the R5 parser in the version's type names (``Basic`` for ClinicalUseDefinition in R4)."""
    for served, r5 in R5_TYPES[version].items():
        text = re.sub(rf"\b{r5}\b", served, text)
    return text


def parse_at(
    version: str, types: Sequence[str], pairs: Sequence[tuple[str, str]], registry: Registry, *, strict: bool
) -> tuple[SearchRequest, bool]:
    """A search asked at R4B or R4, as a SearchRequest in R5's terms with ``registry`` (that version's).

    Also whether anything can match: False for R4's ``Basic?code=`` naming another code than the one
    every Basic here has. The parser's messages name the version's types.
    """
    matches = True
    if version == "4.0" and list(types) == ["Basic"]:
        pairs, matches = basic_code_matches(pairs)
    r5_types = [R5_TYPES[version].get(t, t) for t in types]
    try:
        request = parse(r5_types, r5_query(version, pairs), registry, strict=strict)
    except FhirPubError as error:
        error.diagnostics = served_terms(version, error.diagnostics)
        error.args = (error.diagnostics,)
        raise
    ignored = tuple((key, served_terms(version, why)) for key, why in request.ignored)
    return replace(r5_references(version, request), ignored=ignored), matches


HL7_PARAMETERS = "http://hl7.org/fhir/SearchParameter/"
# Written by scripts/r4b-search-parameters from hl7.fhir.r4b.core 4.3.0; it stands for R4 too (the R4
# package is not on the npm registry, and R4B names R4's resources' parameters under the same canonicals).
R4B_PARAMETERS = Path(__file__).with_name("r4b-search-parameters.json")


@cache
def _defined() -> dict[str, dict[str, str]]:
    types: dict[str, dict[str, str]] = orjson.loads(R4B_PARAMETERS.read_bytes())["types"]
    return types


def defined_at(version: str, kind: str, param: Mapping[str, Any]) -> dict[str, Any]:
    """A CapabilityStatement ``searchParam`` of R5's, as the statement of ``version`` names it.

    Its definition becomes that version's parameter of the same code on the type (or on every resource):
    R4's ``Basic.identifier`` is ``Basic-identifier``, not R5's ``ClinicalUseDefinition-identifier``. An
    HL7 parameter the version does not define (``_language``) keeps no definition, and its documentation
    says it is served as R5 defines it; one of this publication's own canonicals stays as it is.
    """
    out = dict(param)
    url = str(param.get("definition", ""))
    defined = _defined()
    code = str(param["name"])
    found = next(
        (defined[t][code] for t in (kind, "DomainResource", "Resource") if code in defined.get(t, {})), None
    )
    if found is not None:
        out["definition"] = found
    elif url.startswith(HL7_PARAMETERS):
        del out["definition"]
        name = TARGET_NAMES[version]
        out["documentation"] = f"Not a search parameter of FHIR {name}: served as FHIR R5 defines it ({url})."
    return out
