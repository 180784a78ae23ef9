"""Offline bulk export (NDJSON + manifest) and the FHIR NPM package."""

from __future__ import annotations

import gzip
import json
import shutil
import sqlite3
import tarfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner
from conftest import bundled_count, counts
from fhir.resources import get_fhir_model_class

from fhir_pub.build import build, write_ndjson
from fhir_pub.cli import main
from fhir_pub.conformance import CANONICAL_BASE, Conformance, load_conformance
from fhir_pub.errors import Invalid
from fhir_pub.export import ExportRequest, export
from fhir_pub.publication import Publication
from fhir_pub.store import Store
from fhir_pub.validation import Validator, candidate_from_bytes

R5_CANONICAL = "http://hl7.org/fhir/"


def lines(path: Path) -> list[dict[str, object]]:
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    assert raw.endswith(b"\n")
    return [orjson.loads(line) for line in raw.splitlines()]


class TestExport:
    """One NDJSON file per type; each line one resource of that type; counts exact."""

    def test_everything(self, store: Store, served: dict[str, dict[str, Any]], tmp_path: Path) -> None:
        """Every resource once, in the file of its type, byte for byte as published."""
        result = export(store, ExportRequest(), tmp_path / "out")
        assert {kind: count for kind, _, count in result.files} == counts(served)
        for kind, name, count in result.files:
            found = lines(tmp_path / "out" / name)
            assert len(found) == count
            assert {r["resourceType"] for r in found} == {kind}
            assert found == [r for k, r in sorted(served.items()) if k.startswith(f"{kind}/")]

    def test_filters(self, store: Store, tmp_path: Path) -> None:
        """_type, _typeFilter (ORed, through search), _elements (SUBSETTED) and gzip."""
        request = ExportRequest(
            types=("ClinicalUseDefinition", "Organization"),
            type_filters=("ClinicalUseDefinition?type=interaction", "ClinicalUseDefinition?_id=effect-rash"),
            elements=("type",),
            gzip=True,
        )
        result = export(store, request, tmp_path / "out")
        assert [(kind, count) for kind, _, count in result.files] == [
            ("ClinicalUseDefinition", 2),
            ("Organization", bundled_count("Organization")),
        ]
        found = lines(tmp_path / "out" / "ClinicalUseDefinition.ndjson.gz")
        assert {r["id"] for r in found} == {"interaction-qt-prolonging-medicines", "effect-rash"}
        assert all("warning" not in r and "undesirableEffect" not in r for r in found)
        assert all(any(t["code"] == "SUBSETTED" for t in r["meta"]["tag"]) for r in found)  # type: ignore[index]

    def test_since(self, store: Store, tmp_path: Path, served: dict[str, dict[str, Any]]) -> None:
        """_since keeps only resources changed after the instant."""
        later = export(store, ExportRequest(since=datetime(2026, 11, 23, tzinfo=UTC)), tmp_path / "a")
        changed = [k for k, r in served.items() if r["meta"]["lastUpdated"] > "2026-11-23"]
        assert {kind: count for kind, _, count in later.files} == counts(dict.fromkeys(changed))
        assert 0 < len(changed) < len(served)  # the instant really splits the publication
        newest = max(datetime.fromisoformat(r["meta"]["lastUpdated"]) for r in served.values())
        none = export(store, ExportRequest(since=newest), tmp_path / "c")
        assert none.files == []
        assert len(
            export(store, ExportRequest(since=datetime(2026, 11, 21, tzinfo=UTC)), tmp_path / "b").files
        ) == len(counts(served))

    @pytest.mark.parametrize(
        "request_",
        [
            ExportRequest(types=("Patient",)),
            ExportRequest(type_filters=("Patient?name=x",)),
            ExportRequest(type_filters=("ClinicalUseDefinition?bogus=1",)),
        ],
    )
    def test_invalid(self, store: Store, tmp_path: Path, request_: ExportRequest) -> None:
        """Unknown types and unsupported filter parameters are errors, and nothing is written."""
        with pytest.raises(Invalid):
            export(store, request_, tmp_path / "out")
        assert list(tmp_path.iterdir()) == []

    def test_never_overwrites(self, store: Store, tmp_path: Path) -> None:
        """An export writes a new folder; an existing one is refused."""
        (tmp_path / "out").mkdir()
        with pytest.raises(Invalid):
            export(store, ExportRequest(), tmp_path / "out")

    def test_cli(self, tmp_path: Path, publication: Publication) -> None:
        """fhir-pub export writes the files and the manifest together."""
        out = tmp_path / "out"
        result = CliRunner().invoke(
            main, ["export", "--out", str(out), "--type", "Group,Organization", "--gzip"]
        )
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        assert manifest["requiresAccessToken"] is False
        assert manifest["error"] == []
        # https://hl7.org/fhir/uv/bulkdata/export.html: output[].url is the absolute path to the file
        assert manifest["output"] == [
            {"type": "Group", "url": (out / "Group.ndjson.gz").resolve().as_uri(), "count": 1},
            {
                "type": "Organization",
                "url": (out / "Organization.ndjson.gz").resolve().as_uri(),
                "count": bundled_count("Organization"),
            },
        ]
        assert "_type=Group%2COrganization" in manifest["request"]
        bad = CliRunner().invoke(main, ["export", "--out", str(tmp_path / "x"), "--since", "yesterday"])
        assert bad.exit_code != 0

    def test_cli_base_url(self, tmp_path: Path) -> None:
        """With --base-url, the manifest gives each file's URL under it (files to be served from there)."""
        out = tmp_path / "out"
        args = ["export", "--out", str(out), "--type", "Group", "--base-url", "https://cdn.example.org/bulk/"]
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 0, result.output
        manifest = json.loads((out / "manifest.json").read_text(encoding="utf-8"))
        assert [o["url"] for o in manifest["output"]] == ["https://cdn.example.org/bulk/Group.ndjson"]
        for bad in ("cdn.example.org/bulk", "/bulk", "ftp://cdn.example.org/bulk"):
            refused = CliRunner().invoke(main, ["export", "--out", str(tmp_path / "x"), "--base-url", bad])
            assert refused.exit_code == 2, bad
            assert not (tmp_path / "x").exists()
        static = CliRunner().invoke(
            main, ["export", "--static", str(tmp_path / "s"), "--base-url", "https://cdn.example.org/"]
        )
        assert static.exit_code == 2


