"""Bulk Data $export over HTTP: kick-off, status, manifest, files, cancel, expiry, limits, restarts.

https://hl7.org/fhir/uv/bulkdata/STU2/export.html
"""

from __future__ import annotations

import gzip
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from fhir_pub.export import ExportRequest
from fhir_pub.jobs import JobStore
from fhir_pub.publication import Publication
from fhir_pub.search.dates import micros, parse_instant, parse_range
from fhir_pub.settings import Settings
from fhir_pub.web import create_app

ASYNC = {"Prefer": "respond-async", "Accept": "application/fhir+json"}


def make_client(built: Path, jobs: Path, **settings: Any) -> FlaskClient:
    options: dict[str, Any] = {"export_poll_interval": 0.0, **settings}
    return create_app(Settings(publication=built, jobs_dir=jobs, **options)).test_client()


@pytest.fixture
def client(built: Path, tmp_path: Path) -> FlaskClient:
    return make_client(built, tmp_path / "jobs")


def status_path(response: TestResponse) -> str:
    location = response.headers["Content-Location"]
    assert location.startswith("http://localhost/fhir/$export-status/")
    return location.removeprefix("http://localhost")


def finish(client: FlaskClient, path: str) -> TestResponse:
    """Poll until the job is no longer running (at most 30 s)."""
    deadline = time.monotonic() + 30
    while True:
        response = client.get(path)
        if response.status_code != 202:
            return response
        assert response.headers["X-Progress"]
        assert time.monotonic() < deadline, "export did not finish"
        time.sleep(0.05)


def kick_off(client: FlaskClient, url: str = "/fhir/$export", **headers: str) -> str:
    response = client.get(url, headers={**ASYNC, **headers})
    assert response.status_code == 202, response.get_data(as_text=True)
    assert response.json["resourceType"] == "OperationOutcome"
    return status_path(response)


def download(client: FlaskClient, url: str) -> list[dict[str, Any]]:
    with client.get(url.removeprefix("http://localhost")) as response:
        assert response.status_code == 200
        assert response.mimetype == "application/fhir+ndjson"
        return [json.loads(line) for line in response.get_data().splitlines()]


