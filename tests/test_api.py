"""The FHIR REST API through Flask's test client: read, vread, conditional requests, metadata, and errors."""

from __future__ import annotations

import gzip
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import counts
from fhir.resources.capabilitystatement import CapabilityStatement
from flask.testing import FlaskClient

from fhir_pub.capability import TYPE_INTERACTIONS
from fhir_pub.publication import Publication
from fhir_pub.settings import Settings
from fhir_pub.web import create_app

FHIR_JSON = "application/fhir+json; charset=utf-8"


@pytest.fixture(scope="module")
def client(built: Path) -> FlaskClient:
    """A test client of an app serving the bundled publication, built once for the run."""
    return create_app(Settings(publication=built)).test_client()


def assert_outcome(response: object, status: int, code: str) -> None:
    """The one error shape: OperationOutcome, FHIR JSON, one issue with severity, code and text."""
    assert response.status_code == status  # type: ignore[attr-defined]
    assert response.content_type == FHIR_JSON  # type: ignore[attr-defined]
    body = response.json  # type: ignore[attr-defined]
    assert body["resourceType"] == "OperationOutcome"
    (issue,) = body["issue"]
    assert (issue["severity"], issue["code"]) == ("error", code)
    assert issue["details"]["text"]


class TestRead:
    """read and vread return the published bytes with caching headers."""

    def test_every_resource(self, client: FlaskClient, publication: Publication) -> None:
        """Each resource reads back equal to its file, with ETag, Last-Modified and Content-Location."""
        for entry in publication:
            response = client.get(f"/fhir/{entry.key}")
            assert response.status_code == 200, entry.key
            assert response.content_type == FHIR_JSON
            assert response.json == entry.resource
            meta = entry.resource["meta"]
            assert response.headers["ETag"] == f'W/"{meta["versionId"]}"'
            assert parsedate_to_datetime(response.headers["Last-Modified"]) == datetime.fromisoformat(
                meta["lastUpdated"]
            )
            assert response.headers["Content-Location"].endswith(f"/fhir/{entry.key}")

    def test_vread(self, client: FlaskClient) -> None:
        """The published version reads; any other is 404."""
        assert client.get("/fhir/Organization/fda/_history/1").json["id"] == "fda"
        assert_outcome(client.get("/fhir/Organization/fda/_history/2"), 404, "not-found")

    def test_head(self, client: FlaskClient) -> None:
        """HEAD answers the headers of GET without a body."""
        response = client.head("/fhir/Organization/fda")
        assert response.status_code == 200
        assert response.data == b""
        assert response.headers["ETag"] == 'W/"1"'

    @pytest.mark.parametrize(
        ("headers", "status"),
        [
            ({"If-None-Match": 'W/"1"'}, 304),
            ({"If-None-Match": '"1"'}, 304),
            ({"If-None-Match": 'W/"2"'}, 200),
            ({"If-Modified-Since": "Sun, 22 Nov 2026 00:00:00 GMT"}, 304),
            ({"If-Modified-Since": "Sat, 21 Nov 2026 00:00:00 GMT"}, 200),
        ],
    )
    def test_conditional(self, client: FlaskClient, headers: dict[str, str], status: int) -> None:
        """If-None-Match and If-Modified-Since give 304 when the client's copy is current."""
        response = client.get("/fhir/Organization/fda", headers=headers)
        assert response.status_code == status
        assert (response.data == b"") == (status == 304)

    @pytest.mark.parametrize(
        ("query", "headers"),
        [
            ("", {}),
            ("?_format=json", {}),
            ("?_format=application/fhir+json", {}),
            ("", {"Accept": "application/json"}),
            ("", {"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"}),
        ],
    )
    def test_json_negotiated(self, client: FlaskClient, query: str, headers: dict[str, str]) -> None:
        """JSON is produced for JSON requests and for browsers that accept anything."""
        assert client.get(f"/fhir/Organization/fda{query}", headers=headers).status_code == 200


