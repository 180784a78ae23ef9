"""Required bindings of R5's Coding and CodeableConcept elements, on HL7's official R5 examples (CC0).

DeviceAssociation.status (CodeableConcept), SupplyDelivery.type (CodeableConcept) and
Appointment.recurrenceTemplate.monthlyTemplate.dayOfWeek (Coding) are bound ``required`` to ValueSets the
R5 package lists in full (fhir_pub/validation/r5-bindings.json); Condition's and AllergyIntolerance's clinical
and verification statuses to ValueSets drawing on terminology.hl7.org code systems, which the HL7 Terminology
package (THO) lists. The rules: fhir_pub/validation/bindings.py.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_pub.definitions import element_at
from fhir_pub.validation.bindings import R5_BINDINGS, required_concepts
from fhir_pub.validation.issues import Issue, is_error
from fhir_pub.validation.mutants import mutants
from fhir_pub.validation.validator import Validator, candidate_from_value

DATA = Path(__file__).parent / "data"
DEVICE_ASSOCIATION = orjson.loads((DATA / "r5-examples" / "DeviceAssociation-example.json").read_bytes())
SUPPLY_DELIVERY = orjson.loads((DATA / "r5-bindings" / "SupplyDelivery-simpledelivery.json").read_bytes())
APPOINTMENT = orjson.loads((DATA / "r5-examples" / "Appointment-2docs.json").read_bytes())
CONDITION = orjson.loads((DATA / "r5-bindings" / "Condition-example.json").read_bytes())
ALLERGY = orjson.loads((DATA / "r5-bindings" / "AllergyIntolerance-example.json").read_bytes())
THO = "http://terminology.hl7.org/CodeSystem/"
STATUS = "http://hl7.org/fhir/deviceassociation-status"
DAYS = "http://hl7.org/fhir/days-of-week"


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator()


def errors(validator: Validator, resource: dict[str, Any]) -> list[Issue]:
    report = validator.validate_one(candidate_from_value(resource, "example.json"))
    return [issue for issue in report.issues if is_error(issue)]


def with_status(status: Any) -> dict[str, Any]:
    resource = copy.deepcopy(DEVICE_ASSOCIATION)
    resource["status"] = status
    return resource


def monthly(day: Any) -> dict[str, Any]:
    """The official Appointment with a recurrence on one day of the month's weeks (a Coding)."""
    resource = copy.deepcopy(APPOINTMENT)
    resource["recurrenceTemplate"] = [
        {
            "recurrenceType": {"coding": [{"system": "http://snomed.info/sct", "code": "255228009"}]},
            "monthlyTemplate": {"dayOfWeek": day, "monthInterval": 1},
        }
    ]
    return resource


def binding_error(issues: list[Issue]) -> Issue:
    """The one error, which must be a binding's."""
    assert [(i.code, i.layer) for i in issues] == [("code-invalid", "binding")], issues
    return issues[0]


