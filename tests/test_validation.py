"""The validator: the publication validates clean, and each invalid case is caught by the right rule."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.operationoutcome import OperationOutcome

from fhir_pub.conformance import R5_BASE, load_conformance
from fhir_pub.definitions import element_at, is_resource_type
from fhir_pub.graph import key_of
from fhir_pub.publication import Publication
from fhir_pub.validation import Candidate, Validator, candidate_from_bytes, candidate_from_file
from fhir_pub.validation.r5 import base_constraints, element_order
from fhir_pub.validation.validator import candidate_from_value

CATALOG = sorted((Path(__file__).parent / "data" / "invalid").glob("*.json"))
LAYERS = ("structure", "profile", "invariant", "graph")


@pytest.fixture(scope="module")
def validator() -> Validator:
    """One validator (profiles compiled once) for the whole module."""
    return Validator()


def issue_set(issues: Any) -> set[tuple[str, str, str | None, str | None, str]]:
    return {(i.severity, i.code, i.expression, i.rule, i.layer) for i in issues}


class TestPublication:
    """The bundled publication is valid."""

    def test_clean(self, validator: Validator, publication: Publication) -> None:
        """Every resource passes all four layers with no error and no warning."""
        report = validator.validate_paths([publication.root])
        assert report.checked == len(publication)
        assert [i.message for i in report.issues] == []

    def test_profiles_compile_without_notes(self, validator: Validator) -> None:
        """Every binding is enumerable, every slice has a discriminator value, every invariant compiles."""
        assert validator.notes == []
        assert len(validator.schemas) == len(load_conformance().resource_profiles)

    def test_every_resource_declares_a_known_profile_of_its_type(self, publication: Publication) -> None:
        """``meta.profile`` names exactly one of our resource profiles, for the resource's own type."""
        profiles = load_conformance().resource_profiles
        for entry in publication:
            (url,) = entry.resource["meta"]["profile"]
            assert profiles[url]["type"] == entry.resource["resourceType"]


class TestProfiles:
    """The profiles are well-formed against R5."""

    def test_differential_paths_exist_in_r5(self) -> None:
        """Every differential element names an element R5 defines (catches typos that would check nothing)."""
        for sd in load_conformance().of_type("StructureDefinition"):
            assert sd["baseDefinition"] == R5_BASE + sd["type"]
            for element in sd["differential"]["element"]:
                path = element["path"]
                assert path.split(".")[0] == sd["type"], path
                if "." in path:
                    assert element_at(path) is not None, f"{sd['id']}: {path}"

    def test_clinical_use_profiles_fix_type_and_forbid_other_kinds(self) -> None:
        """One profile per ClinicalUseDefinition type: type fixed, the other four backbones 0..0."""
        kinds = {"indication", "contraindication", "interaction", "undesirable-effect", "warning"}
        profiles = [
            p for p in load_conformance().resource_profiles.values() if p["type"] == "ClinicalUseDefinition"
        ]
        fixed = {}
        for profile in profiles:
            elements = {e["id"]: e for e in profile["differential"]["element"]}
            fixed[elements["ClinicalUseDefinition.type"]["patternCode"]] = profile["id"]
            forbidden = [e for e in elements.values() if e.get("max") == "0"]
            assert len(forbidden) == 4
        assert set(fixed) == kinds

    def test_value_sets_expand(self) -> None:
        """Every value set a profile binds to can be enumerated here."""
        conformance = load_conformance()
        for sd in conformance.of_type("StructureDefinition"):
            for element in sd["differential"]["element"]:
                if "binding" in element:
                    assert conformance.expand(element["binding"]["valueSet"]), element["id"]

    def test_base_invariants_come_from_r5(self, validator: Validator) -> None:
        """The published types' R5 invariants (cud-1, dom-*, ref-1 ...) are enforced, from R5 itself."""
        enforced: Counter[str] = Counter()
        for invariant in validator.invariants.all:
            enforced[invariant.key] += 1
        for key in ("cud-1", "dom-2", "dom-3", "dom-4", "dom-5", "dom-6", "ref-1", "txt-1", "org-1", "rng-2"):
            assert enforced[key] >= 1, key
        assert enforced["cud-1"] == 5  # one per ClinicalUseDefinition profile
        assert enforced["dom-6"] == len(load_conformance().resource_profiles)
        # CapabilityStatement's own R5 snapshot leaves dom-* out; it is a DomainResource all the same
        keys = {constraint["key"] for _, constraint in base_constraints("CapabilityStatement")}
        assert keys >= {"dom-3", "cpb-1"}

    def test_no_profile_restates_a_base_invariant(self) -> None:
        """Only our fhirpub-* constraints are in the differentials (a snapshot would repeat a key: eld-14)."""
        for sd in load_conformance().of_type("StructureDefinition"):
            for element in sd["differential"]["element"]:
                for constraint in element.get("constraint", []):
                    assert constraint["key"].startswith("fhirpub-"), (sd["id"], constraint["key"])

    def test_extension_definitions_have_a_context(self) -> None:
        """sdf-5: a StructureDefinition constraining Extension says where the extension may be used."""
        extensions = [
            sd for sd in load_conformance().of_type("StructureDefinition") if sd["type"] == "Extension"
        ]
        assert extensions
        for sd in extensions:
            assert sd["context"], sd["id"]
            for context in sd["context"]:
                assert context["type"] == "element"
                assert context["expression"] == "Element" or element_at(context["expression"]) is not None

    def test_pattern_rather_than_fixed(self) -> None:
        """eld-24: differentials constrain values with pattern[x], never fixed[x]."""
        for sd in load_conformance().of_type("StructureDefinition"):
            for element in sd["differential"]["element"]:
                assert not [key for key in element if key.startswith("fixed")], element["id"]

    def test_differentials_follow_the_base_order(self) -> None:
        """Differential elements come in the base type's element order (slices after their element)."""
        for sd in load_conformance().of_type("StructureDefinition"):
            ids = [element["id"] for element in sd["differential"]["element"]]
            assert ids == sorted(ids, key=lambda i: element_order(sd["type"], i)), sd["id"]


