"""Property tests: the validator never crashes on mutated resources, and its memo never changes a result."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from fhir.resources.operationoutcome import OperationOutcome
from fhirpathpy.engine.nodes import ResourceNode
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fhir_pub.conformance import load_conformance
from fhir_pub.publication import load
from fhir_pub.validation import Candidate, Validator, candidate_from_bytes
from fhir_pub.validation.fhirpath import compile_expression
from fhir_pub.validation.invariants import (
    ABSENT_RULES,
    CONTAINED_RULES,
    DOM_6,
    NARRATIVE_CHECKS,
    R4B_DOM_3,
    R4B_REF_1,
    REF_1,
    REF_2,
    InvariantSet,
    has_narrative,
    narrative_checks,
    nothing_contained,
    ref_1,
    reference_has_content,
    without,
)
from fhir_pub.validation.schema import SchemaValidator, _Part
from fhir_pub.validation.validator import declared_profiles, resolving, shape_issues

PUBLICATION = load()
# One resource of each shape the publication has; mutations start from these.
SAMPLES = [
    "MedicationKnowledge/besponsa",
    "Medication/besponsa-vial",
    "ClinicalUseDefinition/warning-hepatotoxicity",
    "ClinicalUseDefinition/effect-diarrhea",
    "ClinicalUseDefinition/indication-acute-lymphoblastic-leukemia",
    "ClinicalUseDefinition/interaction-qt-prolonging-medicines",
    "DocumentReference/msk-inotuzumab-ozogamicin",
    "Organization/msk",
    "Provenance/warning-bleeding",
    "Group/patients-1-year-and-older",
]
VALIDATOR = Validator()
CONTEXT = {entry.key: entry.resource for entry in PUBLICATION}
SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
    | st.sampled_from(
        ["#x", "Medication/besponsa-vial", "Organization/fda", "http://snomed.info/sct", "<div/>"]
    ),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=6,
)


def locations(node: Any, path: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """Every key or index path inside a JSON value."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in items:
        yield (*path, key)
        yield from locations(child, (*path, key))


@st.composite
def mutated_resources(draw: st.DrawFn) -> dict[str, Any]:
    """A resource of the publication with one to four random changes: delete, replace, duplicate, rename."""
    resource = copy.deepcopy(CONTEXT[draw(st.sampled_from(SAMPLES))])
    for _ in range(draw(st.integers(1, 4))):
        where = list(locations(resource))
        path = draw(st.sampled_from(where))
        parent = resource
        for step in path[:-1]:
            parent = parent[step]
        last = path[-1]
        operation = draw(st.sampled_from(["delete", "replace", "duplicate", "rename"]))
        if operation == "delete":
            del parent[last]
        elif operation == "replace":
            parent[last] = draw(json_values)
        elif operation == "duplicate" and isinstance(parent, list):
            parent.append(copy.deepcopy(parent[last]))
        elif operation == "rename" and isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=10))] = parent.pop(last)
    return resource


def validate_in_place(resource: dict[str, Any]) -> list[Any]:
    key = f"{resource.get('resourceType')}/{resource.get('id')}"
    context = [r for k, r in CONTEXT.items() if k != key]
    return list(VALIDATOR.validate([Candidate("mutated.json", resource)], context).issues)


class TestRobustness:
    """Whatever the input, the validator answers with issues, never an exception or an internal error."""

    @SETTINGS
    @given(mutated_resources())
    def test_mutations_never_crash(self, resource: dict[str, Any]) -> None:
        """Mutated resources give issues in a valid OperationOutcome, and no layer fails internally."""
        issues = validate_in_place(resource)
        assert not [i for i in issues if i.code == "exception"]
        OperationOutcome.model_validate(VALIDATOR.validate([Candidate("m.json", resource)]).outcome())

    @SETTINGS
    @given(st.binary(max_size=300) | json_values.map(lambda v: json.dumps(v).encode()))
    def test_arbitrary_bytes(self, data: bytes) -> None:
        """Any bytes at all are read into a candidate or a fatal issue."""
        candidate = candidate_from_bytes(data, "bytes.json")
        assert candidate.resource is not None or [i.severity for i in candidate.issues] == ["fatal"]
        report = VALIDATOR.validate([candidate])
        assert not [i for i in report.issues if i.code == "exception"]

    @SETTINGS
    @given(mutated_resources())
    def test_deterministic(self, resource: dict[str, Any]) -> None:
        """The same input gives the same issues twice."""
        first = validate_in_place(copy.deepcopy(resource))
        assert validate_in_place(copy.deepcopy(resource)) == first


