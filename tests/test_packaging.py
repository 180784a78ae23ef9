"""Packaging: the wheel, and the publication's FHIR NPM packages at R4B and R4.

A plain, non-editable install carries the bundled publication and finds it from any directory. ``fhir-pub
package --fhir-version 4.3|4.0`` writes the publication as the server serves it at [base]/R4B and
[base]/R4, each file checked here with that version's own models (fhir.resources' R4B models; SMART
fhirclient's 4.0.1 models, strict); the R5 package's own tests are in test_export.py and
test_snapshots.py.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from conftest import ROOT
from fhir.resources.R4B import get_fhir_model_class as r4b_model
from fhirclient.models.fhirelementfactory import FHIRElementFactory  # type: ignore[import-untyped]

from fhir_pub.cli import main
from fhir_pub.conformance import load_conformance
from fhir_pub.errors import PublicationError
from fhir_pub.handlers import converted_capability
from fhir_pub.package import NAME, invalid, own_conformance, refuse_invalid, write_package
from fhir_pub.publication import Publication
from fhir_pub.store import Store
from fhir_pub.versions import convert


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from the source tree with the project's own build backend."""
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(ROOT),
        ],
        check=True,
    )
    (built,) = out.glob("fhir_pub-*.whl")
    return built


class TestWheel:
    """The wheel is complete and self-sufficient."""

    def test_contains_publication(self, wheel: Path, publication: Publication) -> None:
        """Every resource and profile file is inside the package, plus py.typed."""
        names = set(zipfile.ZipFile(wheel).namelist())
        for entry in publication:
            relative = entry.path.relative_to(publication.root).as_posix()
            assert f"fhir_pub/_bundled/resources/{relative}" in names
        assert "fhir_pub/_bundled/profiles/ValueSet/verified-codes.json" in names
        assert "fhir_pub/py.typed" in names
        assert "fhir_pub/r5-snapshots.json.gz" in names  # the package command's snapshot bases

    def test_installed_cli_finds_publication_from_anywhere(
        self, wheel: Path, tmp_path: Path, publication: Publication
    ) -> None:
        """After ``pip install`` of the wheel, the CLI finds the bundled resources from any folder."""
        site = tmp_path / "site"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--target",
                str(site),
                str(wheel),
            ],
            check=True,
        )
        elsewhere = tmp_path / "elsewhere"
        elsewhere.mkdir()
        env = {**os.environ, "PYTHONPATH": str(site)}
        result = subprocess.run(
            [sys.executable, "-m", "fhir_pub", "info", "--json"],
            cwd=elsewhere,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        summary = json.loads(result.stdout)
        assert Path(summary["root"]).is_relative_to(site)
        assert summary["counts"] == publication.counts()


EARLIER = {
    "4.3": ("R4B", "4.3.0", "hl7.fhir.r4b.core", ".r4b"),
    "4.0": ("R4", "4.0.1", "hl7.fhir.r4.core", ".r4"),
}
XVER = "http://hl7.org/fhir/5.0/StructureDefinition/extension-"


def members(path: Path) -> dict[str, bytes]:
    """Every file of a package tarball by its name in the tarball."""
    with tarfile.open(path) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]


def resources_of(files: dict[str, bytes]) -> dict[str, dict[str, Any]]:
    """The package's resource files (package/*.json but its manifest and index), parsed, by file name."""
    return {
        name: json.loads(data)
        for name, data in files.items()
        if name.endswith(".json")
        and name.count("/") == 1
        and name not in {"package/package.json", "package/.index.json"}
    }


def package(out: Path, *args: str) -> Any:
    """``fhir-pub package --out OUT ARGS`` through the real CLI."""
    return CliRunner().invoke(main, ["package", "--out", str(out), *args])


@pytest.fixture(scope="module")
def packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, bytes]]:
    """The bundled publication's R5, R4B and R4 packages, written by the CLI: each one's files."""
    folder = tmp_path_factory.mktemp("packages")
    out: dict[str, dict[str, bytes]] = {}
    for version in ("5.0", "4.3", "4.0"):
        result = package(folder / f"{version}.tgz", "--fhir-version", version)
        assert result.exit_code == 0, result.output
        out[version] = members(folder / f"{version}.tgz")
    default = package(folder / "default.tgz")
    assert default.exit_code == 0, default.output
    out["default"] = members(folder / "default.tgz")
    return out