class TestMetadata:
    """The CapabilityStatement describes exactly what the routes serve."""

    def test_valid_r5(self, client: FlaskClient) -> None:
        """It parses as an R5 CapabilityStatement and declares JSON and FHIR 5.0.0."""
        body = client.get("/fhir/metadata").json
        CapabilityStatement.model_validate(body)
        assert (body["fhirVersion"], body["format"], body["kind"]) == ("5.0.0", ["json", "xml"], "instance")

    def test_agrees_with_routes(self, client: FlaskClient, served: dict[str, dict[str, Any]]) -> None:
        """Every type it lists is served, and every interaction it declares answers for that type."""
        resources = client.get("/fhir/metadata").json["rest"][0]["resource"]
        assert {r["type"] for r in resources} == set(counts(served))
        for declared in resources:
            of_type = [r for k, r in sorted(served.items()) if k.startswith(f"{declared['type']}/")]
            sample = of_type[0]
            assert [i["code"] for i in declared["interaction"]] == list(TYPE_INTERACTIONS)
            urls = {
                "read": f"/fhir/{declared['type']}/{sample['id']}",
                "vread": f"/fhir/{declared['type']}/{sample['id']}/_history/{sample['meta']['versionId']}",
                "search-type": f"/fhir/{declared['type']}?_id={sample['id']}",
                "history-instance": f"/fhir/{declared['type']}/{sample['id']}/_history",
                "history-type": f"/fhir/{declared['type']}/_history",
            }
            for interaction in declared["interaction"]:
                assert client.get(urls[interaction["code"]]).status_code == 200
            for param in declared["searchParam"]:  # every declared parameter is accepted, even unmatched
                probe = (
                    f"{param['name']}=x" if param["type"] == "special" else f"{param['name']}:missing=true"
                )
                assert client.get(f"/fhir/{declared['type']}?{probe}").status_code == 200
            profiles = sorted({p for r in of_type for p in r["meta"].get("profile", [])})
            assert declared.get("supportedProfile", []) == profiles