@pytest.fixture(scope="module")
def warm() -> InvariantSet:
    """An invariant set whose memo has seen the whole publication."""
    invariants = InvariantSet(load_conformance())
    for entry in PUBLICATION:
        invariants.issues(entry.resource, entry.resource["meta"]["profile"], {}, entry.key)
    return invariants


class TestMemo:
    """Memoized invariant results equal evaluating every invariant afresh."""

    @SETTINGS
    @given(resource=mutated_resources(), referenced=st.booleans(), traced=st.booleans())
    def test_memo_is_transparent(
        self, warm: InvariantSet, resource: dict[str, Any], referenced: bool, traced: bool
    ) -> None:
        """A warm memo and a fresh, empty one report the same invariant issues for any input and variables."""
        assume(not shape_issues(resource, "x"))  # what the invariant layer is ever given
        profiles = declared_profiles(resource)
        environment = {
            "referencedBy": ["MedicationKnowledge/besponsa"] if referenced else [],
            "referrerTypes": ["MedicationKnowledge"] if referenced else [],
            "sources": ["DocumentReference/medlineplus-a617041"] if traced else [],
        }
        fresh = InvariantSet(load_conformance()).issues(resource, profiles, environment, "x")
        assert warm.issues(resource, profiles, environment, "x") == fresh


ids = st.text(alphabet="abc#-1", max_size=4)


class TestNative:
    """Invariants evaluated in Python agree with fhirpathpy evaluating their R5 FHIRPath."""

    @settings(max_examples=400, deadline=None)
    @given(
        reference=st.none() | ids | st.sampled_from(["#", "#a", "#b", "Medication/x", ""]) | st.integers(),
        contained=st.lists(
            st.fixed_dictionaries({"resourceType": st.just("Organization"), "id": ids}), max_size=3
        ),
        same_root=st.booleans(),
    )
    def test_ref_1(self, reference: Any, contained: list[dict[str, Any]], same_root: bool) -> None:
        """ref-1 natively gives fhirpathpy's answer, or defers to it: R5's text, and R4B's."""
        root: dict[str, Any] = {"resourceType": "Organization", "id": "o", "contained": contained}
        other = root if same_root else {**root, "id": "other"}
        focus = {} if reference is None else {"reference": reference}
        variables = {"rootResource": root, "resource": other}
        native = ref_1(focus, variables)
        node = ResourceNode.create_node(focus, "Reference")
        for expression, release in ((REF_1, "5.0"), (R4B_REF_1, "4.3")):
            try:
                expected = compile_expression(expression, release)(node, dict(variables)) != [False]
            except Exception:  # fhirpathpy cannot evaluate it: the native form must defer
                assert native is None
                continue
            assert native in (None, expected)
        assert native is not None or not isinstance(reference, str) or any(not c["id"] for c in contained)

    @settings(max_examples=300, deadline=None)
    @given(
        narrative=st.fixed_dictionaries(
            {"status": st.just("generated")},
            optional={
                "div": st.sampled_from(
                    [
                        '<div xmlns="http://www.w3.org/1999/xhtml">text</div>',
                        '<div xmlns="http://www.w3.org/1999/xhtml"></div>',
                        '<div xmlns="http://www.w3.org/1999/xhtml"><img src="a.png"/></div>',
                        '<div xmlns="http://www.w3.org/1999/xhtml"><script>x</script></div>',
                        '<div xmlns="http://www.w3.org/1999/xhtml"><a href="javascript:x">y</a></div>',
                        "<p>not a div</p>",
                        "<div>no namespace</div>",
                        "not xml",
                        "",
                    ]
                )
                | st.text(max_size=20)
                | st.integers()
                | st.none()
                | st.lists(st.text(max_size=5), max_size=2),
                "_div": st.fixed_dictionaries({"id": st.just("x")}),
            },
        )
    )
    def test_narrative_checks(self, narrative: dict[str, Any]) -> None:
        """txt-1/txt-2 natively give fhirpathpy's answer, or defer to it."""
        native = narrative_checks(narrative, {})
        node = ResourceNode.create_node(narrative, "Narrative")
        try:
            expected = compile_expression(NARRATIVE_CHECKS)(node, {}) != [False]
        except Exception:  # fhirpathpy cannot evaluate it: the native form must defer
            assert native is None
            return
        assert native in (None, expected)
        assert native is not None or "_div" in narrative or not isinstance(narrative.get("div"), str)


