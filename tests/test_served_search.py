"""Search at FHIR R4B and R4: the R5 engine, that version's parameters, the converted forms, its base."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import orjson
import pytest
import requests
import test_search
from conftest import free_port, start, stop
from fhir.resources.R4B.bundle import Bundle as R4BBundle
from fhirclient import client as smart_client
from flask.testing import FlaskClient
from test_search import CUD, ids
from test_versions import CHECKS

from fhir_pub.publication import Publication
from fhir_pub.search.versions import NOT_SERVED
from fhir_pub.settings import Settings
from fhir_pub.store import Store
from fhir_pub.web import create_app

BASES = {"4.3": "/fhir/R4B", "4.0": "/fhir/R4"}
R4_BASIC = "http://hl7.org/fhir/fhir-types|ClinicalUseDefinition"


@pytest.fixture(scope="module")
def client(built: Path) -> FlaskClient:
    return create_app(Settings(publication=built)).test_client()


def r5_searches() -> Iterator[str]:
    """Every search of tests/test_search.py's tables of queries, as a path on the R5 base."""
    for table in (
        test_search.TestTokens.test_query,
        test_search.TestStrings.test_query,
        test_search.TestReferences.test_query,
        test_search.TestChaining.test_query,
        test_search.TestFullText.test_query,
    ):
        (mark,) = [m for m in table.pytestmark if m.name == "parametrize"]  # type: ignore[attr-defined]
        for query, _ in mark.args[1]:
            yield f"/fhir/{query}"
    for mark in test_search.TestDates.test_date.pytestmark:  # type: ignore[attr-defined]
        yield from (f"/fhir/DocumentReference?date={value}" for value, _ in mark.args[1])
    for mark in test_search.TestReferences.test_forms.pytestmark:  # type: ignore[attr-defined]
        yield from (f"/fhir/{CUD}?subject={value}" for value in mark.args[1])


def in_version(path: str, version: str) -> str:
    """The same search at the version's base, in its type names (R4: a clinical use is a Basic)."""
    path = path.replace("http://localhost/fhir/", f"http://localhost{BASES[version]}/")
    path = BASES[version] + path[len("/fhir") :]
    return re.sub(r"\bClinicalUseDefinition\b", "Basic", path) if version == "4.0" else path


def served_parameters(client: FlaskClient, version: str) -> dict[str, set[str]]:
    """The search parameters of each type, as the version's CapabilityStatement lists them."""
    (rest,) = client.get(f"{BASES[version]}/metadata").json["rest"]
    return {r["type"]: {p["name"] for p in r.get("searchParam", [])} for r in rest["resource"]}


def names_served(key: str, kind: str, served: dict[str, set[str]]) -> bool:
    """Whether every parameter a (chained) key names is served on the type it applies to."""
    if key.startswith("_has:"):
        _, source, via, rest = key.split(":", 3)
        return via in served.get(source, set()) and names_served(rest, source, served)
    head, dot, rest = key.partition(".")
    name, _, modifier = head.partition(":")
    if name not in served.get(kind, set()):
        return False
    if not dot:
        return True
    targets = [modifier] if modifier[:1].isupper() else list(served)
    return any(names_served(rest, target, served) for target in targets)


def equivalent(path: str, served: dict[str, set[str]]) -> bool:
    """Whether a search at a version's base names only what its CapabilityStatement serves."""
    parts = urlsplit(path)
    kind = parts.path.rsplit("/", 1)[1]
    return kind in served and all(names_served(k, kind, served) for k, _ in parse_qsl(parts.query))


