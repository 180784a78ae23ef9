"""R4B and R4 served from the same build: [base]/R4B, [base]/R4 and the fhirVersion media-type parameter."""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson
import pytest
import requests
from conftest import free_port, start, stop
from fhir.resources.R4B import get_fhir_model_class as r4b_model
from fhirclient import client as smart_client
from flask.testing import FlaskClient
from test_versions import CHECKS

from fhir_pub.conformance import CANONICAL_BASE
from fhir_pub.publication import Publication
from fhir_pub.search.versions import R4B_PARAMETERS
from fhir_pub.settings import Settings
from fhir_pub.store import Store
from fhir_pub.web import create_app
from fhir_pub.web.html import sanitized

BASES = {"4.3": "/fhir/R4B", "4.0": "/fhir/R4"}


@pytest.fixture(scope="module")
def client(built: Path) -> FlaskClient:
    return create_app(Settings(publication=built)).test_client()


def served_as(kind: str, version: str) -> str:
    return "Basic" if kind == "ClinicalUseDefinition" and version == "4.0" else kind


@pytest.mark.parametrize("version", ["4.3", "4.0"])
def test_every_resource_reads_and_passes_that_versions_check(
    client: FlaskClient, publication: Publication, version: str
) -> None:
    """Each resource of the publication reads at the version's base, and that version's models accept it."""
    for entry in publication:
        kind, rid = entry.resource["resourceType"], entry.resource["id"]
        response = client.get(f"{BASES[version]}/{served_as(kind, version)}/{rid}")
        assert response.status_code == 200, (version, entry.key)
        assert response.headers["Content-Type"].endswith(f"fhirVersion={version}")
        assert response.headers["ETag"] == f'W/"{entry.resource["meta"]["versionId"]}"'
        CHECKS[version](orjson.loads(response.data))


@pytest.mark.parametrize("version", ["4.3", "4.0"])
def test_media_type_parameter_on_the_r5_base(client: FlaskClient, version: str) -> None:
    """FhirVersion in Accept gets the same bytes as the version's own base, and says so."""
    asked = client.get(
        "/fhir/MedicationKnowledge/besponsa",
        headers={"Accept": f"application/fhir+json; fhirVersion={version}"},
    )
    own = client.get(f"{BASES[version]}/MedicationKnowledge/besponsa")
    assert asked.status_code == own.status_code == 200
    assert asked.data == own.data
    assert asked.headers["Content-Type"] == f"application/fhir+json; charset=utf-8; fhirVersion={version}"
    assert "Accept" in asked.headers["Vary"]
    r5 = client.get("/fhir/MedicationKnowledge/besponsa")
    assert r5.data != own.data
    assert "fhirVersion" not in r5.headers["Content-Type"]


def test_vread_and_conditional_read(client: FlaskClient) -> None:
    read = client.get("/fhir/R4/Basic/warning-bleeding")
    version = read.headers["ETag"].split('"')[1]
    assert client.get(f"/fhir/R4/Basic/warning-bleeding/_history/{version}").data == read.data
    assert (
        client.get(
            "/fhir/R4/Basic/warning-bleeding", headers={"If-None-Match": read.headers["ETag"]}
        ).status_code
        == 304
    )
    assert client.get(f"/fhir/R4/Basic/warning-bleeding/_history/{version}0").status_code == 404


@pytest.mark.parametrize("version", ["4.3", "4.0"])
def test_capability_statement_of_each_version(client: FlaskClient, store: Store, version: str) -> None:
    """Each base has its own CapabilityStatement: its fhirVersion, its types, only what it serves."""
    response = client.get(f"{BASES[version]}/metadata")
    statement = orjson.loads(response.data)
    CHECKS[version](statement)
    assert statement["fhirVersion"] == {"4.3": "4.3.0", "4.0": "4.0.1"}[version]
    assert statement["implementation"]["url"] == f"http://localhost{BASES[version]}"
    (rest,) = statement["rest"]
    assert [r["type"] for r in rest["resource"]] == list(store.converted_types(version))
    assert {i["code"] for r in rest["resource"] for i in r["interaction"]} == {
        "read",
        "vread",
        "history-instance",
        "history-type",
        "search-type",
    }
    assert rest["interaction"] == [{"code": "history-system"}, {"code": "search-system"}]
    assert [o["name"] for o in rest["operation"]] == ["export", "validate"]
    assert statement["format"] == ["json", "xml"]
    defined = orjson.loads(R4B_PARAMETERS.read_bytes())["types"]
    for resource in rest["resource"]:
        kind, own = resource["type"], {}
        for scope in (kind, "DomainResource", "Resource"):
            own = {**defined.get(scope, {}), **own}
        for param in resource.get("searchParam", []):
            if "definition" in param:  # that version's own parameter of the code, or one of ours
                assert param["definition"] == own.get(param["name"]) or param["definition"].startswith(
                    f"{CANONICAL_BASE}/"
                ), (kind, param)
            else:  # served as R5 defines it, and said so
                assert param["name"] not in own, (kind, param)
                assert "served as FHIR R5 defines it" in param["documentation"], (kind, param)
    params = {(r["type"], p["name"]): p for r in rest["resource"] for p in r.get("searchParam", [])}
    assert "definition" not in params["Organization", "_language"]  # R4 and R4B define no _language
    if version == "4.0":
        assert params["Basic", "subject"]["definition"] == "http://hl7.org/fhir/SearchParameter/Basic-subject"
        assert params["Basic", "identifier"]["definition"].endswith("/Basic-identifier")


