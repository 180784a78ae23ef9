"""A sample of HL7's official R5 examples (CC0): each validates with no error, and every mutant is caught."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from fhir_pub.validation.issues import is_error
from fhir_pub.validation.mutants import KINDS, mutants
from fhir_pub.validation.validator import Validator, candidate_from_value

SAMPLE = sorted((Path(__file__).parent / "data" / "r5-examples").glob("*.json"))


@pytest.fixture(scope="module")
def validator() -> Validator:
    return Validator()


def errors(validator: Validator, resource: dict[str, Any], source: str) -> list[str]:
    report = validator.validate_one(candidate_from_value(resource, source))
    return [issue.message for issue in report.issues if is_error(issue)]


class TestOfficialExamples:
    """The sample from hl7.fhir.r5.examples 5.0.0 (scripts/check-examples runs the whole package)."""

    def test_the_sample_is_varied(self) -> None:
        """Dozens of examples, each of its own resource type."""
        types = {path.name.split("-", 1)[0] for path in SAMPLE}
        assert len(SAMPLE) >= 40
        assert len(types) == len(SAMPLE)

    @pytest.mark.parametrize("path", SAMPLE, ids=lambda p: p.stem)
    def test_an_official_example_gets_no_error(self, validator: Validator, path: Path) -> None:
        """An example the official build accepts is accepted in single-resource mode."""
        assert errors(validator, orjson.loads(path.read_bytes()), path.name) == []

    @pytest.mark.parametrize("path", SAMPLE, ids=lambda p: p.stem)
    def test_every_mutant_is_caught(self, validator: Validator, path: Path) -> None:
        """A required code replaced, a required element removed, a datatype, an invariant broken: an error."""
        resource = orjson.loads(path.read_bytes())
        derived = list(mutants(resource))
        assert derived, "every sampled example has something to break"
        missed = [
            (m.kind, m.where, m.change) for m in derived if not errors(validator, m.resource, path.name)
        ]
        assert missed == []

    def test_every_kind_of_mutant_is_exercised(self) -> None:
        """Across the sample, each kind of mutant is derived at least once."""
        kinds = {m.kind for path in SAMPLE for m in mutants(orjson.loads(path.read_bytes()))}
        assert set(KINDS) == kinds


class TestNullsInPrimitiveArrays:
    """FHIR JSON aligns a primitive array with its ``_`` array by nulls; ele-1 accepts them there."""

    def test_null_aligning_an_extension_is_no_error(self, validator: Validator) -> None:
        """``given: ["A", null]`` with ``_given: [null, {...}]`` is valid JSON FHIR."""
        patient = {
            "resourceType": "Patient",
            "id": "p",
            "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">P</div>'},
            "name": [
                {
                    "given": ["A", "B"],
                    "_given": [None, {"extension": [{"url": "http://example.org/x", "valueString": "y"}]}],
                }
            ],
        }
        assert errors(validator, patient, "p") == []

    def test_a_null_value_is_still_an_error(self, validator: Validator) -> None:
        """Outside an array, null is an empty value (ele-1)."""
        patient = {"resourceType": "Patient", "id": "p", "gender": None}
        assert errors(validator, patient, "p") != []

    @pytest.mark.parametrize(
        ("name", "valid"),
        [
            ({"family": "F", "_family": {"id": "f1"}}, True),  # one element: a value and an id
            ({"given": ["A", "B"], "_given": [None, {"id": "g2"}]}, True),
            ({"_family": {"id": "f1"}}, False),  # an id alone: no value, no children
            ({"given": ["A", None], "_given": [None, {"id": "g2"}]}, False),
        ],
    )
    def test_an_id_beside_a_value(self, validator: Validator, name: dict[str, Any], valid: bool) -> None:
        """A primitive's ``_name`` holding only an id is one element with the value beside it (ele-1)."""
        patient = {
            "resourceType": "Patient",
            "id": "p",
            "text": {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">P</div>'},
            "name": [name],
        }
        assert (errors(validator, patient, "p") == []) is valid


UNEVALUABLE = {"ExampleScenario-example.json": "exs-1", "OperationDefinition-example.json": "opd-3"}


@pytest.mark.parametrize(("name", "key"), sorted(UNEVALUABLE.items()))
def test_an_hl7_rule_the_engine_cannot_evaluate_is_a_warning(
    validator: Validator, name: str, key: str
) -> None:
    """Official examples with an R5 rule fhirpathpy cannot evaluate: no error, a warning it went unchecked."""
    path = Path(__file__).parent / "data" / "r5-unevaluable" / name
    report = validator.validate_one(candidate_from_value(orjson.loads(path.read_bytes()), name))
    assert [issue.message for issue in report.issues if is_error(issue)] == []
    unchecked = [issue for issue in report.issues if issue.rule == key]
    assert unchecked
    assert all(i.severity == "warning" and "not checked" in i.message for i in unchecked)
