"""The publication rules (fhirpub-cud-1, fhirpub-prov-1): graph-layer checks, not profile invariants."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from fhir_pub.build import BuildError, build
from fhir_pub.conformance import load_conformance
from fhir_pub.graph import PUBLICATION_RULES, rules_for
from fhir_pub.publication import Publication
from fhir_pub.settings import Settings
from fhir_pub.store import Store
from fhir_pub.validation import Validator, candidate_from_bytes
from fhir_pub.validation.validator import SINGLE_MODE
from fhir_pub.web import create_app

RULES = {rule.key: rule for rule in PUBLICATION_RULES}


def graph_errors(issues: Any) -> set[tuple[str, str, str]]:
    """(rule, expression, message) of each graph-layer error of a report's issues."""
    return {(i.rule, i.expression, i.message) for i in issues if i.layer == "graph" and i.severity == "error"}


def message(key: str) -> str:
    """The message a broken rule is reported with: its key and its human statement, as the profiles had."""
    return f"{key}: {RULES[key].human}"


@pytest.fixture(scope="module")
def client(built: Path) -> FlaskClient:
    """A test client of an app serving the bundled publication."""
    return create_app(Settings(publication=built)).test_client()


def copy_of(publication: Publication, tmp_path: Path) -> Path:
    """A copy of the publication's resources/ folder to break."""
    target = tmp_path / "resources"
    shutil.copytree(publication.root, target)
    return target


class TestProfiles:
    """The profiles keep only standard FHIRPath: no variable that FHIR does not define."""

    def test_no_graph_variables_in_profiles(self) -> None:
        """No constraint of ours reads %referencedBy, %referrerTypes or %sources, and none is a rule key."""
        for sd in load_conformance().of_type("StructureDefinition"):
            for element in sd["differential"]["element"]:
                for constraint in element.get("constraint", []):
                    assert "%" not in constraint["expression"].replace("%resource", "").replace(
                        "%rootResource", ""
                    ), (sd["id"], constraint["key"])
                    assert constraint["key"] not in RULES

    def test_rules_apply_by_profile(self, publication: Publication) -> None:
        """Each rule applies where its invariant did: every clinical use, and the drug, product, group."""
        applying = dict.fromkeys(RULES, 0)
        for entry in publication:
            for rule in rules_for(entry.resource["meta"]["profile"]):
                applying[rule.key] += 1
        uses = sum(1 for entry in publication if entry.key.startswith("ClinicalUseDefinition/"))
        assert applying == {"fhirpub-cud-1": uses, "fhirpub-prov-1": uses + 3}


class TestAtBuild:
    """A publication breaking a rule is refused by the build, with the rule's error at the resource."""

    def test_unlisted_clinical_use(self, publication: Publication, tmp_path: Path) -> None:
        """A ClinicalUseDefinition the MedicationKnowledge no longer lists breaks fhirpub-cud-1."""
        root = copy_of(publication, tmp_path)
        path = root / "MedicationKnowledge" / "besponsa.json"
        drug = json.loads(path.read_text(encoding="utf-8"))
        drug["clinicalUseIssue"] = [
            r for r in drug["clinicalUseIssue"] if r["reference"] != "ClinicalUseDefinition/effect-rash"
        ]
        path.write_text(json.dumps(drug), encoding="utf-8")
        with pytest.raises(BuildError) as raised:
            build(tmp_path / "p.sqlite", root)
        found = graph_errors(raised.value.report.issues)
        assert ("fhirpub-cud-1", "ClinicalUseDefinition", message("fhirpub-cud-1")) in found
        cud = [i for i in raised.value.report.issues if i.rule == "fhirpub-cud-1"]
        assert [Path(i.source).name for i in cud] == ["effect-rash.json"]
        assert not (tmp_path / "p.sqlite").exists()

    def test_untraced_group(self, publication: Publication, tmp_path: Path) -> None:
        """Without its Provenance the Group breaks fhirpub-prov-1, and nothing else."""
        root = copy_of(publication, tmp_path)
        (root / "Provenance" / "patients-1-year-and-older.json").unlink()
        with pytest.raises(BuildError) as raised:
            build(tmp_path / "p.sqlite", root)
        assert graph_errors(raised.value.report.issues) == {
            ("fhirpub-prov-1", "Group", message("fhirpub-prov-1"))
        }


class TestAtValidate:
    """``$validate`` in publication mode applies the rules with the publication as the graph."""

    def post(self, client: FlaskClient, resource: dict[str, Any]) -> list[dict[str, Any]]:
        """The issues $validate answers for one resource."""
        response = client.post(f"/fhir/{resource['resourceType']}/$validate", json=resource)
        assert response.status_code == 200
        issues: list[dict[str, Any]] = response.json["issue"]
        return issues

    @pytest.mark.parametrize(
        ("key", "rules"),
        [
            ("ClinicalUseDefinition/effect-rash", {"fhirpub-cud-1", "fhirpub-prov-1"}),
            ("Group/patients-1-year-and-older", {"fhirpub-prov-1"}),
            ("Medication/besponsa-vial", {"fhirpub-prov-1"}),
        ],
    )
    def test_renamed_resource(
        self, client: FlaskClient, publication: Publication, key: str, rules: set[str]
    ) -> None:
        """Under a new id nothing lists or traces the resource: each rule that applies is reported."""
        resource = copy.deepcopy(publication.get(key))
        resource["id"] = f"{resource['id']}-copy"
        issues = self.post(client, resource)
        texts = [i["details"]["text"] for i in issues]
        assert any(text.startswith("validated as a member of this publication") for text in texts)
        broken = {
            (i["details"]["text"], i["code"], i["expression"][0])
            for i in issues
            if i["details"]["text"].startswith("fhirpub-")
        }
        assert broken == {(message(rule), "business-rule", key.split("/")[0]) for rule in rules}

    def test_published_resource_keeps_the_rules(self, client: FlaskClient, publication: Publication) -> None:
        """The published version, sent back, breaks no rule (the rules see its listing and its Provenance)."""
        issues = self.post(client, copy.deepcopy(publication.get("ClinicalUseDefinition/effect-rash")))
        assert [i for i in issues if i["severity"] in ("error", "fatal")] == []


class TestSingleMode:
    """Single-resource mode judges a resource on its own: like orphans, the publication rules are left out."""

    def test_rules_not_applied(self, store: Store, publication: Publication) -> None:
        """A renamed clinical use breaks both rules in publication mode, neither alone; the mode says so."""
        resource = copy.deepcopy(publication.get("ClinicalUseDefinition/effect-rash"))
        resource["id"] = "effect-rash-copy"
        candidate = candidate_from_bytes(json.dumps(resource).encode(), "copy")
        validator = Validator()
        whole = {i.rule for i in validator.validate([candidate], publication=store).issues}
        alone = validator.validate_one(candidate, publication=store)
        assert set(RULES) <= whole
        assert not set(RULES) & {i.rule for i in alone.issues}
        assert all(key in SINGLE_MODE for key in RULES)
