"""The bundled publication: round trip, narrative, references, codes, clinical-use rules and provenance."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import source_sets, walk
from fhir_core.fhirabstractmodel import FHIRAbstractModel

from fhir_pub.graph import links
from fhir_pub.model import parse
from fhir_pub.narrative import XHTML_NS, render
from fhir_pub.publication import Publication, bundled_dir

pytestmark = pytest.mark.filterwarnings("error")

MK_REF = "MedicationKnowledge/besponsa"
SOURCES = {
    "MSK": "DocumentReference/msk-inotuzumab-ozogamicin",
    "MedlinePlus": "DocumentReference/medlineplus-a617041",
    "Pfizer": "DocumentReference/pfizer-besponsa-patient-counseling",
}
# Public references that state what no leaflet does (a package code, a class code, the regulator).
REFERENCES = {
    "DailyMed": "DocumentReference/dailymed-besponsa",
    "WHOCC ATC index": "DocumentReference/whocc-atc-index",
}
FHIR_VS_SYSTEM = "http://hl7.org/fhir/publication-status"
PUBLICATION_STATUS = [{"code": "active", "display": "Active"}]  # the one publication-status code we use
CUD_KINDS = {
    "indication": "indication",
    "contraindication": "contraindication",
    "interaction": "interaction",
    "undesirable-effect": "undesirableEffect",
    "warning": "warning",
}
# Elements with a required binding in R5, and the value set (in profiles/ValueSet) bound to each.
REQUIRED_BINDINGS = {
    ("ClinicalUseDefinition", "type"): "clinical-use-definition-type",
    ("MedicationKnowledge", "status"): "medicationknowledge-status",
    ("Medication", "status"): "medication-status",
    ("DocumentReference", "status"): "document-reference-status",
    ("DocumentReference", "docStatus"): "composition-status",
    ("ProvenanceEntity", "role"): "provenance-entity-role",
    ("Group", "type"): "group-type",
    ("Group", "membership"): "group-membership-basis",
    ("Narrative", "status"): "narrative-status",
    ("ContactPoint", "system"): "contact-point-system",
    ("TimingRepeat", "durationUnit"): "units-of-time",
}
FHIR_VS = "http://hl7.org/fhir/ValueSet/"
VERIFIED = "http://fhir-pub.org/fhir/ValueSet/verified-codes"


def keys(publication: Publication) -> list[str]:
    return [entry.key for entry in publication]


def codes_of(value_set: dict[str, Any]) -> set[tuple[str, str]]:
    return {(inc["system"], c["code"]) for inc in value_set["compose"]["include"] for c in inc["concept"]}


def strings(node: Any, skip: frozenset[str] = frozenset({"text", "display", "div"})) -> Iterator[str]:
    """Every string in a resource's data, leaving out narrative and reference displays."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in skip and (key != "text" or isinstance(value, dict)):
                continue
            yield from strings(value, skip)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item, skip)
    elif isinstance(node, str):
        yield node


def cited_sources(resource: dict[str, Any]) -> set[str]:
    """The leaflets (``MSK``, ``MedlinePlus``, ``Pfizer``) a resource's own wording attributes facts to."""
    text = " ".join(strings(resource))
    return {ref for label, ref in SOURCES.items() if re.search(rf"\b{label}\b", text)}


