"""Search: query -> expected ids for every parameter type, modifier and prefix; paging; includes; errors."""

from __future__ import annotations

import json
import shutil
import sqlite3
import unicodedata
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

import orjson
import pytest
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_pub.publication import Publication
from fhir_pub.search.bundle import subset
from fhir_pub.search.dates import Range, matches, parse_range
from fhir_pub.search.engine import Engine
from fhir_pub.search.index import TOTAL_MIN, TOTALS_SCHEMA, write_totals
from fhir_pub.search.request import parse
from fhir_pub.search.syntax import InvalidSearch, split_unescaped, unescape
from fhir_pub.search.types.date import date_condition
from fhir_pub.search.types.string import normalize
from fhir_pub.settings import Settings
from fhir_pub.store import Store
from fhir_pub.web import create_app

CUD = "ClinicalUseDefinition"
DOCS = {
    "msk": "msk-inotuzumab-ozogamicin",
    "mlp": "medlineplus-a617041",
    "pfz": "pfizer-besponsa-patient-counseling",
}
REFERENCES = {
    "dailymed-besponsa",
    "whocc-atc-index",
}  # sources that are not leaflets
LEAFLETS = set(DOCS.values())


@pytest.fixture(scope="module")
def client(built: Path) -> FlaskClient:
    """A test client of an app serving a fresh build of the bundled publication."""
    return create_app(Settings(publication=built)).test_client()


def ids(client: FlaskClient, query: str) -> set[str]:
    """The ids of every match, following next links to the end."""
    found: set[str] = set()
    query = query if query.startswith("/") else f"/fhir/{query}"
    url: str | None = query + ("&" if "?" in query else "?") + "_count=500"
    while url:
        response = client.get(url)
        assert response.status_code == 200, response.json
        bundle = response.json
        found |= {e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"}
        nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
        url = urlsplit(nxt[0]).path + "?" + urlsplit(nxt[0]).query if nxt else None
    return found


def of_type(publication: Publication, kind: str, **fields: str) -> set[str]:
    return {r["id"] for r in publication.of_type(kind) if all(r.get(k) == v for k, v in fields.items())}


class TestTokens:
    """Token parameters: [system]|[code], :text, :code-text, :not, :missing, comma = OR."""

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (f"{CUD}?type=indication", {"indication-acute-lymphoblastic-leukemia"}),
            (f"{CUD}?type=interaction", {"interaction-qt-prolonging-medicines"}),
            (f"{CUD}?effect=111975006", {"effect-qt-prolongation"}),
            (f"{CUD}?effect=http://snomed.info/sct|111975006", {"effect-qt-prolongation"}),
            (f"{CUD}?effect=http://loinc.org|111975006", set()),
            (f"{CUD}?effect=|111975006", set()),
            (f"{CUD}?effect=111975006,25064002", {"effect-qt-prolongation", "effect-headache"}),
            (f"{CUD}?effect:text=nausea", {"effect-nausea"}),
            (f"{CUD}?effect:text=upset", {"effect-nausea"}),
            (f"{CUD}?effect:text=NAUSEA", {"effect-nausea"}),
            (f"{CUD}?effect:code-text=422", {"effect-nausea", "effect-vomiting"}),
            (
                f"{CUD}?effect=https://www.meddra.org|10051792",
                {"effect-infusion-related-reaction"},
            ),
            (
                f"{CUD}?indication=http://snomed.info/sct|91857003",
                {"indication-acute-lymphoblastic-leukemia"},
            ),
            (f"{CUD}?interaction:text=medicine", {"interaction-qt-prolonging-medicines"}),
            (f"{CUD}?interaction:text=food", set()),
            (f"{CUD}?_id=warning-bleeding,effect-rash", {"warning-bleeding", "effect-rash"}),
            ("MedicationKnowledge?code=0008-0100-01", {"besponsa"}),
            ("MedicationKnowledge?classification=http://www.whocc.no/atc|L01FB01", {"besponsa"}),
            ("MedicationKnowledge?classification:text=monoclonal", {"besponsa"}),
            ("MedicationKnowledge?doseform:text=powder", {"besponsa"}),
            ("MedicationKnowledge?status=active", {"besponsa"}),
            ("MedicationKnowledge?status=inactive", set()),
            ("Medication?code=http://hl7.org/fhir/sid/ndc|0008-0100-01", {"besponsa-vial"}),
            ("DocumentReference?type=http://loinc.org|88436-1", {DOCS["pfz"]}),
            ("DocumentReference?category=34076-0", set()),
            (f"{CUD}?effect-classification=serious&_id=effect-bleeding,effect-rash", {"effect-bleeding"}),
            (
                f"{CUD}?effect-classification:not=serious&_id=effect-bleeding,effect-rash",
                {"effect-rash"},
            ),  # a label section code fits no consumer leaflet
            ("DocumentReference?category=http://loinc.org|34391-3", {DOCS["pfz"]}),
            ("DocumentReference?category:text=consumer leaflet", {DOCS["msk"], DOCS["mlp"]}),
            ("DocumentReference?identifier=a617041", {DOCS["mlp"]}),
            ("DocumentReference?language=en-US", set(DOCS.values())),
            ("Organization?active=true", {"fda", "msk", "nlm", "pfizer", "uptodate", "fhir-pub", "whocc"}),
            ("Group?type=person", {"patients-1-year-and-older"}),
        ],
    )
    def test_query(self, client: FlaskClient, query: str, expected: set[str]) -> None:
        """Each query matches exactly the expected resources."""
        assert ids(client, query) == expected

    def test_or_and_not(self, client: FlaskClient, publication: Publication) -> None:
        """Comma is OR, a repeated parameter is AND, :not is the complement."""
        warnings = of_type(publication, CUD, type="warning")
        assert ids(client, f"{CUD}?type=warning") == warnings
        assert ids(client, f"{CUD}?type=warning,interaction") == warnings | {
            "interaction-qt-prolonging-medicines"
        }
        assert ids(client, f"{CUD}?type=warning&type=interaction") == set()
        assert ids(client, f"{CUD}?type:not=warning") == of_type(publication, CUD) - warnings

    def test_missing(self, client: FlaskClient, publication: Publication) -> None:
        """:missing=true finds resources without the element, :missing=false those with it."""
        effects = of_type(publication, CUD, type="undesirable-effect")
        assert ids(client, f"{CUD}?effect:missing=false") == effects
        assert ids(client, f"{CUD}?effect:missing=true") == of_type(publication, CUD) - effects