RESOLVABLE = {
    "Organization/o": {"resourceType": "Organization", "id": "o"},
    "Practitioner/p": {"resourceType": "Practitioner", "id": "p"},
    "PractitionerRole/r": {
        "resourceType": "PractitionerRole",
        "id": "r",
        "practitioner": {"reference": "Practitioner/p"},
        "organization": {"reference": "Organization/o"},
    },
    "Encounter/e": {"resourceType": "Encounter", "id": "e", "status": "completed"},
}
targets = st.sampled_from([*RESOLVABLE, "Organization/missing"]).map(lambda key: {"reference": key})


class TestAbsentRules:
    """prov-1/2/3 and docRef-1/2 (true when the element they need is absent) agree with fhirpathpy."""

    @settings(max_examples=300, deadline=None)
    @given(
        rule=st.sampled_from(sorted(ABSENT_RULES)),
        focus=st.fixed_dictionaries(
            {},
            optional={
                "who": targets,
                "onBehalfOf": targets,
                "facilityType": st.just({"text": "clinic"}),
                "practiceSetting": st.just({"text": "oncology"}),
                "context": st.lists(targets, max_size=2),
            },
        ),
    )
    def test_native_agrees(self, rule: tuple[str, str], focus: dict[str, Any]) -> None:
        """Where the native form answers, fhirpathpy agrees; it answers whenever the element is absent."""
        key, expression = rule
        native = without(ABSENT_RULES[rule])(focus, {})
        kind = "Provenance.agent" if key.startswith("prov") else "DocumentReference"
        node = ResourceNode.create_node(focus, kind) if kind != "DocumentReference" else focus
        with resolving(RESOLVABLE):
            expected = fhirpath_holds(expression, node, {})
        assert native in (None, expected), (rule, focus, expected)
        assert (native is None) == (ABSENT_RULES[rule] in focus)

    def test_the_rules_can_fail(self) -> None:
        """Such inputs make prov-1 and docRef-1 fail, and the native forms leave those to fhirpathpy."""
        same = {"who": {"reference": "Organization/o"}, "onBehalfOf": {"reference": "Organization/o"}}
        encounter = {"facilityType": {"text": "clinic"}, "context": [{"reference": "Encounter/e"}]}
        for key, focus, kind in (("prov-1", same, "Provenance.agent"), ("docRef-1", encounter, None)):
            (rule,) = [r for r in ABSENT_RULES if r[0] == key]
            node = ResourceNode.create_node(focus, kind) if kind else focus
            with resolving(RESOLVABLE):
                assert fhirpath_holds(rule[1], node, {}) is False
            assert without(ABSENT_RULES[rule])(focus, {}) is None


def fhirpath_holds(
    expression: str, focus: Any, variables: dict[str, Any], release: str = "5.0"
) -> bool | None:
    """What the invariant layer makes of fhirpathpy's answer: holds, fails, or None when it cannot run."""
    try:
        return bool(compile_expression(expression, release)(focus, variables) != [False])
    except Exception:
        return None


contained_resources = st.lists(
    st.fixed_dictionaries(
        {"resourceType": st.just("Organization"), "id": st.sampled_from(["a", "b"])},
        optional={
            "meta": st.fixed_dictionaries(
                {}, optional={"versionId": st.just("1"), "security": st.just([{"code": "x"}])}
            ),
            "contained": st.just([{"resourceType": "Organization", "id": "c"}]),
        },
    ),
    max_size=2,
)


