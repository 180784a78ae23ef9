"""The R5 -> R4B and R4 conversions: every resource validates in its version and keeps every fact."""

from __future__ import annotations

import copy
import importlib
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest
from fhir.resources.R4B import get_fhir_model_class as r4b_model
from fhirclient.models.fhirabstractbase import FHIRValidationError

from fhir_pub.publication import load
from fhir_pub.versions import TARGETS, XVER, ConversionError, Target, convert

PUBLICATION = load()
KEYS = sorted(PUBLICATION.entries)
MK = "MedicationKnowledge/besponsa"
INDICATION = "ClinicalUseDefinition/indication-acute-lymphoblastic-leukemia"


def r5(key: str) -> dict[str, Any]:
    resource = PUBLICATION.get(key)
    assert resource is not None
    return resource


def check_r4b(resource: dict[str, Any]) -> None:
    """fhir.resources' R4B models (pydantic), strict about unknown and missing elements."""
    r4b_model(resource["resourceType"]).model_validate(resource)


def check_r4(resource: dict[str, Any]) -> None:
    """SMART fhirclient's 4.0.1 models in strict mode: superfluous and missing elements raise."""
    module = importlib.import_module(f"fhirclient.models.{resource['resourceType'].lower()}")
    getattr(module, resource["resourceType"])(jsondict=copy.deepcopy(resource), strict=True)


CHECKS = {"4.3": check_r4b, "4.0": check_r4}


def leaves(value: Any, path: str = "") -> Iterator[tuple[str, Any]]:
    """Every primitive in a JSON value, with its path (keys only, no indexes)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield from leaves(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for item in value:
            yield from leaves(item, path)
    else:
        yield path, value


def typed(value: Any) -> tuple[str, Any]:
    # True == 1 in a Counter: keep booleans and numbers apart.
    return type(value).__name__, value


def extensions(resource: dict[str, Any], url: str) -> list[dict[str, Any]]:
    return [e for e in resource.get("extension", []) if e["url"] == url]


def reference_strings(value: Any) -> list[str]:
    return [v for path, v in leaves(value) if path.endswith("reference") and isinstance(v, str)]


class TestEveryResource:
    """Every resource of the bundled publication converts and passes that version's check."""

    @pytest.mark.parametrize("target", TARGETS)
    @pytest.mark.parametrize("key", KEYS)
    def test_validates(self, key: str, target: Target) -> None:
        """The converted resource passes the target version's model validation."""
        CHECKS[target](convert(r5(key), target))

    @pytest.mark.parametrize("target", TARGETS)
    def test_r5_form_fails_the_checks(self, target: Target) -> None:
        """The checks are real: the R5 MedicationKnowledge as served today is rejected by both."""
        with pytest.raises((ValueError, FHIRValidationError)):
            CHECKS[target](copy.deepcopy(r5(MK)))

    @pytest.mark.parametrize("target", TARGETS)
    @pytest.mark.parametrize("key", KEYS)
    def test_no_fact_lost(self, key: str, target: Target) -> None:
        """Each R5 leaf value appears in the conversion, but for the documented drops and rewrites."""
        resource = r5(key)
        expected: Counter[tuple[str, Any]] = Counter()
        for path, value in leaves(resource):
            if path in {"resourceType", "meta.profile"}:
                continue  # the type is the target's; meta.profile is dropped (fhir_pub/versions.py)
            if path == "membership":
                continue  # becomes Group.actual, tested below
            if target == "4.0" and isinstance(value, str) and value.startswith("ClinicalUseDefinition/"):
                value = "Basic/" + value.removeprefix("ClinicalUseDefinition/")
            expected[typed(value)] += 1
        found = Counter(typed(value) for _, value in leaves(convert(resource, target)))
        assert Counter() == expected - found

    @pytest.mark.parametrize("target", TARGETS)
    @pytest.mark.parametrize("key", KEYS)
    def test_references_keep_their_targets(self, key: str, target: Target) -> None:
        """Every reference still points at the same Type/id (a Basic of the same id for a CUD in R4)."""
        expected = reference_strings(r5(key))
        if target == "4.0":
            expected = [r.replace("ClinicalUseDefinition/", "Basic/") for r in expected]
        assert sorted(expected) == sorted(reference_strings(convert(r5(key), target)))

    @pytest.mark.parametrize("target", TARGETS)
    @pytest.mark.parametrize("key", KEYS)
    def test_meta(self, key: str, target: Target) -> None:
        """The R5 profiles are dropped; versionId and lastUpdated stay; the narrative is unchanged."""
        converted = convert(r5(key), target)
        source = r5(key)
        assert {k: v for k, v in source["meta"].items() if k != "profile"} == converted["meta"]
        assert source["text"] == converted["text"]
        assert source["id"] == converted["id"]

    @pytest.mark.parametrize("target", TARGETS)
    def test_pure(self, target: Target) -> None:
        """Convert does not change its argument and gives the same answer twice."""
        resource = copy.deepcopy(r5(MK))
        first = convert(resource, target)
        assert r5(MK) == resource
        assert first == convert(resource, target)
        first["synonym"].append("changed")
        first["monograph"][0]["type"]["coding"].clear()
        assert r5(MK) == resource


