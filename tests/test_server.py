"""A real server process (``fhir-pub serve``, granian) exercised over HTTP with fhirpy and requests."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from conftest import bundled_count, free_port, start, stop
from fhirpy import SyncFHIRClient

from fhir_pub.build import write_ndjson


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, built: Path) -> Iterator[str]:
    """The base URL of a running ``fhir-pub serve`` on a free port, stopped after the module."""
    port = free_port()
    process = start(tmp_path_factory.mktemp("server"), built, port)
    yield f"http://127.0.0.1:{port}/fhir"
    stop(process)


def poll(status_url: str) -> requests.Response:
    """Poll a bulk export status URL as a client should: honour Retry-After and 429s."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        response = requests.get(status_url, timeout=5)
        if response.status_code not in (202, 429):
            return response
        time.sleep(min(float(response.headers.get("Retry-After", "1")), 1.0))
    pytest.fail(f"export at {status_url} did not finish")


class TestRealServer:
    """What an EHR or a FHIR client sees over the wire."""

    def test_fhirpy_reads(self, server: str) -> None:
        """Fhirpy fetches resources by reference."""
        client = SyncFHIRClient(server)
        organization = client.reference("Organization", "fda").to_resource()
        assert organization["name"] == "U.S. Food and Drug Administration"
        medication = client.reference("Medication", "besponsa-vial").to_resource()
        assert medication["code"]["coding"][0]["code"] == "0008-0100-01"

    def test_conditional_and_head(self, server: str) -> None:
        """ETag round trip: the client's current copy gets 304; HEAD has headers and no body."""
        first = requests.get(f"{server}/ClinicalUseDefinition/warning-bleeding", timeout=5)
        assert first.status_code == 200
        assert first.headers["Content-Type"] == "application/fhir+json; charset=utf-8"
        again = requests.get(
            f"{server}/ClinicalUseDefinition/warning-bleeding",
            headers={"If-None-Match": first.headers["ETag"]},
            timeout=5,
        )
        assert again.status_code == 304
        head = requests.head(f"{server}/ClinicalUseDefinition/warning-bleeding", timeout=5)
        assert (head.status_code, head.content, head.headers["ETag"]) == (200, b"", first.headers["ETag"])

    def test_errors_are_outcomes(self, server: str) -> None:
        """Writes and unknown resources answer OperationOutcomes with their statuses."""
        deleted = requests.delete(f"{server}/Organization/fda", timeout=5)
        missing = requests.get(f"{server}/Organization/nope", timeout=5)
        assert (deleted.status_code, deleted.json()["resourceType"]) == (405, "OperationOutcome")
        assert (missing.status_code, missing.json()["issue"][0]["code"]) == (404, "not-found")

    def test_metadata(self, server: str) -> None:
        """The CapabilityStatement is served."""
        assert requests.get(f"{server}/metadata", timeout=5).json()["fhirVersion"] == "5.0.0"

    def test_fhirpy_searches(self, server: str) -> None:
        """Searches with fhirpy: counts, paging through every result by next links, includes."""
        client = SyncFHIRClient(server)
        warnings = client.resources("ClinicalUseDefinition").search(
            subject="Medication/besponsa-vial", type="warning"
        )
        assert warnings.count() == 27
        everything = client.resources("ClinicalUseDefinition").limit(10).fetch_all()
        assert len(everything) == bundled_count("ClinicalUseDefinition")
        assert len({r["id"] for r in everything}) == bundled_count("ClinicalUseDefinition")
        bundle = (
            client.resources("MedicationKnowledge").include("MedicationKnowledge", "monograph").fetch_raw()
        )
        assert sorted(e["search"]["mode"] for e in bundle["entry"]) == [
            "include",
            "include",
            "include",
            "match",
        ]

    def test_gzip_and_cors_over_the_wire(self, server: str) -> None:
        """A real server compresses FHIR JSON and answers browser origins."""
        response = requests.get(
            f"{server}/ClinicalUseDefinition?type=warning",
            headers={"Accept-Encoding": "gzip", "Origin": "https://app.example"},
            timeout=5,
        )
        assert response.headers["Content-Encoding"] == "gzip"
        assert response.headers["Access-Control-Allow-Origin"] == "*"
        assert response.json()["total"] == 27

    def test_bulk_export(self, server: str, built: Path) -> None:
        """The Bulk Data flow over the wire: kick-off, polling, manifest, NDJSON files, cancel."""
        kickoff = requests.get(
            f"{server}/$export?_type=ClinicalUseDefinition,DocumentReference",
            headers={"Prefer": "respond-async", "Accept": "application/fhir+json"},
            timeout=5,
        )
        assert kickoff.status_code == 202
        status_url = kickoff.headers["Content-Location"]
        assert status_url.startswith(f"{server}/$export-status/")
        done = poll(status_url)
        assert done.status_code == 200
        manifest = done.json()
        counts = {o["type"]: o["count"] for o in manifest["output"]}
        assert counts == {
            kind: bundled_count(kind) for kind in ("ClinicalUseDefinition", "DocumentReference")
        }
        for output in manifest["output"]:
            response = requests.get(output["url"], timeout=5)
            assert response.headers["Content-Type"].startswith("application/fhir+ndjson")
            lines = response.content.splitlines()
            assert len(lines) == output["count"]
            resources = [json.loads(line) for line in lines]
            assert {r["resourceType"] for r in resources} == {output["type"]}
            for resource in resources:  # leaflet links stay absolute, so they resolve outside this server
                for content in resource.get("content", []):
                    assert content["attachment"]["url"].startswith("https://")
        assert requests.delete(status_url, timeout=5).status_code == 202
        assert requests.get(status_url, timeout=5).status_code == 404