class TestErrors:
    """Every error, of any status, is an OperationOutcome."""

    @pytest.mark.parametrize(
        ("method", "path", "headers", "status", "code"),
        [
            ("GET", "/fhir/Patient/1", {}, 404, "not-supported"),
            ("GET", "/fhir/Nonsense/1", {}, 404, "not-supported"),
            ("GET", "/fhir/Organization/nope", {}, 404, "not-found"),
            ("GET", "/fhir/Organization/fda/_history/x", {}, 404, "not-found"),
            ("GET", "/fhir/Organization/fda?_format=text/csv", {}, 406, "not-supported"),
            ("GET", "/fhir/Organization/fda", {"Accept": "application/pdf"}, 406, "not-supported"),
            ("GET", "/fhir/metadata?_format=text/turtle", {}, 406, "not-supported"),
            ("GET", "/not/a/route", {}, 404, "not-found"),
            ("POST", "/fhir/Organization", {}, 405, "not-supported"),
            ("POST", "/fhir", {}, 405, "not-supported"),
            ("PUT", "/fhir/Organization/fda", {}, 405, "not-supported"),
            ("PATCH", "/fhir/Organization/fda", {}, 405, "not-supported"),
            ("DELETE", "/fhir/Organization/fda", {}, 405, "not-supported"),
            ("DELETE", "/fhir/Organization/nope", {}, 405, "not-supported"),
        ],
    )
    def test_shape(
        self, client: FlaskClient, method: str, path: str, headers: dict[str, str], status: int, code: str
    ) -> None:
        """Each request fails with its status and an OperationOutcome issue code."""
        assert_outcome(client.open(path, method=method, headers=headers), status, code)

    def test_unknown_type_points_at_it(self, client: FlaskClient) -> None:
        """The issue's text names the unknown type; expression is only ever a FHIRPath into a resource."""
        (issue,) = client.get("/fhir/Nonsense/1").json["issue"]
        assert "Nonsense" in issue["details"]["text"]
        assert "expression" not in issue

    def test_outcomes_have_a_narrative_and_no_parameter_as_expression(self, client: FlaskClient) -> None:
        """dom-6: every OperationOutcome carries a generated narrative; query parameters stay in the text."""
        outcome = client.get("/fhir/ClinicalUseDefinition?type:below=x").json
        assert outcome["text"]["status"] == "generated"
        assert "type:below" in outcome["text"]["div"]
        (issue,) = outcome["issue"]
        assert "expression" not in issue
        assert "type:below" in issue["details"]["text"]

    @pytest.mark.parametrize(
        ("path", "status", "char"),
        [
            ("/fhir/?_type=a%1Eb", 404, "\x1e"),
            ("/fhir/Medication/a%04b", 404, "\x04"),
            ("/fhir/Medication?a%01b=1", 200, "\x01"),  # lenient: a warning in the Bundle
        ],
    )
    @pytest.mark.parametrize("fmt", ["json", "xml", "html"])
    def test_control_characters_echoed_escaped(
        self, client: FlaskClient, path: str, status: int, char: str, fmt: str
    ) -> None:
        """Messages echoing control characters (which no FHIR string or XML holds) escape them."""
        response = client.get(f"{path}{'&' if '?' in path else '?'}_format={fmt}")
        text = response.get_data(as_text=True)
        assert (response.status_code, response.mimetype.rsplit("+", 1)[-1].rsplit("/")[-1]) == (status, fmt)
        assert char not in text
        if (fmt, status) != ("html", 200):  # the HTML searchset page lists entries, not their warnings
            assert f"a{ascii(char)[1:-1]}b".replace("\\", "") in text.replace("\\", "")

    def test_health(self, client: FlaskClient) -> None:
        """/healthz answers for orchestrators."""
        assert client.get("/healthz").json == {"status": "ok"}


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings come from FHIR_PUB_* variables."""
    monkeypatch.setenv("FHIR_PUB_PUBLICATION", str(tmp_path / "x.sqlite"))
    monkeypatch.setenv("FHIR_PUB_BASE_URL", "https://example.org/fhir")
    settings = Settings()
    assert (settings.publication, settings.base_url) == (tmp_path / "x.sqlite", "https://example.org/fhir")


class TestHistory:
    """History bundles: one version per published resource, newest first, with request and response."""

    def test_instance(self, client: FlaskClient, publication: Publication) -> None:
        """The history of one resource holds its one version with method, status, ETag and lastModified."""
        bundle = client.get("/fhir/Organization/fda/_history").json
        assert (bundle["type"], bundle["total"]) == ("history", 1)
        (only,) = bundle["entry"]
        assert only["resource"] == publication.get("Organization/fda")
        assert only["request"] == {"method": "PUT", "url": "Organization/fda"}
        assert only["response"] == {"status": "201", "etag": 'W/"1"', "lastModified": "2026-11-22T00:00:00Z"}
        assert_outcome(client.get("/fhir/Organization/nope/_history"), 404, "not-found")

    def test_type_and_system(self, client: FlaskClient, served: dict[str, dict[str, Any]]) -> None:
        """Type and system history count every resource served and page with _count."""
        organizations = sum(key.startswith("Organization/") for key in served)
        assert organizations > 1
        assert client.get("/fhir/Organization/_history").json["total"] == organizations
        system = client.get("/fhir/_history?_count=10").json
        assert system["total"] == len(served)
        assert len(system["entry"]) == 10
        assert any(link["relation"] == "next" for link in system["link"])

    def test_since(self, client: FlaskClient, served: dict[str, dict[str, Any]]) -> None:
        """_since keeps only what changed after the instant; a bad instant is 400."""
        assert client.get("/fhir/_history?_since=2026-11-21T00:00:00Z").json["total"] > 0
        later = [k for k, r in served.items() if r["meta"]["lastUpdated"] > "2026-11-22T00:00:00Z"]
        assert len(later) > 5  # the five corrected resources, and the conformance resources first served then
        assert client.get("/fhir/_history?_since=2026-11-22T00:00:00Z").json["total"] == len(later)
        newest = max(r["meta"]["lastUpdated"] for r in served.values())
        assert client.get(f"/fhir/_history?_since={newest}").json["total"] == 0
        assert_outcome(client.get("/fhir/_history?_since=yesterday"), 400, "invalid")
        assert_outcome(client.get("/fhir/_history?_since=2026-11-21T00:00:00"), 400, "invalid")


class TestHttp:
    """CORS for browser apps, compression for FHIR media types, base URLs behind proxies."""

    def test_cors(self, client: FlaskClient) -> None:
        """Any origin may read, and may see the caching headers."""
        response = client.get("/fhir/Organization/fda", headers={"Origin": "https://app.example"})
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert "ETag" in response.headers["Access-Control-Expose-Headers"]
        preflight = client.options(
            "/fhir/Organization",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
        )
        assert preflight.status_code == 200
        assert preflight.headers["Access-Control-Allow-Origin"] == "*"

    def test_gzip_fhir_json(self, client: FlaskClient) -> None:
        """application/fhir+json is gzipped for clients that accept it."""
        import gzip
        import json

        response = client.get("/fhir/MedicationKnowledge/besponsa", headers={"Accept-Encoding": "gzip"})
        assert response.headers["Content-Encoding"] == "gzip"
        assert json.loads(gzip.decompress(response.data))["id"] == "besponsa"

    def test_forwarded_headers(self, built: Path) -> None:
        """With a trusted proxy, fullUrls and links use the public scheme, host and prefix."""
        proxied = create_app(Settings(publication=built, trusted_proxies=1)).test_client()
        headers = {
            "X-Forwarded-Proto": "https",
            "X-Forwarded-Host": "fhir.example.org",
            "X-Forwarded-Prefix": "/pub",
        }
        bundle = proxied.get("/fhir/Organization?_count=1", headers=headers).json
        assert bundle["entry"][0]["fullUrl"].startswith("https://fhir.example.org/pub/fhir/Organization/")
        untrusted = (
            create_app(Settings(publication=built))
            .test_client()
            .get("/fhir/Organization?_count=1", headers=headers)
        )
        assert untrusted.json["entry"][0]["fullUrl"].startswith("http://localhost/fhir/")

    def test_configured_base_url(self, built: Path) -> None:
        """A configured base URL wins over the request's."""
        based = create_app(Settings(publication=built, base_url="https://pub.example/r5/")).test_client()
        read = based.get("/fhir/Group/patients-1-year-and-older")
        assert read.headers["Content-Location"] == "https://pub.example/r5/Group/patients-1-year-and-older"
        assert (
            based.get("/fhir/Group").json["entry"][0]["fullUrl"]
            == "https://pub.example/r5/Group/patients-1-year-and-older"
        )


