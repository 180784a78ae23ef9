"""Shared fixtures and helpers: the bundled publication (sources, models, one build) and real servers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from fhir_core.fhirabstractmodel import FHIRAbstractModel

from fhir_pub.build import build
from fhir_pub.conformance import load_conformance
from fhir_pub.model import parse
from fhir_pub.publication import Publication, bundled_dir, load
from fhir_pub.store import Store


@pytest.fixture(scope="session")
def publication() -> Publication:
    """The bundled publication, as the CLI finds it."""
    return load()


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bundled publication built once for the whole run, made read-only: no test may change it."""
    path = build(tmp_path_factory.mktemp("built") / "p.sqlite").path
    path.chmod(0o444)
    return path


@pytest.fixture(scope="session")
def store(built: Path) -> Store:
    """The built publication, read as the server reads it."""
    return Store(built)


@pytest.fixture(scope="session")
def served(publication: Publication) -> dict[str, dict[str, Any]]:
    """Every resource the server serves, by ``Type/id``: the publication's, then the conformance ones.

    The StructureDefinitions, ValueSets, SearchParameters and ImplementationGuide in profiles/ are
    served beside the resources in resources/ (read, search, history and export alike).
    """
    out = {entry.key: entry.resource for entry in publication}
    for resource in load_conformance().by_url.values():
        out[f"{resource['resourceType']}/{resource['id']}"] = resource
    return out


def counts(resources: Mapping[str, Mapping[str, Any]]) -> dict[str, int]:
    """How many of ``resources`` (keyed ``Type/id``) there are of each type."""
    out: dict[str, int] = {}
    for key in resources:
        kind = key.split("/", 1)[0]
        out[kind] = out.get(kind, 0) + 1
    return out


@pytest.fixture(scope="session")
def models(publication: Publication) -> dict[str, FHIRAbstractModel]:
    """Every resource of the publication parsed with fhir.resources (R5), keyed by ``Type/id``."""
    return {entry.key: parse(entry.resource) for entry in publication}


@pytest.fixture(scope="session")
def value_sets() -> dict[str, dict[str, Any]]:
    """The R5 value sets in profiles/ValueSet, keyed by canonical URL."""
    folder = bundled_dir("profiles") / "ValueSet"
    sets = (json.loads(p.read_text(encoding="utf-8")) for p in sorted(folder.glob("*.json")))
    return {vs["url"]: vs for vs in sets}


def source_sets(publication: Publication) -> dict[str, set[str]]:
    """Map each ``Type/id`` to the DocumentReference ids its Provenance names as role=source."""
    out: dict[str, set[str]] = {}
    for provenance in publication.of_type("Provenance"):
        sources = {e["what"]["reference"] for e in provenance.get("entity", []) if e.get("role") == "source"}
        for target in provenance["target"]:
            out.setdefault(target["reference"], set()).update(sources)
    return out


ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Element:
    """One populated element of a parsed resource.

    ``path`` is a FHIRPath-style location (``ClinicalUseDefinition.subject[0]``); ``meta`` is the
    element's R5 metadata as fhir.resources generated it (``enum_values`` for required codes,
    ``enum_reference_types`` for references).
    """

    path: str
    value: Any
    meta: Mapping[str, Any]


def walk(model: FHIRAbstractModel, path: str | None = None) -> Iterator[Element]:
    """Yield every populated element below ``model``, depth first, in model field order."""
    base = path if path is not None else model.get_resource_type()
    for name, info in type(model).model_fields.items():
        value = getattr(model, name, None)
        if value is None or name in {"fhir_comments"}:
            continue
        meta: Mapping[str, Any] = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        items = value if isinstance(value, list) else [value]
        for index, item in enumerate(items):
            item_path = f"{base}.{name}[{index}]" if isinstance(value, list) else f"{base}.{name}"
            yield Element(item_path, item, meta)
            if isinstance(item, FHIRAbstractModel):
                yield from walk(item, item_path)


def bundled_count(kind: str) -> int:
    """How many resources of one type the bundled publication holds (its files, so tests follow the data)."""
    return len(list((ROOT / "resources" / kind).glob("*.json")))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start(
    folder: Path, publication: Path, port: int, workers: int = 1, **settings: str
) -> subprocess.Popen[bytes]:
    """Start ``fhir-pub serve`` (jobs in ``folder/jobs``) and wait until it answers ``/healthz``."""
    log = folder / f"server-{port}-{time.monotonic_ns()}.log"
    env = {**os.environ, "FHIR_PUB_JOBS_DIR": str(folder / "jobs"), "FHIR_PUB_EXPORT_POLL_INTERVAL": "0.1"}
    env.update({f"FHIR_PUB_{name.upper()}": value for name, value in settings.items()})
    command = [sys.executable, "-m", "fhir_pub", "serve", "--port", str(port), "--workers", str(workers)]
    with log.open("wb") as output:
        process = subprocess.Popen(
            [*command, "--publication", str(publication)],
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # its own process group, so a test can kill it with its workers
        )
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200:
                return process
        except requests.RequestException:  # not listening yet, or too busy starting to answer
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"server did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, and fail if the server does not stop; nothing of its process group outlives the test."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        kill_group(process)
        pytest.fail("server did not stop on SIGTERM")
    kill_group(process)  # a granian worker left behind (seen once on a loaded machine) is reaped too


def kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL whatever is left of the server's process group (``start`` gives it a group of its own)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
