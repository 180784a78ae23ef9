"""Single-resource mode: any R5 resource judged on its own ($validate, ``fhir-pub validate --single``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from flask.testing import FlaskClient

from fhir_pub.cli import main
from fhir_pub.settings import Settings
from fhir_pub.web import create_app

FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="module")
def client(built: Path) -> FlaskClient:
    return create_app(Settings(publication=built)).test_client()


def validate(client: FlaskClient, resource: Any) -> list[dict[str, Any]]:
    response = client.post("/fhir/$validate", data=orjson.dumps(resource), content_type=FHIR_JSON)
    assert response.status_code == 200
    issues: list[dict[str, Any]] = response.json["issue"]
    return issues


def texts(issues: list[dict[str, Any]], *severities: str) -> list[str]:
    return [i["details"]["text"] for i in issues if i["severity"] in severities]


NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">A patient</div>'}


def test_a_resource_of_another_type_gets_no_publication_errors(client: FlaskClient) -> None:
    """A valid Patient is no orphan and needs no fhir-pub profile: no error, and the mode is said."""
    issues = validate(client, {"resourceType": "Patient", "id": "p1", "text": NARRATIVE, "active": True})
    assert texts(issues, "error", "fatal") == []
    assert any("validated as a single resource" in t for t in texts(issues, "information"))


def test_r5_invariants_apply_without_a_profile(client: FlaskClient) -> None:
    """R5's own invariants of the type are checked: org-1 (an Organization needs a name or an identifier)."""
    issues = validate(client, {"resourceType": "Organization", "id": "o1", "text": NARRATIVE})
    assert any(i["severity"] == "error" and "org-1" in i.get("diagnostics", "") for i in issues), issues


def test_dom_invariants_apply_without_a_profile(client: FlaskClient) -> None:
    """dom-6 (a resource should have a narrative) is a warning on a resource without text."""
    issues = validate(client, {"resourceType": "Patient", "id": "p1", "active": True})
    assert any(i["severity"] == "warning" and "dom-6" in i.get("diagnostics", "") for i in issues), issues


def test_unresolved_reference_is_a_warning_resolved_one_is_type_checked(client: FlaskClient) -> None:
    elsewhere = {
        "resourceType": "Patient",
        "id": "p1",
        "text": NARRATIVE,
        "managingOrganization": {"reference": "Organization/not-here"},
    }
    issues = validate(client, elsewhere)
    assert texts(issues, "error", "fatal") == []
    assert any("Organization/not-here" in t for t in texts(issues, "warning"))
    wrong = {**elsewhere, "managingOrganization": {"reference": "Group/patients-1-year-and-older"}}
    assert any("refers to a Group" in t for t in texts(validate(client, wrong), "error"))
    right = {**elsewhere, "managingOrganization": {"reference": "Organization/pfizer"}}
    assert texts(validate(client, right), "error", "fatal", "warning") == []


def test_an_unknown_profile_is_a_warning(client: FlaskClient) -> None:
    declared = {
        "resourceType": "Patient",
        "id": "p1",
        "text": NARRATIVE,
        "meta": {"profile": ["http://example.org/StructureDefinition/other-patient"]},
    }
    issues = validate(client, declared)
    assert texts(issues, "error", "fatal") == []
    assert any("other-patient is not known" in t for t in texts(issues, "warning"))


def test_a_resource_declaring_our_profile_is_checked_as_a_member(client: FlaskClient) -> None:
    """Publication mode still runs for a resource meant for this publication (it declares our profile)."""
    organization = {
        "resourceType": "Organization",
        "id": "newcomer",
        "meta": {
            "profile": ["http://fhir-pub.org/fhir/StructureDefinition/fhir-pub-organization"],
        },
        "name": "Newcomer",
    }
    issues = validate(client, organization)
    assert any("validated as a member of this publication" in t for t in texts(issues, "information"))


def test_cli_single(tmp_path: Path) -> None:
    """``validate --single`` judges each file on its own: a valid Patient passes, a broken one fails."""
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"resourceType": "Patient", "id": "p1", "text": NARRATIVE}))
    runner = CliRunner()
    result = runner.invoke(main, ["validate", "--single", "--format", "json", str(good)])
    assert result.exit_code == 0, result.output
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"resourceType": "Organization", "id": "o1", "text": NARRATIVE}))
    result = runner.invoke(main, ["validate", "--single", str(good), str(bad)])
    assert result.exit_code == 1
    assert "org-1" in result.output
    plain = runner.invoke(main, ["validate", str(good)])
    assert plain.exit_code == 1  # as one publication, a lone Patient without a fhir-pub profile is in error


@pytest.mark.parametrize(
    ("resource", "where"),
    [
        ({"resourceType": "Patient", "id": "p1", "text": NARRATIVE, "gender": "x"}, "Patient.gender"),
        (
            {
                "resourceType": "Patient",
                "id": "p1",
                "text": NARRATIVE,
                "contact": [{"gender": "y", "name": {"text": "A"}}],
            },
            "Patient.contact[0].gender",
        ),
        (
            {"resourceType": "Patient", "id": "p1", "text": NARRATIVE, "address": [{"use": "bogus"}]},
            "Patient.address[0].use",
        ),
        (
            {
                "resourceType": "DocumentReference",
                "id": "d1",
                "text": NARRATIVE,
                "status": "nope",
                "content": [{"attachment": {"url": "http://example.org/a"}}],
            },
            "DocumentReference.status",
        ),
        (  # a CodeableConcept: the system is right, the code is not one of it
            {
                "resourceType": "DeviceAssociation",
                "id": "d1",
                "text": NARRATIVE,
                "device": {"reference": "Device/x"},
                "status": {
                    "coding": [{"system": "http://hl7.org/fhir/deviceassociation-status", "code": "lost"}]
                },
            },
            "DeviceAssociation.status",
        ),
    ],
)
def test_required_bindings_of_r5(client: FlaskClient, resource: dict[str, Any], where: str) -> None:
    """A code (or Coding) outside its element's required R5 ValueSet is an error there, naming the codes."""
    issues = [i for i in validate(client, resource) if i["severity"] == "error"]
    assert [(i["code"], i["expression"]) for i in issues] == [("code-invalid", [where])], issues
    assert "required binding" in issues[0]["details"]["text"]


def test_codes_of_required_bindings_pass(client: FlaskClient) -> None:
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "text": NARRATIVE,
        "gender": "female",
        "address": [{"use": "home", "type": "postal"}],
    }
    assert texts(validate(client, patient), "error", "fatal", "warning") == []