class TestFiles:
    """Each file is one R5 resource that survives a round trip."""

    def test_expected_counts(self, publication: Publication) -> None:
        """One drug, three leaflets and two other sources, and the facts in between."""
        counts = publication.counts()
        assert counts["MedicationKnowledge"] == 1
        assert counts["DocumentReference"] == 5
        profiles = [
            d["meta"]["profile"][0].rsplit("/", 1)[1] for d in publication.of_type("DocumentReference")
        ]
        assert sorted(profiles).count("fhir-pub-documentreference") == 3  # the leaflets
        assert counts["Medication"] == 1
        assert counts["ClinicalUseDefinition"] >= 50

    @pytest.mark.parametrize("kind", ["resources", "profiles"])
    def test_round_trip(self, kind: str) -> None:
        """Every file parses with fhir.resources R5, dumps, and re-parses to an equal model and JSON."""
        files = sorted(bundled_dir(kind).rglob("*.json"))
        assert files
        for path in files:
            original = json.loads(path.read_text(encoding="utf-8"))
            model = parse(original)
            dumped = json.loads(model.model_dump_json())
            assert dumped == original, path
            assert parse(dumped) == model, path

    def test_id_matches_path(self, publication: Publication) -> None:
        """Each resource lives at ``<Type>/<id>.json``."""
        for entry in publication:
            assert entry.path.relative_to(publication.root) == Path(
                entry.resource["resourceType"], f"{entry.resource['id']}.json"
            )

    def test_ids_are_meaningful(self, publication: Publication) -> None:
        """Ids are lowercase words joined by hyphens (stable, readable, valid FHIR ids)."""
        for entry in publication:
            assert re.fullmatch(r"[a-z0-9]+(-[a-z0-9]+)*", entry.resource["id"]), entry.key
            assert len(entry.resource["id"]) <= 64

    def test_meta(self, publication: Publication) -> None:
        """Every resource has a version id and a ``lastUpdated`` instant with a time zone."""
        for entry in publication:
            meta = entry.resource["meta"]
            assert meta["versionId"].isdigit()  # raised with each change of content
            assert int(meta["versionId"]) >= 1
            assert datetime.fromisoformat(meta["lastUpdated"]).tzinfo is not None

    def test_files_are_canonically_formatted(self, publication: Publication) -> None:
        """Files are two-space indented UTF-8 JSON with a final newline, so diffs stay reviewable."""
        for entry in publication:
            text = entry.path.read_text(encoding="utf-8")
            assert text == json.dumps(entry.resource, indent=2, ensure_ascii=False) + "\n", entry.key


class TestNarrative:
    """Every resource carries a readable narrative generated from its data."""

    def test_generated_and_current(self, publication: Publication) -> None:
        """``text`` is status=generated and equals what the generator makes from the data today."""
        for entry in publication:
            text = entry.resource["text"]
            assert text["status"] == "generated", entry.key
            assert text["div"] == render(entry.resource), entry.key

    def test_well_formed_xhtml(self, publication: Publication) -> None:
        """Each div parses as XML in the XHTML namespace, with no scripts or event handlers."""
        for entry in publication:
            div = ET.fromstring(entry.resource["text"]["div"])
            assert div.tag == f"{{{XHTML_NS}}}div", entry.key
            for element in div.iter():
                assert element.tag.rsplit("}", 1)[-1] not in {"script", "style", "iframe", "form", "object"}
                assert not any(attr.startswith("on") for attr in element.attrib), entry.key

    def test_readable(self, publication: Publication) -> None:
        """A narrative says something: a heading and real text, not just markup."""
        for entry in publication:
            div = ET.fromstring(entry.resource["text"]["div"])
            words = "".join(div.itertext()).split()
            assert div.find(f"{{{XHTML_NS}}}h3") is not None, entry.key
            assert len(words) >= 5, entry.key