class TestNativeEverywhere:
    """The invariants on every resource and Reference, natively: fhirpathpy's answer, or deferred to it."""

    @settings(max_examples=200, deadline=None)
    @given(
        resource=st.fixed_dictionaries(
            {"resourceType": st.just("Organization"), "id": st.just("o")},
            optional={
                "contained": contained_resources,
                "_contained": st.just([{"id": "x"}]),
                "partOf": st.fixed_dictionaries({"reference": st.sampled_from(["#a", "#b", "#", "X/y"])}),
            },
        ),
        rule=st.sampled_from([*sorted(CONTAINED_RULES), "R4B dom-3"]),
    )
    def test_dom_2_to_5(self, resource: dict[str, Any], rule: str) -> None:
        """With nothing contained each rule holds; with something, fhirpathpy decides (R4B's dom-3 too)."""
        native = nothing_contained(resource, {})
        roots = {"resource": resource, "rootResource": resource}
        expression = R4B_DOM_3 if rule == "R4B dom-3" else CONTAINED_RULES[rule]
        release = "4.3" if rule == "R4B dom-3" else "5.0"
        assert native in (None, fhirpath_holds(expression, resource, roots, release))
        assert (native is None) == ("contained" in resource or "_contained" in resource)

    @settings(max_examples=200, deadline=None)
    @given(
        resource=st.fixed_dictionaries(
            {"resourceType": st.just("Organization"), "id": st.just("o")},
            optional={
                "text": st.fixed_dictionaries(
                    {"status": st.just("generated")},
                    optional={
                        "div": st.sampled_from(['<div xmlns="http://www.w3.org/1999/xhtml">x</div>', ""])
                        | st.integers(),
                        "_div": st.just({"id": "d"}),
                    },
                )
                | st.just("not an object"),
                "_text": st.just({"id": "t"}),
            },
        )
    )
    def test_dom_6(self, resource: dict[str, Any]) -> None:
        """A narrative div exists: decided natively for a present string div or no text at all."""
        native = has_narrative(resource, {})
        roots = {"resource": resource, "rootResource": resource}
        assert native in (None, fhirpath_holds(DOM_6, resource, roots))
        if "text" not in resource and "_text" not in resource:
            assert native is False

    @settings(max_examples=200, deadline=None)
    @given(
        reference=st.fixed_dictionaries(
            {},
            optional={
                "reference": st.sampled_from(["Organization/o", "#a", ""]) | st.integers(),
                "display": st.sampled_from(["A name", ""]),
                "identifier": st.just({"value": "1"}),
                "extension": st.just([{"url": "http://example.org/x", "valueString": "y"}]),
            },
        )
    )
    def test_ref_2(self, reference: dict[str, Any]) -> None:
        """A Reference with a reference or display holds natively; the rest go to fhirpathpy."""
        native = reference_has_content(reference, {})
        node = ResourceNode.create_node(reference, "Reference")
        assert native in (None, fhirpath_holds(REF_2, node, {}))
        if any(isinstance(reference.get(k), str) and reference[k] for k in ("reference", "display")):
            assert native is True


class TestSchemaSplit:
    """Checking a resource element by element (memoized) reports what checking it whole reports."""

    def test_memo_keeps_only_valid_parts(self) -> None:
        """A part found valid before is reported again where it recurs broken, at its own path."""
        resource = CONTEXT["Provenance/warning-bleeding"]
        url = resource["meta"]["profile"][0]
        memoized = SchemaValidator(VALIDATOR.schemas[url])
        broken = copy.deepcopy(resource)
        broken["agent"].append(copy.deepcopy(broken["agent"][0]))  # a valid agent repeated ...
        broken["agent"][1]["who"]["reference"] = "Patient/x"  # ... then broken
        broken["entity"][0]["what"]["reference"] = "Patient/y"
        plain = _Part(VALIDATOR.schemas[url]).issues(broken, [], "Provenance", "b")
        assert [i.expression for i in plain] == [
            "Provenance.agent[1].who.reference",
            "Provenance.entity[0].what.reference",
        ]
        assert memoized.issues(resource, "a") == []
        assert memoized.issues(broken, "b") == plain
        assert memoized.issues(broken, "b") == plain
        assert memoized.issues(resource, "a") == []

    @SETTINGS
    @given(mutated_resources())
    def test_split_equals_whole(self, resource: dict[str, Any]) -> None:
        """For every declared profile, the split validator and plain jsonschema agree issue for issue."""
        assume(not shape_issues(resource, "x"))
        for url in declared_profiles(resource):
            schema = VALIDATOR.schemas.get(url)
            if schema is None:
                continue
            split = VALIDATOR._schema_validators[url]
            assert split._split  # our profiles compile to the splittable form
            whole = _Part(schema).issues(resource, [], str(resource["resourceType"]), "x")
            assert sorted(map(repr, split.issues(resource, "x"))) == sorted(map(repr, whole))