class TestCatalog:
    """Each invalid resource breaks one rule and is reported at the element with the expected code."""

    def test_catalog_is_broad(self) -> None:
        """At least 40 cases, at least five per layer."""
        layers = Counter(json.loads(p.read_text())["layer"] for p in CATALOG)
        assert len(CATALOG) >= 40
        assert all(layers[layer] >= 5 for layer in LAYERS), layers

    @pytest.mark.parametrize("path", CATALOG, ids=[p.stem for p in CATALOG])
    def test_case(self, path: Path, validator: Validator, publication: Publication) -> None:
        """Validated in place of the resource it modifies, the case yields exactly its expected issues."""
        case = json.loads(path.read_text(encoding="utf-8"))
        resource = case["resource"]
        context = [e.resource for e in publication if e.key != key_of(resource)]
        report = validator.validate([candidate_from_bytes(json.dumps(resource).encode(), path.name)], context)
        expected = {
            (e["severity"], e["code"], e["expression"], e["rule"], e["layer"]) for e in case["expected"]
        }
        assert issue_set(report.issues) == expected
        assert any(
            layer == case["layer"] or rule.startswith("fhirpub-") for _, _, _, rule, layer in expected if rule
        )
        assert all(len(i.message) > 15 for i in report.issues)
        assert not report.ok or all(i.severity == "warning" for i in report.issues)


class TestInput:
    """Hostile or broken input becomes a clear issue, never an exception."""

    @pytest.mark.parametrize(
        ("data", "code"),
        [
            (b"{not json", "structure"),
            (b"", "structure"),
            (b"\xff\xfe{}", "structure"),
            (b"[]", "structure"),
            (b'"Organization"', "structure"),
            (b"{}", "required"),
            (b'{"resourceType": "Nonsense"}', "not-supported"),
            (b'{"resourceType": "CodeableConcept"}', "not-supported"),
            (b'{"resourceType": 5}', "required"),
            (
                b'{"resourceType": "Organization", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                "too-costly",
            ),
            (
                b'{"resourceType": "Organization", "x": ' + b'{"a":' * 70 + b"1" + b"}" * 70 + b"}",
                "too-costly",
            ),
        ],
        ids=[
            "syntax",
            "empty",
            "not-utf8",
            "array",
            "string",
            "no-type",
            "unknown-type",
            "datatype",
            "type-number",
            "nesting-deep",
            "nesting-70",
        ],
    )
    def test_bad_bytes(self, data: bytes, code: str, validator: Validator) -> None:
        """Each is one fatal issue with its code, and nothing else is attempted."""
        report = validator.validate([candidate_from_bytes(data, "input.json")])
        assert [(i.severity, i.code) for i in report.issues] == [("fatal", code)]
        assert report.issues[0].message

    def test_huge_file(self, tmp_path: Path, validator: Validator) -> None:
        """A 50 MB file is refused by size before it is read."""
        path = tmp_path / "huge.json"
        with path.open("wb") as handle:
            handle.truncate(50 * 1024 * 1024)
        report = validator.validate([candidate_from_file(path)])
        assert [(i.severity, i.code) for i in report.issues] == [("fatal", "too-long")]
        assert "52,428,800 bytes" in report.issues[0].message

    def test_unreadable_file(self, tmp_path: Path, validator: Validator) -> None:
        """A path that cannot be read as a file is an issue naming it (here: a folder named like a file)."""
        path = tmp_path / "folder.json"
        path.mkdir()
        report = validator.validate([candidate_from_file(path)])
        assert [(i.severity, i.code, i.source) for i in report.issues] == [("fatal", "exception", str(path))]

    def test_duplicate_ids(self, validator: Validator, publication: Publication) -> None:
        """The same Type/id twice in one set is reported as a duplicate."""
        resource = publication.get("Organization/fda")
        assert resource is not None
        candidates = [
            candidate_from_bytes(json.dumps(resource).encode(), name) for name in ("a.json", "b.json")
        ]
        context = [e.resource for e in publication if e.key != "Organization/fda"]
        report = validator.validate(candidates, context)
        assert ("error", "duplicate", None, "unique-id", "graph") in issue_set(report.issues)

    def test_input_is_not_modified(self, validator: Validator, publication: Publication) -> None:
        """Validation reads its input and never changes it (fhirpathpy is known to mutate what it gets)."""
        resources = [json.loads(json.dumps(e.resource)) for e in publication]
        before = json.dumps(resources, sort_keys=True)
        validator.validate([Candidate(key_of(r), r) for r in resources])
        assert json.dumps(resources, sort_keys=True) == before