class TestPackage:
    """The FHIR NPM package unpacks, indexes every file, and validates against its own profiles."""

    def test_package(self, tmp_path: Path, publication: Publication) -> None:
        """package.json, .index.json, and every resource parses (R5) and the publication validates clean."""
        out = tmp_path / "pub.tgz"
        result = CliRunner().invoke(main, ["package", "--out", str(out)])
        assert result.exit_code == 0, result.output
        with tarfile.open(out) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}  # type: ignore[union-attr]
        meta = json.loads(members.pop("package/package.json"))
        assert (meta["fhirVersions"], meta["dependencies"]) == (["5.0.0"], {"hl7.fhir.r5.core": "5.0.0"})
        index = json.loads(members.pop("package/.index.json"))
        assert sorted(f"package/{f['filename']}" for f in index["files"]) == sorted(members)
        resources = [json.loads(data) for data in members.values()]
        for resource in resources:
            get_fhir_model_class(resource["resourceType"]).model_validate(resource)
        # HL7's own definitions come from the dependency hl7.fhir.r5.core, not redefined here
        canonical = [r for r in resources if "url" in r and r["resourceType"] != "Organization"]
        assert all(r["url"].startswith(f"{CANONICAL_BASE}/") for r in canonical)
        (guide,) = [r for r in resources if r["resourceType"] == "ImplementationGuide"]
        held = {f"{r['resourceType']}/{r['id']}" for r in resources}
        assert {r["reference"]["reference"] for r in guide["definition"]["resource"]} <= held
        profiles = {r["url"]: r for r in canonical}
        profiles |= {url: r for url, r in load_conformance().by_url.items() if url.startswith(R5_CANONICAL)}
        instances = [
            r
            for r in resources
            if r["resourceType"]
            not in {"StructureDefinition", "ValueSet", "SearchParameter", "ImplementationGuide"}
        ]
        assert len(instances) == len(publication)
        report = Validator(Conformance(out, profiles)).validate(
            [candidate_from_bytes(orjson.dumps(r), r["id"]) for r in instances]
        )
        assert [i.message for i in report.issues] == []

    def test_index_per_the_package_spec(self, tmp_path: Path) -> None:
        """.index.json per https://hl7.org/fhir/packages.html: string values, derivation, kind, type."""
        out = tmp_path / "pub.tgz"
        assert CliRunner().invoke(main, ["package", "--out", str(out)]).exit_code == 0
        with tarfile.open(out) as tar:
            index = json.load(tar.extractfile("package/.index.json"))  # type: ignore[arg-type]
        files = index["files"]
        assert index["index-version"] == 2
        assert all(isinstance(value, str) for entry in files for value in entry.values())
        assert all({"filename", "resourceType", "id"} <= set(entry) for entry in files)
        definitions = [entry for entry in files if entry["resourceType"] == "StructureDefinition"]
        assert definitions
        for entry in definitions:
            assert {"url", "version", "kind", "type", "derivation"} <= set(entry), entry
        organization = next(e for e in definitions if e["id"] == "fhir-pub-organization")
        assert (organization["type"], organization["derivation"]) == ("Organization", "constraint")
        documents = [entry for entry in files if entry["resourceType"] == "DocumentReference"]
        assert documents  # their type is a CodeableConcept, not a string: left out, not replaced
        assert not [entry for entry in documents if "type" in entry]
        parameters = [entry for entry in files if entry["resourceType"] == "SearchParameter"]
        assert parameters
        assert {entry["type"] for entry in parameters} <= {"token", "string", "reference", "uri", "date"}

    def test_invalid_publication_refused(self, tmp_path: Path, publication: Publication) -> None:
        """A publication with an error is not packaged: exit 1 with the report, and no file is written."""
        root = tmp_path / "resources"
        shutil.copytree(publication.root, root)
        path = root / "Organization" / "fda.json"
        resource = json.loads(path.read_text())
        resource["active"] = "yes"  # a boolean as text: the structure layer's error
        path.write_text(json.dumps(resource))
        out = tmp_path / "pub.tgz"
        result = CliRunner().invoke(main, ["package", "--out", str(out), "--resources", str(root)])
        assert (result.exit_code, out.exists()) == (1, False)
        assert "Organization/fda.json" in result.output
        assert "nothing was packaged" in result.output