def assert_error(response: TestResponse, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    body: dict[str, Any] = response.json
    assert body["resourceType"] == "OperationOutcome"
    assert body["issue"][0]["code"] == code
    return body


class TestKickOff:
    """The kick-off request and what it refuses."""

    def test_whole_publication(self, client: FlaskClient, served: dict[str, Any]) -> None:
        """Every resource comes back once, one file per type, with counts that match the lines."""
        path = kick_off(client)
        done = finish(client, path)
        assert done.status_code == 200
        assert done.mimetype == "application/json"
        assert "GMT" in done.headers["Expires"]
        manifest = done.json
        assert manifest["request"] == "http://localhost/fhir/$export"
        assert manifest["requiresAccessToken"] is False
        assert manifest["error"] == []
        assert manifest["transactionTime"].endswith("Z")
        seen = set()
        for output in manifest["output"]:
            resources = download(client, output["url"])
            assert len(resources) == output["count"]
            assert {r["resourceType"] for r in resources} == {output["type"]}
            seen |= {f"{r['resourceType']}/{r['id']}" for r in resources}
        assert seen == set(served)

    def test_type_level_and_post(self, client: FlaskClient, publication: Publication) -> None:
        """``[type]/$export`` and a POST with a Parameters body export what they name."""
        path = kick_off(client, "/fhir/DocumentReference/$export")
        outputs = finish(client, path).json["output"]
        assert [o["type"] for o in outputs] == ["DocumentReference"]
        assert outputs[0]["count"] == len(list(publication.of_type("DocumentReference")))

        body = {
            "resourceType": "Parameters",
            "parameter": [
                {"name": "_type", "valueString": "Organization,Medication"},
                {"name": "_elements", "valueString": "id"},
            ],
        }
        response = client.post("/fhir/$export", json=body, headers=ASYNC)
        assert response.status_code == 202
        outputs = finish(client, status_path(response)).json["output"]
        assert sorted(o["type"] for o in outputs) == ["Medication", "Organization"]
        for output in outputs:
            for resource in download(client, output["url"]):
                assert set(resource) <= {"resourceType", "id", "meta"}
                assert resource["meta"]["tag"][0]["code"] == "SUBSETTED"

    def test_type_filter_is_a_search(self, client: FlaskClient) -> None:
        """``_typeFilter`` keeps what the same search finds; types it does not name are exported whole."""
        search = client.get("/fhir/ClinicalUseDefinition?type=warning&_count=500").json
        expected = {e["resource"]["id"] for e in search["entry"]}
        assert expected
        path = kick_off(client, "/fhir/$export?_typeFilter=ClinicalUseDefinition%3Ftype%3Dwarning")
        outputs = {o["type"]: o for o in finish(client, path).json["output"]}
        found = download(client, outputs["ClinicalUseDefinition"]["url"])
        assert {r["id"] for r in found} == expected
        assert outputs["Organization"]["count"] == len(client.get("/fhir/Organization").json["entry"])

    def test_since(self, client: FlaskClient, served: dict[str, Any]) -> None:
        """``_since`` keeps what changed after it, and the manifest then lists ``deleted`` (empty here)."""
        later = finish(client, kick_off(client, "/fhir/$export?_since=2999-01-01T00:00:00Z")).json
        assert (later["output"], later["deleted"]) == ([], [])
        earlier = finish(client, kick_off(client, "/fhir/$export?_since=2000-01-01T00:00:00Z")).json
        assert sum(o["count"] for o in earlier["output"]) == len(served)
        assert "deleted" not in finish(client, kick_off(client)).json

    def test_against_search(self, client: FlaskClient) -> None:
        """``_type`` + ``_since`` + ``_elements`` give what the same search gives, resource for resource."""
        query = "_lastUpdated=gt2000-01-01T00:00:00Z&_elements=name,type&_count=500"
        search = client.get(f"/fhir/Organization?{query}").json
        expected = sorted((e["resource"] for e in search["entry"]), key=lambda r: r["id"])
        path = kick_off(
            client, "/fhir/$export?_type=Organization&_since=2000-01-01T00:00:00Z&_elements=name,type"
        )
        (output,) = finish(client, path).json["output"]
        assert sorted(download(client, output["url"]), key=lambda r: r["id"]) == expected

    def test_typed_elements_and_encoded_filters(self, client: FlaskClient) -> None:
        """``_elements=Type.name`` applies to that type only; a ``_typeFilter`` is itself URL-encoded."""
        name = client.get("/fhir/Organization/fda").json["name"]
        query = urlencode(
            {
                "_type": "Organization,Medication",
                "_elements": "Organization.name",
                "_typeFilter": f"Organization?{urlencode({'name:exact': name})}",
            }
        )
        outputs = {
            o["type"]: o for o in finish(client, kick_off(client, f"/fhir/$export?{query}")).json["output"]
        }
        (organization,) = download(client, outputs["Organization"]["url"])
        assert (organization["id"], organization["name"]) == ("fda", name)
        assert "type" not in organization
        medication = download(client, outputs["Medication"]["url"])
        assert all("code" in m and "SUBSETTED" not in json.dumps(m) for m in medication)

    def test_public_base_url(self, built: Path, tmp_path: Path) -> None:
        """Behind a proxy, Content-Location, ``request`` and file urls all use the public base URL."""
        client = make_client(built, tmp_path / "jobs", base_url="https://fhir.example.org/r5")
        response = client.get("/fhir/Organization/$export?_elements=name", headers=ASYNC)
        location = response.headers["Content-Location"]
        assert location.startswith("https://fhir.example.org/r5/$export-status/")
        manifest = finish(client, "/fhir" + location.removeprefix("https://fhir.example.org/r5")).json
        assert manifest["request"] == "https://fhir.example.org/r5/Organization/$export?_elements=name"
        assert manifest["output"][0]["url"].startswith("https://fhir.example.org/r5/$export-file/")

    def test_without_accept(self, client: FlaskClient) -> None:
        """A kick-off with no ``Accept`` header is taken as ``application/fhir+json``."""
        response = client.get("/fhir/Organization/$export", headers={"Prefer": "respond-async"})
        assert response.status_code == 202
        assert finish(client, status_path(response)).status_code == 200

    @pytest.mark.parametrize("spelling", ["application/fhir+ndjson", "application/ndjson", "ndjson"])
    def test_output_format_spellings(self, client: FlaskClient, spelling: str) -> None:
        """All three NDJSON spellings of ``_outputFormat`` are accepted."""
        path = kick_off(client, f"/fhir/$export?_type=Organization&_outputFormat={quote(spelling)}")
        assert [o["type"] for o in finish(client, path).json["output"]] == ["Organization"]

    def test_repeated_parameters_merge(self, client: FlaskClient) -> None:
        """Repeated ``_type`` (and comma lists) are merged."""
        path = kick_off(client, "/fhir/$export?_type=Organization&_type=Medication,Organization")
        outputs = finish(client, path).json["output"]
        assert sorted(o["type"] for o in outputs) == ["Medication", "Organization"]

    def test_gzip_on_request(self, client: FlaskClient) -> None:
        """With ``Accept-Encoding: gzip`` a file comes compressed, and decompresses to the same lines."""
        output = finish(client, kick_off(client, "/fhir/DocumentReference/$export")).json["output"][0]
        url = output["url"].removeprefix("http://localhost")
        with client.get(url, headers={"Accept-Encoding": "gzip"}) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            lines = gzip.decompress(response.get_data()).splitlines()
        assert len(lines) == output["count"]
        assert [json.loads(line) for line in lines] == download(client, output["url"])

    @pytest.mark.parametrize(
        ("url", "headers", "status", "code"),
        [
            ("/fhir/$export", {"Prefer": ""}, 400, "invalid"),
            ("/fhir/$export", {"Accept": "text/csv"}, 406, "not-supported"),
            ("/fhir/$export?_outputFormat=text/csv", {}, 400, "invalid"),
            ("/fhir/$export?_type=Patient", {}, 400, "invalid"),
            ("/fhir/$export?_since=yesterday", {}, 400, "invalid"),
            ("/fhir/$export?_typeFilter=ClinicalUseDefinition%3Fnope%3D1", {}, 400, "not-supported"),
            ("/fhir/Medication/$export?_type=Organization", {}, 400, "invalid"),
            ("/fhir/$export?_typeFilter=Organization%3F_count%3D0", {}, 400, "invalid"),
            ("/fhir/$export?_since=9999-12-31T23:59:59-01:00", {}, 400, "invalid"),
            ("/fhir/$export?_since=0001-01-01T00:00:00%2B01:00", {}, 400, "invalid"),
            (
                "/fhir/$export?_typeFilter=Organization%3F_security%3Ain%3Dhttp%3A%2F%2Fnowhere",
                {},
                400,
                "invalid",
            ),
            ("/fhir/$export?_typeFilter=Organization%3F_include%3D*", {}, 400, "invalid"),
            ("/fhir/$export?patient=Patient/1", {}, 400, "invalid"),
        ],
    )
    def test_refused(
        self, client: FlaskClient, url: str, headers: dict[str, str], status: int, code: str
    ) -> None:
        """Bad kick-offs get an OperationOutcome and start no job."""
        assert_error(client.get(url, headers={**ASYNC, **headers}), status, code)
        assert JobStore(Path(client.application.extensions["fhir_pub"].settings.jobs_dir)).all() == []

    def test_bad_post_bodies(self, client: FlaskClient) -> None:
        """A POST body that is not a Parameters resource is a 400."""
        for body in (
            b"{",
            b"[]",
            b'{"resourceType": "Patient"}',
            b'{"resourceType":"Parameters","parameter":[1]}',
            b'{"resourceType":"Parameters","parameter":null}',
            b'{"resourceType":"Parameters","parameter":5}',
        ):
            response = client.post(
                "/fhir/$export", data=body, headers={**ASYNC, "Content-Type": "application/fhir+json"}
            )
            assert_error(response, 400, "invalid")

    def test_lenient_reports_ignored_parameters(self, client: FlaskClient) -> None:
        """With ``handling=lenient`` an unsupported parameter is ignored and reported in the error file."""
        path = kick_off(
            client,
            "/fhir/$export?_type=Organization&includeAssociatedData=x",
            Prefer="respond-async, handling=lenient",
        )
        manifest = finish(client, path).json
        (error,) = manifest["error"]
        assert error["type"] == "OperationOutcome"
        (outcome,) = download(client, error["url"])
        assert "includeAssociatedData" in outcome["issue"][0]["details"]["text"]

    def test_capability_statement(self, client: FlaskClient) -> None:
        """The CapabilityStatement declares export and instantiates the Bulk Data server capability."""
        metadata = client.get("/fhir/metadata").json
        names = [op["name"] for op in metadata["rest"][0]["operation"]]
        assert "export" in names
        assert any("bulkdata" in url for url in metadata.get("instantiates", []))


class TestJobLifecycle:
    """Polling limits, cancellation, expiry, the job limit and restarts."""

    def test_polling_too_fast(self, built: Path, tmp_path: Path) -> None:
        """A second poll of a running job inside the interval is a 429; a finished one may be re-read."""
        client = make_client(built, tmp_path / "jobs", export_poll_interval=30.0)
        held = JobStore(tmp_path / "jobs").create(
            ExportRequest(), "http://localhost/fhir/$export", "http://localhost/fhir", []
        )
        path = f"/fhir/$export-status/{held['id']}"
        assert client.get(path).status_code == 202
        second = client.get(path)
        assert_error(second, 429, "throttled")
        assert 0 < int(second.headers["Retry-After"]) <= 30
        browser = client.get(path, headers={"Origin": "https://app.example"})  # a browser app may read them
        assert {"X-Progress", "Retry-After"} <= set(
            browser.headers["Access-Control-Expose-Headers"].split(", ")
        )
        done = kick_off(client, "/fhir/Organization/$export")
        time.sleep(0.5)  # the export of 6 resources is done by then; no poll has been made yet
        assert client.get(done).status_code == 200
        assert client.get(done).status_code == 200

    def test_cancel(self, client: FlaskClient) -> None:
        """DELETE cancels: 202, then the status URL and the files are gone (404)."""
        path = kick_off(client)
        manifest = finish(client, path).json
        url = manifest["output"][0]["url"].removeprefix("http://localhost")
        assert client.delete(path).status_code == 202
        assert_error(client.get(path), 404, "not-found")
        assert_error(client.get(url), 404, "not-found")
        assert_error(client.delete(path), 404, "not-found")

    def test_unknown_job_and_file(self, client: FlaskClient) -> None:
        """Unknown ids and file names (including path tricks) are 404s."""
        assert_error(client.get("/fhir/$export-status/nope"), 404, "not-found")
        assert_error(client.get("/fhir/$export-status/not-a-job"), 404, "not-found")
        tricky = client.get("/fhir/$export-status/..%2F..%2Fetc")
        assert tricky.status_code in (404, 405)
        assert tricky.json["resourceType"] == "OperationOutcome"
        path = kick_off(client)
        finish(client, path)
        job = path.rsplit("/", 1)[1]
        for name in ("manifest.json", "job.json", "Organization.ndjson.bak", "Patient.ndjson"):
            assert_error(client.get(f"/fhir/$export-file/{job}/{name}"), 404, "not-found")
        tricky = client.get(f"/fhir/$export-file/{job}/..%2Fjob.json")
        assert tricky.status_code in (404, 405)
        assert tricky.json["resourceType"] == "OperationOutcome"

    def test_expiry(self, built: Path, tmp_path: Path) -> None:
        """After the expiry the files answer 410 and the status URL 404."""
        client = make_client(built, tmp_path / "jobs", export_expiry=60)
        path = kick_off(client, "/fhir/Organization/$export")
        url = finish(client, path).json["output"][0]["url"].removeprefix("http://localhost")
        now = [time.time()]
        client.application.extensions["fhir_pub"].clock = lambda: now[0]  # the app's clock, not a sleep
        now[0] += 59
        with client.get(url) as response:
            assert response.status_code == 200
        now[0] += 2
        assert_error(client.get(url), 410, "expired")
        assert_error(client.get(path), 404, "not-found")
        job = tmp_path / "jobs" / path.rsplit("/", 1)[1]
        assert not (job / "files").exists()
        now[0] += 60  # one more expiry period: the job is forgotten entirely
        assert_error(client.get(url), 404, "not-found")
        assert not job.exists()

    def test_job_limit(self, built: Path, tmp_path: Path) -> None:
        """Beyond the running-job limit the kick-off is a 429 with Retry-After; finished jobs free a slot."""
        jobs = tmp_path / "jobs"
        client = make_client(built, jobs, export_max_jobs=1)
        store = JobStore(jobs)
        held = store.create(ExportRequest(), "http://localhost/fhir/$export", "http://localhost/fhir", [])
        response = client.get("/fhir/$export", headers=ASYNC)
        assert_error(response, 429, "throttled")
        assert int(response.headers["Retry-After"]) > 0
        store.write({**held, "status": "complete", "manifest": {}})
        finish(client, kick_off(client))

    def test_orphaned_job_fails(self, client: FlaskClient) -> None:
        """A job left running by a process that died reports failure (500 with an OperationOutcome)."""
        path = kick_off(client, "/fhir/Organization/$export")
        finish(client, path)
        jobs = JobStore(Path(client.application.extensions["fhir_pub"].settings.jobs_dir))
        job = jobs.read(path.rsplit("/", 1)[1])
        assert job is not None
        dead = 2**22 + 12345  # above the default pid_max, so no process has it
        with pytest.raises(ProcessLookupError):
            os.kill(dead, 0)
        jobs.write({**job, "status": "running", "pid": dead})
        body = assert_error(client.get(path), 500, "exception")
        assert "server stopped" in body["issue"][0]["details"]["text"]

    def test_silent_job_fails_even_if_its_pid_lives(self, client: FlaskClient) -> None:
        """A running job with no heartbeat for 30 s is failed, even if a live process has its pid."""
        path = kick_off(client, "/fhir/Organization/$export")
        finish(client, path)
        root = Path(client.application.extensions["fhir_pub"].settings.jobs_dir)
        jobs, job_id = JobStore(root), path.rsplit("/", 1)[1]
        job = jobs.read(job_id)
        assert job is not None
        jobs.write({**job, "status": "running", "pid": os.getpid()})
        assert client.get(path).status_code == 202  # alive pid, fresh heartbeat: still running
        (root / job_id / "heartbeat").write_text(repr(time.time() - 31))
        body = assert_error(client.get(path), 500, "exception")
        assert "server stopped" in body["issue"][0]["details"]["text"]

    def test_status_is_never_cached(self, client: FlaskClient) -> None:
        """The response cache never answers for the status URL (it changes as the job runs)."""
        path = kick_off(client)
        finish(client, path)
        client.delete(path)
        assert client.get(path).status_code == 404


class TestJobStore:
    """The job store's rules, directly."""

    def test_admission_is_atomic(self, tmp_path: Path) -> None:
        """Many kick-offs at once, one slot: exactly one job is admitted."""
        store = JobStore(tmp_path / "jobs", max_active=1)
        with ThreadPoolExecutor(8) as pool:
            admitted = list(
                pool.map(
                    lambda _: store.admit(ExportRequest(), "u", "b", []),
                    range(16),
                )
            )
        assert sum(a is not None for a in admitted) == 1
        assert store.active() == 1

    def test_other_hosts_jobs_are_judged_by_heartbeat(self, tmp_path: Path) -> None:
        """A pid from another host says nothing: only a silent heartbeat fails that host's job."""
        store = JobStore(tmp_path / "jobs")
        job = store.create(ExportRequest(), "u", "b", [])
        dead = 2**22 + 12345
        store.write({**job, "status": "running", "pid": dead, "host": "elsewhere"})
        store.sweep()
        assert store.read(job["id"])["status"] == "running"  # type: ignore[index]
        store.write({**job, "status": "running", "pid": dead, "host": socket.gethostname()})
        store.sweep()
        assert store.read(job["id"])["status"] == "failed"  # type: ignore[index]

    @pytest.mark.parametrize(
        ("stored", "since", "after"),
        [
            ("2026-11-22T00:00:00.123Z", "2026-11-22T00:00:00Z", True),
            ("2026-11-22T00:00:00Z", "2026-11-22T00:00:00.500Z", False),
            ("2026-11-22T01:00:00+02:00", "2026-11-21T23:30:00Z", False),
            ("2026-11-22T01:00:00-02:00", "2026-11-22T02:30:00Z", True),
        ],
    )
    def test_since_compares_instants(self, stored: str, since: str, after: bool) -> None:
        """``_since`` compares instants, not text (fractions and offsets order correctly)."""
        assert (parse_range(stored).low > micros(parse_instant(since))) is after