class TestOperationOutcome:
    """The report is a valid R5 OperationOutcome, the one shape every error takes."""

    def test_errors_shape(self, validator: Validator) -> None:
        """Issues carry severity, code, human text, diagnostics and an expression; R5 parses the result."""
        path = CATALOG[0]
        resource = json.loads(path.read_text(encoding="utf-8"))["resource"]
        outcome = validator.validate(
            [candidate_from_bytes(json.dumps(resource).encode(), "x.json")]
        ).outcome()
        OperationOutcome.model_validate(outcome)
        assert outcome["issue"]
        for issue in outcome["issue"]:
            assert set(issue) >= {"severity", "code", "details", "diagnostics"}
            assert issue["details"]["text"]
        assert any("expression" in issue for issue in outcome["issue"])

    def test_clean_shape(self, validator: Validator, publication: Publication) -> None:
        """A clean report is one informational issue."""
        outcome = validator.validate_paths([publication.root]).outcome()
        OperationOutcome.model_validate(outcome)
        assert outcome["issue"] == [
            {"severity": "information", "code": "informational", "details": {"text": "No issues found."}}
        ]

    def test_resource_types_known(self) -> None:
        """The type check used for input knows R5 resources and rejects datatypes."""
        assert is_resource_type("ClinicalUseDefinition")
        assert not is_resource_type("Coding")


