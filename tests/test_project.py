"""Publication projects: ``fhir-pub init``, the project of the current folder, and messages about codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner, Result
from conftest import ROOT, free_port, stop

from fhir_pub.cli import main
from fhir_pub.narrative import with_narrative
from fhir_pub.project import find_project
from fhir_pub.publication import Publication

PROFILE = "http://fhir-pub.org/fhir/StructureDefinition/fhir-pub-"
NDC = "http://hl7.org/fhir/sid/ndc"
SYNTHETIC_NDC = "99999-0001-01"  # a product code no real product has: the project verifies it itself
COMMENTS = "http://hl7.org/fhir/StructureDefinition/valueset-concept-comments"
BUNDLED_LINE = "fhir-pub: the bundled publication (Besponsa; no fhir-pub.toml here or above)\n"


def _meta(profile: str) -> dict[str, Any]:
    return {"versionId": "1", "lastUpdated": "2026-01-01T00:00:00Z", "profile": [PROFILE + profile]}


def _ref(key: str, display: str) -> dict[str, str]:
    return {"reference": key, "display": display}


ACME = _ref("Organization/acme", "Acme Synthetic Pharma")
LEAFLET = _ref("DocumentReference/acme-zetamab-leaflet", "Zetamab patient leaflet (synthetic)")
DRUG = _ref("MedicationKnowledge/zetamab", "Zetamab (synthetic)")
VIAL = _ref("Medication/zetamab-vial", "Zetamab (synthetic) vial")
USE = _ref("ClinicalUseDefinition/indication-zetamab", "Indication: a synthetic condition")


def synthetic_drug() -> list[dict[str, Any]]:
    """A small synthetic drug the bundled profiles accept; its product code is one only a project verifies."""
    product = {"system": NDC, "code": SYNTHETIC_NDC, "display": "ZETAMAB (synthetic) injection"}
    education = {
        "coding": [{"system": "http://loinc.org", "code": "34895-3", "display": "Education note"}],
        "text": "Patient education leaflet",
    }
    active = {"system": "http://hl7.org/fhir/publication-status", "code": "active", "display": "Active"}
    us = {"system": "urn:iso:std:iso:3166", "code": "US", "display": "United States of America"}
    attachment = {"contentType": "text/html", "language": "en", "url": "https://example.org/zetamab.html"}
    resources: list[dict[str, Any]] = [
        {
            "resourceType": "Organization",
            "id": "acme",
            "meta": _meta("organization"),
            "active": True,
            "name": ACME["display"],
            "description": "A synthetic maker of a synthetic drug, for tests.",
        },
        {
            "resourceType": "DocumentReference",
            "id": "acme-zetamab-leaflet",
            "meta": _meta("documentreference"),
            "status": "current",
            "docStatus": "final",
            "type": education,
            "category": [{"text": "Patient drug information"}],
            "subject": DRUG,
            "date": "2026-01-01T00:00:00Z",
            "author": [ACME],
            "custodian": ACME,
            "description": "A synthetic leaflet on zetamab.",
            "content": [{"attachment": {**attachment, "title": LEAFLET["display"]}}],
        },
        {
            "resourceType": "Medication",
            "id": "zetamab-vial",
            "meta": _meta("medication"),
            "code": {"coding": [product], "text": VIAL["display"]},
            "status": "active",
        },
        {
            "resourceType": "ClinicalUseDefinition",
            "id": "indication-zetamab",
            "meta": _meta("clinical-use-indication"),
            "type": "indication",
            "subject": [VIAL],
            "status": {"coding": [active], "text": "Active"},
            "indication": {"diseaseSymptomProcedure": {"concept": {"text": "A synthetic condition (Acme)"}}},
        },
        {
            "resourceType": "MedicationKnowledge",
            "id": "zetamab",
            "meta": _meta("medicationknowledge"),
            "code": {"coding": [product], "text": DRUG["display"]},
            "status": "active",
            "author": ACME,
            "intendedJurisdiction": [{"coding": [us], "text": "United States"}],
            "name": ["Zetamab"],
            "associatedMedication": [VIAL],
            "monograph": [{"type": education, "source": LEAFLET}],
            "clinicalUseIssue": [USE],
            "indicationGuideline": [{"indication": [{"reference": USE}]}],
            "medicineClassification": [
                {"type": {"text": "Class of medicine"}, "classification": [{"text": "Synthetic antibody"}]}
            ],
            "definitional": {"doseForm": {"text": "Injection"}, "intendedRoute": [{"text": "Into a vein"}]},
        },
    ]
    for target in (DRUG, VIAL, USE):
        resources.append(
            {
                "resourceType": "Provenance",
                "id": f"{target['reference'].split('/')[1]}-acme",
                "meta": _meta("provenance"),
                "target": [target],
                "recorded": "2026-01-01T00:00:00Z",
                "activity": {"text": "Facts taken from a synthetic leaflet"},
                "agent": [{"type": {"text": "Author"}, "who": ACME}],
                "entity": [{"role": "source", "what": LEAFLET}],
            }
        )
    return resources


def write_resources(root: Path, resources: list[dict[str, Any]]) -> None:
    """Write each resource, its narrative generated, at ``root/<Type>/<id>.json``."""
    for resource in resources:
        path = root / resource["resourceType"] / f"{resource['id']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(with_narrative(resource), indent=2) + "\n", encoding="utf-8")


def verify(project: Path, source: str | None = "Synthetic: the test that made it up") -> None:
    """Add the synthetic product code to the project's verified codes (with ``source``, unless None)."""
    path = project / "verified-codes.json"
    codes = json.loads(path.read_text(encoding="utf-8"))
    concept: dict[str, Any] = {"code": SYNTHETIC_NDC, "display": "ZETAMAB (synthetic) injection"}
    if source is not None:
        concept["extension"] = [{"url": COMMENTS, "valueString": source}]
    codes["compose"]["include"].append({"system": NDC, "concept": [concept]})
    path.write_text(json.dumps(codes, indent=2), encoding="utf-8")


