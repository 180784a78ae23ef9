"""``fhir-pub build``: validated, complete and atomic, or nothing at all."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner

from fhir_pub.build import PAGE_SIZE, BuildError, _listing, build, source_digest
from fhir_pub.cli import main
from fhir_pub.conformance import CANONICAL_BASE, load_conformance
from fhir_pub.errors import FhirPubError, PublicationError
from fhir_pub.publication import Publication, bundled_dir
from fhir_pub.settings import Settings
from fhir_pub.store import Store
from fhir_pub.validation.validator import MAX_BYTES
from fhir_pub.web import create_app


@pytest.fixture
def broken(publication: Publication, tmp_path: Path) -> Path:
    """A copy of the publication with one invalid resource (a subject R5 does not allow)."""
    target = tmp_path / "resources"
    shutil.copytree(publication.root, target)
    path = target / "ClinicalUseDefinition" / "effect-rash.json"
    resource = json.loads(path.read_text(encoding="utf-8"))
    resource["subject"][0]["reference"] = "MedicationKnowledge/besponsa"
    path.write_text(json.dumps(resource), encoding="utf-8")
    return target


class TestBuild:
    """A build holds every resource, byte for byte, and what serving needs."""

    def test_contents(self, tmp_path: Path, publication: Publication) -> None:
        """Every resource is stored as canonical JSON with its version and lastUpdated; metadata too."""
        built = build(tmp_path / "p.sqlite")
        assert built.resources == len(publication)
        store = Store(built.path)
        for entry in publication:
            stored = store.read(entry.resource["resourceType"], entry.resource["id"])
            assert stored is not None
            assert stored.body == orjson.dumps(entry.resource)
            meta = entry.resource["meta"]
            assert (stored.version, stored.last_updated) == (meta["versionId"], meta["lastUpdated"])
        assert json.loads(store.capability)["resourceType"] == "CapabilityStatement"
        served = {r["resourceType"] for r in load_conformance().by_url.values()}
        assert store.types == set(publication.counts()) | served
        assert built.conformance == len(load_conformance().by_url)
        for resource in load_conformance().by_url.values():  # served as written, under its own meta
            stored = store.read(resource["resourceType"], resource["id"])
            assert stored is not None
            assert stored.body == orjson.dumps(resource)
            assert (stored.version, stored.last_updated) == (
                resource["meta"]["versionId"],
                resource["meta"]["lastUpdated"],
            )

    def test_page_size(self, tmp_path: Path) -> None:
        """The file has the build's page size (SQLite ignores the pragma once a table exists)."""
        built = build(tmp_path / "p.sqlite")
        with closing(sqlite3.connect(built.path)) as db:
            assert db.execute("PRAGMA page_size").fetchone()[0] == PAGE_SIZE != 4096

    def test_refuses_invalid(self, tmp_path: Path, broken: Path) -> None:
        """An invalid publication builds nothing, and an earlier build stays as it was."""
        out = tmp_path / "p.sqlite"
        build(out)
        before = out.read_bytes()
        with pytest.raises(BuildError) as failure:
            build(out, resources_dir=broken)
        assert failure.value.report.errors == 2  # the profile's target rule and R5's allowed types
        assert out.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["p.sqlite", "resources"]

    @pytest.mark.parametrize("meta", [None, {"versionId": "1"}, {"versionId": 1, "lastUpdated": "2024"}])
    def test_refuses_broken_meta(self, tmp_path: Path, broken: Path, meta: dict[str, Any] | None) -> None:
        """A resource without a usable meta (version, lastUpdated) is reported, not a crash."""
        path = broken / "Organization" / "fda.json"
        resource = json.loads(path.read_text(encoding="utf-8"))
        if meta is None:
            del resource["meta"]
        else:
            resource["meta"] = {**meta, "profile": resource["meta"]["profile"]}
        path.write_text(json.dumps(resource), encoding="utf-8")
        with pytest.raises(BuildError) as failure:
            build(tmp_path / "p.sqlite", resources_dir=broken)
        assert any(i.source == str(path) for i in failure.value.report.issues)
        assert not (tmp_path / "p.sqlite").exists()

    def test_refuses_values_the_index_cannot_hold(self, tmp_path: Path, broken: Path) -> None:
        """An invalid resource is reported, never indexed: its values need not fit the search tables."""
        path = broken / "Organization" / "fda.json"
        resource = json.loads(path.read_text(encoding="utf-8"))
        resource["type"] = [{"coding": 3.5}]
        path.write_text(json.dumps(resource), encoding="utf-8")
        with pytest.raises(BuildError) as failure:
            build(tmp_path / "p.sqlite", resources_dir=broken)
        assert any(i.source == str(path) for i in failure.value.report.issues)

    def test_digest_follows_sources(self, tmp_path: Path, publication: Publication) -> None:
        """The source digest changes when any source file changes (so a cached build is rebuilt)."""
        copy = tmp_path / "resources"
        shutil.copytree(publication.root, copy)
        profiles = bundled_dir("profiles")
        first = source_digest(copy, profiles)
        assert source_digest(copy, profiles) == first
        path = copy / "Organization" / "fda.json"
        path.write_text(path.read_text(encoding="utf-8").replace("FDA", "F.D.A."), encoding="utf-8")
        assert source_digest(copy, profiles) != first