class TestReferences:
    """The graph is closed: references resolve, to types R5 allows, and nothing is orphaned."""

    def test_resolve_to_allowed_types(self, publication: Publication) -> None:
        """Every literal reference resolves inside the publication and targets a type R5 allows there."""
        count = 0
        for entry in publication:
            key = entry.key
            for link in links(entry.resource):
                count += 1
                assert publication.get(link.reference) is not None, f"{key} {link.path} -> {link.reference}"
                assert link.allows(link.target_type), f"{key} {link.path}: R5 allows {link.allowed}"
        assert count > 200

    def test_reference_displays_match_targets(self, publication: Publication) -> None:
        """A reference's ``display`` is the target's own name, so readers are never misled."""
        names = {}
        for entry in publication:
            names[entry.key] = ET.fromstring(entry.resource["text"]["div"]).findtext(f"{{{XHTML_NS}}}h3")
        for mk in publication.of_type("MedicationKnowledge"):
            for ref in mk["clinicalUseIssue"]:
                assert ref["display"] == names[ref["reference"]]

    def test_cud_subject_is_medication(self, publication: Publication) -> None:
        """ClinicalUseDefinition.subject points at the Medication (R5 does not allow MedicationKnowledge)."""
        for cud in publication.of_type("ClinicalUseDefinition"):
            assert [s["reference"].split("/")[0] for s in cud["subject"]] == ["Medication"], cud["id"]

    def test_no_orphans(self, publication: Publication) -> None:
        """Every resource but the MedicationKnowledge and Provenances is referenced by another one."""
        # Provenance.target points at everything it traces, so it does not count as a use.
        referenced = {
            link.reference
            for entry in publication
            for link in links(entry.resource)
            if not link.path.startswith("Provenance.target")
        }
        for entry in publication:
            if entry.key == MK_REF or entry.resource["resourceType"] == "Provenance":
                continue
            assert entry.key in referenced, f"{entry.key} is an orphan"

    def test_documents_are_about_the_drug(self, publication: Publication) -> None:
        """Each DocumentReference is about the drug; the leaflets are its monographs, references are not."""
        monographs = {m["source"]["reference"] for m in publication.get(MK_REF)["monograph"]}  # type: ignore[index]
        docs = publication.of_type("DocumentReference")
        assert monographs == set(SOURCES.values())
        assert {f"DocumentReference/{d['id']}" for d in docs} == monographs | set(REFERENCES.values())
        for doc in docs:
            assert doc["subject"]["reference"] == MK_REF


class TestCodes:
    """Codes come only from verified sources, and required codes from their R5 value sets."""

    def test_codings_are_verified(
        self, models: dict[str, FHIRAbstractModel], value_sets: dict[str, Any]
    ) -> None:
        """Every Coding is in the verified-codes value set or is a FHIR publication-status code."""
        allowed = codes_of(value_sets[VERIFIED]) | codes_of(value_sets[FHIR_VS + "publication-status"])
        used = set()
        for key, model in models.items():
            for element in walk(model):
                if type(element.value).__name__ == "Coding":
                    pair = (element.value.system, element.value.code)
                    assert pair in allowed, f"{key} {element.path}: unverified code {pair}"
                    used.add(pair)
        assert len(used) >= 30

    def test_codings_carry_their_verified_display(
        self, models: dict[str, FHIRAbstractModel], value_sets: dict[str, Any]
    ) -> None:
        """Every Coding has the display verified-codes.json records, beside the source that verified it."""
        verified = value_sets[VERIFIED]
        displays = {
            (i["system"], c["code"]): c["display"]
            for i in verified["compose"]["include"]
            for c in i["concept"]
        }
        for include in verified["compose"]["include"]:
            for concept in include["concept"]:
                (comment,) = concept["extension"]
                assert comment["url"] == "http://hl7.org/fhir/StructureDefinition/valueset-concept-comments"
                assert comment["valueString"].startswith("Display verified against "), concept["code"]
        displays |= {(FHIR_VS_SYSTEM, c["code"]): c["display"] for c in PUBLICATION_STATUS}
        for key, model in models.items():
            for element in walk(model):
                if type(element.value).__name__ == "Coding":
                    pair = (element.value.system, element.value.code)
                    assert element.value.display == displays[pair], f"{key} {element.path}: {pair}"

    def test_every_concept_has_text(self, models: dict[str, FHIRAbstractModel]) -> None:
        """Every CodeableConcept carries human text, coded or not."""
        for key, model in models.items():
            for element in walk(model):
                if type(element.value).__name__ == "CodeableConcept":
                    assert element.value.text, f"{key} {element.path}"

    def test_required_codes_in_value_sets(
        self, models: dict[str, FHIRAbstractModel], value_sets: dict[str, Any]
    ) -> None:
        """Codes of required-binding elements are in the R5 value set copied into profiles/."""
        checked = set()
        for key, model in models.items():
            for node in [model, *(e.value for e in walk(model) if isinstance(e.value, FHIRAbstractModel))]:
                for (cls, name), vs_id in REQUIRED_BINDINGS.items():
                    if type(node).__name__ == cls and getattr(node, name, None) is not None:
                        allowed = {code for _, code in codes_of(value_sets[FHIR_VS + vs_id])}
                        assert getattr(node, name) in allowed, f"{key}: {cls}.{name}"
                        checked.add((cls, name))
        assert checked == set(REQUIRED_BINDINGS)

    @pytest.mark.parametrize(("element", "vs_id"), sorted(REQUIRED_BINDINGS.items()))
    def test_value_sets_agree_with_r5_models(
        self, element: tuple[str, str], vs_id: str, value_sets: dict[str, Any]
    ) -> None:
        """The copied value sets hold exactly the codes fhir.resources generated from the R5 specification."""
        from fhir.resources import get_fhir_model_class

        cls, name = element
        extra = get_fhir_model_class(cls).model_fields[name].json_schema_extra
        expected = set(extra.get("enum_values", ())) if isinstance(extra, dict) else set()
        if vs_id == "units-of-time":  # fhir.resources does not enumerate this binding
            expected = {"s", "min", "h", "d", "wk", "mo", "a"}
        assert expected == {code for _, code in codes_of(value_sets[FHIR_VS + vs_id])}

    def test_publication_status_is_coded(self, publication: Publication) -> None:
        """ClinicalUseDefinition.status (a CodeableConcept) uses the R5 publication-status code system."""
        for cud in publication.of_type("ClinicalUseDefinition"):
            assert cud["status"]["coding"] == [
                {"system": "http://hl7.org/fhir/publication-status", "code": "active", "display": "Active"}
            ]


