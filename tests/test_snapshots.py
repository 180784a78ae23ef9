"""Every profile's snapshot: its R5 base with the differential applied, whole, published in the package."""

from __future__ import annotations

import copy
import json
import os
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from fhir_pub.cli import main
from fhir_pub.conformance import load_conformance
from fhir_pub.snapshot import REPLACED, VALUES, SnapshotError, bundled, bundled_bases, generate, with_snapshot
from fhir_pub.validation import Validator, candidate_from_bytes
from fhir_pub.validation.r5 import base_constraints, element_order

PROFILES = load_conformance().of_type("StructureDefinition")
IDS = [p["id"] for p in PROFILES]
# R5's own snapshots of these two types leave out DomainResource's invariants (the validator composes
# them from fhir_pub/validation/r5-definitions.json); a snapshot built on them does too.
R5_SNAPSHOT_OMITS = {"CapabilityStatement", "MedicationKnowledge"}
DOM = {"dom-2", "dom-3", "dom-4", "dom-5", "dom-6"}


def by_id(elements: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Snapshot elements by id."""
    return {element["id"]: element for element in elements}


@pytest.mark.parametrize("profile", PROFILES, ids=IDS)
class TestEveryProfile:
    """Each profile's snapshot holds its base and every differential constraint, once."""

    def test_differential_in_snapshot(self, profile: dict[str, Any]) -> None:
        """Every differential element is in the snapshot, at its path, with each property it states."""
        snapshot = by_id(generate(profile))
        for change in profile["differential"]["element"]:
            element = snapshot[change["id"]]
            assert element["path"] == change["path"]
            for key, value in change.items():
                if key == "constraint":
                    have = {c["key"]: c for c in element["constraint"]}
                    for constraint in value:
                        assert have[constraint["key"]] == {**constraint, "source": profile["url"]}
                elif key in REPLACED or key.startswith(VALUES):
                    assert element[key] == value, (change["id"], key)

    def test_no_duplicate_constraint_or_element(self, profile: dict[str, Any]) -> None:
        """eld-14: constraint keys are unique per element; element ids are unique and follow their paths."""
        elements = generate(profile)
        for element in elements:
            keys = Counter(c["key"] for c in element.get("constraint", []))
            assert [k for k, n in keys.items() if n > 1] == [], element["id"]
            plain = ".".join(step.split(":", 1)[0] for step in element["id"].split("."))
            assert plain == element["path"]
            assert element["path"].split(".")[0] == profile["type"]
            assert {"base", "min", "max"} <= set(element), element["id"]
        ids = [e["id"] for e in elements]
        assert len(ids) == len(set(ids))

    def test_base_kept_in_order(self, profile: dict[str, Any]) -> None:
        """Every base element is there with its constraints, and the whole follows R5's element order."""
        elements = generate(profile)
        snapshot = by_id(elements)
        for base in bundled(profile["type"]):
            keys = {c["key"] for c in snapshot[base["id"]].get("constraint", [])}
            assert {c["key"] for c in base.get("constraint", [])} <= keys
        ids = [e["id"] for e in elements]
        assert ids == sorted(ids, key=lambda i: element_order(profile["type"], i))

    def test_r5_invariants_of_the_type(self, profile: dict[str, Any]) -> None:
        """The type's R5 invariants (r5-definitions.json) are on the snapshot's elements, as in R5."""
        snapshot = {e["path"]: e for e in generate(profile) if ":" not in e["id"]}
        missing = {
            (path, constraint["key"])
            for path, constraint in base_constraints(profile["type"])
            if constraint["key"] not in {c["key"] for c in snapshot[path].get("constraint", [])}
        }
        omitted = {(profile["type"], key) for key in DOM} if profile["type"] in R5_SNAPSHOT_OMITS else set()
        assert missing == omitted

    def test_cardinality_within_base(self, profile: dict[str, Any]) -> None:
        """A snapshot narrows its base: min at least the base's, max at most, and min <= max."""
        base = by_id(bundled(profile["type"]))
        for element in generate(profile):
            top = element["max"]
            assert top == "*" or element["min"] <= int(top), element["id"]
            original = base.get(element["id"])
            if original is not None:
                assert element["min"] >= original["min"]
                assert original["max"] == "*" or (top != "*" and int(top) <= int(original["max"]))


def test_published_profiles_validate() -> None:
    """Each profile with its snapshot, judged on its own by R5 (sdf-3, sdf-8, sdf-8b, sdf-26 ...): clean."""
    validator = Validator()
    for profile in PROFILES:
        candidate = candidate_from_bytes(orjson.dumps(with_snapshot(profile)), profile["id"])
        report = validator.validate_one(candidate)
        assert [i.message for i in report.issues if i.severity != "information"] == [], profile["id"]


class TestGenerator:
    """What the generator unfolds, and what it refuses."""

    def test_unfolds_datatypes_and_slices(self) -> None:
        """A path into a datatype unfolds its elements; a slice comes after its element, with its own."""
        (profile,) = [p for p in PROFILES if p["id"] == "fhir-pub-documentreference"]
        ids = [e["id"] for e in generate(profile)]
        coding = ids.index("DocumentReference.type.coding")
        slice_id = "DocumentReference.type.coding:loinc"
        assert ids[coding + 1 : coding + 3] == [slice_id, f"{slice_id}.id"]
        assert ids.index(f"{slice_id}.system") < ids.index("DocumentReference.type.text")
        assert "DocumentReference.content.attachment.url" in ids

    def test_restated_constraint_is_refused(self) -> None:
        """A differential constraint reusing a base key with another expression fails (eld-14)."""
        profile = copy.deepcopy(next(p for p in PROFILES if p["id"] == "fhir-pub-group"))
        root = profile["differential"]["element"][0]
        root["constraint"] = [{"key": "dom-6", "severity": "error", "human": "x", "expression": "true"}]
        with pytest.raises(SnapshotError, match="dom-6"):
            generate(profile)

    def test_unknown_element_is_refused(self) -> None:
        """A differential element the base does not have fails, naming it."""
        profile = copy.deepcopy(next(p for p in PROFILES if p["id"] == "fhir-pub-group"))
        profile["differential"]["element"].append(
            {"id": "Group.nonsense", "path": "Group.nonsense", "min": 1}
        )
        with pytest.raises(SnapshotError, match=r"Group\.nonsense"):
            generate(profile)

    def test_bases_are_what_generation_reads(self) -> None:
        """r5-snapshots.json.gz holds the types the profiles read and no other (scripts/r5-snapshots)."""
        read: set[str] = set()

        def recording(type_name: str) -> list[dict[str, Any]]:
            read.add(type_name)
            return bundled(type_name)

        for profile in PROFILES:
            generate(profile, recording)
        assert read == set(bundled_bases())
        assert all(elements[0]["id"] == name for name, elements in bundled_bases().items())


class TestPackage:
    """The package publishes each profile with its snapshot."""

    def test_package_carries_snapshots(self, tmp_path: Path) -> None:
        """Every StructureDefinition in the package has the generated snapshot and its differential."""
        out = tmp_path / "pub.tgz"
        result = CliRunner().invoke(main, ["package", "--out", str(out)])
        assert result.exit_code == 0, result.output
        with tarfile.open(out) as tar:
            packaged = [
                json.loads(tar.extractfile(m).read())  # type: ignore[union-attr]
                for m in tar.getmembers()
                if Path(m.name).name.startswith("StructureDefinition-")
            ]
        assert sorted(p["id"] for p in packaged) == sorted(IDS)
        mine = {p["id"]: p for p in PROFILES}
        for sd in packaged:
            assert sd == with_snapshot(mine[sd["id"]])
            assert list(sd).index("snapshot") == list(sd).index("differential") - 1


class TestScripts:
    """The scripts that make and check the bases parse, and stay out of the test command."""

    @pytest.mark.parametrize("name", ["r5-snapshots", "check-snapshots"])
    def test_script_compiles(self, name: str) -> None:
        """Each is an executable Python script that compiles; neither runs in scripts/test (network)."""
        script = Path(__file__).resolve().parent.parent / "scripts" / name
        assert os.access(script, os.X_OK)
        compile(script.read_text(encoding="utf-8"), name, "exec")
        assert name not in (script.parent / "test").read_text(encoding="utf-8")