class TestSameResourcesFound:
    """The R5 searches of the search tests that have an R4B or R4 equivalent find the same ids there."""

    @pytest.mark.parametrize("version", ["4.3", "4.0"])
    def test_every_equivalent_search(self, client: FlaskClient, version: str) -> None:
        """Each R5 search whose parameters the version serves finds the same ids at the version's base."""
        served = served_parameters(client, version)
        searches = list(dict.fromkeys(r5_searches()))
        compared = 0
        for path in searches:
            asked = in_version(path, version)
            if not equivalent(asked, served):
                strict = client.get(asked, headers={"Prefer": "handling=strict"})
                assert strict.status_code in {400, 404}, asked  # refused, never answered in part
                continue
            assert ids(client, asked) == ids(client, path), asked
            compared += 1
        # Most of them have an equivalent: the clinical details of R4's Basic are extensions, not indexed.
        assert compared >= len(searches) * {"4.3": 0.9, "4.0": 0.5}[version], (compared, len(searches))

    def test_no_equivalent_at_r4b_names_a_parameter_not_served(self, client: FlaskClient) -> None:
        """At R4B a search lacks an equivalent only where it names a parameter NOT_SERVED lists."""
        served = served_parameters(client, "4.3")
        missing = [p for p in r5_searches() if not equivalent(in_version(p, "4.3"), served)]
        not_served = {code for by_code in NOT_SERVED["4.3"].values() for code in by_code}
        assert missing  # some do name one
        for path in missing:
            named = {n for k, _ in parse_qsl(urlsplit(path).query) for n in re.split(r"[:.]", k)}
            assert named & not_served, path


class TestBundle:
    """The Bundle at R4B and R4: converted entries, links and fullUrls on the base asked, version named."""

    @pytest.mark.parametrize(
        ("version", "query"),
        [
            ("4.3", f"{CUD}?type=warning&_count=5"),
            ("4.0", "Basic?subject=Medication/besponsa-vial&_count=5&_offset=5"),
            ("4.0", "Provenance?agent=Organization/fhir-pub&_count=3"),
            ("4.3", "?_type=Organization,Group&_count=4"),
        ],
    )
    def test_entries_are_the_converted_reads(self, client: FlaskClient, version: str, query: str) -> None:
        """Each entry is the read at that base, fullUrl and links on it; that version's models accept it."""
        base = BASES[version]
        response = client.get(f"{base}/{query}" if not query.startswith("?") else f"{base}{query}")
        assert response.status_code == 200
        assert response.headers["Content-Type"].endswith(f"fhirVersion={version}")
        bundle = orjson.loads(response.data)
        CHECKS[version](bundle)
        assert bundle["entry"]
        for entry in bundle["entry"]:
            resource = entry["resource"]
            path = f"{base}/{resource['resourceType']}/{resource['id']}"
            assert entry["fullUrl"] == f"http://localhost{path}"
            assert orjson.loads(client.get(path).data) == resource
        for link in bundle["link"]:
            assert link["url"].startswith(f"http://localhost{base}"), link
        relations = {link["relation"] for link in bundle["link"]}
        assert {"self", "first", "next"} <= relations

    def test_media_type_parameter_on_the_r5_base(self, client: FlaskClient) -> None:
        """FhirVersion in Accept finds the same converted entries, its links on the R5 base asked."""
        accept = {"Accept": "application/fhir+json; fhirVersion=4.0"}
        asked = client.get("/fhir/Basic?_count=3&_text=toothbrush", headers=accept)
        own = client.get("/fhir/R4/Basic?_count=3&_text=toothbrush")
        assert asked.status_code == own.status_code == 200
        assert asked.headers["Content-Type"].endswith("fhirVersion=4.0")
        mine, theirs = asked.json, own.json
        assert [e["resource"] for e in mine["entry"]] == [e["resource"] for e in theirs["entry"]]
        assert mine["entry"][0]["fullUrl"] == "http://localhost/fhir/Basic/warning-bleeding"
        assert all(link["url"].startswith("http://localhost/fhir/Basic?") for link in mine["link"])

    def test_includes_are_converted(self, client: FlaskClient) -> None:
        """_include and _revinclude (:iterate too) answer the converted forms, under their R4 names."""
        query = "/fhir/R4/Basic?_id=warning-bleeding&_revinclude=Provenance:target"
        query += "&_include:iterate=Provenance:entity&_include=Basic:subject"
        bundle = client.get(query).json
        modes = {
            (e["resource"]["resourceType"], e["resource"]["id"]): e["search"]["mode"] for e in bundle["entry"]
        }
        assert modes == {
            ("Basic", "warning-bleeding"): "match",
            ("Provenance", "warning-bleeding"): "include",
            ("Medication", "besponsa-vial"): "include",
            ("DocumentReference", "msk-inotuzumab-ozogamicin"): "include",
            ("DocumentReference", "medlineplus-a617041"): "include",
        }
        provenance = next(
            e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Provenance"
        )
        assert provenance["target"][0]["reference"] == "Basic/warning-bleeding"
        found = client.get(
            "/fhir/R4/Provenance?target=Basic/warning-bleeding&_include=Provenance:target"
        ).json
        assert {e["resource"]["resourceType"] for e in found["entry"]} == {"Provenance", "Basic"}

    def test_summary_and_elements_apply_to_the_converted_resource(self, client: FlaskClient) -> None:
        """_summary keeps that version's summary elements (R4B's synonym); _elements takes its names."""
        summary = client.get("/fhir/R4B/MedicationKnowledge?_summary=true").json["entry"][0]["resource"]
        assert "synonym" in summary  # a summary element of R4B's MedicationKnowledge (R5's name is not)
        assert "extension" not in summary
        assert {"code": "SUBSETTED"}.items() <= summary["meta"]["tag"][-1].items()
        elements = client.get("/fhir/R4/Medication?_elements=form").json["entry"][0]["resource"]
        assert set(elements) == {"resourceType", "id", "meta", "form"}
        count = client.get("/fhir/R4/Basic?_summary=count").json
        assert (count["total"], "entry" in count) == (62, False)


