"""What real FHIR clients send, against a real server process: Accept, Prefer, POST search, caches."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from conftest import bundled_count, free_port, start, stop

from fhir_pub.conformance import CANONICAL_BASE
from fhir_pub.export import ExportRequest
from fhir_pub.jobs import JobStore

JSON = "application/fhir+json; charset=utf-8"
READ = "MedicationKnowledge/besponsa"
OURS = f"{CANONICAL_BASE}/"


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The server's folder: its log, and its export jobs under ``jobs``."""
    return tmp_path_factory.mktemp("interop")


@pytest.fixture(scope="module")
def base(folder: Path, built: Path) -> Iterator[str]:
    """The FHIR base URL of a running ``fhir-pub serve``, with its response cache on (as deployed)."""
    port = free_port()
    process = start(folder, built, port)
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        stop(process)


# Accept headers real clients send, and the media type each must be answered in.
ACCEPTS = [
    ("application/fhir+json", JSON),  # HAPI, fhirpy
    ("application/fhir+json; charset=utf-8", JSON),  # many SDKs
    ("application/fhir+json; fhirVersion=5.0", f"{JSON}; fhirVersion=5.0"),  # the .NET SDK
    ("application/fhir+json; charset=utf-8; fhirVersion=5.0.0", f"{JSON}; fhirVersion=5.0"),
    ("application/json; charset=utf-8", JSON),
    ("application/json, text/plain, */*", JSON),  # axios (fhir.js, fhirclient.js)
    ("*/*", JSON),  # curl, requests
    ("application/fhir+xml;q=1.0, application/fhir+json;q=0.9", "application/fhir+xml; charset=utf-8"),
    ("application/fhir+xml; fhirVersion=5.0", "application/fhir+xml; charset=utf-8; fhirVersion=5.0"),
    (
        "application/fhir+json; fhirVersion=3.0, application/fhir+json; fhirVersion=5.0; q=0.5",
        f"{JSON}; fhirVersion=5.0",
    ),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "text/html; charset=utf-8"),
]


class TestAccept:
    """Media types match by type and subtype whatever their parameters; fhirVersion is honoured."""

    @pytest.mark.parametrize(("accept", "content_type"), ACCEPTS)
    @pytest.mark.parametrize("path", [READ, "ClinicalUseDefinition?type=warning", "metadata"])
    def test_served(self, base: str, accept: str, content_type: str, path: str) -> None:
        """Each client's Accept gets 200 in the expected media type, with Vary: Accept."""
        response = requests.get(f"{base}/{path}", headers={"Accept": accept}, timeout=10)
        assert (response.status_code, response.headers["Content-Type"]) == (200, content_type)
        assert "accept" in response.headers["Vary"].lower()

    @pytest.mark.parametrize(
        "accept",
        ["application/fhir+json; fhirVersion=3.0", "application/fhir+xml; fhirVersion=3.0", "image/png"],
    )
    def test_not_acceptable(self, base: str, accept: str) -> None:
        """A version not served, or a type not produced, is a 406 OperationOutcome naming what is."""
        response = requests.get(f"{base}/{READ}", headers={"Accept": accept}, timeout=10)
        assert (response.status_code, response.headers["Content-Type"]) == (406, JSON)
        outcome = response.json()
        assert outcome["resourceType"] == "OperationOutcome"
        text = outcome["issue"][0]["details"]["text"]
        assert ("fhirVersion=5.0" in text) if "fhirVersion" in accept else ("application/fhir+json" in text)

    def test_format_with_version(self, base: str) -> None:
        """_format may carry the version parameter too."""
        ok = requests.get(f"{base}/{READ}?_format=application/fhir%2Bjson;fhirVersion=5.0", timeout=10)
        assert (ok.status_code, ok.headers["Content-Type"]) == (200, f"{JSON}; fhirVersion=5.0")
        old = requests.get(f"{base}/{READ}?_format=application/fhir%2Bjson;fhirVersion=3.0", timeout=10)
        assert old.status_code == 406

    def test_conditional_read_keeps_vary(self, base: str) -> None:
        """A 304 to an If-None-Match names Accept in Vary too."""
        etag = requests.get(f"{base}/{READ}", timeout=10).headers["ETag"]
        again = requests.get(f"{base}/{READ}", headers={"If-None-Match": etag}, timeout=10)
        assert again.status_code == 304
        assert "accept" in again.headers["Vary"].lower()

    @pytest.mark.parametrize(
        "accept", ["application/fhir+json; charset=utf-8", "application/json; fhirVersion=5.0"]
    )
    def test_export_kickoff(self, base: str, accept: str) -> None:
        """The $export kick-off accepts the same media types with parameters."""
        response = requests.get(
            f"{base}/$export", headers={"Accept": accept, "Prefer": "respond-async"}, timeout=10
        )
        assert response.status_code == 202, response.text
        requests.delete(response.headers["Content-Location"], timeout=10)


