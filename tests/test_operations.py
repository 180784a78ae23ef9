"""``$validate`` over HTTP: 200 with an OperationOutcome whether valid or not; 4xx only when it cannot run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from fhir_pub.publication import Publication
from fhir_pub.settings import Settings
from fhir_pub.web import create_app

FHIR_JSON = "application/fhir+json"


@pytest.fixture(scope="module")
def client(built: Path) -> FlaskClient:
    """A test client of an app serving the bundled publication, built once for the run."""
    return create_app(Settings(publication=built)).test_client()


def parameters(resource: Any, **extra: str) -> bytes:
    """A Parameters body for $validate."""
    params: list[dict[str, Any]] = [{"name": "resource", "resource": resource}]
    params += [
        {"name": name, ("valueCode" if name == "mode" else "valueCanonical"): value}
        for name, value in extra.items()
    ]
    return json.dumps({"resourceType": "Parameters", "parameter": params}).encode()


class TestValidate:
    """Results are OperationOutcomes in a 200."""

    def test_valid(self, client: FlaskClient, publication: Publication) -> None:
        """A published resource, sent back, is valid in the publication's context."""
        resource = publication.get("ClinicalUseDefinition/effect-rash")
        response = client.post("/fhir/ClinicalUseDefinition/$validate", json=resource)
        assert response.status_code == 200
        (only,) = response.json["issue"]  # nothing found: the one issue says which mode ran
        assert only["severity"] == "information"
        assert only["details"]["text"].startswith("validated as a member of this publication")

    def test_invalid_is_still_200(self, client: FlaskClient, publication: Publication) -> None:
        """A wrong required code is reported with its element, in a 200 (trap 2)."""
        resource = dict(publication.get("ClinicalUseDefinition/effect-rash") or {}, type="side-effect")
        response = client.post("/fhir/$validate", data=parameters(resource), content_type=FHIR_JSON)
        assert response.status_code == 200
        found = [i for i in response.json["issue"] if i["severity"] != "information"]  # but the mode
        assert {(i["code"], i["expression"][0]) for i in found} == {
            ("value", "ClinicalUseDefinition.type"),
            ("code-invalid", "ClinicalUseDefinition.type"),
        }

    def test_subject_trap(self, client: FlaskClient, publication: Publication) -> None:
        """A ClinicalUseDefinition about the MedicationKnowledge fails the graph and the profile (trap 1)."""
        resource = json.loads(json.dumps(publication.get("ClinicalUseDefinition/effect-rash")))
        resource["subject"][0]["reference"] = "MedicationKnowledge/besponsa"
        answer = client.post("/fhir/ClinicalUseDefinition/$validate", json=resource).json["issue"]
        issues = [i for i in answer if i["severity"] != "information"]  # the first says which mode ran
        assert {i["code"] for i in issues} == {"invalid"}
        assert len(issues) == 2

    def test_profile_parameter(self, client: FlaskClient, publication: Publication) -> None:
        """A named profile is applied too; an unknown one means validation cannot run (400)."""
        resource = publication.get("Organization/fda")
        url = "http://fhir-pub.org/fhir/StructureDefinition/fhir-pub-medication"
        issues = client.post(
            "/fhir/$validate", data=parameters(resource, profile=url), content_type=FHIR_JSON
        ).json
        assert "profile" in json.dumps(issues)
        unknown = client.post(
            "/fhir/$validate", data=parameters(resource, profile="http://x.org/p"), content_type=FHIR_JSON
        )
        assert (unknown.status_code, unknown.json["issue"][0]["code"]) == (400, "invalid")

    def test_delete_mode(self, client: FlaskClient, publication: Publication) -> None:
        """mode=delete answers that nothing can be deleted here."""
        body = parameters(publication.get("Organization/fda"), mode="delete")
        response = client.post("/fhir/$validate", data=body, content_type=FHIR_JSON)
        assert (response.status_code, response.json["issue"][0]["code"]) == (200, "not-supported")

    def test_hostile_resource(self, client: FlaskClient) -> None:
        """A resource that is not one still gets an OperationOutcome in a 200."""
        response = client.post("/fhir/$validate", json={"resourceType": "Nonsense", "x": [[[[1]]]]})
        assert (response.status_code, response.json["issue"][0]["code"]) == (200, "not-supported")


class TestCannotRun:
    """4xx only when validation could not run."""

    @pytest.mark.parametrize(
        ("path", "data", "content_type", "status", "code"),
        [
            ("/fhir/$validate", b"{not json", FHIR_JSON, 400, "invalid"),
            ("/fhir/$validate", b"[" * 5000 + b"]" * 5000, FHIR_JSON, 400, "invalid"),
            ("/fhir/$validate", b"<Organization/>", "application/fhir+xml", 400, "invalid"),  # no FHIR ns
            ("/fhir/$validate", b"x", "text/plain", 415, "not-supported"),
            (
                "/fhir/$validate",
                b'{"resourceType": "Parameters", "parameter": []}',
                FHIR_JSON,
                400,
                "invalid",
            ),
            ("/fhir/Organization/$validate", b'{"resourceType": "Group"}', FHIR_JSON, 400, "invalid"),
            ("/fhir/$validate", b"x" * (9 * 1024 * 1024), FHIR_JSON, 413, "too-long"),
        ],
        ids=["syntax", "deep", "xml-not-fhir", "text", "no-resource", "type-mismatch", "too-large"],
    )
    def test_status(
        self, client: FlaskClient, path: str, data: bytes, content_type: str, status: int, code: str
    ) -> None:
        """Each answers its status with an OperationOutcome."""
        response = client.post(path, data=data, content_type=content_type)
        assert response.status_code == status
        assert response.json["issue"][0]["code"] == code

    def test_declared(self, client: FlaskClient) -> None:
        """$validate is declared system-wide and per type, $export system-wide (canonical definitions)."""
        rest = client.get("/fhir/metadata").json["rest"][0]
        validate = {
            "name": "validate",
            "definition": "http://hl7.org/fhir/OperationDefinition/Resource-validate",
        }
        export = {
            "name": "export",
            "definition": "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export",
        }
        assert rest["operation"] == [validate, export]
        assert all(r["operation"] == [validate] for r in rest["resource"])
