"""The OpenAPI document at /fhir/openapi.json, and schemathesis fuzzing a real server through it."""

from __future__ import annotations

import collections
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from conftest import free_port, start, stop
from flask.testing import FlaskClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis import checks

from fhir_pub.settings import Settings
from fhir_pub.web import create_app

# What no response may show: a traceback, a source file, an install path, a library's version.
LEAKS = re.compile(
    r"Traceback|File \"|\.py\b|site-packages|/work/|/home/|/usr/|werkzeug|granian/\d|Python/\d"
)


@pytest.fixture(scope="module")
def client(built: Path) -> FlaskClient:
    return create_app(Settings(publication=built)).test_client()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, built: Path) -> Iterator[str]:
    """A real ``fhir-pub serve`` on a free port (jobs in a temporary folder)."""
    port = free_port()
    process = start(tmp_path_factory.mktemp("server"), built, port, export_max_jobs="4")
    yield f"http://127.0.0.1:{port}/fhir"
    stop(process)


class TestDocument:
    """The document restates the CapabilityStatement."""

    def test_every_type_and_search_parameter(self, client: FlaskClient) -> None:
        """Each type has its read, search and history paths, and every search parameter it supports."""
        capability = client.get("/fhir/metadata").json
        document = client.get("/fhir/openapi.json").json
        assert document["openapi"] == "3.1.0"
        assert document["servers"] == [{"url": "http://localhost/fhir"}]
        for resource in capability["rest"][0]["resource"]:
            kind = resource["type"]
            for path in (
                f"/{kind}",
                f"/{kind}/{{id}}",
                f"/{kind}/{{id}}/_history/{{vid}}",
                f"/{kind}/_history",
            ):
                assert "get" in document["paths"][path]
            names = {p["name"] for p in document["paths"][f"/{kind}"]["get"]["parameters"]}
            assert {p["name"] for p in resource["searchParam"]} <= names
            assert {"_count", "_sort", "_include", "_elements"} <= names
        assert document["paths"]["/$export"]["get"]["parameters"][0]["name"] == "Prefer"

    def test_base_url_is_the_public_one(self, built: Path) -> None:
        """A configured public base is the server URL clients are told to use."""
        client = create_app(
            Settings(publication=built, base_url="https://fhir.example.org/fhir")
        ).test_client()
        assert client.get("/fhir/openapi.json").json["servers"] == [{"url": "https://fhir.example.org/fhir"}]

    def test_schemathesis_loads_it(self, client: FlaskClient) -> None:
        """The document is valid OpenAPI: schemathesis loads it and finds every operation."""
        schema = schemathesis.openapi.from_dict(client.get("/fhir/openapi.json").json)
        operations = [result.ok() for result in schema.get_all_operations()]
        labels = {operation.label for operation in operations}
        assert {"GET /metadata", "GET /Medication/{id}", "POST /$validate", "GET /$export"} <= labels


def no_leaks(response: schemathesis.Response) -> list[str]:
    """What a response shows that it should not: internals in its body or headers, a versioned banner."""
    found = [f"body: {m.group()}" for m in LEAKS.finditer(response.text)]
    for name, values in response.headers.items():
        banner = name.lower() == "server"
        found += [f"{name}: {v}" for v in values if LEAKS.search(v) or (banner and re.search(r"\d", v))]
    return found


def test_fuzzed_requests_never_fail_the_server(server: str) -> None:
    """Schema-valid and schema-violating requests to every operation: no 5xx, answers as documented, no leaks.

    Checks: no server error, documented status codes and content types, responses matching their schemas,
    invalid input refused with a 4xx, and nothing internal in any body or header.
    """
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    statuses: collections.Counter[int] = collections.Counter()
    failures: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        cases = st.one_of(
            operation.as_strategy(),
            operation.as_strategy(generation_mode=schemathesis.GenerationMode.NEGATIVE),
        )

        @given(case=cases)
        @settings(
            max_examples=40,
            deadline=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def exercise(case: schemathesis.Case) -> None:
            response = case.call(timeout=30)
            statuses[response.status_code] += 1
            problems = no_leaks(response)
            try:
                # Schema-valid values can still be wrong FHIR (a malformed date), so a 4xx for them is fine.
                case.validate_response(response, excluded_checks=[checks.positive_data_acceptance])
            except AssertionError as error:
                problems.append(str(error).splitlines()[0] if str(error) else repr(error))
            except BaseExceptionGroup as error:  # schemathesis reports its findings as a group
                problems.append(" ".join(str(error).split())[:400])
            if problems:
                failures.append(f"{case.as_curl_command()} -> {response.status_code}: {problems}")

        exercise()
    print(f"schemathesis: {sum(statuses.values())} requests, statuses {dict(sorted(statuses.items()))}")
    assert not failures, "\n".join(failures[:20])
    assert sum(statuses.values()) > 1000
    assert not [code for code in statuses if code >= 500]
    assert {200, 400, 404} <= set(statuses)