class TestCodeableConcept:
    """At least one coding of the ValueSet, by system and code; text alone is not enough."""

    def test_the_official_example_passes(self, validator: Validator) -> None:
        """DeviceAssociation-example: status implanted, of the deviceassociation-status system."""
        assert errors(validator, DEVICE_ASSOCIATION) == []

    def test_a_wrong_code_is_an_error_at_the_element(self, validator: Validator) -> None:
        """The right system with a code it does not define: an error naming the ValueSet and its codes."""
        issue = binding_error(
            errors(validator, with_status({"coding": [{"system": STATUS, "code": "lost"}]}))
        )
        assert issue.expression == "DeviceAssociation.status"
        assert f"{STATUS}|lost is not a concept of http://hl7.org/fhir/ValueSet/deviceassociation-status" in (
            issue.message
        )
        assert "required binding" in issue.message
        assert "attached, entered-in-error, explanted, implanted, unknown" in issue.message

    @pytest.mark.parametrize(
        "coding",
        [{"system": "http://example.org/status", "code": "implanted"}, {"code": "implanted"}],
        ids=["another-system", "no-system"],
    )
    def test_the_right_code_of_another_system_is_an_error(
        self, validator: Validator, coding: dict[str, str]
    ) -> None:
        """A concept is its system and code together: ``implanted`` alone is not the ValueSet's."""
        issue = binding_error(errors(validator, with_status({"coding": [coding]})))
        assert issue.expression == "DeviceAssociation.status"

    def test_one_coding_of_the_value_set_is_enough(self, validator: Validator) -> None:
        """Other codings (translations) and text may go with the one the binding asks for."""
        status = {
            "coding": [
                {"system": "http://example.org/local", "code": "IMP"},
                {"system": STATUS, "code": "implanted"},
            ],
            "text": "Implanted",
        }
        assert errors(validator, with_status(status)) == []

    def test_codings_none_of_the_value_set_are_one_error(self, validator: Validator) -> None:
        """Two codings, neither the ValueSet's: one error for the element, listing both."""
        status = {
            "coding": [{"system": "http://example.org/local", "code": "IMP"}, {"system": STATUS, "code": "x"}]
        }
        issue = binding_error(errors(validator, with_status(status)))
        assert "http://example.org/local|IMP, http://hl7.org/fhir/deviceassociation-status|x are not" in (
            issue.message
        )

    def test_text_only_is_an_error(self, validator: Validator) -> None:
        """A required binding has no text fallback (extensible has): text without a code is an error."""
        issue = binding_error(errors(validator, with_status({"text": "implanted"})))
        assert issue.expression == "DeviceAssociation.status"
        assert "no code, only text" in issue.message

    def test_an_absent_reason_alone_is_not_judged(self, validator: Validator) -> None:
        """A CodeableConcept that states no concept, only why it is missing, is not the binding's to judge."""
        absent = {"url": "http://hl7.org/fhir/StructureDefinition/data-absent-reason", "valueCode": "unknown"}
        assert errors(validator, with_status({"extension": [absent]})) == []

    def test_another_official_example(self, validator: Validator) -> None:
        """SupplyDelivery-simpledelivery (type device, with text) passes; a code the system lacks does not."""
        assert errors(validator, SUPPLY_DELIVERY) == []
        broken = copy.deepcopy(SUPPLY_DELIVERY)
        broken["type"]["coding"][0]["code"] = "tubes"
        issue = binding_error(errors(validator, broken))
        assert issue.expression == "SupplyDelivery.type"
        assert "biologicallyderivedproduct, device, medication" in issue.message

    def test_the_location_inside_a_bundle(self, validator: Validator) -> None:
        """A resource in a Bundle entry is located from the Bundle."""
        bundle = {
            "resourceType": "Bundle",
            "id": "b",
            "type": "collection",
            "entry": [
                {"fullUrl": "http://example.org/fhir/SupplyDelivery/s", "resource": SUPPLY_DELIVERY},
                {
                    "fullUrl": "http://example.org/fhir/DeviceAssociation/d",
                    "resource": with_status({"coding": [{"system": STATUS, "code": "lost"}]}),
                },
            ],
        }
        assert binding_error(errors(validator, bundle)).expression == "Bundle.entry[1].resource.status"


