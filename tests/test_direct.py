"""Direct reads answer exactly as the full path does: a differential test over the whole publication."""

from __future__ import annotations

import gzip
import itertools
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from test_served_search import BASES, equivalent, in_version, r5_searches, served_parameters

from fhir_pub.handlers import BASE_SUFFIXES
from fhir_pub.settings import Settings
from fhir_pub.store import Store
from fhir_pub.web import create_app
from fhir_pub.web.direct import DirectReads, DirectSearches

ACCEPTS = [
    None,
    "*/*",
    "application/fhir+json",
    "application/fhir+json; charset=utf-8",
    "application/fhir+json; fhirVersion=5.0",
    "application/json",
    "application/fhir+xml",  # negotiates to XML: the direct path must leave it to the full one
    "text/html",
    "application/fhir+json; fhirVersion=3.0",  # a version not served: 406
    "application/fhir+json; fhirVersion=4.3",  # R4B: the converted form, through the full path
]
ENCODINGS = [None, "gzip", "gzip, deflate, br", "br", "identity"]


def app_of(built: Path, direct: bool) -> Flask:
    return create_app(Settings(publication=built, direct_reads=direct, direct_searches=direct))


def searches_of(app: Flask) -> DirectSearches:
    """The app's direct search path, found down its chain of middleware."""
    layer: Any = app.wsgi_app
    while not isinstance(layer, DirectSearches):
        layer = layer.app
    return layer


class Counting:
    """Counts the requests the direct path hands to the full path."""

    def __init__(self, direct: DirectReads | DirectSearches) -> None:
        self.inner = direct.app
        self.calls = 0
        direct.app = self

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        """Count, then hand the request on."""
        self.calls += 1
        return self.inner(environ, start_response)


def answer(client: FlaskClient, method: str, path: str, headers: dict[str, str]) -> tuple[Any, ...]:
    """Status, headers but Date, and the decoded body of one request."""
    response = client.open(path, method=method, headers=headers)
    body = response.get_data()
    if response.headers.get("Content-Encoding") == "gzip" and body:
        body = gzip.decompress(body)
    kept = [(name, value) for name, value in response.headers.items() if name != "Date"]
    return response.status, kept, body


def keys(built: Path) -> list[tuple[str, str, str]]:
    store = Store(built)
    return [(kind, rid, stored.version) for kind in sorted(store.types) for rid, stored in store.stored(kind)]


def converted_paths(built: Path) -> list[str]:
    """The read path of every resource at the R4B and R4 bases (R4's clinical uses are Basic there)."""
    store = Store(built)
    with sqlite3.connect(f"file:{built}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT fhir_version, type, id FROM converted ORDER BY 1, 2, 3").fetchall()
    db.close()
    assert {version for version, _, _ in rows} == set(BASE_SUFFIXES)
    assert all(store.read_converted(v, kind, rid) is not None for v, kind, rid in rows[::20])
    return [f"/fhir{BASE_SUFFIXES[version]}/{kind}/{rid}" for version, kind, rid in rows]


def test_every_resource_alike(built: Path) -> None:
    """Each resource, read plainly and with gzip, answers the same on both paths; most skip the full path."""
    direct_app, full = app_of(built, True), app_of(built, False).test_client()
    counting = Counting(direct_app.wsgi_app.app)  # type: ignore[attr-defined]
    client = direct_app.test_client()
    resources = keys(built)
    assert len(resources) > 100
    for (kind, rid, _), encoding in itertools.product(resources, [None, "gzip"]):
        headers = {"Accept-Encoding": encoding} if encoding else {}
        path = f"/fhir/{kind}/{rid}"
        assert answer(client, "GET", path, headers) == answer(full, "GET", path, headers), path
    requests = 2 * len(resources)
    assert counting.calls < requests / 10  # learned once per variant, not once per resource


def test_every_converted_resource_alike(built: Path) -> None:
    """Each resource read at [base]/R4B and [base]/R4 answers as the full path does, mostly without it."""
    direct_app, full = app_of(built, True), app_of(built, False).test_client()
    counting = Counting(direct_app.wsgi_app.app)  # type: ignore[attr-defined]
    client = direct_app.test_client()
    paths = converted_paths(built)
    assert any("/R4/Basic/" in path for path in paths)
    for path, encoding in itertools.product(paths, [None, "gzip"]):
        headers = {"Accept-Encoding": encoding} if encoding else {}
        got = answer(client, "GET", path, headers)
        assert got[0] == "200 OK", path
        assert got == answer(full, "GET", path, headers), path
    assert counting.calls < 2 * len(paths) / 10


