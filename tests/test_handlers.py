"""The transport-free handlers: called without HTTP, they answer as the endpoint does over HTTP."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from flask.testing import FlaskClient

from fhir_pub import handlers
from fhir_pub.errors import Invalid, NotFound, NotSupported
from fhir_pub.settings import Settings
from fhir_pub.store import READ_BATCH, Store
from fhir_pub.web import create_app

BASE = "http://localhost/fhir"


@pytest.fixture(scope="module")
def client(built: Path) -> FlaskClient:
    return create_app(Settings(publication=built, response_cache=0, direct_reads=False)).test_client()


def context(store: Store, *pairs: tuple[str, str], strict: bool = False) -> handlers.Context:
    return handlers.Context(store, BASE, pairs, strict=strict)


def test_no_web_framework_is_imported() -> None:
    """The handlers module runs without Flask or werkzeug: importing it loads neither."""
    code = "import sys, fhir_pub.handlers; print([m for m in ('flask', 'werkzeug') if m in sys.modules])"
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert out.strip() == "[]"


def test_read_answers_the_stored_version(store: Store, client: FlaskClient) -> None:
    answer = handlers.read(context(store), "MedicationKnowledge", "besponsa")
    over_http = client.get("/fhir/MedicationKnowledge/besponsa")
    assert answer.status == 200
    assert answer.body == over_http.data
    assert over_http.headers["ETag"] == f'W/"{answer.version}"'
    assert answer.location == f"{BASE}/MedicationKnowledge/besponsa" == over_http.headers["Content-Location"]
    assert orjson.loads(answer.body)["meta"]["versionId"] == answer.version


def test_read_and_vread_refuse_what_is_not_there(store: Store) -> None:
    with pytest.raises(NotSupported):
        handlers.read(context(store), "Patient", "x")
    with pytest.raises(NotFound):
        handlers.read(context(store), "MedicationKnowledge", "no-such-drug")
    current = handlers.read(context(store), "MedicationKnowledge", "besponsa").version
    assert current is not None
    assert handlers.vread(context(store), "MedicationKnowledge", "besponsa", current).status == 200
    with pytest.raises(NotFound, match="has no version"):
        handlers.vread(context(store), "MedicationKnowledge", "besponsa", f"{current}0")


@pytest.mark.parametrize(
    "query",
    [
        "type=warning&_include=ClinicalUseDefinition:subject",
        "_count=3&_offset=2&_sort=-_lastUpdated",
        "_summary=count",
        "_elements=type&_count=5",
        "effect-classification=serious&_total=none",
        "unknown-parameter=1",
    ],
)
def test_search_answers_as_the_endpoint_does(store: Store, client: FlaskClient, query: str) -> None:
    """The same search as a handler call and over HTTP: the same Bundle, byte for byte."""
    pairs = tuple(tuple(p.split("=", 1)) for p in query.split("&"))
    answer = handlers.search(context(store, *pairs), "ClinicalUseDefinition")  # type: ignore[arg-type]
    assert answer.body == client.get(f"/fhir/ClinicalUseDefinition?{query}").data


def test_search_reads_included_resources(store: Store) -> None:
    pairs = (("type", "indication"), ("_include", "ClinicalUseDefinition:subject"))
    bundle = orjson.loads(handlers.search(context(store, *pairs), "ClinicalUseDefinition").body)
    modes = {(e["search"]["mode"], e["resource"]["resourceType"]) for e in bundle["entry"]}
    assert modes == {("match", "ClinicalUseDefinition"), ("include", "Medication")}


def test_strict_handling_refuses_what_lenient_ignores(store: Store) -> None:
    lenient = orjson.loads(handlers.search(context(store, ("nonsense", "1")), "Group").body)
    assert lenient["entry"][-1]["search"]["mode"] == "outcome"
    with pytest.raises(Invalid):
        handlers.search(context(store, ("nonsense", "1"), strict=True), "Group")


def test_system_search_checks_every_type(store: Store) -> None:
    with pytest.raises(NotSupported):
        handlers.search(context(store, ("_type", "Group,Patient")), None)
    counted = handlers.search(context(store, ("_type", "Group"), ("_summary", "count")), None)
    bundle = orjson.loads(counted.body)
    assert bundle["total"] == store.count(("Group",))


def test_history_of_one_resource(store: Store) -> None:
    bundle = orjson.loads(handlers.history(context(store), "Organization", "pfizer").body)
    assert bundle["type"] == "history"
    assert [e["fullUrl"] for e in bundle["entry"]] == [f"{BASE}/Organization/pfizer"]
    with pytest.raises(NotFound):
        handlers.history(context(store), "Organization", "nobody")


def test_read_many_reads_past_one_batch(store: Store) -> None:
    """More keys than one statement binds: every body is found, and absent keys are left out."""
    keys = [(kind, rid) for kind in sorted(store.types) for rid, _, _ in store.bodies(kind)]
    asked = [*(keys * (READ_BATCH // len(keys) + 2))[: READ_BATCH + 7], ("Group", "absent")]
    found = store.read_many(asked)
    assert set(found) == set(keys)
    for kind, rid in keys:
        stored = store.read(kind, rid)
        assert stored is not None
        assert found[(kind, rid)] == stored.body


def test_validate_without_http(store: Store) -> None:
    from fhir_pub.web.state import AppState

    validator = AppState(Settings(publication=store.path), store).validator()
    asked = handlers.validate_arguments({"resourceType": "Organization", "id": "x", "name": 3})
    outcome = orjson.loads(handlers.validate(context(store), validator, "Organization", asked).body)
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(issue["severity"] == "error" for issue in outcome["issue"])
    with pytest.raises(Invalid, match="not a Group"):
        handlers.validate(context(store), validator, "Group", asked)


def test_export_without_http(store: Store, tmp_path: Path) -> None:
    """Kick-off, status and cancel as handler calls: a real job, its files, its manifest."""
    import time

    from fhir_pub.jobs import JobStore

    jobs = JobStore(tmp_path / "jobs")
    pairs = (("_type", "Organization"),)
    started = handlers.export_kickoff(context(store, *pairs), jobs, None, f"{BASE}/$export", lenient=False)
    assert started.status == 202
    assert started.location is not None
    job_id = started.location.rsplit("/", 1)[1]
    deadline = time.monotonic() + 30
    while (answer := handlers.export_status(jobs, job_id, 0.0)).status == 202:
        assert dict(answer.headers)["X-Progress"]
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert answer.media == "application/json"
    manifest = orjson.loads(answer.body)
    assert [o["type"] for o in manifest["output"]] == ["Organization"]
    with pytest.raises(Invalid, match="_type must name only Group"):
        handlers.export_kickoff(context(store, *pairs), jobs, "Group", f"{BASE}/Group/$export", False)
    assert handlers.export_cancel(jobs, job_id).status == 202
    with pytest.raises(NotFound):
        handlers.export_status(jobs, job_id, 0.0)