def parses(resource: dict[str, Any], version: str) -> None:
    """Raise unless ``resource`` is a resource of that version to its own models (R4: strict)."""
    kind = resource["resourceType"]
    if version == "4.3":
        r4b_model(kind).model_validate(resource)
        return
    parsed = FHIRElementFactory.instantiate(kind, resource)  # strict: unknown elements raise
    assert parsed.resource_type == kind  # fhirclient falls back to a bare element for an unknown type
    assert parsed.as_json() == resource  # and nothing was dropped on the way


@pytest.mark.parametrize("version", ["4.3", "4.0"])
class TestEarlierPackage:
    """``fhir-pub package --fhir-version 4.3|4.0``: that version's package, served forms, no R5 profile."""

    def test_package_json(self, packages: dict[str, dict[str, bytes]], version: str) -> None:
        """Its name carries the version (.r4b, .r4); its fhirVersions and core dependency are its."""
        name, release, core, suffix = EARLIER[version]
        meta = json.loads(packages[version]["package/package.json"])
        r5 = json.loads(packages["5.0"]["package/package.json"])
        assert meta["name"] == f"{NAME}{suffix}" == r5["name"] + suffix
        assert (meta["fhirVersions"], meta["dependencies"]) == ([release], {core: release})
        assert {k: meta[k] for k in ("version", "canonical", "type", "license")} == {
            k: r5[k] for k in ("version", "canonical", "type", "license")
        }
        assert list(meta) == list(r5)  # every field of the R5 package.json, in its order
        assert f"FHIR {name} ({release})" in meta["description"]
        assert "other/README.md" in meta["description"]

    def test_every_file_parses_with_that_versions_models(
        self, packages: dict[str, dict[str, bytes]], version: str
    ) -> None:
        """Each resource file is named Type-id.json and is a valid resource of that version."""
        files = resources_of(packages[version])
        assert len(files) > 150
        for filename, resource in files.items():
            assert filename == f"package/{resource['resourceType']}-{resource['id']}.json"
            parses(resource, version)

    def test_index_lists_every_file(self, packages: dict[str, dict[str, bytes]], version: str) -> None:
        """.index.json: one entry per resource file, its values strings that say what the file holds."""
        files = resources_of(packages[version])
        index = json.loads(packages[version]["package/.index.json"])
        assert index["index-version"] == 2
        entries = {f"package/{entry['filename']}": entry for entry in index["files"]}
        assert len(entries) == len(index["files"])
        assert set(entries) == set(files)
        for name, entry in entries.items():
            assert all(isinstance(value, str) for value in entry.values()), entry
            assert (entry["resourceType"], entry["id"]) == (files[name]["resourceType"], files[name]["id"])
            assert entry.get("url") == files[name].get("url")
        others = set(packages[version]) - set(files) - {"package/package.json", "package/.index.json"}
        assert others == {"package/other/README.md"}  # not a resource: not indexed

    def test_no_r5_profile(self, packages: dict[str, dict[str, bytes]], version: str) -> None:
        """No StructureDefinition, no R5 ImplementationGuide, no profile claim; the README says why."""
        name = EARLIER[version][0]
        files = resources_of(packages[version])
        kinds = {r["resourceType"] for r in files.values()}
        assert not kinds & {"StructureDefinition", "ImplementationGuide"}
        assert not [r for r in files.values() if "profile" in r.get("meta", {})]
        assert all(r.get("fhirVersion") in (None, EARLIER[version][1]) for r in files.values())
        readme = packages[version]["package/other/README.md"].decode()
        for resource in own_conformance(load_conformance()):
            key = f"{resource['resourceType']}/{resource['id']}"
            held = f"package/{resource['resourceType']}-{resource['id']}.json" in files
            assert held != (f"`{key}`: " in readme), key  # each of ours is held, or left out with a reason
        assert "an R5 profile of MedicationKnowledge (fhirVersion 5.0.0" in readme
        assert f"FHIR {name}" in readme

    def test_resources_are_the_served_forms(
        self, packages: dict[str, dict[str, bytes]], version: str, store: Store
    ) -> None:
        """The resources are the bytes the server serves at [base]/R4B or /R4, the CapabilityStatement its."""
        files = packages[version]
        served = {
            f"package/{kind}-{rid}.json": stored.body
            for kind in store.converted_types(version)
            for rid, stored in store.stored_converted(version, kind)
        }
        assert served
        assert {name: files[name] for name in served} == served
        capability = json.loads(files["package/CapabilityStatement-fhir-pub.json"])
        expected = {"id": "fhir-pub", **orjson.loads(converted_capability(store, version, None))}
        assert capability.pop("date")  # the time of each build
        assert expected.pop("date")
        assert capability == expected
        assert capability["fhirVersion"] == EARLIER[version][1]

    def test_search_parameters_are_those_served_there(
        self, packages: dict[str, dict[str, bytes]], version: str
    ) -> None:
        """Each SearchParameter of ours the CapabilityStatement names is in the package, and only those."""
        files = resources_of(packages[version])
        capability = json.loads(packages[version]["package/CapabilityStatement-fhir-pub.json"])
        named = {
            p["definition"]
            for entry in capability["rest"][0]["resource"]
            for p in entry.get("searchParam", [])
            if p.get("definition", "").startswith("http://fhir-pub.org/")
        }
        held = {r["url"]: r for r in files.values() if r["resourceType"] == "SearchParameter"}
        assert set(held) == named
        kinds = {entry["type"] for entry in capability["rest"][0]["resource"]}
        for parameter in held.values():
            assert set(parameter["base"]) <= kinds
            assert parameter["expression"].split(".")[0] in parameter["base"]  # an element of that type
            assert "processingMode" not in parameter
            assert parameter["xpathUsage"] == "normal"

    def test_value_sets_converted(self, packages: dict[str, dict[str, bytes]], version: str) -> None:
        """Our ValueSets, their codes and comments untouched: conversion changes no code."""
        files = resources_of(packages[version])
        for url, resource in load_conformance().by_url.items():
            if resource["resourceType"] == "ValueSet" and url.startswith("http://fhir-pub.org/"):
                held = files[f"package/ValueSet-{resource['id']}.json"]
                assert held == convert(resource, version)
                assert held["compose"] == resource["compose"]