class TestClinicalUse:
    """Every clinical fact is reachable from the MedicationKnowledge in both versions."""

    def test_r4b_keeps_clinical_use_definition(self) -> None:
        """R4B has ClinicalUseDefinition: the resource keeps its type, subject and elements."""
        converted = convert(r5(INDICATION), "4.3")
        assert converted["resourceType"] == "ClinicalUseDefinition"
        assert r5(INDICATION)["indication"] == converted["indication"]
        assert r5(INDICATION)["subject"] == converted["subject"]
        assert "extension" not in converted

    def test_r4_basic(self) -> None:
        """In R4 a ClinicalUseDefinition is a Basic of the same id whose code names the R5 type."""
        converted = convert(r5(INDICATION), "4.0")
        assert ("Basic", INDICATION.split("/")[1]) == (converted["resourceType"], converted["id"])
        assert [{k: c[k] for k in ("system", "code")} for c in converted["code"]["coding"]] == [
            {"system": "http://hl7.org/fhir/fhir-types", "code": "ClinicalUseDefinition"}
        ]
        assert r5(INDICATION)["subject"][0] == converted["subject"]
        [kind] = extensions(converted, XVER + "ClinicalUseDefinition.type")
        assert kind["valueCode"] == "indication"

    def test_r4_nested_backbone(self) -> None:
        """A backbone element is nested extensions; a CodeableReference is a concept sub-extension."""
        converted = convert(r5(INDICATION), "4.0")
        [indication] = extensions(converted, XVER + "ClinicalUseDefinition.indication")
        [disease] = [e for e in indication["extension"] if e["url"] == "diseaseSymptomProcedure"]
        concept = r5(INDICATION)["indication"]["diseaseSymptomProcedure"]["concept"]
        assert [{"url": "concept", "valueCodeableConcept": concept}] == disease["extension"]

    @pytest.mark.parametrize(("target", "kind"), [("4.3", "ClinicalUseDefinition"), ("4.0", "Basic")])
    def test_medication_knowledge_links_every_clinical_use(self, target: Target, kind: str) -> None:
        """The MedicationKnowledge's clinicalUseIssue extension names every clinical use, each convertible."""
        converted = convert(r5(MK), target)
        links = extensions(converted, XVER + "MedicationKnowledge.clinicalUseIssue")
        cuds = [e.resource for e in PUBLICATION if e.resource["resourceType"] == "ClinicalUseDefinition"]
        linked = sorted(e["valueReference"]["reference"] for e in links)
        assert sorted(f"{kind}/{c['id']}" for c in cuds) == linked

    def test_r4_provenance_targets_follow(self) -> None:
        """A Provenance of a clinical use points at the Basic in R4."""
        key = "Provenance/warning-hepatotoxicity"
        targets = [t["reference"] for t in convert(r5(key), "4.0")["target"]]
        assert "Basic/warning-hepatotoxicity" in targets

    def test_r4_second_subject_travels_as_extension(self) -> None:
        """Basic.subject holds one reference: the others are cross-version extensions."""
        resource = copy.deepcopy(r5(INDICATION))
        resource["subject"].append({"reference": "Medication/other"})
        converted = convert(resource, "4.0")
        check_r4(converted)
        assert resource["subject"][0] == converted["subject"]
        [other] = extensions(converted, XVER + "ClinicalUseDefinition.subject")
        assert other["valueReference"] == {"reference": "Medication/other"}