class TestPrefer:
    """Prefer is read as RFC 7240 says: names case-insensitively."""

    @pytest.mark.parametrize("prefer", ["Respond-Async", "respond-async", "RESPOND-ASYNC, handling=lenient"])
    def test_respond_async(self, base: str, prefer: str) -> None:
        """Any spelling of respond-async starts an export."""
        response = requests.get(f"{base}/$export", headers={"Prefer": prefer}, timeout=10)
        assert response.status_code == 202, response.text
        requests.delete(response.headers["Content-Location"], timeout=10)

    @pytest.mark.parametrize(
        "prefer", ["handling=strict", "Handling=Strict", "return=minimal, handling=strict"]
    )
    def test_strict(self, base: str, prefer: str) -> None:
        """Any spelling of handling=strict makes an unknown parameter a 400."""
        response = requests.get(f"{base}/Organization?nonsense=1", headers={"Prefer": prefer}, timeout=10)
        assert response.status_code == 400


class TestExport:
    """Bulk Data answers a client can act on: media types, an unencoded "+", and exports not offered."""

    def test_in_progress_has_no_media_type(self, base: str, folder: Path) -> None:
        """A 202 in-progress answer has an empty body, so no Content-Type (it said text/html)."""
        held = JobStore(folder / "jobs").create(ExportRequest(), f"{base}/$export", base, [])
        response = requests.get(f"{base}/$export-status/{held['id']}", timeout=10)
        assert response.status_code == 202
        assert response.content == b""
        assert "Content-Type" not in response.headers
        assert response.headers["X-Progress"]

    @pytest.mark.parametrize(
        "query",
        [
            "_outputFormat=application/fhir+ndjson",  # unencoded: "+" arrives as a space
            "_outputFormat=application%2Ffhir%2Bndjson",
            "_outputFormat=ndjson",
        ],
    )
    def test_output_format(self, base: str, query: str) -> None:
        """_outputFormat is read as _format is: an unencoded "+" still names NDJSON."""
        response = requests.get(f"{base}/$export?{query}", headers={"Prefer": "respond-async"}, timeout=10)
        assert response.status_code == 202, response.text
        requests.delete(response.headers["Content-Location"], timeout=10)

    @pytest.mark.parametrize(
        "path", ["Patient/$export", "Group/patients-1-year-and-older/$export", "Group/nope/$export"]
    )
    def test_patient_level_not_supported(self, base: str, path: str) -> None:
        """Patient- and group-level export: not-supported, naming the exports that exist."""
        response = requests.get(f"{base}/{path}", headers={"Prefer": "respond-async"}, timeout=10)
        assert response.status_code == 404
        issue = response.json()["issue"][0]
        assert issue["code"] == "not-supported"
        text = issue["details"]["text"]
        assert "not supported" in text
        assert "[base]/$export" in text
        assert "[base]/[type]/$export" in text
        assert "_type" not in text


class TestValidateMessages:
    """$validate speaks of the resource sent, never of a Python value."""

    @pytest.mark.parametrize(
        "resource",
        [
            {"resourceType": "Organization", "name": "A pharmacy"},
            {"resourceType": "Medication", "status": "active"},
            {"resourceType": "Group", "type": "person", "membership": "definitional"},
        ],
    )
    def test_plain_base_resource(self, base: str, resource: dict[str, str]) -> None:
        """A base resource with no id is not named "Type/None" (the orphan message said so)."""
        kind = resource["resourceType"]
        response = requests.post(
            f"{base}/{kind}/$validate", json=resource, headers={"Content-Type": JSON}, timeout=10
        )
        assert response.status_code == 200
        texts = [i["details"]["text"] for i in response.json()["issue"]]
        assert texts
        assert not [t for t in texts if "None" in t], texts
        # No fhir-pub profile: judged on its own, so no publication rule (an orphan, a missing id) applies.
        assert "validated as a single resource" in " ".join(texts)
        errors = [i["details"]["text"] for i in response.json()["issue"] if i["severity"] == "error"]
        assert not [t for t in errors if "orphan" in t or "has no id" in t], errors


@pytest.fixture(scope="module")
def capability(base: str) -> dict[str, Any]:
    """The server's CapabilityStatement."""
    response = requests.get(f"{base}/metadata", timeout=10)
    assert response.status_code == 200
    document: dict[str, Any] = response.json()
    return document