class TestR4Package:
    """What R4 has no place for: the clinical uses are Basic, and everything still reaches them."""

    def test_clinical_uses_as_basic(
        self, packages: dict[str, dict[str, bytes]], publication: Publication
    ) -> None:
        """Every R5 ClinicalUseDefinition is a Basic of the same id; the MedicationKnowledge reaches all."""
        files = resources_of(packages["4.0"])
        kinds = [r["resourceType"] for r in files.values()]
        assert "ClinicalUseDefinition" not in kinds
        uses = {
            entry.resource["id"]
            for entry in publication
            if entry.resource["resourceType"] == "ClinicalUseDefinition"
        }
        assert len(uses) > 50
        basics = {r["id"]: r for r in files.values() if r["resourceType"] == "Basic"}
        assert set(basics) == uses
        for basic in basics.values():
            assert basic["code"]["coding"] == [
                {
                    "system": "http://hl7.org/fhir/fhir-types",
                    "code": "ClinicalUseDefinition",
                    "display": "ClinicalUseDefinition",
                }
            ]
        (knowledge,) = [r for r in files.values() if r["resourceType"] == "MedicationKnowledge"]
        issues = {
            e["valueReference"]["reference"]
            for e in knowledge["extension"]
            if e["url"] == f"{XVER}MedicationKnowledge.clinicalUseIssue"
        }
        assert issues == {f"Basic/{rid}" for rid in uses}
        targets = {
            t["reference"] for r in files.values() if r["resourceType"] == "Provenance" for t in r["target"]
        }
        assert {f"Basic/{rid}" for rid in uses} <= targets
        assert not [t for t in targets if t.startswith("ClinicalUseDefinition/")]

    def test_no_search_parameter_of_ours(self, packages: dict[str, dict[str, bytes]]) -> None:
        """effect-classification reads ClinicalUseDefinition, a Basic in R4: left out, and said."""
        files = resources_of(packages["4.0"])
        assert "SearchParameter" not in {r["resourceType"] for r in files.values()}
        readme = packages["4.0"]["package/other/README.md"].decode()
        assert (
            "`SearchParameter/ClinicalUseDefinition-effect-classification`: its base ClinicalUseDefinition"
            in readme
        )
        r4b = resources_of(packages["4.3"])
        assert "package/SearchParameter-ClinicalUseDefinition-effect-classification.json" in r4b