class TestStrings:
    """String parameters: case- and accent-insensitive starts-with; :exact; :contains."""

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            ("Organization?name=u.s.", {"fda", "nlm"}),
            ("Organization?name=U.S. NATIONAL", {"nlm"}),
            ("Organization?name=mem", {"msk"}),
            ("Organization?name=food", set()),
            ("Organization?name:contains=library", {"nlm"}),
            ("Organization?name:contains=FOOD", {"fda"}),
            ("Organization?name:exact=FDA", {"fda"}),
            ("Organization?name:exact=fda", set()),
            ("Organization?name:exact=UpToDate\\, Inc.", {"uptodate"}),
            ("Organization?name:exact=UpToDate, Inc.", set()),
            ("DocumentReference?description=medlineplus drug", {DOCS["mlp"]}),
        ],
    )
    def test_query(self, client: FlaskClient, query: str, expected: set[str]) -> None:
        """Each query matches exactly the expected resources (a backslash escapes a comma)."""
        assert ids(client, query) == expected

    @settings(max_examples=300)
    @given(st.text(alphabet=st.characters(max_codepoint=127)) | st.text(max_size=8))
    def test_normalize(self, text: str) -> None:
        """The ASCII shortcut normalizes as NFKD without combining marks, casefolded, spaces collapsed."""
        decomposed = unicodedata.normalize("NFKD", text)
        stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
        assert " ".join(stripped.casefold().split()) == normalize(text)


class TestReferences:
    """Reference parameters: Type/id, id, :Type, absolute URLs on this server."""

    @pytest.mark.parametrize(
        "value",
        ["Medication/besponsa-vial", "besponsa-vial", "http://localhost/fhir/Medication/besponsa-vial"],
    )
    def test_forms(self, client: FlaskClient, publication: Publication, value: str) -> None:
        """Every form of the same reference finds every ClinicalUseDefinition about the Medication."""
        assert ids(client, f"{CUD}?subject={value}") == of_type(publication, CUD)

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (f"{CUD}?subject:Medication=besponsa-vial", None),
            (f"{CUD}?subject=Medication/other", set()),
            ("Provenance?target=ClinicalUseDefinition/warning-bleeding", {"warning-bleeding"}),
            ("DocumentReference?author=Organization/uptodate", {DOCS["msk"]}),
            ("DocumentReference?custodian=Organization/nlm", {DOCS["mlp"], "dailymed-besponsa"}),
            ("MedicationKnowledge?monograph=DocumentReference/msk-inotuzumab-ozogamicin", {"besponsa"}),
            ("DocumentReference?subject=MedicationKnowledge/besponsa", set(DOCS.values()) | set(REFERENCES)),
        ],
    )
    def test_query(
        self, client: FlaskClient, publication: Publication, query: str, expected: set[str] | None
    ) -> None:
        """Each query matches exactly the expected resources."""
        assert ids(client, query) == (expected if expected is not None else of_type(publication, CUD))

    def test_provenance_agent_and_entity(self, client: FlaskClient, publication: Publication) -> None:
        """Provenance by agent and by source entity."""
        traced_to_pfizer = {
            p["id"]
            for p in publication.of_type("Provenance")
            if any(e["what"]["reference"].endswith(DOCS["pfz"]) for e in p["entity"])
        }
        assert ids(client, "Provenance?agent=Organization/fhir-pub") == of_type(publication, "Provenance")
        assert ids(client, f"Provenance?entity=DocumentReference/{DOCS['pfz']}") == traced_to_pfizer