class TestConformanceResources:
    """The canonicals the CapabilityStatement names resolve on this server: read, and search by url."""

    def test_every_supported_profile_resolves(self, base: str, capability: dict[str, Any]) -> None:
        """StructureDefinition?url= finds each supportedProfile, and its read answers the same."""
        profiles = {p for r in capability["rest"][0]["resource"] for p in r.get("supportedProfile", [])}
        profiles.add(capability["meta"]["profile"][0])
        assert len(profiles) > 10
        for url in sorted(profiles):
            bundle = requests.get(f"{base}/StructureDefinition", params={"url": url}, timeout=10).json()
            assert bundle["total"] == 1, url
            found = bundle["entry"][0]
            assert found["resource"]["url"] == url
            read = requests.get(found["fullUrl"], timeout=10)
            assert read.status_code == 200
            assert read.json() == found["resource"]
            assert read.headers["ETag"] == f'W/"{found["resource"]["meta"]["versionId"]}"'

    def test_every_search_parameter_resolves(self, base: str, capability: dict[str, Any]) -> None:
        """Each searchParam.definition is a SearchParameter served here, with that code and type."""
        declared = {
            (p["definition"], p["name"], p["type"])
            for r in capability["rest"][0]["resource"]
            for p in r.get("searchParam", [])
        }
        for url, code, kind in sorted(declared):
            bundle = requests.get(f"{base}/SearchParameter", params={"url": url}, timeout=10).json()
            assert bundle["total"] == 1, url
            resource = bundle["entry"][0]["resource"]
            assert (resource["code"], resource["type"]) == (code, kind)

    def test_value_sets_by_url_and_version(self, base: str) -> None:
        """A binding's ValueSet resolves by url, and by url with version (url|version and version=)."""
        url = "http://fhir-pub.org/fhir/ValueSet/verified-codes"
        plain = requests.get(f"{base}/ValueSet", params={"url": url}, timeout=10).json()
        assert plain["total"] == 1
        version = plain["entry"][0]["resource"]["version"]
        both = requests.get(f"{base}/ValueSet", params={"url": url, "version": version}, timeout=10).json()
        assert [e["resource"]["id"] for e in both["entry"]] == ["verified-codes"]
        wrong = requests.get(f"{base}/ValueSet", params={"url": url, "version": "no-such"}, timeout=10)
        assert wrong.json()["total"] == 0

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("StructureDefinition?name=FhirPubMedicationKnowledge", {"fhir-pub-medicationknowledge"}),
            ("ImplementationGuide?status=active", {"fhir-pub"}),
            ("SearchParameter?code=url", None),  # not a parameter here: ignored and reported
        ],
    )
    def test_search_by_name_and_status(self, base: str, query: str, expected: set[str] | None) -> None:
        """The name and status searches as R5 defines them for canonical resources."""
        bundle = requests.get(f"{base}/{query}", timeout=10).json()
        matches = {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}
        if expected is not None:
            assert matches == expected
        else:
            (outcome,) = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
            assert outcome["fullUrl"].startswith("urn:uuid:")
            uuid.UUID(outcome["fullUrl"].removeprefix("urn:uuid:"))  # a real UUID, not "outcome"

    def test_implementation_guide(self, base: str, capability: dict[str, Any]) -> None:
        """The CapabilityStatement names the guide; it lists every conformance resource of ours served.

        HL7's own SearchParameters and ValueSets are served too, and belong to hl7.fhir.r5.core.
        """
        (url,) = capability["implementationGuide"]
        guide = requests.get(f"{base}/ImplementationGuide", params={"url": url}, timeout=10).json()
        resource = guide["entry"][0]["resource"]
        listed = {r["reference"]["reference"] for r in resource["definition"]["resource"]}
        for kind in ("StructureDefinition", "ValueSet", "SearchParameter"):
            params = {"_count": 500, "_elements": "id,url"}
            served = requests.get(f"{base}/{kind}", params=params, timeout=10).json()["entry"]
            ours = {f"{kind}/{e['resource']['id']}" for e in served if e["resource"]["url"].startswith(OURS)}
            assert ours == {r for r in listed if r.startswith(f"{kind}/")}

    def test_declared(self, capability: dict[str, Any]) -> None:
        """The four types are declared with read and search by url, version, name and status."""
        by_type = {r["type"]: r for r in capability["rest"][0]["resource"]}
        for kind in ("StructureDefinition", "ValueSet", "SearchParameter", "ImplementationGuide"):
            names = {p["name"] for p in by_type[kind]["searchParam"]}
            assert {"url", "version", "name", "status"} <= names
            assert {"read", "search-type"} <= {i["code"] for i in by_type[kind]["interaction"]}

    def test_implementation_url(self, base: str, capability: dict[str, Any]) -> None:
        """implementation.url is the base URL the server answers at."""
        assert capability["implementation"]["url"] == base