class TestClinicalUse:
    """One ClinicalUseDefinition per fact, all reachable from the drug."""

    def test_one_kind_per_instance(self, publication: Publication) -> None:
        """cud-1: each instance fills exactly the backbone its ``type`` names and no other."""
        for cud in publication.of_type("ClinicalUseDefinition"):
            present = {kind for kind, element in CUD_KINDS.items() if element in cud}
            assert present == {cud["type"]}, cud["id"]

    def test_id_prefix_matches_type(self, publication: Publication) -> None:
        """Ids say what a resource is: ``warning-``, ``effect-``, ``indication-``, ``interaction-``."""
        prefix = {
            "warning": "warning-",
            "undesirable-effect": "effect-",
            "indication": "indication-",
            "interaction": "interaction-",
        }
        for cud in publication.of_type("ClinicalUseDefinition"):
            assert cud["id"].startswith(prefix[cud["type"]]), cud["id"]

    def test_all_reachable_from_medication_knowledge(self, publication: Publication) -> None:
        """MedicationKnowledge.clinicalUseIssue lists every ClinicalUseDefinition exactly once."""
        issues = [r["reference"] for r in publication.get(MK_REF)["clinicalUseIssue"]]  # type: ignore[index]
        cuds = [f"ClinicalUseDefinition/{c['id']}" for c in publication.of_type("ClinicalUseDefinition")]
        assert len(issues) == len(set(issues))
        assert sorted(issues) == sorted(cuds)

    def test_kinds_present(self, publication: Publication) -> None:
        """The publication has an indication, an interaction, warnings and undesirable effects."""
        kinds = [c["type"] for c in publication.of_type("ClinicalUseDefinition")]
        assert kinds.count("indication") == 1
        assert kinds.count("interaction") >= 1
        assert kinds.count("warning") >= 20
        assert kinds.count("undesirable-effect") >= 25

    def test_undesirable_effects_are_tiered(self, publication: Publication) -> None:
        """Every side effect says how serious the leaflets consider it, or that none of them says."""
        for cud in publication.of_type("ClinicalUseDefinition"):
            if cud["type"] == "undesirable-effect":
                tier = cud["undesirableEffect"]["classification"]["text"]
                tiers = ("Serious:", "Less serious:", "The sources differ:", "No tier in the leaflets:")
                assert tier.startswith(tiers), cud["id"]

    def test_facts_are_not_duplicated(self, publication: Publication) -> None:
        """No two resources of the same kind code or name the same concept."""
        seen: dict[tuple[str, str], str] = {}
        for cud in publication.of_type("ClinicalUseDefinition"):
            kind = CUD_KINDS[cud["type"]]
            backbone = cud[kind]
            concept = (
                backbone.get("code")
                or backbone.get("symptomConditionEffect", {}).get("concept")
                or backbone.get("diseaseSymptomProcedure", {}).get("concept")
                or backbone.get("interactant", [{}])[0].get("itemCodeableConcept")
            )
            names = [concept["text"].lower()] + [
                f"{c['system']}|{c['code']}" for c in concept.get("coding", [])
            ]
            for name in names:
                assert (kind, name) not in seen, f"{cud['id']} repeats {seen.get((kind, name))}"
                seen[(kind, name)] = cud["id"]