class TestMappings:
    """The R5 elements that change, one by one (docs/versions.md lists them)."""

    @pytest.mark.parametrize("target", TARGETS)
    def test_medication_knowledge(self, target: Target) -> None:
        """Name is synonym; definitional's children live on the resource; the rest are extensions."""
        source, converted = r5(MK), convert(r5(MK), target)
        definitional = source["definitional"]
        assert source["name"] == converted["synonym"]
        assert definitional["doseForm"] == converted["doseForm"]
        assert definitional["intendedRoute"] == converted["intendedRoute"]
        assert definitional["drugCharacteristic"] == converted["drugCharacteristic"]
        [ingredient] = converted["ingredient"]
        assert definitional["ingredient"][0]["item"]["concept"] == ingredient["itemCodeableConcept"]
        [kind] = extensions(ingredient, XVER + "MedicationKnowledge.definitional.ingredient.type")
        assert definitional["ingredient"][0]["type"] == kind["valueCodeableConcept"]
        assert source["medicineClassification"] == converted["medicineClassification"]
        assert source["monitoringProgram"] == converted["monitoringProgram"]
        for name in ("indicationGuideline", "storageGuideline", "author", "intendedJurisdiction"):
            assert name not in converted
            assert len(extensions(converted, XVER + f"MedicationKnowledge.{name}")) == len(
                source[name] if isinstance(source[name], list) else [source[name]]
            )
        assert "definitional" not in converted

    @pytest.mark.parametrize("target", TARGETS)
    def test_indication_guideline_dosage(self, target: Target) -> None:
        """The dosing guideline travels nested, its Dosage as a valueDosage."""
        converted = convert(r5(MK), target)
        [guideline] = extensions(converted, XVER + "MedicationKnowledge.indicationGuideline")
        [dosing] = [e for e in guideline["extension"] if e["url"] == "dosingGuideline"]
        first = next(e for e in dosing["extension"] if e["url"] == "dosage")
        [dosage] = [e["valueDosage"] for e in first["extension"] if e["url"] == "dosage"]
        source = r5(MK)["indicationGuideline"][0]["dosingGuideline"][0]["dosage"][0]["dosage"][0]
        assert source == dosage

    @pytest.mark.parametrize("target", TARGETS)
    def test_medication(self, target: Target) -> None:
        """Medication.doseForm is form; the ingredient's CodeableReference is itemCodeableConcept."""
        source = r5("Medication/besponsa-vial")
        converted = convert(source, target)
        assert source["doseForm"] == converted["form"]
        assert converted["ingredient"] == [
            {"itemCodeableConcept": {"text": "inotuzumab ozogamicin"}, "isActive": True}
        ]

    @pytest.mark.parametrize("target", TARGETS)
    def test_group(self, target: Target) -> None:
        """Membership definitional is actual false; description is an extension."""
        source = r5("Group/patients-1-year-and-older")
        converted = convert(source, target)
        assert (converted["actual"], converted["type"]) == (False, "person")
        assert "membership" not in converted
        [description] = extensions(converted, XVER + "Group.description")
        assert source["description"] == description["valueMarkdown"]
        assert source["characteristic"] == converted["characteristic"]

    @pytest.mark.parametrize(("membership", "actual"), [("enumerated", True), ("definitional", False)])
    def test_group_membership(self, membership: str, actual: bool) -> None:
        """Both R5 membership codes map to R4's actual."""
        source = dict(r5("Group/patients-1-year-and-older"), membership=membership)
        assert actual is convert(source, "4.0")["actual"]

    @pytest.mark.parametrize("target", TARGETS)
    def test_document_reference(self, target: Target) -> None:
        """The subject (a MedicationKnowledge, which R4 does not allow there) is an extension."""
        source = r5("DocumentReference/msk-inotuzumab-ozogamicin")
        converted = convert(source, target)
        assert "subject" not in converted
        [subject] = extensions(converted, XVER + "DocumentReference.subject")
        assert source["subject"] == subject["valueReference"]
        assert (source["status"], source["docStatus"]) == (converted["status"], converted["docStatus"])
        assert source["author"] == converted["author"]

    @pytest.mark.parametrize("target", TARGETS)
    def test_organization(self, target: Target) -> None:
        """The contact keeps purpose and telecom; description is an extension."""
        source = r5("Organization/fda")
        converted = convert(source, target)
        assert source["contact"] == converted["contact"]
        [description] = extensions(converted, XVER + "Organization.description")
        assert source["description"] == description["valueMarkdown"]

    @pytest.mark.parametrize("target", TARGETS)
    def test_provenance(self, target: Target) -> None:
        """The targetPath extension on a target stays as it is."""
        source = r5("Provenance/besponsa-atc-index")
        converted = convert(source, target)
        assert source["target"] == converted["target"]
        assert source["agent"] == converted["agent"]
        assert source["entity"] == converted["entity"]


