"""The HTML site a browser gets (Accept: text/html): landing page, search forms, results, resources, errors.

Expected numbers come from the store and the CapabilityStatement, never written down here, so the
tests follow the publication as it grows.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from flask.testing import FlaskClient
from lxml import html as lxml_html

from fhir_pub.settings import Settings
from fhir_pub.store import Store
from fhir_pub.web import create_app
from fhir_pub.web.html import _label, shortened

BROWSER = {"Accept": "text/html"}
BASE = "http://localhost/fhir"


@pytest.fixture(scope="module")
def client(built: Path) -> FlaskClient:
    """A test client of an app serving it, with no configured base URL."""
    return create_app(Settings(publication=built)).test_client()


@pytest.fixture(scope="module")
def capability(client: FlaskClient) -> dict[str, Any]:
    """The CapabilityStatement, as FHIR JSON."""
    statement: dict[str, Any] = client.get("/fhir/metadata").json
    return statement


def get_page(client: FlaskClient, url: str, status: int = 200) -> Any:
    """The parsed HTML page a browser gets for ``url``, checked to be HTML with the expected status."""
    response = client.get(url, headers=BROWSER)
    assert response.status_code == status, (url, response.status_code)
    assert response.content_type == "text/html; charset=utf-8"
    return lxml_html.fromstring(response.get_data(as_text=True))


def text(element: Any) -> str:
    """An element's words, as a reader sees them."""
    return " ".join(element.text_content().split())


def table_rows(table: Any) -> list[list[Any]]:
    """The body rows of a table, each as its cells (th and td)."""
    return [row.xpath("./th|./td") for row in table.xpath("./tbody/tr")]


def heads(table: Any) -> list[str]:
    """A table's column headers."""
    return [text(th) for th in table.xpath("./thead/tr/th")]


def resource(store: Store, key: str) -> dict[str, Any]:
    """One stored resource, parsed."""
    kind, rid = key.split("/")
    stored = store.read(kind, rid)
    assert stored is not None, key
    parsed: dict[str, Any] = orjson.loads(stored.body)
    return parsed


def references_in(node: Any) -> list[str]:
    """Every literal ``Type/id`` reference anywhere in a JSON value."""
    if isinstance(node, dict):
        own = [node["reference"]] if isinstance(node.get("reference"), str) else []
        return own + [r for value in node.values() for r in references_in(value)]
    if isinstance(node, list):
        return [r for item in node for r in references_in(item)]
    return []


