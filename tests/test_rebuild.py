"""Rebuilds that cost what changed: a rebuild writes exactly the file a cold build writes (issue 21)."""

from __future__ import annotations

import json
import shutil
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from fhir_pub.build import BuildError, Built, build
from fhir_pub.cli import main
from fhir_pub.publication import bundled_dir
from fhir_pub.reuse import Reaches
from fhir_pub.search.parameters import Registry, SearchParam
from fhir_pub.validation import Validator
from fhir_pub.validation.validator import PARALLEL_MIN

ROOT = Path(__file__).resolve().parent.parent
AT = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)  # one build time for both builds compared


def copy_bundled(tmp_path: Path) -> Path:
    """A copy of the bundled publication's resources that a test may edit."""
    return Path(shutil.copytree(bundled_dir("resources"), tmp_path / "resources"))


def corpus(out: Path, size: int) -> Path:
    """A generated publication of ``size`` resources (bench/corpus.py, seed 1)."""
    script = str(ROOT / "bench" / "corpus.py")
    subprocess.run([sys.executable, script, "--resources", str(size), "--out", str(out)], check=True)
    return out


def touch(path: Path) -> None:
    """A valid edit: the resource's next version (meta.versionId one up)."""
    resource = json.loads(path.read_text(encoding="utf-8"))
    resource["meta"]["versionId"] = str(int(resource["meta"]["versionId"]) + 1)
    path.write_text(json.dumps(resource, indent=2) + "\n", encoding="utf-8")


def rename(root: Path, key: str, new_id: str) -> None:
    """Delete ``key``'s file and add the same resource under ``new_id``, every reference to it following."""
    kind, old_id = key.split("/")
    resource = json.loads((root / kind / f"{old_id}.json").read_text(encoding="utf-8"))
    (root / kind / f"{old_id}.json").unlink()
    resource["id"] = new_id
    (root / kind / f"{new_id}.json").write_text(json.dumps(resource, indent=2) + "\n", encoding="utf-8")
    for path in sorted(root.rglob("*.json")):
        text = path.read_text(encoding="utf-8")
        if f'"{key}"' in text:
            path.write_text(text.replace(f'"{key}"', f'"{kind}/{new_id}"'), encoding="utf-8")


def rebuilt_and_cold(
    resources: Path, previous: Path, tmp_path: Path, **options: object
) -> tuple[Built, Built]:
    """A rebuild reusing ``previous``, and a cold build of the same sources."""
    again = build(tmp_path / "again.sqlite", resources, reuse=previous, built_at=AT, **options)  # type: ignore[arg-type]
    cold = build(tmp_path / "cold.sqlite", resources, built_at=AT, **options)  # type: ignore[arg-type]
    assert cold.reused == 0
    return again, cold


def table_counts(path: Path) -> dict[str, int]:
    with sqlite3.connect(path) as db:
        names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        counts = {name: db.execute(f"SELECT count(*) FROM {name}").fetchone()[0] for name in names}
    db.close()
    return counts