def validated(client: FlaskClient, path: str, body: Any, **headers: str) -> Any:
    """The answer of a $validate of ``body`` (JSON) at ``path``."""
    return client.post(
        path, data=orjson.dumps(body), headers={"Content-Type": "application/fhir+json", **headers}
    )


@pytest.mark.parametrize(
    ("base", "version", "name"), [("/fhir/R4B", "4.3", "R4B"), ("/fhir/R4", "4.0", "R4")]
)
def test_validate_at_r4b_and_r4(client: FlaskClient, built: Path, base: str, version: str, name: str) -> None:
    """$validate at a version's base checks that version: its resources pass, a broken one fails."""
    store = Store(built)
    kinds = store.converted_types(version)
    assert ("Basic" in kinds) == (version == "4.0")
    for kind in kinds:
        listed = client.get(f"{base}/{kind}?_count=3").json
        for entry in listed["entry"]:
            answer = validated(client, f"{base}/{kind}/$validate", entry["resource"])
            assert answer.status_code == 200
            assert answer.headers["Content-Type"].endswith(f"fhirVersion={version}")
            issues = answer.json["issue"]
            assert [i["severity"] for i in issues] == ["information"], (kind, issues)
            assert f"FHIR {name}" in issues[0]["details"]["text"]
    broken = {"resourceType": "Organization", "active": "maybe", "name": "x", "extra": 1}
    issues = validated(client, f"{base}/$validate", broken).json["issue"]
    errors = {i["expression"][0] for i in issues if i["severity"] == "error"}
    assert "Organization.active" in errors
    assert len(errors) == 2  # the unknown element too
    r5_only = {"resourceType": "ClinicalUseDefinition", "type": "warning"}
    issues = validated(client, f"{base}/$validate", r5_only).json["issue"]
    assert any(i["severity"] == "error" for i in issues) == (version == "4.0")
    profiled = {
        "resourceType": "Parameters",
        "parameter": [
            {"name": "resource", "resource": broken},
            {"name": "profile", "valueCanonical": "http://x.org/p"},
        ],
    }
    refused = validated(client, f"{base}/$validate", profiled)
    assert refused.status_code == 400
    assert f"at FHIR {name}" in refused.json["issue"][0]["details"]["text"]


def test_validate_asked_in_another_version(client: FlaskClient) -> None:
    """At the R5 base, fhirVersion=4.3 in Accept validates in R4B; an unserved version is a 406."""
    r5_form = {"resourceType": "MedicationKnowledge", "name": ["x"]}  # R5's name is R4B's synonym
    as_r4b = validated(client, "/fhir/$validate", r5_form, Accept="application/fhir+json; fhirVersion=4.3")
    assert as_r4b.status_code == 200
    assert as_r4b.headers["Content-Type"].endswith("fhirVersion=4.3")
    assert "MedicationKnowledge.name" in {i.get("expression", [""])[0] for i in as_r4b.json["issue"]}
    as_r5 = validated(client, "/fhir/$validate", r5_form)
    assert not [i for i in as_r5.json["issue"] if i.get("expression") == ["MedicationKnowledge.name"]]
    refused = validated(client, "/fhir/$validate", r5_form, Accept="application/fhir+json; fhirVersion=3.0")
    assert refused.status_code == 406