class TestFormats:
    """JSON is stored; XML is rendered from it; _pretty indents; errors follow the format too."""

    @pytest.mark.parametrize(
        ("query", "headers"),
        [
            ("?_format=xml", {}),
            ("?_format=application/fhir+xml", {}),
            ("", {"Accept": "application/fhir+xml"}),
        ],
    )
    def test_read_as_xml(
        self, client: FlaskClient, publication: Publication, query: str, headers: dict[str, str]
    ) -> None:
        """The XML form parses back (fhir.resources) to the published resource."""
        from fhir.resources.organization import Organization

        response = client.get(f"/fhir/Organization/fda{query}", headers=headers)
        assert response.content_type == "application/fhir+xml; charset=utf-8"
        assert "Accept" in response.headers["Vary"]
        parsed = Organization.model_validate_xml(response.data)
        assert parsed == Organization.model_validate(publication.get("Organization/fda"))

    def test_bundle_and_error_as_xml(self, client: FlaskClient) -> None:
        """Search bundles and OperationOutcomes come as XML when asked."""
        bundle = client.get("/fhir/Group?_format=xml")
        assert bundle.data.startswith(b"<?xml")
        assert b"<Bundle" in bundle.data
        missing = client.get("/fhir/Organization/nope?_format=xml")
        assert missing.status_code == 404
        assert b"<OperationOutcome" in missing.data

    def test_every_resource_and_the_statement_as_xml(
        self, client: FlaskClient, publication: Publication
    ) -> None:
        """Each published resource and the CapabilityStatement parse back from XML to the same model."""
        from fhir.resources import get_fhir_model_class

        documents = [*(entry.key for entry in publication), "metadata"]
        for path in documents:
            json_body = client.get(f"/fhir/{path}").json
            model = get_fhir_model_class(json_body["resourceType"])
            xml_body = client.get(f"/fhir/{path}?_format=xml").data
            assert model.model_validate_xml(xml_body) == model.model_validate(json_body), path

    @pytest.mark.parametrize(
        "query",
        [
            "ClinicalUseDefinition?_include=ClinicalUseDefinition:subject&_count=5",
            "Provenance?_elements=target&_count=3",  # incomplete resources, tagged SUBSETTED
            "ClinicalUseDefinition?_summary=true&_count=3",
            "MedicationKnowledge?_summary=text",
            "_history?_count=3",
        ],
    )
    def test_bundles_as_xml_say_what_json_says(self, client: FlaskClient, query: str) -> None:
        """XML bundles hold the JSON bundle's entries, ids and tags, even when entries are incomplete."""
        from lxml import etree

        bundle = client.get(f"/fhir/{query}").json
        response = client.get(f"/fhir/{query}{'&' if '?' in query else '?'}_format=xml")
        assert response.status_code == 200
        root = etree.fromstring(response.data)
        ns = {"f": "http://hl7.org/fhir"}
        ids = root.xpath("f:entry/f:resource/*/f:id/@value", namespaces=ns)
        assert ids == [e["resource"]["id"] for e in bundle["entry"]]
        tags = root.xpath("f:entry/f:resource/*/f:meta/f:tag/f:code/@value", namespaces=ns)
        assert tags == [
            t["code"] for e in bundle["entry"] for t in e["resource"].get("meta", {}).get("tag", [])
        ]

    def test_xml_mapping_rules(self) -> None:
        """Element ids and extension urls are attributes; a primitive's extension sits inside it."""
        from fhir_pub.web.fhirxml import dumps

        resource = {
            "resourceType": "Organization",
            "id": "o",
            "active": True,
            "_name": {"id": "n1", "extension": [{"url": "http://x", "valueString": "why"}]},
            "alias": ["a", None],
            "_alias": [None, {"extension": [{"url": "http://y", "valueBoolean": False}]}],
            "contact": [{"id": "c1", "name": {"text": "T"}}],
        }
        assert dumps(resource) == (
            b"<?xml version='1.0' encoding='utf-8'?>\n"
            b'<Organization xmlns="http://hl7.org/fhir"><id value="o"/><active value="true"/>'
            b'<name id="n1"><extension url="http://x"><valueString value="why"/></extension></name>'
            b'<alias value="a"/><alias><extension url="http://y"><valueBoolean value="false"/></extension>'
            b'</alias><contact id="c1"><name><text value="T"/></name></contact></Organization>'
        )

    def test_pretty(self, client: FlaskClient) -> None:
        """_pretty=true indents JSON."""
        assert client.get("/fhir/Organization/fda?_pretty=true").data.startswith(b'{\n  "resourceType"')
        assert client.get("/fhir/Organization/fda").data.startswith(b'{"resourceType"')