class TestDates:
    """Dates are ranges; prefixes compare ranges; partial dates stand for their whole span."""

    @pytest.mark.parametrize(
        ("value", "expected"),
        [
            ("2026-11-22", LEAFLETS),
            ("2026-12", REFERENCES),
            ("2026", LEAFLETS | REFERENCES),
            ("eq2026-12-03", REFERENCES),
            ("gt2026-11-30", REFERENCES),
            ("lt2026-11-23", LEAFLETS),
            ("ge2026-11-22", LEAFLETS | REFERENCES),
            ("le2026-11-22", LEAFLETS),
            ("sa2026-11-22", REFERENCES),
            ("eb2026-12-03", LEAFLETS),
            ("ne2026-12-03", LEAFLETS),
            ("2026-12-03T12:00:00Z", REFERENCES),  # an instant equals an instant
            ("2026-12-03T11:00:00Z", set()),
            ("gt2026-12-03T13:00:00+02:00", REFERENCES),  # 11:00Z; "+" sent unescaped
            ("gt2026-12-03T12:00:00%2B00:00", set()),
        ],
    )
    def test_date(self, client: FlaskClient, value: str, expected: set[str]) -> None:
        """Record dates (instants): the leaflets' 2026-11-22T00:00Z, the references' 2026-12-03T12:00Z."""
        assert ids(client, f"DocumentReference?date={value}") == expected

    def test_missing_and_instants(self, client: FlaskClient, publication: Publication) -> None:
        """:missing on dates; _lastUpdated as an instant range."""
        assert ids(client, "DocumentReference?creation:missing=true") == LEAFLETS | REFERENCES
        assert ids(client, "DocumentReference?creation:missing=false") == set()
        assert ids(client, "DocumentReference?date:missing=false") == LEAFLETS | REFERENCES
        days: dict[str, set[str]] = {}
        for resource in publication.of_type(CUD):
            days.setdefault(resource["meta"]["lastUpdated"][:10], set()).add(resource["id"])
        assert len(days) > 1  # the publication has resources of more than one day to tell apart
        for day, changed in days.items():
            assert ids(client, f"{CUD}?_lastUpdated={day}") == changed, day
        assert ids(client, f"{CUD}?_lastUpdated=lt2026-11-22") == set()
        assert ids(client, f"{CUD}?_lastUpdated=ge2026-11-22T00:00:00Z") == of_type(publication, CUD)
        # ranges that end past 9999-12-31 run to the end of time, rather than failing
        assert ids(client, f"{CUD}?_lastUpdated=9999") == set()
        assert ids(client, f"{CUD}?_lastUpdated=lt9999-12-31T23:59:59-01:00") == of_type(publication, CUD)
        assert ids(client, f"{CUD}?_lastUpdated=gt0001-01-01T00:00:00%2B01:00") == of_type(publication, CUD)

    @settings(max_examples=300, deadline=None)
    @given(
        st.sampled_from(["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb", "ap"]),
        st.tuples(st.integers(0, 100), st.integers(1, 50)),
        st.tuples(st.integers(0, 100), st.integers(1, 50)),
    )
    def test_sql_equals_rules(self, prefix: str, value: tuple[int, int], target: tuple[int, int]) -> None:
        """The SQL the engine runs decides every prefix exactly as the range rules do."""
        day = 86_400_000_000
        search = Range(value[0] * day, (value[0] + value[1]) * day)
        stored = Range(target[0] * day, (target[0] + target[1]) * day)
        now = 50 * day
        sql, args = date_condition(prefix, search, now)
        db = sqlite3.connect(":memory:")
        row = db.execute(
            f"SELECT {sql} FROM (SELECT ? AS low, ? AS high)", [*args, stored.low, stored.high]
        ).fetchone()
        expected = matches(prefix, search, stored) if prefix != "ap" else None
        if expected is not None:
            assert bool(row[0]) == expected


