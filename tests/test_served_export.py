"""Bulk $export at FHIR R4B and R4: NDJSON of the converted forms, parsed with each version's own models."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import free_port, start, stop
from fhir.resources.R4B import get_fhir_model_class as r4b_model
from fhirclient.models import (
    basic,
    documentreference,
    group,
    medication,
    medicationknowledge,
    organization,
    provenance,
)

from fhir_pub.store import Store

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}
BASES = {"4.3": "R4B", "4.0": "R4"}
# SMART fhirclient's FHIR 4.0.1 models, by resource type (the types the build converts to R4).
R4_MODELS: dict[str, Any] = {
    "Basic": basic.Basic,
    "DocumentReference": documentreference.DocumentReference,
    "Group": group.Group,
    "Medication": medication.Medication,
    "MedicationKnowledge": medicationknowledge.MedicationKnowledge,
    "Organization": organization.Organization,
    "Provenance": provenance.Provenance,
}


@pytest.fixture(scope="module")
def server(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    process = start(tmp_path_factory.mktemp("served-export"), built, port)
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        stop(process)


def run_export(url: str, headers: dict[str, str] | None = None) -> tuple[str, dict[str, Any]]:
    """Kick off, poll to the end: the status URL and the manifest."""
    kickoff = requests.get(url, headers={**ASYNC, **(headers or {})}, timeout=10)
    assert kickoff.status_code == 202, kickoff.text
    status = kickoff.headers["Content-Location"]
    deadline = time.monotonic() + 60
    while True:
        response = requests.get(status, timeout=10)
        if response.status_code != 202:
            break
        assert time.monotonic() < deadline, "export did not finish"
        time.sleep(0.2)
    assert response.status_code == 200, response.text
    return status, response.json()


def lines(url: str, version: str) -> list[bytes]:
    """An output file's lines, checking the media type names the version."""
    response = requests.get(url, timeout=30)
    assert response.status_code == 200
    assert response.headers["Content-Type"] == f"application/fhir+ndjson; fhirVersion={version}"
    return response.content.splitlines()


def converted(store: Store, version: str) -> dict[str, bytes]:
    """Every converted form the build stored for a version, by ``Type/id``."""
    rows = store.connection().execute(
        "SELECT type, id, body FROM converted WHERE fhir_version = ?", (version,)
    )
    return {f"{kind}/{rid}": bytes(body) for kind, rid, body in rows}


class TestWholeExport:
    """[base]/R4B/$export and [base]/R4/$export write every converted form, once, in that version."""

    def test_r4b_parses_with_fhir_resources_r4b_models(self, server: str, store: Store) -> None:
        """Every line of the R4B export is a stored R4B form, and fhir.resources' R4B models accept it."""
        status, manifest = run_export(f"{server}/R4B/$export")
        assert status.startswith(f"{server}/R4B/$export-status/")
        assert manifest["request"] == f"{server}/R4B/$export"
        expected = converted(store, "4.3")
        seen: dict[str, bytes] = {}
        for output in manifest["output"]:
            assert output["url"].startswith(f"{server}/R4B/$export-file/")
            found = lines(output["url"], "4.3")
            assert len(found) == output["count"]
            for line in found:
                resource = json.loads(line)
                assert resource["resourceType"] == output["type"]
                r4b_model(resource["resourceType"]).model_validate_json(line)  # raises if not R4B
                seen[f"{resource['resourceType']}/{resource['id']}"] = line
        assert seen == expected
        assert {o["type"] for o in manifest["output"]} == set(store.converted_types("4.3"))

    def test_r4_parses_with_fhirclient_r4_models(self, server: str, store: Store) -> None:
        """Every line of the R4 export is a stored R4 form, and fhirclient's R4 models accept it strictly."""
        _, manifest = run_export(f"{server}/R4/$export")
        expected = converted(store, "4.0")
        seen: dict[str, bytes] = {}
        for output in manifest["output"]:
            for line in lines(output["url"], "4.0"):
                resource = json.loads(line)
                R4_MODELS[resource["resourceType"]](resource, strict=True)  # raises if not R4
                seen[f"{resource['resourceType']}/{resource['id']}"] = line
        assert seen == expected
        assert "ClinicalUseDefinition" not in {o["type"] for o in manifest["output"]}

    def test_media_type_parameter_on_the_r5_base(self, server: str) -> None:
        """FhirVersion in Accept on the R5 base exports that version; its URLs stay on the R5 base."""
        accept = {"Accept": "application/fhir+json; fhirVersion=4.0"}
        status, manifest = run_export(f"{server}/Basic/$export", accept)
        assert status.startswith(f"{server}/$export-status/")
        (output,) = manifest["output"]
        assert output["type"] == "Basic"
        assert all(json.loads(line)["resourceType"] == "Basic" for line in lines(output["url"], "4.0"))


class TestNarrowedExport:
    """_type, _typeFilter and _elements take the version's names and parameters."""

    def test_type_filter_and_elements_at_r4(self, server: str, store: Store) -> None:
        """R4's Basic by subject, Provenance by its Basic target; _elements subsets the R4 form."""
        query = (
            "_type=Basic,Provenance&_typeFilter=Provenance%3Ftarget%3DBasic%2Fwarning-bleeding"
            "&_elements=Provenance.target"
        )
        _, manifest = run_export(f"{server}/R4/$export?{query}")
        by_type = {
            o["type"]: [json.loads(line) for line in lines(o["url"], "4.0")] for o in manifest["output"]
        }
        (trace,) = by_type["Provenance"]
        assert trace["target"][0]["reference"] == "Basic/warning-bleeding"
        assert "entity" not in trace  # _elements kept target and R4's mandatory elements
        assert {"code": "SUBSETTED"}.items() <= trace["meta"]["tag"][-1].items()
        assert len(by_type["Basic"]) == len(
            store.connection()
            .execute("SELECT 1 FROM converted WHERE fhir_version = '4.0' AND type = 'Basic'")
            .fetchall()
        )

    @pytest.mark.parametrize(
        ("query", "said"),
        [
            ("_type=ClinicalUseDefinition", "ClinicalUseDefinition"),
            ("_typeFilter=Basic%3Ftype%3Dwarning", "type is not a search parameter of Basic"),
            ("_typeFilter=Organization%3Faddress%3Dx", "address"),
        ],
    )
    def test_refused_at_r4(self, server: str, query: str, said: str) -> None:
        """What R4 does not have is a 400 at the kick-off, saying what."""
        response = requests.get(f"{server}/R4/$export?{query}", headers=ASYNC, timeout=10)
        assert response.status_code == 400, response.text
        assert said in response.json()["issue"][0]["details"]["text"]

    def test_basic_code_filter(self, server: str) -> None:
        """_typeFilter=Basic?code=... matches every clinical use or none, as the search does."""
        _, every = run_export(
            f"{server}/R4/$export?_type=Basic&_typeFilter=Basic%3Fcode%3DClinicalUseDefinition"
        )
        assert [o["type"] for o in every["output"]] == ["Basic"]
        _, none = run_export(f"{server}/R4/$export?_type=Basic&_typeFilter=Basic%3Fcode%3DObservation")
        assert [o["type"] for o in none["output"]] == []