class TestProvenance:
    """Every fact is traced to the leaflets that state it."""

    def test_every_fact_resource_is_traced(self, publication: Publication) -> None:
        """Each resource but DocumentReferences, Provenances and our own Organization has a Provenance.

        A resource is the target of one Provenance, or, traced element by element (targetPath), of one
        Provenance per source, each element once in each.
        """
        traced = source_sets(publication)
        targets = [
            (t["reference"], tuple(x["valueString"] for x in t.get("extension", [])), p["id"])
            for p in publication.of_type("Provenance")
            for t in p["target"]
        ]
        assert len(targets) == len(set(targets))
        whole = [reference for reference, paths, _ in targets if not paths]
        assert len(whole) == len(set(whole))
        assert not {reference for reference, paths, _ in targets if paths} & set(whole)
        for entry in publication:
            if (
                entry.resource["resourceType"] in {"DocumentReference", "Provenance"}
                or entry.key == "Organization/fhir-pub"
            ):
                assert entry.key not in traced
                continue
            assert traced.get(entry.key), f"{entry.key} has no source"
            assert traced[entry.key] <= set(SOURCES.values()) | set(REFERENCES.values())

    def test_entity_role_is_source(self, publication: Publication) -> None:
        """Provenance entities are the sources, with role ``source``, recorded by fhir-pub."""
        for provenance in publication.of_type("Provenance"):
            assert provenance["entity"]
            for entity in provenance["entity"]:
                assert entity["role"] == "source"
                assert entity["what"]["reference"].startswith("DocumentReference/")
            assert [a["who"]["reference"] for a in provenance["agent"]] == ["Organization/fhir-pub"]

    def test_attributions_match_provenance(self, publication: Publication) -> None:
        """A ClinicalUseDefinition cites exactly the leaflets its Provenance names; others cite no more."""
        traced = source_sets(publication)
        for entry in publication:
            if entry.key not in traced:
                continue
            cited = cited_sources(entry.resource)
            if entry.resource["resourceType"] == "ClinicalUseDefinition":
                assert cited == traced[entry.key], entry.key
            else:
                assert cited <= traced[entry.key], entry.key


class TestDocuments:
    """One DocumentReference per leaflet, with the metadata a reader needs."""

    @pytest.mark.parametrize("ref", sorted(SOURCES.values()))
    def test_metadata(self, publication: Publication, ref: str) -> None:
        """Status, dates, codes, author, custodian and attachment are all present and well-formed."""
        doc = publication.get(ref)
        assert doc is not None
        assert (doc["status"], doc["docStatus"]) == ("current", "final")
        assert re.fullmatch(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})", doc["date"])
        assert [c["system"] for c in doc["type"]["coding"]] == ["http://loinc.org"]
        for concept in doc["category"]:  # a LOINC label code only where the leaflet is a label section
            assert all(c["system"] == "http://loinc.org" for c in concept.get("coding", []))
            assert concept.get("coding") or "not a section of a drug label" in concept["text"]
        assert all(a["reference"].startswith("Organization/") for a in doc["author"])
        assert doc["custodian"]["reference"].startswith("Organization/")
        (content,) = doc["content"]
        attachment = content["attachment"]
        assert attachment["url"].startswith("https://")
        assert attachment["title"]
        assert attachment["language"] == "en-US"
        assert attachment["contentType"] == "text/html"