class TestResultParameters:
    """Paging, sorting, totals, includes, summaries."""

    def test_paging_walk(self, client: FlaskClient, publication: Publication) -> None:
        """Pages of 7 walk every match once; self/first/previous/next/last are truthful."""
        seen: list[str] = []
        total = len(of_type(publication, CUD))
        assert total > 14  # enough for a first, a middle and a last page
        url = f"/fhir/{CUD}?_count=7"
        pages = 0
        while url:
            bundle = client.get(url).json
            pages += 1
            relations = {link["relation"]: link["url"] for link in bundle["link"]}
            assert bundle["total"] == total
            assert ("previous" in relations) == (pages > 1)
            seen += [e["resource"]["id"] for e in bundle["entry"]]
            url = (
                urlsplit(relations["next"]).path + "?" + urlsplit(relations["next"]).query
                if "next" in relations
                else ""
            )
        assert pages == -(-total // 7)
        assert len(seen) == len(set(seen)) == total
        assert "next" not in relations
        assert dict(parse_qsl(urlsplit(relations["last"]).query))["_offset"] == str(7 * (pages - 1))

    def test_sort(self, client: FlaskClient) -> None:
        """_sort by date, each way, ties by id; a key no resource has leaves the order by id."""
        later, earlier = sorted(REFERENCES), sorted(LEAFLETS)
        bundle = client.get("/fhir/DocumentReference?_sort=-date").json
        assert [e["resource"]["id"] for e in bundle["entry"]] == later + earlier
        bundle = client.get("/fhir/DocumentReference?_sort=date").json
        assert [e["resource"]["id"] for e in bundle["entry"]] == earlier + later
        bundle = client.get("/fhir/DocumentReference?_sort=-creation").json
        assert [e["resource"]["id"] for e in bundle["entry"]] == sorted(later + earlier)

    @pytest.mark.parametrize(
        "query",
        [
            f"{CUD}?_sort=type",
            f"{CUD}?_sort=-type",
            f"{CUD}?_sort=-type,-effect,subject",
            f"{CUD}?type=warning,undesirable-effect&_sort=effect,-status&_count=11&_offset=5",
            f"{CUD}?_sort=subject,-_lastUpdated&_count=500",
            "DocumentReference?_sort=-creation,description",
            "DocumentReference?_sort=location,-date",
            "Organization?_sort=-name&_count=3&_offset=2",
            "Provenance?_sort=-recorded,agent-type&_count=50",
            "MedicationKnowledge?_sort=-code",
        ],
    )
    def test_sort_order(self, client: FlaskClient, built: Path, query: str) -> None:
        """A sorted page is its window of the matches ordered by each key's least (or greatest) value.

        Descending keys take the greatest value of the resource's own index rows; missing keys go last;
        ties are ordered by id.
        """
        path, _, text = query.partition("?")
        pairs = parse_qsl(text)
        params = dict(pairs)
        kind = path
        with sqlite3.connect(built) as db:
            index_rows = {
                (table, column): db.execute(
                    f"SELECT id, param, {column} FROM {table} WHERE type = ?", (kind,)
                ).fetchall()
                for table, column in [
                    ("search_token", "code"),
                    ("search_string", "norm"),
                    ("search_date", "low"),
                    ("search_date", "high"),
                    ("search_uri", "value"),
                    ("search_reference", "target_id"),
                ]
            }
        db.close()
        filters = "&".join(f"{k}={v}" for k, v in pairs if not k.startswith("_"))
        ordered = sorted(ids(client, f"{kind}?{filters}" if filters else kind))
        column_of = {
            "token": "code",
            "string": "norm",
            "date": "low",
            "uri": "value",
            "reference": "target_id",
        }
        kinds = {
            "type": "token",
            "effect": "token",
            "status": "token",
            "subject": "reference",
            "_lastUpdated": "date",
            "creation": "date",
            "date": "date",
            "description": "string",
            "location": "uri",
            "name": "string",
            "recorded": "date",
            "agent-type": "token",
            "code": "token",
        }
        for key in reversed(params["_sort"].split(",")):  # stable sorts, the last key first
            descending, code = key.startswith("-"), key.lstrip("-")
            column = column_of[kinds[code]]
            column = "high" if kinds[code] == "date" and descending else column
            table = f"search_{kinds[code]}"
            values: dict[str, list[object]] = {}
            for rid, param, value in index_rows[table, column]:
                if param == code and value is not None:
                    values.setdefault(rid, []).append(value)
            pick = {rid: (max if descending else min)(found) for rid, found in values.items()}
            present = sorted((r for r in ordered if r in pick), key=lambda r: pick[r], reverse=descending)
            ordered = present + [r for r in ordered if r not in pick]
        offset, count = int(params.get("_offset", 0)), int(params.get("_count", 20))
        bundle = client.get(f"/fhir/{query}").json
        assert ordered[offset : offset + count] == [e["resource"]["id"] for e in bundle.get("entry", [])]

    def test_includes(self, client: FlaskClient) -> None:
        """_include follows references; _revinclude finds referrers; :iterate goes on from included ones."""
        bundle = client.get("/fhir/MedicationKnowledge?_include=MedicationKnowledge:monograph").json
        included = {e["resource"]["id"] for e in bundle["entry"] if e["search"]["mode"] == "include"}
        assert included == set(DOCS.values())
        query = f"/fhir/{CUD}?_id=warning-bleeding&_revinclude=Provenance:target"
        query += "&_include:iterate=Provenance:entity"
        bundle = client.get(query).json
        modes = {
            (e["resource"]["resourceType"], e["resource"]["id"]): e["search"]["mode"] for e in bundle["entry"]
        }
        assert modes == {
            (CUD, "warning-bleeding"): "match",
            ("Provenance", "warning-bleeding"): "include",
            ("DocumentReference", DOCS["msk"]): "include",
            ("DocumentReference", DOCS["mlp"]): "include",
        }

    def test_full_urls_are_absolute(self, client: FlaskClient) -> None:
        """Each entry has an absolute fullUrl on this server's base."""
        for bundle_entry in client.get(f"/fhir/{CUD}?_count=3").json["entry"]:
            assert bundle_entry["fullUrl"] == f"http://localhost/fhir/{CUD}/{bundle_entry['resource']['id']}"

    def test_summary_and_elements(self, client: FlaskClient) -> None:
        """_summary=count has no entries; _elements and _summary subset resources and tag them SUBSETTED."""
        count = client.get(f"/fhir/{CUD}?type=warning&_summary=count").json
        assert (count["total"], "entry" in count) == (27, False)
        resource = client.get(f"/fhir/{CUD}?_id=warning-bleeding&_elements=category").json["entry"][0][
            "resource"
        ]
        assert "warning" not in resource
        assert "category" not in resource or resource["category"]
        assert {
            "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
            "code": "SUBSETTED",
        } in resource["meta"]["tag"]
        data = client.get(f"/fhir/{CUD}?_id=warning-bleeding&_summary=data").json["entry"][0]["resource"]
        assert "text" not in data
        assert "warning" in data
        assert "total" not in client.get(f"/fhir/{CUD}?_total=none").json

    @pytest.mark.parametrize(
        ("query", "mandatory"),
        [
            ("Provenance?_elements=entity", {"target", "agent"}),
            ("ClinicalUseDefinition?_elements=subject", {"type"}),
            ("DocumentReference?_elements=subject", {"status", "content"}),
            ("Group?_elements=name", {"type", "membership"}),
        ],
    )
    def test_elements_keep_mandatory_elements(
        self, client: FlaskClient, query: str, mandatory: set[str]
    ) -> None:
        """_elements keeps each type's mandatory elements (R5 search.html#elements: a server SHOULD)."""
        for found in client.get(f"/fhir/{query}&_count=3").json["entry"]:
            assert mandatory <= set(found["resource"]), found["resource"]["id"]

    @pytest.mark.parametrize(
        ("summary", "wanted"), [(None, ["status"]), (None, ["subject"]), ("text", None), ("true", None)]
    )
    def test_subset_keeps_a_mandatory_choice_and_primitive_extensions(
        self, summary: str | None, wanted: list[str] | None
    ) -> None:
        """A mandatory choice (occurence[x], min 1) stays in whichever type it has; so does ``_status``."""
        given = {
            "resourceType": "MedicationAdministration",
            "id": "m",
            "status": "completed",
            "_status": {"extension": [{"url": "http://example.org/x", "valueString": "y"}]},
            "medication": {"concept": {"text": "aspirin"}},
            "subject": {"reference": "Patient/p"},
            "occurencePeriod": {"start": "2024-01-01"},
            "note": [{"text": "dropped"}],
        }
        got = orjson.loads(subset(orjson.dumps(given), summary, wanted))
        assert {"status", "_status", "medication", "subject", "occurencePeriod"} <= set(got)
        assert "note" not in got

    def test_post_search_and_system_search(self, client: FlaskClient) -> None:
        """POST _search with a form equals GET; system search spans _type; a JSON body is 415."""
        posted = client.post(f"/fhir/{CUD}/_search", data={"type": "interaction"}).json
        assert [e["resource"]["id"] for e in posted["entry"]] == ["interaction-qt-prolonging-medicines"]
        assert client.post(f"/fhir/{CUD}/_search", json={"type": "x"}).status_code == 415
        system = client.get("/fhir?_type=Organization,Group&_count=100").json
        assert system["total"] == 8  # seven organizations and one group
        assert {e["resource"]["resourceType"] for e in system["entry"]} == {"Organization", "Group"}


class TestUnknownAndInvalid:
    """Unknown parameters are ignored and reported (or refused when strict); invalid ones are 400."""

    def test_lenient(self, client: FlaskClient) -> None:
        """An unknown parameter is ignored, reported in an outcome entry, and absent from the self link."""
        bundle = client.get(f"/fhir/{CUD}?type=interaction&colour=blue").json
        outcome = [e for e in bundle["entry"] if e["search"]["mode"] == "outcome"]
        assert len(outcome) == 1
        (issue,) = outcome[0]["resource"]["issue"]
        assert "colour" in issue["details"]["text"]
        assert "expression" not in issue  # a query parameter is no FHIRPath
        self_link = next(link["url"] for link in bundle["link"] if link["relation"] == "self")
        assert "colour" not in self_link
        assert "type=interaction" in self_link

    @pytest.mark.parametrize(
        ("query", "headers", "code"),
        [
            ("colour=blue", {"Prefer": "handling=strict"}, "not-supported"),
            ("type:exact=warning", {}, "not-supported"),
            ("_id:below=x", {}, "not-supported"),
            ("_lastUpdated=2026-13-01", {}, "invalid"),
            ("_lastUpdated=gtyesterday", {}, "invalid"),
            ("type:missing=maybe", {}, "invalid"),
            ("_count=-1", {}, "invalid"),
            ("_count=many", {}, "invalid"),
            ("_summary=everything", {}, "invalid"),
            ("_total=lots", {}, "invalid"),
            ("_include=ClinicalUseDefinition", {}, "invalid"),
            ("type=a\\", {}, "invalid"),
            ("effect=a|b|c", {}, "invalid"),
            ("subject:Patient=1", {}, "invalid"),
        ],
    )
    def test_errors(self, client: FlaskClient, query: str, headers: dict[str, str], code: str) -> None:
        """Each is a 400 OperationOutcome with its issue code and the parameter as expression."""
        response = client.get(f"/fhir/{CUD}?{query}", headers=headers)
        assert response.status_code == 400
        (issue,) = response.json["issue"]
        assert issue["code"] == code
        assert issue["details"]["text"]

    def test_unknown_type(self, client: FlaskClient) -> None:
        """Searching a type the publication lacks is 404; so is one named in _type."""
        assert client.get("/fhir/Patient?name=x").status_code == 404
        assert client.get("/fhir?_type=Patient").status_code == 404


class TestParsing:
    """Escaping and date parsing, as pure functions."""

    @pytest.mark.parametrize(
        ("text", "parts"),
        [
            ("a,b", ["a", "b"]),
            ("a\\,b", ["a\\,b"]),
            ("a\\\\,b", ["a\\\\", "b"]),
            ("", [""]),
            ("a,", ["a", ""]),
        ],
    )
    def test_split(self, text: str, parts: list[str]) -> None:
        """Commas split unless escaped (an escaped backslash does not escape the comma after it)."""
        assert split_unescaped(text, ",") == parts

    def test_unescape(self) -> None:
        """Escapes become their characters; a bare backslash is an error."""
        assert unescape("a\\,b\\$c\\|d\\\\e") == "a,b$c|d\\e"
        with pytest.raises(InvalidSearch):
            unescape("a\\b")

    @pytest.mark.parametrize(
        ("text", "seconds"),
        [
            ("2024", 366 * 86400),
            ("2023-02", 28 * 86400),
            ("2024-02", 29 * 86400),
            ("2024-05-20", 86400),
            ("2024-05-20T10:00Z", 60),
            ("2024-05-20T10:00:00Z", 1),
            ("2024-05-20T10:00:00.5Z", 0.1),
        ],
    )
    def test_partial_date_spans(self, text: str, seconds: float) -> None:
        """A partial date spans its whole precision (leap years included)."""
        span = parse_range(text)
        assert (span.high - span.low) / 1_000_000 == pytest.approx(seconds)

    def test_time_zones(self) -> None:
        """The same instant in two zones is the same range."""
        assert parse_range("2024-05-20T12:00:00+02:00") == parse_range("2024-05-20T10:00:00Z")


def test_capability_declares_search(client: FlaskClient, publication: Publication) -> None:
    """Metadata lists search parameters with R5 definitions, includes and system search."""
    rest = client.get("/fhir/metadata").json["rest"][0]
    assert rest["interaction"] == [{"code": "history-system"}, {"code": "search-system"}]
    cud = next(r for r in rest["resource"] if r["type"] == CUD)
    names = {p["name"]: p for p in cud["searchParam"]}
    assert {"type", "subject", "effect", "indication", "interaction", "_id", "_lastUpdated"} <= set(names)
    assert names["effect"]["definition"] == "http://hl7.org/fhir/SearchParameter/ClinicalUseDefinition-effect"
    assert f"{CUD}:subject" in cud["searchInclude"]
    assert "Provenance:target" in cud["searchRevInclude"]


class TestChaining:
    """Chained parameters follow references forward; _has follows them back."""

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (
                f"{CUD}?subject:Medication.code=0008-0100-01&type=interaction",
                {"interaction-qt-prolonging-medicines"},
            ),
            (
                f"{CUD}?subject.code=http://hl7.org/fhir/sid/ndc|0008-0100-01&type=indication",
                {"indication-acute-lymphoblastic-leukemia"},
            ),
            (f"{CUD}?subject.code=nope", set()),
            ("DocumentReference?custodian.name=memorial", {DOCS["msk"]}),
            ("DocumentReference?custodian:Organization.name:exact=Pfizer", {DOCS["pfz"]}),
            (
                "DocumentReference?_has:Provenance:entity:target=ClinicalUseDefinition/warning-tumor-lysis-syndrome",
                {DOCS["msk"]},
            ),
            ("MedicationKnowledge?_has:DocumentReference:subject:custodian=Organization/nlm", {"besponsa"}),
            (
                "Medication?_has:ClinicalUseDefinition:subject:_has:Provenance:target:entity=DocumentReference/"
                + DOCS["pfz"],
                {"besponsa-vial"},
            ),
            ("Organization?_has:DocumentReference:author:type=88436-1", {"pfizer"}),
        ],
    )
    def test_query(self, client: FlaskClient, query: str, expected: set[str]) -> None:
        """Each chain matches exactly the expected resources."""
        assert ids(client, query) == expected

    def test_every_effect_traced_to_a_document(self, client: FlaskClient, publication: Publication) -> None:
        """A reverse chain answers a real question: which side effects has MedlinePlus as a source."""
        traced = {
            p["target"][0]["reference"].split("/", 1)[1]
            for p in publication.of_type("Provenance")
            if p["target"][0]["reference"].startswith(f"{CUD}/effect-")
            and any(e["what"]["reference"].endswith(DOCS["mlp"]) for e in p["entity"])
        }
        query = f"{CUD}?type=undesirable-effect&_has:Provenance:target:entity=DocumentReference/{DOCS['mlp']}"
        assert ids(client, query) == traced
        assert len(traced) > 15

    @pytest.mark.parametrize(
        "query",
        [
            "Provenance?target.subject=x",
            "Provenance?_has:Nope:x:y=1",
            f"{CUD}?_has:Provenance",
            f"{CUD}?type.code=x",
            "DocumentReference?custodian:Patient.name=x",
            "Group?a.b.c.d.e.f=1",
        ],
    )
    def test_invalid(self, client: FlaskClient, query: str) -> None:
        """Ambiguous, malformed or impossible chains are 400 with a reason."""
        response = client.get(f"/fhir/{query}")
        assert response.status_code == 400
        assert response.json["issue"][0]["details"]["text"]