PNG = (  # a 1x1 PNG
    "data:image/png;base64,"
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


class TestNarrativeMarkup:
    """txt-1's XHTML check: inline images as R5's own narratives have them; script and markup URLs refused."""

    @pytest.mark.parametrize(
        ("markup", "allowed"),
        [
            (f'<img src="{PNG}" alt="icon"/>', True),  # as in R5's generated StructureDefinition tables
            ('<img src=" DATA:IMAGE/GIF;base64,R0lGODlh"/>', True),
            ('<img src="data:text/html,&lt;script&gt;alert(1)&lt;/script&gt;"/>', False),
            ('<img src="data:image"/>', False),
            (f'<a href="{PNG}">x</a>', False),  # a data: link is refused whatever it names
            ('<img src="javascript:alert(1)"/>', False),
            ('<a href="https://example.org/">x</a>', True),
        ],
    )
    def test_urls(self, markup: str, allowed: bool) -> None:
        """Each markup judged alone in a narrative div."""
        from fhir_pub.validation.fhirpath import html_checks

        assert html_checks(f'<div xmlns="http://www.w3.org/1999/xhtml">{markup}</div>') is allowed


class TestInteger64:
    """R5's integer64 runs from -2^63: fhir.resources' models refuse that least value, the validator not."""

    @staticmethod
    def structure_errors(validator: Validator, value: Any) -> list[str]:
        """The structure errors of a Basic whose one extension has this valueInteger64."""
        definition = {
            "resourceType": "Basic",
            "id": "b",
            "code": {"text": "counter"},
            "extension": [{"url": "http://example.org/count", "valueInteger64": value}],
        }
        report = validator.validate_one(candidate_from_value(definition, "b.json"))
        return [i.message for i in report.issues if i.layer == "structure" and i.severity == "error"]

    @pytest.mark.parametrize("value", ["-9223372036854775808", -9223372036854775808, "9223372036854775807"])
    def test_the_ends_of_the_range(self, validator: Validator, value: Any) -> None:
        """-2^63 and 2^63 - 1, as a JSON string (R5's form) or a number: no error."""
        assert self.structure_errors(validator, value) == []

    @pytest.mark.parametrize("value", ["-9223372036854775809", "9223372036854775808"])
    def test_past_the_ends(self, validator: Validator, value: Any) -> None:
        """One past either end: an error."""
        assert self.structure_errors(validator, value) != []


class TestExtensionPrimitive:
    """An extension's primitive value may have an id and extensions (``_valueCode``), as R5's JSON allows."""

    @staticmethod
    def structure_errors(validator: Validator, extension: dict[str, Any]) -> list[tuple[str | None, str]]:
        """The structure issues (location, message) of a Basic with this one extension."""
        basic = {"resourceType": "Basic", "id": "b", "code": {"text": "counter"}, "extension": [extension]}
        report = validator.validate_one(candidate_from_value(basic, "b.json"))
        return [(i.expression, i.message) for i in report.issues if i.layer == "structure"]

    def test_as_in_the_official_code_systems(self, validator: Validator) -> None:
        """CodeSystem-discriminator-type's deprecated concept: a status with its reason on the code."""
        reason = {"url": "http://example.org/reason", "valueMarkdown": "works as *value*"}
        extension = {
            "url": "http://example.org/status",
            "valueCode": "deprecated",
            "_valueCode": {"extension": [reason]},
        }
        assert self.structure_errors(validator, extension) == []

    def test_the_value_alone(self, validator: Validator) -> None:
        """No value, only its extensions (json.html#primitive)."""
        extension = {"url": "http://example.org/status", "_valueBoolean": {"id": "v1"}}
        assert self.structure_errors(validator, extension) == []

    @pytest.mark.parametrize(
        ("element", "where"),
        [
            ({"bogus": 1}, "Basic.extension[0]._valueCode.bogus"),
            ({"extension": [{"valueString": "no url"}]}, "Basic.extension[0]._valueCode.extension[0].url"),
            ("a string", "Basic.extension[0]._valueCode"),
        ],
    )
    def test_what_it_holds_is_still_checked(self, validator: Validator, element: Any, where: str) -> None:
        """An unknown element, an extension without its url, a value that is not an object: errors there."""
        extension = {"url": "http://example.org/status", "valueCode": "x", "_valueCode": element}
        assert [w for w, _ in self.structure_errors(validator, extension)] == [where]

    def test_a_complex_value_has_no_underscore_form(self, validator: Validator) -> None:
        """``_valueCoding`` is not R5 JSON: a Coding is not a primitive."""
        extension = {"url": "http://example.org/c", "valueCoding": {"code": "x"}, "_valueCoding": {"id": "v"}}
        assert [w for w, _ in self.structure_errors(validator, extension)] == [
            "Basic.extension[0]._valueCoding"
        ]


class TestBehindTheModelsRefusals:
    """What fhir.resources refuses wrongly is set aside, and the rest of the resource is still judged."""

    @staticmethod
    def errors(validator: Validator, resource: dict[str, Any]) -> list[tuple[str | None, str]]:
        """The errors of any layer, (location, message)."""
        report = validator.validate_one(candidate_from_value(resource, "r.json"))
        return [(i.expression, i.message) for i in report.issues if i.severity in ("error", "fatal")]

    def test_a_missing_element_beside_the_least_integer64(self, validator: Validator) -> None:
        """Basic.code removed (min 1) where an extension holds -2^63: the missing code is an error."""
        basic = {
            "resourceType": "Basic",
            "id": "b",
            "extension": [{"url": "http://example.org/n", "valueInteger64": "-9223372036854775808"}],
        }
        assert [w for w, _ in self.errors(validator, basic)] == ["Basic.code"]

    def test_a_missing_element_beside_an_extension_primitive(self, validator: Validator) -> None:
        """The same beside an extension's ``_valueCode``."""
        extension = {"url": "http://example.org/s", "valueCode": "x", "_valueCode": {"id": "v"}}
        basic = {"resourceType": "Basic", "id": "b", "extension": [extension]}
        assert [w for w, _ in self.errors(validator, basic)] == ["Basic.code"]