class TestIdentity:
    """The rebuild's file is byte for byte the cold build's, and it reused what it could."""

    def test_unchanged(self, tmp_path: Path) -> None:
        """Nothing changed: every resource is taken over, and the bytes are equal."""
        resources = copy_bundled(tmp_path)
        first = build(tmp_path / "first.sqlite", resources, built_at=AT)
        again, cold = rebuilt_and_cold(resources, first.path, tmp_path)
        assert again.reused == again.resources == cold.resources
        assert again.path.read_bytes() == cold.path.read_bytes() == first.path.read_bytes()

    def test_edits(self, tmp_path: Path) -> None:
        """A few edited resources of the bundled publication are checked again, the rest taken over."""
        resources = copy_bundled(tmp_path)
        first = build(tmp_path / "first.sqlite", resources, built_at=AT)
        edited = [
            resources
            / "ClinicalUseDefinition"
            / sorted(p.name for p in (resources / "ClinicalUseDefinition").iterdir())[0],
            resources / "MedicationKnowledge" / "besponsa.json",
            resources / "Group" / sorted(p.name for p in (resources / "Group").iterdir())[0],
        ]
        for path in edited:
            touch(path)
        again, cold = rebuilt_and_cold(resources, first.path, tmp_path)
        assert cold.resources - len(edited) == again.reused
        assert again.path.read_bytes() == cold.path.read_bytes()
        assert first.path.read_bytes() != cold.path.read_bytes()

    def test_added_and_deleted(self, tmp_path: Path) -> None:
        """One resource deleted, one added (its referrers edited to follow): the same bytes as cold."""
        resources = copy_bundled(tmp_path)
        first = build(tmp_path / "first.sqlite", resources, built_at=AT)
        rename(resources, "Organization/msk", "memorial-sloan-kettering")
        again, cold = rebuilt_and_cold(resources, first.path, tmp_path)
        referrers = [
            p for p in resources.rglob("*.json") if '"Organization/memorial-sloan-kettering"' in p.read_text()
        ]
        assert len(referrers) >= 1
        assert cold.resources - 1 - len(referrers) == again.reused
        assert again.path.read_bytes() == cold.path.read_bytes()

    def test_read_by_invariants(self, tmp_path: Path) -> None:
        """An edit to what invariants resolve() (Provenance's agent) checks its readers again, all of them."""
        resources = copy_bundled(tmp_path)
        first = build(tmp_path / "first.sqlite", resources, built_at=AT)
        touch(resources / "Organization" / "fhir-pub.json")
        readers = [
            p
            for p in (resources / "Provenance").iterdir()
            if any(
                agent.get("who", {}).get("reference") == "Organization/fhir-pub"
                for agent in json.loads(p.read_text(encoding="utf-8")).get("agent", [])
            )
        ]
        assert len(readers) > 50
        again, cold = rebuilt_and_cold(resources, first.path, tmp_path)
        assert cold.resources - 1 - len(readers) == again.reused
        assert again.path.read_bytes() == cold.path.read_bytes()

    def test_profile_changed(self, tmp_path: Path) -> None:
        """A changed profile: nothing is taken over (every resource is validated again); the same bytes."""
        resources = copy_bundled(tmp_path)
        profiles = Path(shutil.copytree(bundled_dir("profiles"), tmp_path / "profiles"))
        first = build(tmp_path / "first.sqlite", resources, profiles, built_at=AT)
        definition = profiles / "StructureDefinition" / "fhir-pub-group.json"
        profile = json.loads(definition.read_text(encoding="utf-8"))
        profile["description"] = profile.get("description", "") + " Edited."
        definition.write_text(json.dumps(profile, indent=2) + "\n", encoding="utf-8")
        again, cold = rebuilt_and_cold(resources, first.path, tmp_path, profiles_dir=profiles)
        assert again.reused == 0
        assert again.path.read_bytes() == cold.path.read_bytes()

    def test_parallel_corpus(self, tmp_path: Path) -> None:
        """A generated corpus built by two workers, 1% of it edited, one file deleted with its referrers."""
        resources = corpus(tmp_path / "corpus", PARALLEL_MIN + 100)
        first = build(tmp_path / "first.sqlite", resources, built_at=AT, workers=2)
        files = sorted(resources.rglob("*.json"))
        for path in files[::100]:
            touch(path)
        again, cold = rebuilt_and_cold(resources, first.path, tmp_path, workers=2)
        assert cold.resources == PARALLEL_MIN + 100
        assert cold.resources - len(files[::100]) * 3 < again.reused <= cold.resources - len(files[::100])
        assert again.path.read_bytes() == cold.path.read_bytes()
        assert table_counts(again.path) == table_counts(cold.path)