class TestFullText:
    """_text searches narratives, _content whole resources; every word must occur; commas are OR."""

    @pytest.mark.parametrize(
        ("query", "expected"),
        [
            (f"{CUD}?_text=toothbrush", {"warning-bleeding"}),
            (f"{CUD}?_text=TOOTHBRUSH razor", {"warning-bleeding"}),
            (f"{CUD}?_text=toothbrush nausea", set()),
            (f"{CUD}?_text=sluggish,toothbrush", {"warning-bleeding", "warning-tumor-lysis-syndrome"}),
            (f"{CUD}?_content=coffee grounds", {"warning-bleeding"}),
            # "kind" is only in the narrative, "structuredefinition" only in the data (meta.profile)
            (f"{CUD}?_content=kind structuredefinition toothbrush", {"warning-bleeding"}),
            (f"{CUD}?_text=kind structuredefinition toothbrush", set()),
            ("DocumentReference?_content=a617041", {DOCS["mlp"]}),
            ("Organization?_text=medwatch", {"fda"}),
            (f"{CUD}?_text=zzzz", set()),
            (f"{CUD}?_text=%2A%2A%2A", set()),
        ],
    )
    def test_query(self, client: FlaskClient, query: str, expected: set[str]) -> None:
        """Each query matches exactly the expected resources."""
        assert ids(client, query) == expected

    def test_no_query_syntax_leaks(self, client: FlaskClient) -> None:
        """FTS operators in a value are plain words, never syntax (no error, no injection)."""
        for value in ['"OR NOT *', "NEAR(a b)", "type : x", "a AND", "'; DROP TABLE resource; --"]:
            assert client.get(f"/fhir/{CUD}", query_string={"_text": value}).status_code == 200