def test_preference_among_versions(client: FlaskClient) -> None:
    """q-values choose among the versions an interaction is served in: R4 for a read and a search."""
    accept = {
        "Accept": "application/fhir+json; fhirVersion=4.0, application/fhir+json; fhirVersion=5.0; q=0.5"
    }
    read = client.get("/fhir/Organization/pfizer", headers=accept)
    assert read.headers["Content-Type"].endswith("fhirVersion=4.0")
    assert read.data == client.get("/fhir/R4/Organization/pfizer").data
    search = client.get("/fhir/Organization?_count=1", headers=accept)
    assert search.status_code == 200
    assert search.headers["Content-Type"].endswith("fhirVersion=4.0")
    plain = {"Accept": "application/fhir+json, application/fhir+json; fhirVersion=4.3; q=0.5"}
    preferring_r5 = client.get("/fhir/Organization/pfizer", headers=plain)
    assert preferring_r5.data == client.get("/fhir/Organization/pfizer").data
    assert "fhirVersion=4.3" not in preferring_r5.headers["Content-Type"]


def test_other_refusals(client: FlaskClient) -> None:
    assert client.get("/fhir/R4/ClinicalUseDefinition/warning-bleeding").status_code == 404  # R4: a Basic
    mismatch = client.get(
        "/fhir/R4B/Organization/pfizer", headers={"Accept": "application/fhir+json; fhirVersion=4.0"}
    )
    assert mismatch.status_code == 406
    assert (
        client.get(
            "/fhir/Organization/pfizer", headers={"Accept": "application/fhir+json; fhirVersion=3.0"}
        ).status_code
        == 406
    )