class TestR4Basic:
    """In R4 a clinical use is a Basic: searched as one, and ClinicalUseDefinition is no type there."""

    @pytest.mark.parametrize(
        ("code", "all_match"),
        [
            (R4_BASIC, True),
            ("ClinicalUseDefinition", True),
            ("http://hl7.org/fhir/fhir-types|", True),
            ("Observation,ClinicalUseDefinition", True),
            ("http://example.org|ClinicalUseDefinition", False),
            ("|ClinicalUseDefinition", False),
            ("Observation", False),
        ],
    )
    def test_code(self, client: FlaskClient, publication: Publication, code: str, all_match: bool) -> None:
        """Basic.code is the clinical-use code of every such Basic: a token matches it or none."""
        expected = {r["id"] for r in publication.of_type(CUD)} if all_match else set()
        assert ids(client, f"/fhir/R4/Basic?code={quote(code)}") == expected

    def test_code_refusals(self, client: FlaskClient) -> None:
        """A modifier or a malformed token is a 400, as at R5."""
        assert client.get("/fhir/R4/Basic?code:text=x").json["issue"][0]["code"] == "not-supported"
        assert client.get("/fhir/R4/Basic?code=a|b|c").status_code == 400
        assert client.get("/fhir/R4/Basic?code=").status_code == 400

    @pytest.mark.parametrize(
        ("path", "headers"),
        [
            (f"/fhir/R4/{CUD}?type=warning", {}),
            ("/fhir/R4?_type=ClinicalUseDefinition", {}),
            (f"/fhir/{CUD}", {"Accept": "application/fhir+json; fhirVersion=4.0"}),
        ],
    )
    def test_clinical_use_definition_is_unknown(
        self, client: FlaskClient, path: str, headers: dict[str, str]
    ) -> None:
        """ClinicalUseDefinition at R4: 404 not-supported, saying a clinical use is a Basic there."""
        response = client.get(path, headers=headers)
        assert response.status_code == 404
        (issue,) = response.json["issue"]
        assert issue["code"] == "not-supported"
        assert "Basic" in issue["details"]["text"]

    def test_clinical_details_are_not_search_parameters_of_basic(self, client: FlaskClient) -> None:
        """Basic?type= is an unknown parameter in R4: ignored and reported, or a 400 when strict."""
        lenient = client.get("/fhir/R4/Basic?type=warning&_count=1").json
        (outcome,) = [e["resource"] for e in lenient["entry"] if e["search"]["mode"] == "outcome"]
        assert (
            outcome["issue"][0]["details"]["text"]
            == "ignored type: type is not a search parameter of Basic here"
        )
        assert lenient["total"] == 62
        strict = client.get("/fhir/R4/Basic?type=warning", headers={"Prefer": "handling=strict"})
        assert strict.status_code == 400
        assert strict.json["issue"][0]["code"] == "not-supported"