NAMES = [
    "type",
    "subject",
    "effect",
    "_id",
    "_lastUpdated",
    "_text",
    "_content",
    "_has",
    "_sort",
    "_count",
    "_offset",
    "_include",
    "_revinclude",
    "_summary",
    "_elements",
    "_total",
    "subject.code",
    "_has:Provenance:target",
    "x",
]
MODIFIERS = [
    "",
    ":missing",
    ":not",
    ":text",
    ":exact",
    ":contains",
    ":Medication",
    ":iterate",
    ":below",
    ":bogus",
    ":",
]
PIECES = st.sampled_from(
    [
        "ge",
        "le",
        "2024",
        "2024-05-20T10:00:00Z",
        "|",
        ",",
        "\\",
        "\\,",
        "$",
        ".",
        ":",
        "*",
        "-",
        "Medication/besponsa-vial",
        "http://snomed.info/sct",
        "%",
        "_",
        "'",
        '"',
        "warning",
        "true",
        "0",
        "-1",
        "\u00e9",
        "\x00",
    ]
)


class TestNoServerErrors:
    """Whatever the query, search answers 2xx or 4xx with an OperationOutcome, never 5xx."""

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.tuples(
                st.sampled_from(NAMES), st.sampled_from(MODIFIERS), st.lists(PIECES, max_size=5).map("".join)
            ),
            max_size=4,
        ),
        st.sampled_from(["ClinicalUseDefinition", "DocumentReference", "Provenance", ""]),
    )
    def test_fuzzed_queries(self, client: FlaskClient, pairs: list[tuple[str, str, str]], kind: str) -> None:
        """Random parameters, modifiers and values (escapes, prefixes, chains, SQL and FTS characters)."""
        query = [(name + modifier, value) for name, modifier, value in pairs]
        response = client.get(f"/fhir/{kind}", query_string=query)
        assert response.status_code < 500, response.json
        body = response.json
        if response.status_code >= 400:
            assert body["resourceType"] == "OperationOutcome"
        else:
            assert body["resourceType"] == "Bundle"


class TestValueSetModifiers:
    """:in and :not-in test membership of the value sets the build stored."""

    def test_in_and_not_in(self, client: FlaskClient, publication: Publication) -> None:
        """Effects coded from the verified codes, and the text-only ones; unknown value sets are 400."""
        effects = {r["id"]: r for r in publication.of_type(CUD) if r["type"] == "undesirable-effect"}
        coded = {
            i
            for i, r in effects.items()
            if r["undesirableEffect"]["symptomConditionEffect"]["concept"].get("coding")
        }
        verified = "http://fhir-pub.org/fhir/ValueSet/verified-codes"
        assert ids(client, f"{CUD}?effect:in={verified}") == coded
        assert ids(client, f"{CUD}?type=undesirable-effect&effect:not-in={verified}") == set(effects) - coded
        assert len(coded) == 26
        status = ids(client, f"{CUD}?status:in=http://hl7.org/fhir/ValueSet/publication-status")
        assert status == of_type(publication, CUD)
        assert client.get(f"/fhir/{CUD}?effect:in=http://example.org/unknown").status_code == 400