def test_export_jobs_shared_by_workers_and_survive_restarts(tmp_path: Path, built: Path) -> None:
    """With two workers any of them answers for a job; after a restart the finished export is still served."""
    port = free_port()
    process = start(tmp_path, built, port, workers=2)
    base = f"http://127.0.0.1:{port}/fhir"
    try:
        kickoff = requests.post(
            f"{base}/Organization/$export", headers={"Prefer": "respond-async"}, timeout=5
        )
        assert kickoff.status_code == 202
        status_url = kickoff.headers["Content-Location"]
        statuses = {poll(status_url).status_code for _ in range(6)}
        assert statuses == {200}
    finally:
        stop(process)
    # Restarted on a fresh port (the old one may be taken meanwhile); the job's URL moves with it.
    again = free_port()
    process = start(tmp_path, built, again)
    status_url = status_url.replace(f":{port}/", f":{again}/")
    try:
        manifest = poll(status_url).json()
        (output,) = manifest["output"]
        assert output["type"] == "Organization"
        # The manifest keeps the URLs of the kick-off's base (a fixed FHIR_PUB_BASE_URL in production).
        response = requests.get(output["url"].replace(f":{port}/", f":{again}/"), timeout=5)
        assert len(response.content.splitlines()) == output["count"] > 0
    finally:
        stop(process)