class TestBuildCommand:
    """The CLI reports the build, or the reason it refused."""

    def test_success(self, tmp_path: Path, publication: Publication) -> None:
        """Exit 0 and a one-line summary."""
        result = CliRunner().invoke(main, ["build", "--out", str(tmp_path / "p.sqlite")])
        assert result.exit_code == 0, result.output
        assert f"{len(publication)} resources" in result.output

    def test_refusal(self, tmp_path: Path, broken: Path) -> None:
        """Exit 1 with the validation report and no file."""
        out = tmp_path / "p.sqlite"
        result = CliRunner().invoke(main, ["build", "--out", str(out), "--resources", str(broken)])
        assert result.exit_code == 1
        assert "effect-rash.json" in result.output
        assert "nothing was built" in result.output
        assert not out.exists()


class TestAttach:
    """--attach embeds operator-supplied leaflet copies, matched by url file name or id."""

    def test_embeds_matches_only(self, tmp_path: Path) -> None:
        """Matching files become base64 data with integer64 size and SHA-1 hash; others stay links."""
        import base64
        import hashlib

        folder = tmp_path / "leaflets"
        folder.mkdir()
        by_url = b"<html><body>a stand-in for the MedlinePlus page</body></html>"
        by_id = b"<html><body>a stand-in for the MSK leaflet</body></html>"
        (folder / "a617041.html").write_bytes(by_url)
        (folder / "msk-inotuzumab-ozogamicin.html").write_bytes(by_id)
        (folder / "unrelated.txt").write_bytes(b"x")
        built = build(tmp_path / "p.sqlite", attach_dir=folder)
        assert len(built.attached) == 2
        store = Store(built.path)
        for doc_id, data in (("medlineplus-a617041", by_url), ("msk-inotuzumab-ozogamicin", by_id)):
            stored = store.read("DocumentReference", doc_id)
            assert stored is not None
            attachment = json.loads(stored.body)["content"][0]["attachment"]
            assert base64.b64decode(attachment["data"]) == data
            assert attachment["size"] == str(len(data))
            assert attachment["hash"] == base64.b64encode(hashlib.sha1(data).digest()).decode()
            assert attachment["url"].startswith("https://")
        pfizer = store.read("DocumentReference", "pfizer-besponsa-patient-counseling")
        assert pfizer is not None
        assert "data" not in json.loads(pfizer.body)["content"][0]["attachment"]

    def test_cli(self, tmp_path: Path) -> None:
        """The CLI reports each attachment."""
        folder = tmp_path / "leaflets"
        folder.mkdir()
        (folder / "patient-counseling").write_bytes(b"<html>stand-in</html>")
        result = CliRunner().invoke(
            main, ["build", "--out", str(tmp_path / "p.sqlite"), "--attach", str(folder)]
        )
        assert result.exit_code == 0, result.output
        assert (
            "attached patient-counseling -> DocumentReference/pfizer-besponsa-patient-counseling"
            in result.output
        )