def test_variants_alike(built: Path) -> None:
    """Reads, vreads and HEADs, with each Accept, Accept-Encoding and conditional header, answer alike."""
    client, full = app_of(built, True).test_client(), app_of(built, False).test_client()
    sample = keys(built)[::15]
    for kind, rid, version in sample:
        conditionals: list[dict[str, str]] = [
            {},
            {"If-None-Match": f'W/"{version}"'},
            {"If-None-Match": 'W/"not-this"'},
            {"If-None-Match": "*"},
            {"If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"},
            {"If-Modified-Since": "Thu, 01 Jan 1970 00:00:00 GMT"},
            {"If-Match": f'W/"{version}"'},
        ]
        paths = [f"/fhir/{kind}/{rid}", f"/fhir/{kind}/{rid}/_history/{version}"]
        paths += [f"/fhir{suffix}/{kind}/{rid}" for suffix in BASE_SUFFIXES.values()]
        for path, method, accept, encoding, conditional in itertools.product(
            paths, ["GET", "HEAD"], ACCEPTS, ENCODINGS, conditionals
        ):
            headers = dict(conditional)
            if accept:
                headers["Accept"] = accept
            if encoding:
                headers["Accept-Encoding"] = encoding
            got, expected = answer(client, method, path, headers), answer(full, method, path, headers)
            assert got == expected, (method, path, headers)


@pytest.mark.parametrize(
    "path",
    [
        "/fhir/Organization/nope",
        "/fhir/Nope/fda",
        "/fhir/Organization/fda/_history/99",
        "/fhir/Organization/fda?_summary=true",
        "/fhir/Organization/fda?_elements=name",
        "/fhir/Organization/fda?_format=xml",
        "/fhir/Organization/fda?_pretty=true",
        "/fhir/Organization/fda/",
        "/fhir/organization/fda",
        "/fhir/R4/ClinicalUseDefinition/warning-bleeding",
        "/fhir/R4B/Organization/nope",
        "/fhir/R4B/Organization/fda/_history/99",
        "/fhir/R4/Organization/fda?_summary=true",
        "/fhir/R5/Organization/fda",
    ],
)
def test_everything_else_alike(built: Path, path: str) -> None:
    """Misses, other types, other versions, query strings and odd paths answer as the full path does."""
    client, full = app_of(built, True).test_client(), app_of(built, False).test_client()
    for method in ("GET", "HEAD"):
        assert answer(client, method, path, {}) == answer(full, method, path, {}), path


def test_browser_and_proxy_headers_alike(built: Path) -> None:
    """Origin (CORS), Prefer, and forwarded headers behind a trusted proxy change the answer alike."""
    settings = {"trusted_proxies": 1, "base_url": None}
    direct = create_app(Settings(publication=built, direct_reads=True, **settings)).test_client()
    full = create_app(Settings(publication=built, direct_reads=False, **settings)).test_client()
    variants = [
        {"Origin": "https://app.example.org"},
        {"Prefer": "return=minimal"},
        {"X-Forwarded-Host": "fhir.example.org", "X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/p"},
    ]
    for headers in variants:
        for _ in range(2):  # the second answer comes from what the first taught
            path = "/fhir/MedicationKnowledge/besponsa"
            assert answer(direct, "GET", path, headers) == answer(full, "GET", path, headers), headers


# --- searches ---


def all_searches(client: FlaskClient) -> list[str]:
    """The search suite's R5 searches, and each one's equivalent at R4B and R4 where it has one."""
    paths = list(r5_searches())
    for version in BASES:
        served = served_parameters(client, version)
        paths += [in_version(p, version) for p in r5_searches() if equivalent(p, served)]
    return paths


