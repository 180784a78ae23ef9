"""Natively compiled search parameter expressions give exactly what fhirpathpy gives."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fhir_pub.conformance import load_conformance
from fhir_pub.graph import key_of
from fhir_pub.publication import Publication, load
from fhir_pub.search.extract import Unsupported, compile_native
from fhir_pub.search.index import INDEXED_TYPES, for_type
from fhir_pub.search.parameters import Registry, registry
from fhir_pub.validation.fhirpath import RESOLVABLE, compile_expression

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def params() -> Registry:
    """The search parameters of the bundled profiles."""
    return registry(load_conformance())


def variants(resources: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Resources that reach the branches the publication does not: choice types, unions of equal values."""
    for resource in resources:
        kind = resource["resourceType"]
        if kind == "Group":
            for choice in (
                {"valueCodeableConcept": {"coding": [{"system": "http://loinc.org", "code": "34895-3"}]}},
                {"valueBoolean": True},
                {"valueReference": {"reference": "Group/" + resource["id"]}},
            ):
                extra = copy.deepcopy(resource)
                extra["characteristic"].append({"code": {"text": "x"}, "exclude": False, **choice})
                yield extra
        elif kind == "DocumentReference":
            extra = copy.deepcopy(resource)
            extra["content"][0]["profile"] = [
                {"valueCoding": {"system": "urn:ietf:bcp:13", "code": "text/html"}},
                {"valueUri": "http://example.org/format"},
                {"valueCanonical": "http://example.org/StructureDefinition/x"},
            ]
            extra["subject"] = {"reference": "Patient/p1"}  # resolves: a Patient is added to the set
            yield extra
        elif kind == "Organization":
            extra = copy.deepcopy(resource)
            extra["alias"] = [resource["name"], resource["name"], "Other"]  # union keeps each value once
            yield extra


def compare(resources: list[dict[str, Any]], params: Registry) -> tuple[int, list[str]]:
    """(values compared, differences) for every indexed parameter on every resource."""
    resolvable = {key_of(r): r for r in resources} | {"Patient/p1": {"resourceType": "Patient", "id": "p1"}}
    token = RESOLVABLE.set(resolvable)
    compared, differences, compiled = 0, [], dict[tuple[str, str], tuple[Any, Any]]()
    try:
        for resource in resources:
            kind = resource["resourceType"]
            for param in params.for_type(kind).values():
                if param.type not in INDEXED_TYPES:
                    continue
                expression = for_type(param.expression, kind)
                if (kind, expression) not in compiled:
                    pair = compile_native(expression, kind), compile_expression(expression)
                    compiled[kind, expression] = pair
                ours, theirs = compiled[kind, expression]
                native, expected = ours(resource, resolvable), theirs(resource, {"resource": resource})
                compared += 1
                if native != expected or [type(v) for v in native] != [type(v) for v in expected]:
                    differences.append(f"{key_of(resource)} {param.code}: {native!r} != {expected!r}")
    finally:
        RESOLVABLE.reset(token)
    return compared, differences


class TestNative:
    """The native extractors against fhirpathpy."""

    def test_bundled(self, publication: Publication, params: Registry) -> None:
        """Every parameter on every bundled resource, and on variants reaching the other branches."""
        resources = [e.resource for e in publication]
        compared, differences = compare([*resources, *variants(resources)], params)
        assert differences == []
        assert compared > 2000

    def test_generated(self, params: Registry, tmp_path: Path) -> None:
        """Every parameter on every resource of a generated corpus."""
        script = str(ROOT / "bench" / "corpus.py")
        subprocess.run(
            [sys.executable, script, "--resources", "600", "--seed", "5", "--out", str(tmp_path)],
            check=True,
            capture_output=True,
        )
        resources = [e.resource for e in load(tmp_path)]
        compared, differences = compare(resources, params)
        assert differences == []
        assert compared > 10000

    def test_all_compile(self, params: Registry) -> None:
        """Every indexed parameter of the types we publish stays within the native subset."""
        kinds = ["ClinicalUseDefinition", "DocumentReference", "Group", "Medication"]
        kinds += ["MedicationKnowledge", "Organization", "Provenance"]
        for kind in kinds:
            for param in params.for_type(kind).values():
                if param.type in INDEXED_TYPES:
                    compile_native(for_type(param.expression, kind), kind)

    @pytest.mark.parametrize(
        "expression",
        [
            "Group.characteristic.where(code = 'x')",
            "Group.name.lower()",
            "Group.value.ofType(Coding).ofType(Coding)",
            "(Group.name",
            "Group.extension('http://example.org').value",
        ],
    )
    def test_unsupported(self, expression: str) -> None:
        """Anything outside the subset is refused, so the index falls back to fhirpathpy."""
        with pytest.raises(Unsupported):
            compile_native(expression, "Group")