class TestListing:
    """Which files a build reads: every ``*.json`` file below the folder, through file links only."""

    def test_files(self, tmp_path: Path) -> None:
        """Nested folders are listed, other files are not, a link to a folder is not followed."""
        root = tmp_path / "resources"
        for name in ("Medication/a.json", "Medication/b.txt", "Group/deep/c.json", "d.json"):
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            (root / name).write_text("{}")
        outside = tmp_path / "outside"
        outside.mkdir()
        (outside / "e.json").write_text("{}")
        (root / "Medication" / "linked.json").symlink_to(outside / "e.json")
        (root / "Medication" / "broken.json").symlink_to(tmp_path / "missing.json")
        (root / "Linked").symlink_to(outside, target_is_directory=True)
        (root / "Medication" / "folder.json").mkdir()
        assert _listing(root) == [
            "Group/deep/c.json",
            "Medication/a.json",
            "Medication/linked.json",
            "d.json",
        ]

    def test_unreadable_folder(
        self, tmp_path: Path, publication: Publication, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A folder that cannot be read stops the build with its name (its resources are not skipped).

        Simulated: the tests may run as root, whom permissions do not stop.
        """
        root = tmp_path / "resources"
        shutil.copytree(publication.root, root)
        scandir = os.scandir

        def refusing(path: Any) -> Any:
            if Path(path).name == "Medication":
                raise PermissionError(13, "Permission denied", str(path))
            return scandir(path)

        monkeypatch.setattr(os, "scandir", refusing)
        with pytest.raises(PublicationError, match=r"cannot read the folder .*Medication: Permission denied"):
            build(tmp_path / "p.sqlite", root)
        assert not (tmp_path / "p.sqlite").exists()

    @pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="posix_fadvise is Linux's")
    def test_read_ahead(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """Reading a file asks the kernel for the next ones: each file but the first once, in order."""
        advised: list[str] = []
        fadvise = os.posix_fadvise

        def record(fd: int, offset: int, length: int, advice: int) -> None:
            assert advice == os.POSIX_FADV_WILLNEED
            advised.append(str(Path(f"/proc/self/fd/{fd}").readlink()))
            fadvise(fd, offset, length, advice)

        monkeypatch.setattr(os, "posix_fadvise", record)
        root = bundled_dir("resources")
        build(tmp_path / "p.sqlite", root, workers=1)
        files = [str((root / name).resolve()) for name in _listing(root)]
        assert len(files) > 2
        assert advised == files[1:]

    @pytest.mark.skipif(not hasattr(os, "posix_fadvise"), reason="posix_fadvise is Linux's")
    def test_no_read_ahead_of_oversized(
        self, tmp_path: Path, publication: Publication, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A file over the size limit is refused unread, so it is not fetched ahead either."""
        root = tmp_path / "resources"
        shutil.copytree(publication.root, root)
        huge = root / "Medication" / "huge.json"
        with huge.open("wb") as handle:
            handle.truncate(MAX_BYTES + 1)  # sparse: no 16 MiB written
        advised: list[str] = []
        fadvise = os.posix_fadvise

        def record(fd: int, offset: int, length: int, advice: int) -> None:
            advised.append(str(Path(f"/proc/self/fd/{fd}").readlink()))
            fadvise(fd, offset, length, advice)

        monkeypatch.setattr(os, "posix_fadvise", record)
        with pytest.raises(BuildError) as raised:
            build(tmp_path / "p.sqlite", root, workers=1)
        assert [i.code for i in raised.value.report.issues if i.source == str(huge)] == ["too-long"]
        listed = _listing(root)
        assert 0 < listed.index("Medication/huge.json") < len(listed) - 1  # among those read ahead
        assert str(huge.resolve()) not in advised
        assert len(advised) == len(_listing(root)) - 2  # every other file but the first


class TestUnindexedSearchParameter:
    """A SearchParameter of a type the index has no table for is neither stored nor advertised."""

    def test_number_parameter(self, tmp_path: Path) -> None:
        """A number parameter is not advertised, and a search on it is an unknown one (never a 500)."""
        profiles = tmp_path / "profiles"
        shutil.copytree(bundled_dir("profiles"), profiles)
        source = profiles / "SearchParameter" / "ClinicalUseDefinition-type.json"
        number = json.loads(source.read_text(encoding="utf-8"))
        number.update(
            id="ClinicalUseDefinition-depth",
            url="https://example.org/SearchParameter/ClinicalUseDefinition-depth",
            name="depth",
            code="depth",
            type="number",
            expression="ClinicalUseDefinition.extension.value.ofType(integer)",
        )
        (profiles / "SearchParameter" / "ClinicalUseDefinition-depth.json").write_text(json.dumps(number))
        path = build(tmp_path / "p.sqlite", profiles_dir=profiles).path
        client = create_app(Settings(publication=path)).test_client()
        capability = client.get("/fhir/metadata").json
        (cud,) = [r for r in capability["rest"][0]["resource"] if r["type"] == "ClinicalUseDefinition"]
        assert "depth" not in {p["name"] for p in cud["searchParam"]}
        lenient = client.get("/fhir/ClinicalUseDefinition?depth=3")
        assert lenient.status_code == 200
        outcomes = [e for e in lenient.json["entry"] if e["search"]["mode"] == "outcome"]
        assert "depth" in json.dumps(outcomes)
        strict = client.get("/fhir/ClinicalUseDefinition?depth=3", headers={"Prefer": "handling=strict"})
        assert strict.status_code == 400

    def test_other_unsupported_types(self, tmp_path: Path) -> None:
        """Quantity, composite and special parameters but _text and _content: the same, never a 500."""
        profiles = tmp_path / "profiles"
        shutil.copytree(bundled_dir("profiles"), profiles)
        source = profiles / "SearchParameter" / "ClinicalUseDefinition-type.json"
        added = {
            "dose": ("quantity", "ClinicalUseDefinition.extension.value.ofType(Quantity)"),
            "pair": ("composite", "ClinicalUseDefinition"),
            "near": ("special", "ClinicalUseDefinition.extension.value.ofType(string)"),
        }
        for code, (kind, expression) in added.items():
            parameter = json.loads(source.read_text(encoding="utf-8"))
            parameter.update(
                id=f"ClinicalUseDefinition-{code}",
                url=f"https://example.org/SearchParameter/ClinicalUseDefinition-{code}",
                name=code,
                code=code,
                type=kind,
                expression=expression,
            )
            target = profiles / "SearchParameter" / f"ClinicalUseDefinition-{code}.json"
            target.write_text(json.dumps(parameter), encoding="utf-8")
        path = build(tmp_path / "p.sqlite", profiles_dir=profiles).path
        client = create_app(Settings(publication=path)).test_client()
        capability = client.get("/fhir/metadata").json
        (cud,) = [r for r in capability["rest"][0]["resource"] if r["type"] == "ClinicalUseDefinition"]
        assert not set(added) & {p["name"] for p in cud["searchParam"]}
        for code in added:
            lenient = client.get(f"/fhir/ClinicalUseDefinition?{code}=3")
            assert lenient.status_code == 200, code
            strict = client.get(
                f"/fhir/ClinicalUseDefinition?{code}=3", headers={"Prefer": "handling=strict"}
            )
            assert strict.status_code == 400, code
            assert client.get(f"/fhir/ClinicalUseDefinition?_sort={code}").status_code == 200, code


class TestServedConformance:
    """The conformance resources are served, so each needs what a served resource needs."""

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            (lambda r: r.pop("meta"), "needs an id and meta"),
            (lambda r: r["meta"].pop("versionId"), "meta needs versionId and lastUpdated"),
            (lambda r: r["meta"].update(lastUpdated="yesterday"), "is not an instant"),
        ],
    )
    def test_refused_without_meta(self, tmp_path: Path, change: Any, message: str) -> None:
        """A profile without meta.versionId or an instant lastUpdated stops the build, naming it."""
        profiles = tmp_path / "profiles"
        shutil.copytree(bundled_dir("profiles"), profiles)
        path = profiles / "ValueSet" / "group-type.json"
        resource = json.loads(path.read_text(encoding="utf-8"))
        change(resource)
        path.write_text(json.dumps(resource), encoding="utf-8")
        with pytest.raises(PublicationError, match=message) as raised:
            build(tmp_path / "p.sqlite", profiles_dir=profiles)
        assert "ValueSet/group-type" in str(raised.value)
        assert not (tmp_path / "p.sqlite").exists()

    def test_refused_when_resources_has_the_type(self, tmp_path: Path, publication: Publication) -> None:
        """A ValueSet in resources/ is refused, so no type is ever owned by both folders."""
        root = tmp_path / "resources"
        shutil.copytree(publication.root, root)
        (root / "ValueSet").mkdir()
        shutil.copy(bundled_dir("profiles") / "ValueSet" / "group-type.json", root / "ValueSet")
        with pytest.raises(FhirPubError):
            build(tmp_path / "p.sqlite", resources_dir=root)
        assert not (tmp_path / "p.sqlite").exists()

    def test_guide_lists_every_conformance_resource(self) -> None:
        """The ImplementationGuide's definition.resource is every other resource of ours in profiles/, once.

        HL7's SearchParameters and ValueSets, held to serve and validate with, belong to hl7.fhir.r5.core.
        """
        conformance = load_conformance()
        (guide,) = conformance.of_type("ImplementationGuide")
        listed = [r["reference"]["reference"] for r in guide["definition"]["resource"]]
        others = {
            f"{r['resourceType']}/{r['id']}"
            for url, r in conformance.by_url.items()
            if r["resourceType"] != "ImplementationGuide" and url.startswith(f"{CANONICAL_BASE}/")
        }
        assert len(listed) == len(set(listed))
        assert set(listed) == others
        profiled: dict[str, list[str]] = {}
        for sd in conformance.resource_profiles.values():
            profiled.setdefault(sd["type"], []).append(sd["url"])
        assert {g["type"]: g["profile"] for g in guide["global"]} == {
            kind: urls[0] for kind, urls in profiled.items() if len(urls) == 1
        }