def test_export_running_at_a_crash_is_reported_failed(tmp_path: Path, built: Path) -> None:
    """Kill the server (and its workers) mid-export: after a restart the job answers 500, not 202 forever."""
    large = tmp_path / "large.sqlite"
    shutil.copy(built, large)
    with sqlite3.connect(large) as db:  # 1,000 copies of every resource: an export that takes a while
        db.execute(
            "INSERT INTO resource SELECT type, id || '-c' || n, version, last_updated, body, updated"
            " FROM resource,"
            " (WITH RECURSIVE k(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM k WHERE n < 1000)"
            " SELECT n FROM k)"
        )
        write_ndjson(db)
    db.close()
    port = free_port()
    process = start(tmp_path, large, port)
    base = f"http://127.0.0.1:{port}/fhir"
    kickoff = requests.get(f"{base}/$export", headers={"Prefer": "respond-async"}, timeout=5)
    status_url = kickoff.headers["Content-Location"]
    running = requests.get(status_url, timeout=5)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    assert running.status_code == 202, "the export finished before the crash; make it larger"
    again_port = free_port()  # the old port may be taken by now
    process = start(tmp_path, large, again_port)
    base = f"http://127.0.0.1:{again_port}/fhir"
    try:
        crashed = poll(status_url.replace(f":{port}/", f":{again_port}/"))
        assert crashed.status_code == 500
        assert crashed.json()["issue"][0]["code"] == "exception"
        assert "server stopped" in crashed.json()["issue"][0]["details"]["text"]
        again = requests.get(f"{base}/Organization/$export", headers={"Prefer": "respond-async"}, timeout=5)
        assert again.status_code == 202
        assert poll(again.headers["Content-Location"]).status_code == 200
    finally:
        stop(process)


def test_export_files_expire(tmp_path: Path, built: Path) -> None:
    """Over the wire: files answer 410 after FHIR_PUB_EXPORT_EXPIRY, the status URL 404."""
    port = free_port()
    process = start(tmp_path, built, port, export_expiry="3")
    try:
        started = time.monotonic()
        kickoff = requests.get(
            f"http://127.0.0.1:{port}/fhir/Organization/$export",
            headers={"Prefer": "respond-async"},
            timeout=5,
        )
        status_url = kickoff.headers["Content-Location"]
        done = poll(status_url)
        assert done.status_code == 200
        url = done.json()["output"][0]["url"]
        assert requests.get(url, timeout=5).status_code == 200
        time.sleep(max(0.0, started + 3.3 - time.monotonic()))  # past the expiry, not yet forgotten (6 s)
        gone = requests.get(url, timeout=5)
        assert (gone.status_code, gone.json()["issue"][0]["code"]) == (410, "expired")
        assert requests.get(status_url, timeout=5).status_code == 404
    finally:
        stop(process)


def test_replicas_answer_identically(tmp_path: Path, built: Path) -> None:
    """Scale out: two replicas serving copies of one artifact behind one public URL give the same answers."""
    servers, processes = [], []
    try:
        for name in ("a", "b"):
            folder = tmp_path / name
            folder.mkdir()
            copy = shutil.copy(built, folder / "p.sqlite")
            port = free_port()
            processes.append(start(folder, Path(copy), port, base_url="https://fhir.example.org/fhir"))
            servers.append(f"http://127.0.0.1:{port}/fhir")
        paths = [
            "/metadata",
            "/MedicationKnowledge/besponsa",
            "/ClinicalUseDefinition?type=warning&_count=5&_include=ClinicalUseDefinition:subject",
            "/ClinicalUseDefinition?_text=infusion&_sort=_id",
            "/DocumentReference/_history",
            "/Organization/nope",
        ]
        for path in paths:
            a, b = (requests.get(f"{server}{path}", timeout=5) for server in servers)
            assert a.status_code == b.status_code, path
            assert a.content == b.content, path
            for header in ("ETag", "Last-Modified", "Content-Type", "Content-Location"):
                assert a.headers.get(header) == b.headers.get(header), (path, header)
    finally:
        for process in processes:
            stop(process)


def test_worker_app_frozen_for_the_collector(built: Path) -> None:
    """The production app module freezes what it made, so full collections skip it (short GC pauses)."""
    code = "import gc, fhir_pub.wsgi; print(gc.get_freeze_count(), len(gc.get_objects()))"
    env = {**os.environ, "FHIR_PUB_PUBLICATION": str(built)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    frozen, tracked = map(int, out.stdout.split())
    assert frozen > 10_000  # the app, its store and the libraries' objects
    assert tracked < frozen // 10  # what the collector still walks is small