BROWSER = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


class TestHtml:
    """Browsers get readable pages; FHIR clients keep getting FHIR."""

    def test_resource_page(self, client: FlaskClient) -> None:
        """A resource page: narrative, links both ways, a base for relative links, a strict CSP."""
        response = client.get("/fhir/ClinicalUseDefinition/warning-bleeding", headers=BROWSER)
        assert response.content_type == "text/html; charset=utf-8"
        page = response.get_data(as_text=True)
        assert "soft toothbrush" in page
        assert '<base href="http://localhost/fhir/">' in page
        assert 'href="http://localhost/fhir/Medication/besponsa-vial"' in page
        assert 'href="http://localhost/fhir/Provenance/warning-bleeding"' in page
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]
        assert response.headers["X-Frame-Options"] == "DENY"
        assert response.headers["X-Content-Type-Options"] == "nosniff"

    def test_sources_part_by_part(self, client: FlaskClient) -> None:
        """The drug's page names the sources of each part: a dosing sentence has one answer."""
        page = client.get("/fhir/MedicationKnowledge/besponsa", headers=BROWSER).get_data(as_text=True)
        assert "Sources, part by part" in page
        dosing = "MedicationKnowledge.indicationGuideline[0].dosingGuideline[0].dosage[0].dosage[0].text"
        row = page.split(f"<code>{dosing}</code>", 1)[1].split("</tr>", 1)[0]
        assert "MSK patient and caregiver leaflet" in row
        assert "MedlinePlus a617041" in row
        assert "BESPONSA Patient Counseling" not in row  # Pfizer does not state the schedule
        atc = page.split("<code>MedicationKnowledge.medicineClassification[1]</code>", 1)[1].split(
            "</tr>", 1
        )[0]
        assert 'href="http://localhost/fhir/DocumentReference/whocc-atc-index"' in atc
        bleeding = client.get("/fhir/ClinicalUseDefinition/warning-bleeding", headers=BROWSER).get_data(
            as_text=True
        )
        assert "<code>the whole resource</code>" in bleeding

    def test_provenance_of_the_drug_by_target(self, client: FlaskClient) -> None:
        """Provenance?target= finds every Provenance tracing elements of the drug, one per source."""
        bundle = client.get("/fhir/Provenance?target=MedicationKnowledge/besponsa&_count=100").json
        found = {e["resource"]["id"] for e in bundle["entry"]}
        assert found == {
            "besponsa-msk",
            "besponsa-medlineplus",
            "besponsa-pfizer",
            "besponsa-dailymed",
            "besponsa-atc-index",
        }
        for entry in bundle["entry"]:
            (source,) = entry["resource"]["entity"]
            assert source["role"] == "source"

    def test_search_and_error_pages(self, client: FlaskClient) -> None:
        """Search results list their entries; errors are readable and keep their status."""
        page = client.get("/fhir/ClinicalUseDefinition?type=interaction", headers=BROWSER).get_data(
            as_text=True
        )
        assert "Medicines that can prolong the QT interval" in page
        missing = client.get("/fhir/Organization/nope", headers=BROWSER)
        assert missing.status_code == 404
        assert "is not in this publication" in missing.get_data(as_text=True)

    def test_landing(self, client: FlaskClient) -> None:
        """The landing page lists the drug and the source documents."""
        page = client.get("/").get_data(as_text=True)
        assert "Besponsa (inotuzumab ozogamicin)" in page
        assert "MedlinePlus a617041" in page
        assert 'href="http://localhost/fhir/metadata"' in page

    def test_unsafe_narrative_is_not_rendered(self, client: FlaskClient) -> None:
        """A narrative failing the txt-1 check is shown as text, never as markup."""
        from flask import Flask

        from fhir_pub.web import html

        app: Flask = client.application
        with app.test_request_context("/"):
            resource = {
                "resourceType": "Organization",
                "id": "x",
                "text": {
                    "status": "generated",
                    "div": '<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script>Hi</div>',
                },
            }
            page = html.resource_page(
                resource, "http://localhost/fhir", html.Served(app.extensions["fhir_pub"].store)
            )
        assert "<script>" not in page
        assert "Hi" in page

    @pytest.mark.parametrize(
        ("markup", "kept", "dropped"),
        [
            ('<p style="color:red" title="t">Hi</p>', '<p style="color:red" title="t">Hi</p>', ""),
            ('<a href="https://example.org/x">x</a>', 'href="https://example.org/x"', ""),
            ('<a href="ftp://example.org/x">x</a>', ">x</a>", "ftp:"),
            ('<p><img src="http://tracker.example/p.gif" alt="a" width="1"/>Hi</p>', 'alt="a"', "width"),
            ('<table><tr><td colspan="2" bgcolor="red">c</td></tr></table>', 'colspan="2"', "bgcolor"),
        ],
    )
    def test_narrative_is_sanitized(self, markup: str, kept: str, dropped: str) -> None:
        """Narratives that pass txt-1 are still rebuilt from an allow-list before they reach a page."""
        from fhir_pub.web.html import sanitized

        div = f'<div xmlns="http://www.w3.org/1999/xhtml">{markup}</div>'
        clean = sanitized(div)
        assert kept in clean
        if dropped:
            assert dropped not in clean

    def test_fhir_clients_unaffected(self, client: FlaskClient) -> None:
        """*/* and FHIR media types still get FHIR JSON."""
        assert client.get("/fhir/Organization/fda", headers={"Accept": "*/*"}).content_type.startswith(
            "application/fhir+json"
        )