@pytest.fixture(scope="module")
def server(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    process = start(tmp_path_factory.mktemp("versions"), built, port)
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        stop(process)


def test_smart_client_with_its_r4_models(server: str) -> None:
    """SMART's Python client (fhirclient, FHIR 4.0.1 models) reads the publication from the R4 base."""
    from fhirclient.models.basic import Basic
    from fhirclient.models.documentreference import DocumentReference
    from fhirclient.models.group import Group
    from fhirclient.models.medication import Medication
    from fhirclient.models.medicationknowledge import MedicationKnowledge
    from fhirclient.models.organization import Organization
    from fhirclient.models.provenance import Provenance

    smart = smart_client.FHIRClient(settings={"app_id": "fhir-pub-tests", "api_base": f"{server}/R4"})
    drug = MedicationKnowledge.read("besponsa", smart.server)
    assert drug.code.coding[0].display
    uses = [e for e in drug.extension if e.url.endswith("MedicationKnowledge.clinicalUseIssue")]
    assert uses  # every clinical fact is reachable from the drug
    first = uses[0].valueReference.reference
    assert first.startswith("Basic/")
    assert Basic.read(first.split("/", 1)[1], smart.server).code.coding[0].code == "ClinicalUseDefinition"
    assert Medication.read("besponsa-vial", smart.server).code.coding[0].code
    assert Organization.read("pfizer", smart.server).name
    assert Group.read("patients-1-year-and-older", smart.server).actual is not None
    assert DocumentReference.read("medlineplus-a617041", smart.server).content
    assert Provenance.read("besponsa-msk", smart.server).target
    assert requests.get(f"{server}/R4/metadata", timeout=10).json()["fhirVersion"] == "4.0.1"


class TestHistory:
    """History at R4B and R4: the converted forms, in the R5 history's order, links on the base asked."""

    @pytest.mark.parametrize(
        ("version", "path"),
        [
            ("4.3", ""),
            ("4.0", ""),
            ("4.3", "/ClinicalUseDefinition"),
            ("4.0", "/Basic"),
            ("4.0", "/Provenance"),
        ],
    )
    def test_entries_are_the_converted_reads(
        self, client: FlaskClient, store: Store, version: str, path: str
    ) -> None:
        """Each entry is the read at that base, the total the converted resources', links on the base."""
        base = BASES[version]
        first = client.get(f"{base}{path}/_history?_count=7")
        assert first.status_code == 200
        assert first.headers["Content-Type"].endswith(f"fhirVersion={version}")
        history = orjson.loads(first.data)
        CHECKS[version](history)
        kind = path.strip("/")
        expected = (
            store.connection()
            .execute(
                "SELECT COUNT(*) FROM converted WHERE fhir_version = ? AND (? = '' OR type = ?)",
                (version, kind, kind),
            )
            .fetchone()[0]
        )
        assert history["total"] == expected
        seen, url = [], f"{base}{path}/_history?_count=50"
        while url:
            page = client.get(url).json
            for entry in page.get("entry", []):
                resource = entry["resource"]
                key = f"{resource['resourceType']}/{resource['id']}"
                assert entry["fullUrl"] == f"http://localhost{base}/{key}"
                assert entry["request"]["url"] == key
                assert entry["response"]["etag"] == f'W/"{resource["meta"]["versionId"]}"'
                assert client.get(f"{base}/{key}").json == resource
                seen.append(key)
            assert all(
                link["url"].startswith(f"http://localhost{base}{path}/_history?") for link in page["link"]
            )
            nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
            url = nxt[0].removeprefix("http://localhost") if nxt else ""
        assert len(seen) == len(set(seen)) == expected
        r5_order = [f"{k}/{i}" for k, i, _ in store.history(None, None, None, 10_000, 0)[1]]
        renamed = [k.replace("ClinicalUseDefinition/", "Basic/") if version == "4.0" else k for k in r5_order]
        assert seen == [k for k in renamed if k in set(seen)]

    def test_instance_and_since(self, client: FlaskClient) -> None:
        """One resource's history at R4; _since narrows it; an unknown id is 404; CUD is no R4 type."""
        history = client.get("/fhir/R4/Basic/warning-bleeding/_history").json
        (entry,) = history["entry"]
        assert entry["resource"] == client.get("/fhir/R4/Basic/warning-bleeding").json
        assert (
            client.get("/fhir/R4/Basic/warning-bleeding/_history?_since=2999-01-01T00:00:00Z").json["total"]
            == 0
        )
        assert client.get("/fhir/R4/Basic/nope/_history").status_code == 404
        unknown = client.get("/fhir/R4/ClinicalUseDefinition/warning-bleeding/_history")
        assert unknown.status_code == 404
        assert "a clinical use is a Basic" in unknown.json["issue"][0]["details"]["text"]
        assert client.get("/fhir/R4B/StructureDefinition/_history").status_code == 404  # not converted

    def test_media_type_parameter_on_the_r5_base(self, client: FlaskClient) -> None:
        """FhirVersion in Accept answers the converted history, its links on the R5 base asked."""
        accept = {"Accept": "application/fhir+json; fhirVersion=4.3"}
        asked = client.get("/fhir/Organization/_history?_count=3", headers=accept)
        own = client.get("/fhir/R4B/Organization/_history?_count=3")
        assert asked.headers["Content-Type"].endswith("fhirVersion=4.3")
        assert [e["resource"] for e in asked.json["entry"]] == [e["resource"] for e in own.json["entry"]]
        assert asked.json["link"][0]["url"].startswith("http://localhost/fhir/Organization/_history?")


class TestXml:
    """FHIR XML at R4B and R4, in the element order of R4B's definitions (which R4's types share here)."""

    @pytest.mark.parametrize("version", ["4.3", "4.0"])
    def test_every_resource_as_xml_parses_with_r4b_models(
        self, client: FlaskClient, publication: Publication, version: str
    ) -> None:
        """Each read in XML is, by fhir.resources' R4B models, the same resource as the read in JSON."""
        for entry in publication:
            kind, rid = entry.resource["resourceType"], entry.resource["id"]
            path = f"{BASES[version]}/{served_as(kind, version)}/{rid}"
            xml = client.get(path, headers={"Accept": "application/fhir+xml"})
            assert xml.status_code == 200, path
            assert (
                xml.headers["Content-Type"] == f"application/fhir+xml; charset=utf-8; fhirVersion={version}"
            )
            model = r4b_model(served_as(kind, version))
            assert model.model_validate_xml(xml.data) == model.model_validate_json(client.get(path).data), (
                path
            )

    def test_search_bundle_and_format_parameter(self, client: FlaskClient) -> None:
        """A search Bundle in XML (_format=xml) parses with R4B's Bundle; so does fhirVersion in Accept."""
        response = client.get("/fhir/R4/Basic?_count=3&_format=xml")
        assert response.headers["Content-Type"] == "application/fhir+xml; charset=utf-8; fhirVersion=4.0"
        bundle = r4b_model("Bundle").model_validate_xml(response.data)
        assert [e.resource.get_resource_type() for e in bundle.entry] == ["Basic"] * 3
        by_media_type = client.get(
            "/fhir/ClinicalUseDefinition/warning-bleeding",
            headers={"Accept": "application/fhir+xml; fhirVersion=4.3"},
        )
        assert by_media_type.headers["Content-Type"].endswith("fhirVersion=4.3")
        assert (
            by_media_type.data
            == client.get("/fhir/R4B/ClinicalUseDefinition/warning-bleeding?_format=xml").data
        )


def test_no_openapi_document_at_r4b_and_r4(client: FlaskClient) -> None:
    """The OpenAPI document describes the R5 base; the version bases answer 404, not R5's document."""
    for base in BASES.values():
        response = client.get(f"{base}/openapi.json")
        assert response.status_code == 404
        assert "/fhir/openapi.json" in response.json["issue"][0]["details"]["text"]
    assert client.get("/fhir/openapi.json").status_code == 200


HTML = {"Accept": "text/html"}
HREF = re.compile(r'href="([^"]+)"')


class TestHtml:
    """The HTML pages at [base]/R4B and [base]/R4 show that version's forms and link within its base."""

    @pytest.mark.parametrize("version", ["4.3", "4.0"])
    def test_every_resource_page_links_within_its_base(
        self, client: FlaskClient, publication: Publication, version: str
    ) -> None:
        """Each resource's page names the version; each of its links to a resource reads at that base."""
        base, name = BASES[version], {"4.3": "R4B", "4.0": "R4"}[version]
        linked: set[str] = set()
        for entry in publication:
            kind, rid = served_as(entry.resource["resourceType"], version), entry.resource["id"]
            response = client.get(f"{base}/{kind}/{rid}", headers=HTML)
            assert response.status_code == 200, (version, entry.key)
            assert response.mimetype == "text/html"
            page = response.get_data(as_text=True)
            assert f"read-only FHIR {name} publication" in page
            for href in HREF.findall(page):
                path = urlsplit(html_lib.unescape(href)).path
                if path.startswith("/fhir/") and path.count("/") >= 3 and "_history" not in path:
                    assert path.startswith(f"{base}/"), (entry.key, href)  # never back to the R5 base
                    linked.add(path)
        assert linked
        for path in sorted(linked):
            assert client.get(path).status_code == 200, path

    def test_r4_medication_knowledge_reaches_every_clinical_use_by_title(
        self, client: FlaskClient, publication: Publication
    ) -> None:
        """At R4 the drug's page links each clinical use as a Basic, titled by its own heading."""
        page = client.get("/fhir/R4/MedicationKnowledge/besponsa", headers=HTML).get_data(as_text=True)
        uses = [
            e.resource["id"] for e in publication if e.resource["resourceType"] == "ClinicalUseDefinition"
        ]
        links = {html_lib.unescape(h) for h in HREF.findall(page)}
        assert {f"http://localhost/fhir/R4/Basic/{rid}" for rid in uses} <= links
        assert "/fhir/R4/ClinicalUseDefinition/" not in page
        assert ">ClinicalUseDefinition</a>" not in page  # a Basic's code is its kind, not its title
        assert "(R5 element)" in page  # its sources part by part, each part named by its R5 element

    def test_r4_clinical_use_page_names_its_leaflets(self, client: FlaskClient) -> None:
        """A Basic's page lists who refers to it and, part by part, the leaflets stating it, at R4's base."""
        page = client.get("/fhir/R4/Basic/warning-bleeding", headers=HTML).get_data(as_text=True)
        assert "Sources, part by part" in page
        assert 'href="http://localhost/fhir/R4/DocumentReference/' in page
        assert 'href="http://localhost/fhir/R4/Provenance/' in page  # referred to by its Provenance

    @pytest.mark.parametrize(("version", "kind"), [("4.3", "ClinicalUseDefinition"), ("4.0", "Basic")])
    def test_search_and_capability_pages(
        self, client: FlaskClient, store: Store, version: str, kind: str
    ) -> None:
        """A search page and the CapabilityStatement page at the version, with its type names and counts."""
        base = BASES[version]
        search = client.get(f"{base}/{kind}?_count=5", headers=HTML)
        assert search.status_code == 200
        text = search.get_data(as_text=True)
        assert f"<title>{kind}: searchset" in text
        assert text.count(f'href="http://localhost{base}/{kind}/') >= 5
        statement = client.get(f"{base}/metadata", headers=HTML).get_data(as_text=True)
        uses = store.count(("ClinicalUseDefinition",))
        assert f'<a href="http://localhost{base}/{kind}">{uses}</a>' in statement

    def test_error_page_stays_on_its_base(self, client: FlaskClient) -> None:
        """An R5 type name at R4 is a 404 page at R4, in HTML as the browser asked."""
        response = client.get("/fhir/R4/ClinicalUseDefinition/warning-bleeding", headers=HTML)
        assert response.status_code == 404
        assert response.mimetype == "text/html"
        assert "read-only FHIR R4 publication" in response.get_data(as_text=True)

    def test_narrative_links_follow_the_versions_names(self) -> None:
        """A narrative's relative link to an R5 type leads to the version's resource (R4's Basic)."""
        div = '<div xmlns="http://www.w3.org/1999/xhtml"><a href="ClinicalUseDefinition/x">x</a></div>'
        assert 'href="Basic/x"' in sanitized(div, {"ClinicalUseDefinition": "Basic"})
        assert 'href="ClinicalUseDefinition/x"' in sanitized(div)