class TestVersionOption:
    """The R5 package is unchanged; a version not offered, or a resource without a form, writes nothing."""

    def test_r5_unchanged(self, packages: dict[str, dict[str, bytes]]) -> None:
        """``--fhir-version 5.0`` is the default, file for file and byte for byte."""
        assert packages["5.0"] == packages["default"]
        meta = json.loads(packages["5.0"]["package/package.json"])
        assert (meta["name"], meta["fhirVersions"], meta["dependencies"]) == (
            NAME,
            ["5.0.0"],
            {"hl7.fhir.r5.core": "5.0.0"},
        )
        assert "package/other/README.md" not in packages["5.0"]
        assert any(name.startswith("package/StructureDefinition-") for name in packages["5.0"])

    def test_bad_version(self, tmp_path: Path) -> None:
        """A version not offered is a usage error naming the choices; no file appears."""
        result = package(tmp_path / "p.tgz", "--fhir-version", "3.0")
        assert result.exit_code == 2
        assert "Invalid value for '--fhir-version': '3.0' is not one of '5.0', '4.3', '4.0'" in result.output
        assert not (tmp_path / "p.tgz").exists()

    def test_resource_without_a_form_refuses(self, tmp_path: Path, publication: Publication) -> None:
        """An R5-only Group.type (valid with a looser Group profile) has no R4 form: exit 1, old file kept."""
        resources, profiles = tmp_path / "resources", tmp_path / "profiles"
        shutil.copytree(publication.root, resources)
        shutil.copytree(ROOT / "profiles", profiles)
        profile_path = profiles / "StructureDefinition" / "fhir-pub-group.json"
        profile = json.loads(profile_path.read_text(encoding="utf-8"))
        (element,) = [e for e in profile["differential"]["element"] if e["path"] == "Group.type"]
        del element["patternCode"]
        profile_path.write_text(json.dumps(profile), encoding="utf-8")
        (group_path,) = (resources / "Group").glob("*.json")
        group = json.loads(group_path.read_text(encoding="utf-8"))
        group["type"] = "careteam"  # in R5's group-type, not in R4's or R4B's
        group_path.write_text(json.dumps(group), encoding="utf-8")
        out = tmp_path / "p.tgz"
        out.write_bytes(b"an earlier package")
        sources = ("--resources", str(resources), "--profiles", str(profiles))
        for version in ("4.3", "4.0"):
            result = package(out, *sources, "--fhir-version", version)
            assert result.exit_code == 1, result.output
            assert (
                f"Group/{group['id']}: no FHIR {EARLIER[version][0]} form (Group.type 'careteam'"
                in result.output
            )
            assert "nothing was packaged" in result.output
            assert out.read_bytes() == b"an earlier package"
            assert sorted(p.name for p in tmp_path.iterdir()) == ["p.tgz", "profiles", "resources"]
        assert package(out, *sources).exit_code == 0  # valid R5: its R5 package is written

    def test_invalid_at_that_version_refuses(self, publication: Publication) -> None:
        """A resource not of that version (R4 has no ClinicalUseDefinition) refuses the package."""
        use = next(e.resource for e in publication if e.resource["resourceType"] == "ClinicalUseDefinition")
        r4b = convert(use, "4.3")
        assert invalid([r4b], "4.3") == []
        errors = invalid([r4b], "4.0")
        assert errors  # fhirclient reads it as a bare element: each of its elements is "superfluous"
        assert all(e.startswith(f"ClinicalUseDefinition/{use['id']}: ") for e in errors)
        with pytest.raises(
            PublicationError,
            match=rf"{len(errors)} errors at FHIR R4 \(each resource converted.*nothing was packaged",
        ):
            refuse_invalid("4.0", errors)
        refuse_invalid("4.0", [])

    def test_project_name_carries_the_version(self, tmp_path: Path) -> None:
        """A project's package name and description, at R4: ``NAME.r4``, its description then this form's."""
        about = {
            "name": "zeta",
            "version": "0.1.0",
            "canonical": "https://example.org/fhir/zeta",
            "title": "zeta",
            "description": "zeta, published by Example with fhir-pub.",
        }
        write_package(tmp_path / "p.tgz", about=about, fhir_version="4.0")
        meta = json.loads(members(tmp_path / "p.tgz")["package/package.json"])
        assert (meta["name"], meta["version"], meta["canonical"]) == (
            "zeta.r4",
            "0.1.0",
            "https://example.org/fhir/zeta",
        )
        assert meta["description"].startswith(
            "zeta, published by Example with fhir-pub. Its FHIR R4 (4.0.1) form"
        )