class TestResponseCache:
    """The cache in front of the app answers exactly what the app would."""

    def test_same_as_uncached(self, built: Path, publication: Publication) -> None:
        """For a spread of requests, the cached app and an app without cache answer alike, twice."""
        cached = create_app(Settings(publication=built)).test_client()
        plain = create_app(Settings(publication=built, response_cache=0)).test_client()
        requests = [
            ("/fhir/Organization/fda", {}),
            ("/fhir/Organization/fda", {"Accept": "application/fhir+xml"}),
            ("/fhir/Organization/fda", {"Accept-Encoding": "gzip"}),
            ("/fhir/Organization/fda", {"Origin": "https://a.example"}),
            ("/fhir/ClinicalUseDefinition?type=warning&_count=5", {}),
            ("/fhir/ClinicalUseDefinition?colour=blue", {"Prefer": "handling=strict"}),
            ("/fhir/Organization/nope", {}),
            ("/fhir/metadata", {}),
        ]
        for url, headers in requests * 2:
            mine, theirs = cached.get(url, headers=headers), plain.get(url, headers=headers)
            # A gzip member records the second it was made, so compressed bytes are compared inflated.
            data = [gzip.decompress(r.data) if r.content_encoding else r.data for r in (mine, theirs)]
            assert (mine.status_code, data[0]) == (theirs.status_code, data[1]), (url, headers)
            # Date is when each answer was sent: two requests may fall either side of a second.
            kept = [sorted((k, v) for k, v in r.headers.items() if k != "Date") for r in (mine, theirs)]
            assert kept[0] == kept[1], (url, headers)

    def test_conditional_from_cache(self, client: FlaskClient) -> None:
        """A cached 200 answers later conditional requests with 304, and other clients still get 200."""
        first = client.get("/fhir/Group/patients-1-year-and-older")
        again = client.get(
            "/fhir/Group/patients-1-year-and-older", headers={"If-None-Match": first.headers["ETag"]}
        )
        assert (again.status_code, again.data, again.headers["ETag"]) == (304, b"", first.headers["ETag"])
        assert "Content-Type" not in again.headers
        assert client.get("/fhir/Group/patients-1-year-and-older").status_code == 200
        stale = client.get("/fhir/Group/patients-1-year-and-older", headers={"If-None-Match": 'W/"0"'})
        assert stale.status_code == 200

    def test_head_and_writes(self, client: FlaskClient) -> None:
        """HEAD has no body; writes are never cached."""
        assert client.head("/fhir/Organization/msk").data == b""
        assert client.get("/fhir/Organization/msk").data
        assert client.delete("/fhir/Organization/msk").status_code == 405
        assert client.get("/fhir/Organization/msk").status_code == 200

    def test_bounded_in_bytes(self) -> None:
        """However many distinct URLs arrive, the cache holds no more bytes than its budget."""
        from fhir_pub.web.cache import ResponseCache

        def app(environ: dict[str, object], start_response: object) -> list[bytes]:
            start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
            return [str(environ["PATH_INFO"]).encode().ljust(1000, b".")]

        cache = ResponseCache(app, max_bytes=10_000)
        for index in range(500):
            body = cache({"REQUEST_METHOD": "GET", "PATH_INFO": f"/{index}"}, lambda status, headers: None)
            assert b"".join(body).startswith(f"/{index}.".encode())
            assert sum(len(e.body) for e in cache._entries.values()) <= 10_000
        assert 1 <= len(cache._entries) <= 10
        again = cache({"REQUEST_METHOD": "GET", "PATH_INFO": "/499"}, lambda status, headers: None)
        assert b"".join(again).startswith(b"/499.")

    def test_one_render_for_concurrent_misses(self) -> None:
        """Requests for one missing response arriving together wait for a single render of it."""
        from fhir_pub.web.cache import ResponseCache

        calls: list[str] = []
        started = threading.Event()

        def app(environ: dict[str, object], start_response: object) -> list[bytes]:
            calls.append(str(environ["PATH_INFO"]))
            started.set()
            time.sleep(0.2)  # a slow search: the other requests arrive while it runs
            start_response("200 OK", [("Content-Type", "text/plain")])  # type: ignore[operator]
            return [f"answer {len(calls)}".encode()]

        cache = ResponseCache(app)

        def get(path: str) -> bytes:
            return b"".join(cache({"REQUEST_METHOD": "GET", "PATH_INFO": path}, lambda status, headers: None))

        with ThreadPoolExecutor(8) as pool:
            first = pool.submit(get, "/slow")
            started.wait(5)
            rest = [pool.submit(get, "/slow") for _ in range(6)] + [pool.submit(get, "/other")]
            answers = [first.result(), *(f.result() for f in rest)]
        assert sorted(calls) == ["/other", "/slow"]
        assert answers[:7] == [answers[0]] * 7

    def test_failed_render_not_shared(self) -> None:
        """A 5xx is neither kept nor handed to the requests that waited for it: each renders its own."""
        from fhir_pub.web.cache import ResponseCache

        statuses = iter(["503 Service Unavailable", "200 OK"])
        started = threading.Event()

        def app(environ: dict[str, object], start_response: object) -> list[bytes]:
            status = next(statuses)
            if status.startswith("503"):
                started.set()
                time.sleep(0.2)  # the second request arrives and waits for this one
            start_response(status, [])  # type: ignore[operator]
            return [status.encode()]

        cache = ResponseCache(app)

        def get() -> str:
            seen: list[str] = []
            cache({"REQUEST_METHOD": "GET", "PATH_INFO": "/x"}, lambda status, headers: seen.append(status))
            return seen[0]

        with ThreadPoolExecutor(2) as pool:
            first = pool.submit(get)
            started.wait(5)
            second = pool.submit(get)
            assert [first.result(), second.result()] == ["503 Service Unavailable", "200 OK"]
        assert get() == "200 OK"  # kept: the app is not asked again (its statuses are used up)


def test_capability_statement_passes_its_invariants(client: FlaskClient) -> None:
    """The served CapabilityStatement passes R5's cpb-*, cnl-* and dom-* invariants and its profile."""
    from fhir_pub.conformance import load_conformance
    from fhir_pub.validation import Validator, candidate_from_bytes

    body = client.get("/fhir/metadata").data
    report = Validator(load_conformance()).validate([candidate_from_bytes(body, "metadata")])
    checked = [i for i in report.issues if i.layer in {"structure", "profile", "invariant"}]
    assert checked == []
    assert [i.rule for i in report.issues] == ["orphan"]  # the graph rule is about publications, not servers