class TestPrecomputedNdjson:
    """The build's NDJSON chunks: whole lines, in id order, exactly the stored bodies."""

    def test_chunks_equal_the_bodies(self, store: Store) -> None:
        """Joined, a type's chunks are its bodies one per line; line counts add up."""
        for kind in sorted(store.types):
            chunks = list(store.ndjson(kind) or [])
            expected = b"".join(body + b"\n" for _, body, _ in store.bodies(kind))
            assert b"".join(c for c, _ in chunks) == expected
            assert sum(n for _, n in chunks) == expected.count(b"\n")

    def test_small_chunks_hold_whole_lines(self, tmp_path: Path) -> None:
        """With a tiny chunk size every chunk ends at a line end, and the export is unchanged."""
        path = build(tmp_path / "p.sqlite").path
        with sqlite3.connect(path) as db:
            write_ndjson(db, chunk_size=3000)
        db.close()
        small = Store(path)
        chunks = list(small.ndjson("ClinicalUseDefinition") or [])
        assert len(chunks) > 10
        for chunk, lines in chunks:
            assert chunk.endswith(b"\n")
            assert chunk.count(b"\n") == lines
        whole = export(small, ExportRequest(types=("ClinicalUseDefinition",)), tmp_path / "a")
        # a _typeFilter matching everything takes the per-resource path: the same bytes
        export(
            small,
            ExportRequest(type_filters=("ClinicalUseDefinition?_lastUpdated=gt2000-01-01",)),
            tmp_path / "b",
        )
        name = "ClinicalUseDefinition.ndjson"
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
        assert whole.files == [("ClinicalUseDefinition", name, bundled_count("ClinicalUseDefinition"))]