class TestNoEquivalent:
    """Synthetic R5 resources with elements that have no place in the target."""

    @pytest.mark.parametrize("target", TARGETS)
    def test_primitive_and_complex(self, target: Target) -> None:
        """An R5-only element is the extension of its R5 path, a choice named without its type."""
        resource = {
            "resourceType": "Medication",
            "id": "x",
            "totalVolume": {"value": 10, "unit": "mL"},
            "ingredient": [
                {"item": {"concept": {"text": "a"}}, "strengthCodeableConcept": {"text": "strong"}},
            ],
        }
        converted = convert(resource, target)
        CHECKS[target](converted)
        [volume] = extensions(converted, XVER + "Medication.totalVolume")
        assert volume["valueQuantity"] == {"value": 10, "unit": "mL"}
        [strength] = extensions(converted["ingredient"][0], XVER + "Medication.ingredient.strength")
        assert strength["valueCodeableConcept"] == {"text": "strong"}

    @pytest.mark.parametrize("target", TARGETS)
    def test_datatype_element(self, target: Target) -> None:
        """An R5-only element of a datatype (Attachment.pages) is an extension on that datatype."""
        resource = copy.deepcopy(r5("DocumentReference/msk-inotuzumab-ozogamicin"))
        resource["content"][0]["attachment"]["pages"] = 4
        converted = convert(resource, target)
        CHECKS[target](converted)
        [pages] = extensions(converted["content"][0]["attachment"], XVER + "Attachment.pages")
        assert pages["valuePositiveInt"] == 4

    @pytest.mark.parametrize("target", TARGETS)
    def test_attachment_size(self, target: Target) -> None:
        """R5's integer64 size, a JSON string, is R4's unsignedInt number."""
        resource = copy.deepcopy(r5("DocumentReference/msk-inotuzumab-ozogamicin"))
        resource["content"][0]["attachment"]["size"] = "2048"
        converted = convert(resource, target)
        CHECKS[target](converted)
        assert converted["content"][0]["attachment"]["size"] == 2048

    @pytest.mark.parametrize("target", TARGETS)
    def test_relates_to(self, target: Target) -> None:
        """R5's relatesTo (a CodeableConcept code) travels whole, nested, as R4 requires a code."""
        resource = copy.deepcopy(r5("DocumentReference/msk-inotuzumab-ozogamicin"))
        relation = {"code": {"text": "replaces"}, "target": {"reference": "DocumentReference/old"}}
        resource["relatesTo"] = [relation]
        converted = convert(resource, target)
        CHECKS[target](converted)
        [relates] = extensions(converted, XVER + "DocumentReference.relatesTo")
        assert [e["url"] for e in relates["extension"]] == ["code", "target"]

    @pytest.mark.parametrize("target", TARGETS)
    def test_hoisted_leftover(self, target: Target) -> None:
        """A definitional child without a target place is a nested extension-...definitional."""
        resource = copy.deepcopy(r5(MK))
        resource["definitional"]["definition"] = [{"reference": "MedicationKnowledge/other"}]
        converted = convert(resource, target)
        CHECKS[target](converted)
        [definitional] = extensions(converted, XVER + "MedicationKnowledge.definitional")
        assert (definitional["extension"]) == [
            {"url": "definition", "valueReference": {"reference": "MedicationKnowledge/other"}}
        ]

    @pytest.mark.parametrize("target", TARGETS)
    def test_doc_status_without_code(self, target: Target) -> None:
        """An R5-only docStatus code is an extension rather than a wrong R4 code."""
        resource = dict(r5("DocumentReference/msk-inotuzumab-ozogamicin"), docStatus="registered")
        converted = convert(resource, target)
        CHECKS[target](converted)
        assert "docStatus" not in converted
        [status] = extensions(converted, XVER + "DocumentReference.docStatus")
        assert status["valueCode"] == "registered"

    @pytest.mark.parametrize(
        "change",
        [
            {"resourceType": "Group", "id": "g", "type": "careteam", "membership": "definitional"},
            {"resourceType": "Provenance", "id": "p", "target": [{"reference": "Medication/m"}]},
            {
                "resourceType": "Provenance",
                "id": "p",
                "target": [{"reference": "Medication/m"}],
                "recorded": "2026-01-01T00:00:00Z",
                "agent": [{"who": {"reference": "Organization/o"}}],
                "entity": [{"role": "instantiates", "what": {"reference": "Medication/m"}}],
            },
        ],
    )
    @pytest.mark.parametrize("target", TARGETS)
    def test_required_without_equivalent(self, change: dict[str, Any], target: Target) -> None:
        """A value the target requires and R5 cannot give it (no code, no recorded) is an error."""
        with pytest.raises(ConversionError):
            convert(change, target)

    def test_unknown_version(self) -> None:
        """Only 4.3 and 4.0 are targets."""
        with pytest.raises(ValueError, match="unknown FHIR version"):
            convert(r5(MK), "3.0")  # type: ignore[arg-type]

    @pytest.mark.parametrize("target", TARGETS)
    def test_item_with_concept_and_reference(self, target: Target) -> None:
        """An ingredient both named and referenced: the name is item[x], the reference an extension."""
        resource = {
            "resourceType": "Medication",
            "id": "x",
            "ingredient": [{"item": {"concept": {"text": "a"}, "reference": {"reference": "Substance/a"}}}],
        }
        converted = convert(resource, target)
        CHECKS[target](converted)
        [ingredient] = converted["ingredient"]
        assert ingredient["itemCodeableConcept"] == {"text": "a"}
        [item] = extensions(ingredient, XVER + "Medication.ingredient.item")
        assert "Substance/a" in reference_strings(item)