class TestLanding:
    """The landing page: every type served, its count, and a search form per type."""

    def test_every_type_with_its_count(self, client: FlaskClient, store: Store) -> None:
        """Each type the store holds is listed with its count, linking to its search."""
        page = get_page(client, "/")
        (table,) = page.xpath('//table[@id="types"]')
        shown = {text(row[0]): int(text(row[1])) for row in table_rows(table)}
        assert shown == {kind: store.count((kind,)) for kind in store.types}
        for row in table_rows(table):
            (link,) = row[0].xpath(".//a")
            assert link.get("href") == f"{BASE}/{text(row[0])}"

    def test_a_form_per_type_named_after_its_search_parameters(
        self, client: FlaskClient, capability: dict[str, Any]
    ) -> None:
        """Each type's form has one labelled input per search parameter the CapabilityStatement lists."""
        page = get_page(client, "/")
        listed = {r["type"]: r for r in capability["rest"][0]["resource"]}
        forms = {form.get("action").rsplit("/", 1)[1]: form for form in page.xpath("//form")}
        assert set(forms) == set(listed)
        for kind, form in forms.items():
            assert form.get("action") == f"http://localhost/search/{kind}"
            assert form.get("method") == "get"
            names = [i.get("name") for i in form.xpath(".//input")]
            assert set(names) == {p["name"] for p in listed[kind]["searchParam"]} | {"_count"}, kind
            for field in form.xpath(".//input"):  # every input has its label
                (label,) = form.xpath(f'.//label[@for="{field.get("id")}"]')
                assert field.get("name") in text(label)

    def test_a_form_goes_on_to_the_search_without_its_empty_fields(self, client: FlaskClient) -> None:
        """/search/{type} redirects to the FHIR search, dropping empty fields; unknown types are 404."""
        response = client.get(
            "/search/ClinicalUseDefinition?type=warning&status=&subject=+&_count=", headers=BROWSER
        )
        assert response.status_code == 303
        assert response.headers["Location"] == f"{BASE}/ClinicalUseDefinition?type=warning"
        assert client.get(response.headers["Location"], headers=BROWSER).status_code == 200
        get_page(client, "/search/NotAType?x=1", status=404)

    def test_the_forms_are_allowed_and_nothing_runs(self, client: FlaskClient) -> None:
        """The CSP lets forms post to this origin only, and no page has a script."""
        for url in ("/", "/fhir/metadata", "/fhir/MedicationKnowledge/besponsa", "/fhir/Organization/nope"):
            response = client.get(url, headers=BROWSER)
            csp = response.headers["Content-Security-Policy"]
            assert "form-action 'self'" in csp
            assert "form-action 'none'" not in csp
            assert "script-src" not in csp
            assert "default-src 'none'" in csp
            assert "<script" not in response.get_data(as_text=True)

    def test_home_link_honours_the_configured_base(
        self, built: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """With FHIR_PUB_BASE_URL set, the home link, forms and links all follow it."""
        monkeypatch.setenv("FHIR_PUB_BASE_URL", "https://example.org/pub/fhir")
        configured = create_app(Settings(publication=built)).test_client()
        for url in ("/", "/fhir/Organization/fda", "/fhir/Organization?_count=2", "/fhir/Organization/nope"):
            page = get_page(configured, url, status=404 if url.endswith("nope") else 200)
            (home,) = page.xpath('//header//a[@class="home"]')
            assert home.get("href") == "https://example.org/pub/", url
        landing = get_page(configured, "/")
        assert all(
            f.get("action").startswith("https://example.org/pub/search/") for f in landing.xpath("//form")
        )
        assert landing.xpath('//a[@href="https://example.org/pub/fhir/metadata"]')


class TestSearchPages:
    """Search results: the columns that matter per type, and where the page sits among the matches."""

    def test_last_page_says_where_it_is(self, client: FlaskClient) -> None:
        """The last page says 'offset+1-total of total' and has a previous link but no next."""
        total = client.get("/fhir/ClinicalUseDefinition?type=undesirable-effect&_summary=count").json["total"]
        count = 20
        offset = (total - 1) // count * count
        assert offset > 0  # there is more than one page
        page = get_page(
            client, f"/fhir/ClinicalUseDefinition?type=undesirable-effect&_count={count}&_offset={offset}"
        )
        assert f"{offset + 1}-{total} of {total}" in text(page.xpath('//p[@class="paging-summary"]')[0])
        (nav,) = page.xpath('//nav[@class="paging"]')
        relations = {a.get("rel"): a.get("href") for a in nav.xpath(".//a")}
        assert "previous" in relations
        assert "next" not in relations
        previous = parse_qs(urlsplit(relations["previous"]).query)
        assert previous.get("_offset", ["0"]) == [str(offset - count)] or offset - count == 0
        first = get_page(client, f"/fhir/ClinicalUseDefinition?type=undesirable-effect&_count={count}")
        assert f"1-{count} of {total}" in text(first.xpath('//p[@class="paging-summary"]')[0])
        links = {a.get("rel") for a in first.xpath('//nav[@class="paging"]//a')}
        assert "next" in links
        assert "previous" not in links

    def test_clinical_use_columns(self, client: FlaskClient, store: Store) -> None:
        """Undesirable effects: kind, subject by title, the effect, its seriousness and status."""
        page = get_page(client, "/fhir/ClinicalUseDefinition?type=undesirable-effect&_count=100")
        (table,) = page.xpath('//table[@class="grid"]')
        assert heads(table) == [
            "Resource",
            "Kind",
            "Subject",
            "Effect, warning or indication",
            "Seriousness",
            "Status",
        ]
        rows = table_rows(table)
        effects = store.all_of("ClinicalUseDefinition")
        effects = [e for e in effects if e["type"] == "undesirable-effect"]
        assert len(rows) == len(effects)
        by_title = {text(row[0]): row for row in rows}
        for effect in effects:
            row = by_title[_label(effect)]
            concept = effect["undesirableEffect"]["symptomConditionEffect"]["concept"]
            assert [text(c) for c in row[1:]] == [
                "undesirable-effect",
                _label(resource(store, effect["subject"][0]["reference"])),
                concept["text"],
                effect["undesirableEffect"].get("classification", {}).get("text", ""),
                effect["status"]["text"],
            ]

    def test_warnings_and_the_interaction(self, client: FlaskClient) -> None:
        """A warning shows its code's text; the interaction shows what it is with."""
        warnings = get_page(client, "/fhir/ClinicalUseDefinition?type=warning&_count=100")
        row = next(r for r in table_rows(warnings.xpath("//table")[0]) if text(r[0]) == "Warning: Bleeding")
        assert text(row[3]) == "Bleeding"
        interaction = get_page(client, "/fhir/ClinicalUseDefinition?type=interaction")
        assert "Medicines that can prolong the QT interval" in text(
            table_rows(interaction.xpath("//table")[0])[0][3]
        )

    @pytest.mark.parametrize(
        "kind", ["Organization", "DocumentReference", "Provenance", "StructureDefinition", "Group"]
    )
    def test_other_types_have_a_label_and_no_raw_codes(
        self, client: FlaskClient, store: Store, kind: str
    ) -> None:
        """Other types: a linked label per resource, and summaries with no system URLs or codes."""
        page = get_page(client, f"/fhir/{kind}?_count=100")
        (table,) = page.xpath('//table[@class="grid"]')
        rows = table_rows(table)
        assert len(rows) == store.count((kind,))
        for row in rows:
            assert row[0].xpath(".//a")[0].get("href").startswith(f"{BASE}/{kind}/")
            summary = [text(c) for c, head in zip(row, heads(table), strict=True) if head == "Summary"]
            for words in summary:
                assert "://" not in words, words
                assert not re.search(r"#\w", words), words
                assert len(words) <= 162

    def test_summaries_are_cut_at_a_word_without_codes(self) -> None:
        """A long summary is cut at a word and loses its (system#code) notes."""
        long = "Call your doctor (http://snomed.info/sct#123456) " + "about every unusual feeling " * 10
        cut = shortened(long, 60)
        assert "snomed" not in cut
        assert cut.endswith(" …")
        kept = cut[: -len(" …")]
        clean = " ".join(long.replace(" (http://snomed.info/sct#123456)", "").split())
        assert clean.startswith(kept)
        assert clean[len(kept)] == " "
        assert shortened("short words") == "short words"

    def test_search_with_an_outcome_entry(self, client: FlaskClient) -> None:
        """A search with an ignored parameter still says where its page is."""
        page = get_page(client, "/fhir/ClinicalUseDefinition?colour=blue&_count=2")
        assert "1-2 of" in text(page.xpath('//p[@class="paging-summary"]')[0])


class TestResourcePages:
    """A resource page names every reference by its target's title, keeps its sources and shows its JSON."""

    def test_references_by_title_all_of_them(self, client: FlaskClient, store: Store) -> None:
        """Every reference in the resource is listed, linked and named by its target's title."""
        for key in (
            "MedicationKnowledge/besponsa",
            "ClinicalUseDefinition/warning-bleeding",
            "Provenance/besponsa-msk",
        ):
            page = get_page(client, f"/fhir/{key}")
            (table,) = page.xpath('//table[@id="refers-to"]')
            targets = [row[1].xpath(".//a")[0] for row in table_rows(table)]
            expected = sorted(references_in(resource(store, key)))
            shown = sorted((a.get("href"), text(a)) for a in targets)
            assert shown == [(f"{BASE}/{r}", _label(resource(store, r))) for r in expected], key

    def test_referred_to_by_every_referrer(self, client: FlaskClient, store: Store) -> None:
        """Every resource referring to this one is listed, by title."""
        page = get_page(client, "/fhir/Medication/besponsa-vial")
        (table,) = page.xpath('//table[@id="referred-to-by"]')
        links = [row[1].xpath(".//a")[0] for row in table_rows(table)]
        referrers = list(store.referrers("Medication/besponsa-vial"))
        assert len(links) == len(referrers) > 20  # every one, not a cut list
        assert {text(a) for a in links} == {_label(r) for r in referrers}
        assert not any(re.fullmatch(r"[A-Za-z]+/[\w.-]+", text(a)) for a in links)  # titles, not ids

    def test_sources_part_by_part_kept(self, client: FlaskClient) -> None:
        """The drug page keeps its per-part sources table."""
        page = get_page(client, "/fhir/MedicationKnowledge/besponsa")
        assert page.xpath('//h2[text()="Sources, part by part"]')

    def test_pretty_json_view(self, client: FlaskClient, store: Store) -> None:
        """The JSON view is the resource itself, tokens in classed spans, the narrative escaped."""
        response = client.get("/fhir/ClinicalUseDefinition/warning-bleeding", headers=BROWSER)
        body = response.get_data(as_text=True)
        assert "&lt;div xmlns=" in body  # the narrative inside the JSON is text, not markup
        page = lxml_html.fromstring(body)
        (pre,) = page.xpath('//pre[@class="json"]')
        assert json.loads(pre.text_content()) == resource(store, "ClinicalUseDefinition/warning-bleeding")
        classes = {span.get("class") for span in pre.xpath(".//span")}
        assert {"j-key", "j-str", "j-punc"} <= classes


class TestMetadataAndErrors:
    """The CapabilityStatement as tables; error pages that lead on."""

    def test_capability_tables(self, client: FlaskClient, capability: dict[str, Any]) -> None:
        """Per type: a table of search parameters (name, type, documentation) and its interactions."""
        page = get_page(client, "/fhir/metadata")
        tables = page.xpath('//table[contains(@class, "search-params")]')
        listed = capability["rest"][0]["resource"]
        assert len(tables) == len(listed)
        for table, entry in zip(tables, listed, strict=True):
            assert heads(table) == ["Name", "Type", "Documentation"]
            rows = table_rows(table)
            assert [(text(r[0]), text(r[1])) for r in rows] == [
                (p["name"], p["type"]) for p in entry["searchParam"]
            ]
            section = table.getparent()
            assert entry["type"] in text(section.xpath("./h3")[0])
            for interaction in entry["interaction"]:
                assert interaction["code"] in text(section)
        (types,) = page.xpath('//table[@id="capability-types"]')
        assert [text(r[0]) for r in table_rows(types)] == [e["type"] for e in listed]
        cud = tables[[e["type"] for e in listed].index("ClinicalUseDefinition")]
        documented = {text(r[0]): text(r[2]) for r in table_rows(cud)}
        assert documented["effect"]  # from the SearchParameter's description

    def test_error_page_leads_on(self, client: FlaskClient) -> None:
        """An error page links home, to the CapabilityStatement and to the type's search if known."""
        page = get_page(client, "/fhir/Organization/nope", status=404)
        assert "is not in this publication" in text(page)
        hrefs = {a.get("href") for a in page.xpath('//ul[@class="next"]//a')}
        assert {"http://localhost/", f"{BASE}/Organization", f"{BASE}/metadata"} <= hrefs
        unknown = get_page(client, "/fhir/NotAType/x", status=404)
        assert {a.get("href") for a in unknown.xpath('//ul[@class="next"]//a')} == {
            "http://localhost/",
            f"{BASE}/metadata",
        }
        bad = get_page(client, "/fhir/ClinicalUseDefinition?type=", status=400)
        assert f"{BASE}/ClinicalUseDefinition" in {a.get("href") for a in bad.xpath('//ul[@class="next"]//a')}


class TestBrowserCheck:
    """scripts/check-html drives a real browser, outside the test command."""

    def test_outside_the_test_command(self) -> None:
        """It exists, is executable, and scripts/test does not run it."""
        root = Path(__file__).resolve().parent.parent
        assert os.access(root / "scripts" / "check-html", os.X_OK)
        assert "check-html" not in (root / "scripts" / "test").read_text(encoding="utf-8")

    def test_without_a_browser_it_says_how_to_install_one(self, tmp_path: Path) -> None:
        """With no browser driver it can use, it names the packages to install and exits 2."""
        root = Path(__file__).resolve().parent.parent
        false = shutil.which("false")
        assert false is not None
        done = subprocess.run(
            [str(root / "scripts" / "check-html")],
            env={**os.environ, "PYTHON": false, "TMPDIR": str(tmp_path)},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 2
        assert "apt-get install chromium chromium-driver" in done.stderr
        assert "pip install selenium" in done.stderr
        assert not list(tmp_path.iterdir())  # nothing started, nothing written


class TestPagingWords:
    """The paging sentence for pages without entries."""

    def test_count_only_and_no_match(self, client: FlaskClient) -> None:
        """_summary=count says how many were found; a search matching nothing says so."""
        total = client.get("/fhir/ClinicalUseDefinition?_summary=count").json["total"]
        counted = get_page(client, "/fhir/ClinicalUseDefinition?_summary=count")
        assert text(counted.xpath('//p[@class="paging-summary"]')[0]) == f"{total} found, none on this page"
        nothing = get_page(client, "/fhir/ClinicalUseDefinition?_id=no-such-id")
        assert text(nothing.xpath('//p[@class="paging-summary"]')[0]) == "No matches"