def run(*args: str) -> Result:
    """Invoke ``fhir-pub`` in the current folder, keeping stdout and stderr apart."""
    return CliRunner().invoke(main, list(args))


def init(folder: Path, *options: str) -> Path:
    result = run("init", str(folder), *options)
    assert result.exit_code == 0, result.output
    return folder


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project holding the synthetic drug and its verified code; the current folder is inside it."""
    root = init(tmp_path / "zeta", "--name", "zeta")
    write_resources(root / "resources", synthetic_drug())
    verify(root)
    monkeypatch.chdir(root / "resources")  # below the project file: found by looking up
    return root


def line_of(root: Path) -> str:
    return f'fhir-pub: project "zeta" ({root.resolve()})\n'


class TestInit:
    """``fhir-pub init DIR`` lays out a project, and refuses a folder that holds anything."""

    def test_layout(self, tmp_path: Path) -> None:
        """The project file (read back with tomllib), an empty resources/, the codes file and a README."""
        root = init(tmp_path / "new", "--name", "my-drugs", "--publisher", "Acme", "--version", "1.0.0")
        assert sorted(p.name for p in root.iterdir()) == [
            ".gitignore",
            "README.md",
            "facts",
            "fhir-pub.toml",
            "resources",
            "verified-codes.json",
        ]
        with (root / "fhir-pub.toml").open("rb") as handle:
            settings = tomllib.load(handle)
        assert settings == {
            "name": "my-drugs",
            "canonical": "https://example.org/fhir/my-drugs",
            "publisher": "Acme",
            "version": "1.0.0",
        }
        assert list((root / "resources").iterdir()) == []
        assert list((root / "facts").iterdir()) == []
        codes = json.loads((root / "verified-codes.json").read_text(encoding="utf-8"))
        assert (codes["resourceType"], codes["compose"]) == ("ValueSet", {"include": []})
        readme = (root / "README.md").read_text(encoding="utf-8")
        assert "verified-codes.json" in readme
        assert "resources/" in readme

    def test_refuses_a_folder_that_is_not_empty(self, tmp_path: Path) -> None:
        """A folder holding a file: a clear error, exit 1, and nothing written into it."""
        folder = tmp_path / "busy"
        folder.mkdir()
        (folder / "notes.txt").write_text("mine\n", encoding="utf-8")
        result = run("init", str(folder))
        assert result.exit_code == 1
        assert f"{folder} exists and is not empty" in result.stderr
        assert [p.name for p in folder.iterdir()] == ["notes.txt"]

    def test_an_empty_folder_is_fine(self, tmp_path: Path) -> None:
        """An existing empty folder becomes a project named after it."""
        (tmp_path / "empty").mkdir()
        init(tmp_path / "empty")
        assert find_project(tmp_path / "empty" / "resources") is not None


class TestProject:
    """Inside a project, every command reads the project's own files, and says so."""

    def test_validate_build_info(self, project: Path) -> None:
        """The synthetic drug validates, builds into the project, and info counts it, not Besponsa."""
        checked = run("validate")
        assert checked.exit_code == 0, checked.output
        assert checked.stderr == line_of(project)
        assert "8 resources checked: 0 errors, 0 warnings" in checked.stdout

        built = run("build")
        assert built.exit_code == 0, built.output
        assert built.stderr == line_of(project)
        artifact = project / "build" / "publication.sqlite"
        assert artifact.is_file()
        assert f"built {artifact}" in built.stdout

        info = run("info", "--json")
        assert info.exit_code == 0, info.output
        assert info.stderr == line_of(project)
        summary = json.loads(info.stdout)
        assert summary["root"] == str(project / "resources")
        assert summary["total"] == 8
        assert summary["counts"] == {
            "ClinicalUseDefinition": 1,
            "DocumentReference": 1,
            "Medication": 1,
            "MedicationKnowledge": 1,
            "Organization": 1,
            "Provenance": 3,
        }

    def test_edits_are_seen(self, project: Path) -> None:
        """A change in the project's files is what the commands read: no copy elsewhere stands in for it."""
        path = project / "resources" / "Organization" / "acme.json"
        resource = json.loads(path.read_text(encoding="utf-8"))
        resource["name"] = "Acme Renamed Pharma"
        path.write_text(json.dumps(resource, indent=2), encoding="utf-8")
        stale = run("narrative")
        assert stale.exit_code == 1
        assert "stale narrative: Organization/acme" in stale.stderr
        assert stale.stderr.startswith(line_of(project))
        assert run("narrative", "--write").stdout == "rewrote Organization/acme\n"
        assert "Acme Renamed Pharma" in json.loads(path.read_text(encoding="utf-8"))["text"]["div"]
        assert run("narrative").exit_code == 0

    def test_unverified_code_named_once(self, project: Path) -> None:
        """Without the project's verified code, each Coding using it is one error naming code and system."""
        codes = json.loads((project / "verified-codes.json").read_text(encoding="utf-8"))
        codes["compose"]["include"] = []
        (project / "verified-codes.json").write_text(json.dumps(codes), encoding="utf-8")
        result = run("validate")
        assert result.exit_code == 1
        message = (
            f"code '{SYNTHETIC_NDC}' (system {NDC}) is not a verified code; if it is right, add it to "
            "verified-codes.json of your project with its display and source"
        )
        # Two Codings use it (the drug's and the product's): one message each, never two for one.
        assert result.stdout.count(message) == 2
        assert result.stdout.count(SYNTHETIC_NDC) == 2
        assert "2 errors," in result.stdout

    def test_a_verified_code_needs_its_source(self, project: Path) -> None:
        """A code in verified-codes.json without the source that verified it is refused by name."""
        codes = json.loads((project / "verified-codes.json").read_text(encoding="utf-8"))
        codes["compose"]["include"] = []
        (project / "verified-codes.json").write_text(json.dumps(codes), encoding="utf-8")
        verify(project, source=None)
        result = run("validate")
        assert result.exit_code == 1
        assert f"({NDC} {SYNTHETIC_NDC}) needs the source that verified it" in result.stderr

    def test_project_option_from_elsewhere(self, project: Path, tmp_path: Path, monkeypatch: Any) -> None:
        """``--project DIR`` reads that project wherever the command runs."""
        monkeypatch.chdir(tmp_path)
        result = run("info", "--json", "--project", str(project))
        assert result.exit_code == 0, result.output
        assert result.stderr == line_of(project)
        assert json.loads(result.stdout)["total"] == 8

    def test_explicit_resources_win(self, project: Path, publication: Publication) -> None:
        """``--resources DIR`` inside a project reads that folder, and the line says so."""
        result = run("info", "--json", "--resources", str(publication.root))
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["total"] == len(publication)
        assert result.stderr.startswith(f"fhir-pub: resources in {publication.root}, with the bundled")

    def test_export_and_package(self, project: Path, tmp_path: Path) -> None:
        """Export reads the project's build; the package is the project's, named as its fhir-pub.toml says."""
        refused = run("export", "--out", str(tmp_path / "ndjson"))
        assert refused.exit_code == 1
        assert "run fhir-pub build first" in refused.stderr
        assert run("build").exit_code == 0
        exported = run("export", "--out", str(tmp_path / "ndjson"), "--type", "MedicationKnowledge")
        assert exported.exit_code == 0, exported.output
        (line,) = (
            (tmp_path / "ndjson" / "MedicationKnowledge.ndjson").read_text(encoding="utf-8").splitlines()
        )
        assert json.loads(line)["id"] == "zetamab"
        packaged = run("package", "--out", str(tmp_path / "p.tgz"))
        assert packaged.exit_code == 0, packaged.output
        assert packaged.stderr == line_of(project)
        with tarfile.open(tmp_path / "p.tgz") as tar:
            handle = tar.extractfile("package/package.json")
            assert handle is not None
            about = json.loads(handle.read())
        assert (about["name"], about["version"]) == ("zeta", "0.1.0")
        assert about["canonical"] == "https://example.org/fhir/zeta"

    def test_a_build_older_than_its_sources_is_said(self, project: Path, tmp_path: Path) -> None:
        """Export (as serve) answers from the last build and says on stderr when the sources changed since."""
        assert run("build").exit_code == 0
        fresh = run("export", "--out", str(tmp_path / "a"), "--type", "Organization")
        assert fresh.exit_code == 0, fresh.output
        assert "older than the project's sources" not in fresh.stderr
        (path,) = (project / "resources" / "Organization").glob("*.json")
        organization = json.loads(path.read_text(encoding="utf-8"))
        organization["name"] += " (renamed)"
        path.write_text(json.dumps(organization), encoding="utf-8")
        stale = run("export", "--out", str(tmp_path / "b"), "--type", "Organization")
        assert stale.exit_code == 0, stale.output
        assert "older than the project's sources" in stale.stderr
        assert "run fhir-pub build" in stale.stderr
        assert run("build").exit_code == 0
        assert (
            "older than" not in run("export", "--out", str(tmp_path / "c"), "--type", "Organization").stderr
        )

    def test_serve_needs_a_build(self, project: Path) -> None:
        """``serve`` in a project that was never built refuses, saying to build first."""
        result = run("serve", "--port", str(free_port()))
        assert result.exit_code == 1
        assert "run fhir-pub build first" in result.stderr
        assert f"{project / 'build' / 'publication.sqlite'}" in result.stderr

    def test_console_script_finds_the_project_and_serves_it(self, project: Path, tmp_path: Path) -> None:
        """The installed ``fhir-pub`` run in a project folder builds and serves that project's drug."""
        script = shutil.which("fhir-pub", path=str(Path(sys.executable).parent)) or "fhir-pub"
        env = {**os.environ, "FHIR_PUB_JOBS_DIR": str(tmp_path / "jobs")}
        cwd = project / "resources" / "Medication"
        built = subprocess.run(
            [script, "build"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
        )
        assert built.returncode == 0, built.stderr
        assert built.stderr == line_of(project)
        port = free_port()
        log = (tmp_path / "serve.log").open("wb")
        server = subprocess.Popen(
            [script, "serve", "--port", str(port), "--workers", "1"],
            cwd=cwd,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            answer = _get_when_up(f"http://127.0.0.1:{port}/fhir/MedicationKnowledge/zetamab", server)
            assert answer.json()["code"]["coding"][0]["code"] == SYNTHETIC_NDC
            missing = requests.get(f"http://127.0.0.1:{port}/fhir/MedicationKnowledge/besponsa", timeout=5)
            assert missing.status_code == 404
            codes = requests.get(f"http://127.0.0.1:{port}/fhir/ValueSet/verified-codes", timeout=5).json()
            (ndc,) = [i for i in codes["compose"]["include"] if i["system"] == NDC]
            assert SYNTHETIC_NDC in [c["code"] for c in ndc["concept"]]
            assert SYNTHETIC_NDC in codes["text"]["div"]
        finally:
            stop(server)
            log.close()
        output = (tmp_path / "serve.log").read_text(encoding="utf-8")
        assert line_of(project) in output


def _get_when_up(url: str, server: subprocess.Popen[bytes]) -> requests.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return requests.get(url, timeout=5)
        except requests.ConnectionError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class TestNoProject:
    """Outside any project the bundled publication is read, and the line says so."""

    def test_bundled_said_so(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, publication: Publication
    ) -> None:
        """`info` in a folder with no fhir-pub.toml above: the bundled counts, and the bundled line."""
        monkeypatch.chdir(tmp_path)
        result = run("info", "--json")
        assert result.exit_code == 0, result.output
        assert result.stderr == BUNDLED_LINE
        assert json.loads(result.stdout)["counts"] == publication.counts()

    def test_console_script_outside_a_project(self, tmp_path: Path) -> None:
        """The installed ``fhir-pub`` in an empty folder validates the bundled publication and says so."""
        script = shutil.which("fhir-pub", path=str(Path(sys.executable).parent)) or "fhir-pub"
        result = subprocess.run(
            [script, "validate"], cwd=tmp_path, capture_output=True, text=True, timeout=180
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == BUNDLED_LINE

    def test_the_checkout_is_not_a_project(self) -> None:
        """The repository has no fhir-pub.toml: serve in a checkout serves the bundled publication."""
        assert not (ROOT / "fhir-pub.toml").exists()


class TestUnverifiedBundledCode:
    """A new code on the bundled product is reported once, naming the code, its system and the remedy."""

    def test_named_once(self, publication: Publication, tmp_path: Path) -> None:
        """A new NDC on the bundled product: one error, with the code, the system and how to add it."""
        resources = tmp_path / "resources"
        shutil.copytree(publication.root, resources)
        path = resources / "Medication" / "besponsa-vial.json"
        resource = json.loads(path.read_text(encoding="utf-8"))
        resource["code"]["coding"][0]["code"] = "0008-0100-99"
        path.write_text(json.dumps(resource), encoding="utf-8")
        result = run("validate", str(resources))
        assert result.exit_code == 1
        assert result.stdout.count("'0008-0100-99'") == 1
        assert f"'0008-0100-99' (system {NDC}) is not a verified code" in result.stdout
        assert "1 error," in result.stdout
