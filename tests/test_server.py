"""A real server process (``fhir-pub serve``, granian) exercised over HTTP with fhirpy and requests."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import requests
from fhirpy import SyncFHIRClient

from fhir_pub.build import build


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of a running ``fhir-pub serve`` on a free port, stopped after the module."""
    folder = tmp_path_factory.mktemp("server")
    path = build(folder / "p.sqlite").path
    port = free_port()
    log = folder / "server.log"
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "fhir_pub", "serve", "--port", str(port), "--publication", str(path)],
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"{base}/healthz", timeout=1).status_code == 200:
                break
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"server did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)
    yield f"{base}/fhir"
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        pytest.fail("server did not stop on SIGTERM")


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
        assert (head.status_code, head.content, head.headers["ETag"]) == (200, b"", 'W/"1"')

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
        assert len(everything) == 59
        assert len({r["id"] for r in everything}) == 59
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