def test_every_search_alike(built: Path) -> None:
    """Every search of the search suite, at each base, plainly and with gzip, answers as the full path does.

    Errors (a search the suite expects to fail) are the full path's to word; the rest skip it.
    """
    direct_app, full = app_of(built, True), app_of(built, False).test_client()
    counting = Counting(searches_of(direct_app))
    client = direct_app.test_client()
    paths = all_searches(full)
    assert len(paths) > 200
    failing = 0
    for path, encoding in itertools.product(paths, [None, "gzip"]):
        headers = {"Accept-Encoding": encoding} if encoding else {}
        got = answer(client, "GET", path, headers)
        assert got == answer(full, "GET", path, headers), (path, headers)
        failing += not got[0].startswith("200")
    assert counting.calls < failing + 2 * len(paths) / 10, (counting.calls, failing)


SEARCHES = [
    "/fhir/ClinicalUseDefinition?type=warning&_count=3",
    "/fhir/ClinicalUseDefinition?subject=Medication/besponsa-vial&_sort=-_lastUpdated&_count=2&_offset=2",
    "/fhir/Medication?_id=besponsa-vial&_revinclude=ClinicalUseDefinition:subject",
    "/fhir/ClinicalUseDefinition?type=warning&nonsense=1",  # an ignored parameter (or, strict, a 400)
    "/fhir/ClinicalUseDefinition?type=warning&_summary=count",
    "/fhir/ClinicalUseDefinition?type=warning&_elements=type&_count=2",
    "/fhir/ClinicalUseDefinition?type=warning&_format=xml",
    "/fhir/ClinicalUseDefinition?type=warning&_pretty=true",
    "/fhir/ClinicalUseDefinition?type=warning&type=indication",
    "/fhir/ClinicalUseDefinition?_count=2&type=warning&_count=3",
    "/fhir/ClinicalUseDefinition?type=warning&_count=bad",
    "/fhir/R4/Basic?code=http://hl7.org/fhir/fhir-types|ClinicalUseDefinition&_count=2",
    "/fhir/R4B/ClinicalUseDefinition?type=indication",
    "/fhir/R4/ClinicalUseDefinition?type=warning",
    "/fhir/Nope?x=1",
    "/fhir/ClinicalUseDefinition",
    "/fhir/DocumentReference?description=%E2%9C%93",
]


def test_search_variants_alike(built: Path) -> None:
    """Searches with each Accept, Accept-Encoding and Prefer, and a conditional header, answer alike."""
    client, full = app_of(built, True).test_client(), app_of(built, False).test_client()
    prefers = [None, "handling=strict", "handling=lenient", "return=minimal"]
    for path, accept, encoding, prefer in itertools.product(SEARCHES, ACCEPTS, ENCODINGS, prefers):
        headers = {
            name: value
            for name, value in (("Accept", accept), ("Accept-Encoding", encoding), ("Prefer", prefer))
            if value
        }
        for method in ("GET", "HEAD"):
            got, expected = answer(client, method, path, headers), answer(full, method, path, headers)
            assert got == expected, (method, path, headers)
    for path in SEARCHES[:3]:
        conditional = {"If-None-Match": "*", "If-Modified-Since": "Fri, 01 Jan 2100 00:00:00 GMT"}
        assert answer(client, "GET", path, conditional) == answer(full, "GET", path, conditional)


def test_search_behind_a_proxy_alike(built: Path) -> None:
    """Forwarded headers change a search's links alike on both paths, learned per variant."""
    settings = {"trusted_proxies": 1, "base_url": None}
    direct_app = create_app(Settings(publication=built, **settings))
    full = create_app(
        Settings(publication=built, direct_reads=False, direct_searches=False, **settings)
    ).test_client()
    counting = Counting(searches_of(direct_app))
    client = direct_app.test_client()
    variants = [
        {},
        {"Origin": "https://app.example.org"},
        {"X-Forwarded-Host": "fhir.example.org", "X-Forwarded-Proto": "https", "X-Forwarded-Prefix": "/p"},
    ]
    for headers in variants:
        for count in range(1, 6):
            path = f"/fhir/ClinicalUseDefinition?type=warning&_count={count}"
            assert answer(client, "GET", path, headers) == answer(full, "GET", path, headers), headers
    assert counting.calls == len(variants)  # one learned answer per variant, then none
    proxied = client.get(SEARCHES[0], headers=variants[2]).json
    assert proxied["link"][0]["url"].startswith("https://fhir.example.org/p/fhir/ClinicalUseDefinition?")