class TestRefusals:
    """What a rebuild must not do: pass what cold refuses, change the previous file, trust a stranger."""

    def test_invalid_edit(self, tmp_path: Path) -> None:
        """An invalid edit fails the rebuild with the cold build's report; the previous file is untouched."""
        resources = copy_bundled(tmp_path)
        out = build(tmp_path / "publication.sqlite", resources, built_at=AT).path
        before = out.read_bytes()
        path = sorted((resources / "ClinicalUseDefinition").iterdir())[0]
        resource = json.loads(path.read_text(encoding="utf-8"))
        resource["meta"]["profile"] = ["http://example.org/unknown"]
        path.write_text(json.dumps(resource, indent=2), encoding="utf-8")
        with pytest.raises(BuildError) as rebuilt:
            build(out, resources, reuse=out, built_at=AT)
        with pytest.raises(BuildError) as cold:
            build(tmp_path / "cold.sqlite", resources, built_at=AT)
        assert rebuilt.value.report.errors >= 1
        assert rebuilt.value.report == cold.value.report
        assert out.read_bytes() == before
        assert sorted(p.name for p in tmp_path.iterdir()) == ["publication.sqlite", "resources"]

    def test_deleted_target(self, tmp_path: Path) -> None:
        """An unchanged resource whose target was deleted is checked again: the reference is reported."""
        resources = copy_bundled(tmp_path)
        first = build(tmp_path / "first.sqlite", resources, built_at=AT)
        (resources / "Organization" / "msk.json").unlink()
        with pytest.raises(BuildError) as rebuilt:
            build(tmp_path / "again.sqlite", resources, reuse=first.path, built_at=AT)
        with pytest.raises(BuildError) as cold:
            build(tmp_path / "cold.sqlite", resources, built_at=AT)
        assert any("Organization/msk" in issue.message for issue in rebuilt.value.report.issues)
        assert rebuilt.value.report == cold.value.report

    def test_other_format(self, tmp_path: Path) -> None:
        """A previous file of another format (or not SQLite at all) is ignored: the build is cold."""
        resources = copy_bundled(tmp_path)
        first = build(tmp_path / "first.sqlite", resources, built_at=AT).path
        older = tmp_path / "older.sqlite"
        shutil.copy(first, older)
        with sqlite3.connect(older) as db:
            db.execute("PRAGMA user_version = 3")
        db.close()
        stranger = tmp_path / "stranger.sqlite"
        stranger.write_bytes(b"not a publication")
        for previous in (older, stranger, tmp_path / "missing.sqlite"):
            again = build(tmp_path / "again.sqlite", resources, reuse=previous, built_at=AT)
            assert again.reused == 0
            assert again.path.read_bytes() == first.read_bytes()


class TestCommand:
    """``fhir-pub build`` reuses its output file unless told ``--cold``."""

    def test_build_twice(self, tmp_path: Path) -> None:
        """The second build says what it took over; ``--cold`` takes over nothing."""
        resources = copy_bundled(tmp_path)
        out = tmp_path / "publication.sqlite"
        arguments = ["build", "--resources", str(resources), "--out", str(out)]
        first = CliRunner().invoke(main, arguments)
        assert first.exit_code == 0, first.output
        assert "unchanged since" not in first.output
        second = CliRunner().invoke(main, arguments)
        assert second.exit_code == 0, second.output
        assert f"unchanged since {out}" in second.output
        cold = CliRunner().invoke(main, [*arguments, "--cold"])
        assert cold.exit_code == 0, cold.output
        assert "unchanged since" not in cold.output


class TestReach:
    """What makes an unchanged resource depend on others, worked out from the definitions."""

    def test_index_reads_targets(self) -> None:
        """A search parameter that reads a resolved target's content counts; ``resolve() is T`` does not."""
        kind = "ClinicalUseDefinition"
        by_type = SearchParam(
            "product", "reference", f"{kind}.subject.where(resolve() is Medication)", "u:1", (kind,)
        )
        by_content = SearchParam("drug", "string", f"{kind}.subject.resolve().code.text", "u:2", (kind,))
        validator = Validator()
        assert Reaches(validator, Registry([by_type])).indexed(kind) == 0
        assert Reaches(validator, Registry([by_type, by_content])).indexed(kind) == 1