class TestQueryPlans:
    """The searches' SQL reads indexes sized by the matches, not by the type (EXPLAIN QUERY PLAN)."""

    def plan(self, built: Path, request_query: str) -> list[str]:
        """The plan of every statement the engine runs for one search, as SQLite describes it."""
        store = Store(built)
        statements: list[str] = []
        store.connection().set_trace_callback(statements.append)
        kind, _, query = request_query.partition("?")
        Engine(store.connection).search(parse([kind], parse_qsl(query), store.registry), now=0)
        store.connection().set_trace_callback(None)
        details = []
        for sql in statements:
            details += [row[3] for row in store.connection().execute(f"EXPLAIN QUERY PLAN {sql}")]
        return details

    def test_count_and_page_use_the_key_index(self, built: Path) -> None:
        """Matches are checked against resource_key (keys only), never against the rows with bodies."""
        details = self.plan(built, f"{CUD}?type=warning")
        assert "SEARCH r USING COVERING INDEX resource_key (type=? AND id=?)" in details
        assert not any("PRIMARY KEY" in d for d in details)

    def test_sort_looks_up_each_match(self, built: Path) -> None:
        """A sort key is a lookup of each match's own rows, not an aggregate of the whole type."""
        details = self.plan(built, f"{CUD}?type=warning&_sort=-effect")
        assert not any(d.startswith("MATERIALIZE") for d in details)
        assert any("search_token_source (type=? AND id=? AND param=?)" in d for d in details)

    def test_selective_filter_drives(self, built: Path) -> None:
        """Of two plain filters, the one with fewer matches is gathered; the other is a lookup per match."""
        details = self.plan(built, f"{CUD}?subject=Medication/besponsa-vial&type=warning")  # 59 and 27
        after = {details[i]: details[i + 1] for i in range(len(details) - 1)}
        assert "search_token_code" in after["LIST SUBQUERY 2"]  # type=warning: gathered
        assert "search_reference" in after["CORRELATED SCALAR SUBQUERY 1"]  # subject: looked up per match
        assert "id=?" in after["CORRELATED SCALAR SUBQUERY 1"]

    @pytest.mark.parametrize(
        ("query", "columns"),
        [
            (f"{CUD}?effect=http://snomed.info/sct|131148009", ("system", "code")),
            (f"{CUD}?subject=Medication/besponsa-vial&status=active", ("target_type", "target_id")),
            ("Provenance?agent=Organization/fhir-pub&_count=5&_offset=20", ("target_type", "target_id")),
        ],
    )
    def test_whole_value_pages_from_its_index(
        self, built: Path, query: str, columns: tuple[str, ...]
    ) -> None:
        """A search on one whole value reads its ids in order from a value index: no sort, no key list."""
        details = self.plan(built, query)
        equal = [f"{column}=?" for column in ("type", "param", *columns)]
        assert any(
            d.startswith("SEARCH r USING COVERING INDEX") and all(e in d for e in equal) for d in details
        )
        assert not [d for d in details if "TEMP B-TREE" in d and "count(DISTINCT)" not in d]
        assert not any("resource_key" in d or (d.startswith("SCAN") and "subquery" not in d) for d in details)

    @pytest.mark.parametrize(
        "query",
        [
            f"{CUD}?type=indication&_include=ClinicalUseDefinition:subject",
            f"{CUD}?_id=warning-bleeding&_revinclude=Provenance:target&_include:iterate=Provenance:entity",
            f"{CUD}?_id=warning-bleeding&_revinclude=*&_include=*",
        ],
    )
    def test_includes_look_up_keys(self, built: Path, query: str) -> None:
        """_include and _revinclude look up the page's own references: no statement scans a table."""
        details = self.plan(built, query)
        assert not [d for d in details if d.startswith("SCAN") and "subquery" not in d]
        assert any("search_reference_source (type=? AND id=?" in d for d in details)


@pytest.mark.parametrize(
    "filters",
    [
        ["subject=Medication/besponsa-vial", "type=warning"],
        ["type=warning,undesirable-effect", "status=active", "_id=warning-bleeding,warning-infection"],
        ["type=undesirable-effect", "effect:text=pain", "type:not=warning"],
        ["type=indication", "_lastUpdated=gt2000-01-01", "subject:missing=false"],
        ["_text=bleeding", "type=warning", "status=active"],
        ["subject=Medication/besponsa-vial", "status=active"],  # a whole value drives, from its index
        ["effect=http://snomed.info/sct|131148009", "type=undesirable-effect", "subject:missing=false"],
        ["status=http://hl7.org/fhir/publication-status|active", "type:not=warning", "_sort=-effect"],
    ],
)
def test_filters_intersect(client: FlaskClient, filters: list[str]) -> None:
    """Several filters (however the engine orders them) match what each matches alone, intersected."""
    alone = [ids(client, f"{CUD}?{f}") for f in filters]
    assert ids(client, f"{CUD}?{'&'.join(filters)}") == set.intersection(*alone)


def _escaped(value: str) -> str:
    """A search value with FHIR's separators escaped (https://hl7.org/fhir/R5/search.html#escaping)."""
    for char in "\\,$|":
        value = value.replace(char, "\\" + char)
    return value