class TestSystemSearchByPost:
    """POST [base]/_search is system search, as GET [base]? is."""

    def test_equals_get(self, base: str) -> None:
        """The form body's parameters give the same matches as the query string."""
        posted = requests.post(f"{base}/_search", data={"_type": "Organization,Group"}, timeout=10)
        got = requests.get(f"{base}?_type=Organization,Group", timeout=10)
        assert posted.status_code == 200
        ids = [e["resource"]["id"] for e in posted.json()["entry"]]
        assert ids == [e["resource"]["id"] for e in got.json()["entry"]]
        assert posted.json()["total"] == bundled_count("Organization") + bundled_count("Group")

    def test_json_body_refused(self, base: str) -> None:
        """A body that is not a form is a 415 OperationOutcome."""
        response = requests.post(f"{base}/_search", json={"_type": "Organization"}, timeout=10)
        assert response.status_code == 415
        assert response.json()["resourceType"] == "OperationOutcome"


def empties(node: object, path: str = "$") -> list[str]:
    """Where a JSON document holds an empty array or object (FHIR JSON allows neither)."""
    if isinstance(node, dict):
        found = [path] if not node else []
        for key, value in node.items():
            found += empties(value, f"{path}.{key}")
        return found
    if isinstance(node, list):
        found = [path] if not node else []
        for index, value in enumerate(node):
            found += empties(value, f"{path}[{index}]")
        return found
    return []


class TestNoEmptyArrays:
    """No answer holds an empty array or object (https://hl7.org/fhir/R5/json.html, ele-1)."""

    @pytest.mark.parametrize(
        "path",
        [
            "metadata",
            READ,
            "ClinicalUseDefinition?type=nothing-like-this",
            "ClinicalUseDefinition?_count=0",
            "ClinicalUseDefinition?type=warning&_summary=count",
            "ClinicalUseDefinition?_elements=type&_count=5",
            "_history?_since=2999-01-01T00:00:00Z",
            "Organization/_history?_count=0",
            "Organization/fda/_history",
            "?_type=Group",
            "Organization/nope",
            "Nope/1",
            "Organization?nonsense=1",
        ],
    )
    def test_route(self, base: str, path: str) -> None:
        """The answer's JSON has no empty array or object anywhere."""
        response = requests.get(f"{base}/{path}", timeout=10)
        assert empties(response.json()) == []


class TestMethods:
    """A read-only server says what each URL accepts: Allow on 405 and OPTIONS, and in the preflight."""

    @pytest.mark.parametrize(
        ("method", "path", "allowed"),
        [
            ("PUT", READ, {"GET", "HEAD", "OPTIONS"}),
            ("DELETE", READ, {"GET", "HEAD", "OPTIONS"}),
            ("PATCH", "Organization/fda", {"GET", "HEAD", "OPTIONS"}),
            ("POST", "Organization", {"GET", "HEAD", "OPTIONS"}),
            ("POST", "", {"GET", "HEAD", "OPTIONS"}),
            ("PUT", "$export", {"GET", "HEAD", "POST", "OPTIONS"}),
        ],
    )
    def test_405_has_allow(self, base: str, method: str, path: str, allowed: set[str]) -> None:
        """Each write is a 405 OperationOutcome whose Allow names only what the URL accepts."""
        response = requests.request(method, f"{base}/{path}", json={"resourceType": "Basic"}, timeout=10)
        assert response.status_code == 405
        assert response.json()["resourceType"] == "OperationOutcome"
        assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed

    def test_options(self, base: str) -> None:
        """OPTIONS on a resource names no write verb."""
        response = requests.options(f"{base}/{READ}", timeout=10)
        assert {m.strip() for m in response.headers["Allow"].split(",")} == {"GET", "HEAD", "OPTIONS"}

    def test_preflight(self, base: str) -> None:
        """A CORS preflight advertises no PUT, PATCH or DELETE."""
        response = requests.options(
            f"{base}/{READ}",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
            timeout=10,
        )
        methods = {m.strip() for m in response.headers["Access-Control-Allow-Methods"].split(",")}
        assert methods <= {"GET", "HEAD", "POST", "OPTIONS"}
        assert "GET" in methods