class TestCapabilityMatchesTheRoutes:
    """Each version's CapabilityStatement lists exactly the search parameters its base accepts."""

    @staticmethod
    def accepted(client: FlaskClient, base: str, kind: str, name: str) -> bool:
        """Whether a strict search on the parameter is run (200) or refused as invalid, not as unknown."""
        if name in {"_text", "_content"}:
            query = {name: "x"}
        elif kind == "Basic" and name == "code":
            query = {name: R4_BASIC}
        else:
            query = {f"{name}:missing": "true"}
        response = client.get(f"{base}/{kind}", query_string=query, headers={"Prefer": "handling=strict"})
        assert response.status_code in {200, 400}, (kind, name, response.json)
        return response.status_code == 200 or response.json["issue"][0]["code"] != "not-supported"

    @pytest.mark.parametrize("version", ["4.3", "4.0"])
    def test_listed_parameters_are_exactly_the_accepted_ones(
        self, client: FlaskClient, store: Store, version: str
    ) -> None:
        """Every listed parameter is accepted under handling=strict; every other R5 parameter is refused."""
        served = served_parameters(client, version)
        for kind, names in served.items():
            r5_kind = CUD if kind == "Basic" else kind
            every = set(store.registry.for_type(r5_kind)) | names
            for name in sorted(every):
                assert self.accepted(client, BASES[version], kind, name) == (name in names), (
                    version,
                    kind,
                    name,
                )

    def test_includes_listed_are_accepted(self, client: FlaskClient) -> None:
        """Each searchInclude and searchRevInclude of the R4 statement is a search the base answers."""
        (rest,) = client.get("/fhir/R4/metadata").json["rest"]
        for resource in rest["resource"]:
            for key, values in (
                ("_include", resource.get("searchInclude", [])),
                ("_revinclude", resource.get("searchRevInclude", [])),
            ):
                for value in values:
                    response = client.get(
                        f"/fhir/R4/{resource['type']}", query_string={key: value, "_count": "1"}
                    )
                    assert response.status_code == 200, (resource["type"], key, value)


@pytest.fixture(scope="module")
def server(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    process = start(tmp_path_factory.mktemp("served-search"), built, port)
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        stop(process)


def test_smart_client_searches_the_r4_base(server: str, publication: Publication) -> None:
    """SMART's Python client (R4 models) searches the R4 base over HTTP and pages to the end."""
    from fhirclient.models.basic import Basic
    from fhirclient.models.provenance import Provenance

    smart = smart_client.FHIRClient(settings={"app_id": "fhir-pub-tests", "api_base": f"{server}/R4"})
    search = Basic.where(struct={"subject": "Medication/besponsa-vial", "_count": "10"})
    uses = list(search.perform_resources_iter(smart.server))
    assert {b.id for b in uses} == {r["id"] for r in publication.of_type(CUD)}
    assert all(b.code.coding[0].code == "ClinicalUseDefinition" for b in uses)
    by_target = Provenance.where(struct={"target": "Basic/warning-bleeding"})
    traced = list(by_target.perform_resources_iter(smart.server))
    assert [p.target[0].reference for p in traced] == ["Basic/warning-bleeding"]


def test_r4b_search_over_http_parses_with_r4b_models(server: str) -> None:
    """An R4B search Bundle from a real server parses with fhir.resources' R4B models, links on its base."""
    response = requests.get(
        f"{server}/R4B/ClinicalUseDefinition",
        params={"type": "undesirable-effect", "_count": "5"},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].endswith("fhirVersion=4.3")
    bundle: Any = R4BBundle.model_validate_json(response.content)
    assert len(bundle.entry) == 5
    assert all(e.resource.get_resource_type() == CUD for e in bundle.entry)
    assert all(link.url.startswith(f"{server}/R4B/ClinicalUseDefinition?") for link in bundle.link)
    r5 = requests.get(f"{server}/ClinicalUseDefinition", params={"type": "undesirable-effect"}, timeout=10)
    assert bundle.total == r5.json()["total"]