@pytest.fixture(scope="module")
def every_total(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of the build that stores the total of every indexed value, not only the shared ones."""
    path = tmp_path_factory.mktemp("totals") / "p.sqlite"
    shutil.copy(built, path)
    db = sqlite3.connect(path)
    with db:
        write_totals(db, minimum=1)
    db.close()
    return path


class TestStoredTotals:
    """The totals the build stores for shared values: what counting finds, used only where they apply."""

    def test_only_shared_values_stored(self, built: Path, every_total: Path) -> None:
        """The build stores values with at least TOTAL_MIN matches; the bundled agent is one of them."""
        with sqlite3.connect(built) as db:
            stored = db.execute("SELECT type, param, target_type, target_id, n FROM search_reference_total")
            assert ("Provenance", "agent", "Organization", "fhir-pub") in [row[:4] for row in stored]
            for table in TOTALS_SCHEMA:
                assert db.execute(f"SELECT COUNT(*) FROM {table} WHERE n < ?", [TOTAL_MIN]).fetchone() == (0,)
        db.close()
        with sqlite3.connect(every_total) as db:
            rows = db.execute("SELECT type, id, param, system, code FROM search_token").fetchall()
            values = {(t, p, s, c) for t, _, p, s, c in rows if s is not None and c is not None}
            stored = db.execute("SELECT type, param, system, code FROM search_token_total").fetchall()
            assert sorted(stored) == sorted(values)
            assert len(values) > 20
        db.close()

    def test_same_as_counting(self, every_total: Path) -> None:
        """For every stored value, the search answers exactly as when its matches are counted."""
        store = Store(every_total)
        assert store.has_totals
        db = store.connection()
        values = [
            (kind, param, f"{_escaped(system)}|{_escaped(code)}")
            for kind, param, system, code in db.execute(
                "SELECT type, param, system, code FROM search_token_total"
            )
        ] + [
            (kind, param, _escaped(f"{target_type}/{target_id}"))
            for kind, param, target_type, target_id in db.execute(
                "SELECT type, param, target_type, target_id FROM search_reference_total"
            )
        ]
        stored, counted = Engine(store.connection, totals=True), Engine(store.connection, totals=False)
        statements: list[str] = []
        for kind, param, value in values:
            request = parse([kind], [(param, value), ("_count", "3")], store.registry)
            db.set_trace_callback(statements.append)
            found = stored.search(request, now=0)
            db.set_trace_callback(None)
            assert found == counted.search(request, now=0), (kind, param, value)
            assert found.total > 0, (kind, param, value)
            assert any("_total WHERE" in s for s in statements)  # the stored total was read ...
            assert not any("COUNT(" in s for s in statements)  # ... and nothing was counted
            statements.clear()
        assert len(values) > 100

    def test_duplicate_rows_counted_once(self, client: FlaskClient) -> None:
        """A resource indexed twice under one value (two monographs of one type) is one match."""
        bundle = client.get("/fhir/MedicationKnowledge?monograph-type=http://loinc.org|34895-3").get_json()
        assert bundle["total"] == len(bundle["entry"]) == 1

    def test_publication_without_totals(self, built: Path, tmp_path: Path) -> None:
        """A publication built before the totals existed is still served: its matches are counted."""
        path = tmp_path / "old.sqlite"
        shutil.copy(built, path)
        with sqlite3.connect(path) as db:
            for table in TOTALS_SCHEMA:
                db.execute(f"DROP TABLE {table}")
        db.close()
        assert not Store(path).has_totals
        old = create_app(Settings(publication=path)).test_client()
        new = create_app(Settings(publication=built)).test_client()
        query = "/fhir/Provenance?agent=Organization/fhir-pub&_count=7&_offset=3"
        provenances = Store(built).count(("Provenance",))
        assert old.get(query).get_json()["total"] == new.get(query).get_json()["total"] == provenances
        assert ids(old, query) == ids(new, query)


class TestUncounted:
    """_total=none: the page alone, with next links while matches follow, and no count run."""

    @pytest.mark.parametrize(
        "query",
        [
            f"{CUD}?status=active",
            f"{CUD}?subject=Medication/besponsa-vial&_sort=-type",
            f"{CUD}?type=warning,undesirable-effect&status=active",
            "Provenance?agent=Organization/fhir-pub",
            f"/fhir?_type={CUD},Provenance&_lastUpdated=gt2000-01-01",
        ],
    )
    @pytest.mark.parametrize("count", [1, 7, 20])
    def test_pages_as_counted(self, client: FlaskClient, query: str, count: int) -> None:
        """Paging with _total=none visits the same matches, in the same order, as with the total."""
        pages: dict[str, list[str]] = {}
        for total in ("accurate", "none"):
            url: str | None = f"{query}&_count={count}&_total={total}"
            url = url if url.startswith("/") else f"/fhir/{url}"
            found: list[str] = []
            while url:
                bundle = client.get(url).json
                relations = [link["relation"] for link in bundle["link"]]
                assert ("total" in bundle) == (total == "accurate")
                assert "last" in relations or total == "none"  # several types are counted anyway
                found += [
                    e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"
                ]
                nxt = [link["url"] for link in bundle["link"] if link["relation"] == "next"]
                url = urlsplit(nxt[0]).path + "?" + urlsplit(nxt[0]).query if nxt else None
            pages[total] = found
        assert pages["none"] == pages["accurate"]
        assert len(pages["none"]) > count  # several pages were followed

    def test_no_count_run(self, built: Path) -> None:
        """For one type, an uncounted search runs no COUNT, and says whether more matches follow."""
        store = Store(built)
        statements: list[str] = []
        active = sum(
            json.loads(body)["status"]["coding"][0]["code"] == "active" for _, body, _ in store.bodies(CUD)
        )
        assert active > 20
        engine = Engine(store.connection, totals=store.has_totals)
        store.connection().set_trace_callback(statements.append)
        first = engine.search(
            parse([CUD], [("status", "active"), ("_count", "10"), ("_total", "none")], store.registry), now=0
        )
        last = engine.search(
            parse(
                [CUD],
                [("status", "active"), ("_count", "10"), ("_offset", str(active - 5)), ("_total", "none")],
                store.registry,
            ),
            now=0,
        )
        store.connection().set_trace_callback(None)
        assert not any("COUNT(" in s for s in statements)
        assert (first.total, first.more, len(first.matches)) == (None, True, 10)
        assert (last.total, last.more, len(last.matches)) == (None, False, 5)  # the last page is short