class TestTerminologyCodeSystems:
    """Bindings whose code systems are HL7 Terminology's (THO), not the R5 package's."""

    def test_the_official_examples_pass(self, validator: Validator) -> None:
        """Condition-example (active, confirmed) and AllergyIntolerance-example: no error."""
        assert errors(validator, CONDITION) == []
        assert errors(validator, ALLERGY) == []

    def test_a_clinical_status_the_code_system_lacks(self, validator: Validator) -> None:
        """Condition.clinicalStatus "cured": an error naming the ValueSet's codes."""
        broken = copy.deepcopy(CONDITION)
        broken["clinicalStatus"]["coding"][0]["code"] = "cured"
        issue = binding_error(errors(validator, broken))
        assert issue.expression == "Condition.clinicalStatus"
        assert "http://hl7.org/fhir/ValueSet/condition-clinical" in issue.message
        assert "active, inactive, recurrence, relapse, remission, resolved, unknown" in issue.message

    def test_the_condition_code_system_for_an_allergy(self, validator: Validator) -> None:
        """Condition's clinical-status system on an AllergyIntolerance: the right code, the wrong system."""
        broken = copy.deepcopy(ALLERGY)
        broken["clinicalStatus"]["coding"][0]["system"] = THO + "condition-clinical"
        issue = binding_error(errors(validator, broken))
        assert issue.expression == "AllergyIntolerance.clinicalStatus"

    def test_a_verification_status_from_another_resource(self, validator: Validator) -> None:
        """AllergyIntolerance's verification code "presumed" is not in Condition's ValueSet."""
        broken = copy.deepcopy(CONDITION)
        broken["verificationStatus"] = {
            "coding": [{"system": THO + "condition-ver-status", "code": "presumed"}]
        }
        assert binding_error(errors(validator, broken)).expression == "Condition.verificationStatus"

    def test_the_concept_mutant_is_caught(self, validator: Validator) -> None:
        """The mutation suite finds the clinical status and breaks it."""
        mutant = next(m for m in mutants(CONDITION) if m.kind == "concept")
        assert binding_error(errors(validator, mutant.resource)).expression == mutant.where


class TestCoding:
    """A Coding element: its system and code must be a concept of the ValueSet."""

    def test_a_member_passes(self, validator: Validator) -> None:
        """The code mon of the days-of-week system: no error (the Appointment is otherwise valid)."""
        assert errors(validator, monthly({"system": DAYS, "code": "mon"})) == []

    @pytest.mark.parametrize(
        "day",
        [
            {"system": DAYS, "code": "monday"},
            {"system": "http://example.org/days", "code": "mon"},
            {"code": "mon"},
        ],
        ids=["wrong-code", "another-system", "no-system"],
    )
    def test_a_non_member_is_an_error_at_the_element(self, validator: Validator, day: dict[str, str]) -> None:
        """A wrong code, or the right code under another system or none: an error at the Coding."""
        issue = binding_error(errors(validator, monthly(day)))
        assert issue.expression == "Appointment.recurrenceTemplate[0].monthlyTemplate.dayOfWeek"
        assert "http://hl7.org/fhir/ValueSet/days-of-week" in issue.message
        assert "fri, mon, sat, sun, thu, tue, wed" in issue.message

    def test_a_display_without_a_code_is_an_error(self, validator: Validator) -> None:
        """A display names no concept of the ValueSet (as text does not, in a CodeableConcept)."""
        issue = binding_error(errors(validator, monthly({"display": "Monday"})))
        assert "no code" in issue.message


class TestTable:
    """r5-bindings.json's coded tables, and the mutant derived from them."""

    def test_coded_bindings_are_coding_or_codeableconcept_elements(self) -> None:
        """Each element r5-bindings.json lists as coded is a Coding or CodeableConcept of the R5 models."""
        coded = orjson.loads(R5_BINDINGS.read_bytes())["coded"]
        assert "DeviceAssociation.status" in coded
        for path in coded:
            info = element_at(path)
            assert info is not None, path
            assert info.type_name in {"Coding", "CodeableConcept"}, path

    def test_concepts_keep_their_system(self) -> None:
        """The allowed concepts are (system, code) pairs."""
        allowed = required_concepts("DeviceAssociation", "DeviceAssociation", "status")
        assert allowed is not None
        assert (STATUS, "implanted") in allowed
        assert (None, "implanted") not in allowed

    def test_the_concept_mutant_is_caught(self, validator: Validator) -> None:
        """The mutation suite's ``concept`` mutant: the code replaced, its system kept, is an error there."""
        mutant = next(m for m in mutants(DEVICE_ASSOCIATION) if m.kind == "concept")
        assert mutant.resource["status"]["coding"][0]["system"] == STATUS
        assert binding_error(errors(validator, mutant.resource)).expression == mutant.where
