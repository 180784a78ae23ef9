"""The ``fhir-pub`` command line, driven through click's CliRunner."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from conftest import ROOT

from fhir_pub import __version__
from fhir_pub.cli import main
from fhir_pub.conformance import load_conformance
from fhir_pub.narrative import render
from fhir_pub.publication import Publication


@pytest.fixture
def copy_of(publication: Publication, tmp_path: Path) -> Path:
    """A writable copy of the bundled publication."""
    target = tmp_path / "resources"
    shutil.copytree(publication.root, target)
    return target


class TestHelp:
    """The CLI describes itself."""

    def test_lists_commands(self) -> None:
        """``--help`` lists every command that exists."""
        result = CliRunner().invoke(main, ["--help"])
        assert result.exit_code == 0
        for command in ("info", "narrative"):
            assert command in result.output

    def test_version(self) -> None:
        """``--version`` prints the package version."""
        result = CliRunner().invoke(main, ["--version"])
        assert result.exit_code == 0
        assert __version__ in result.output

    @pytest.mark.parametrize("command", ["info", "narrative"])
    def test_every_command_documents_itself(self, command: str) -> None:
        """Each command has help text naming its options."""
        result = CliRunner().invoke(main, [command, "--help"])
        assert result.exit_code == 0
        assert "--resources" in result.output


class TestInfo:
    """``fhir-pub info`` summarises a publication."""

    def test_json_counts(self, publication: Publication) -> None:
        """The JSON summary gives the folder and the count per type."""
        result = CliRunner().invoke(main, ["info", "--json"])
        assert result.exit_code == 0
        summary = json.loads(result.stdout)
        assert summary["total"] == len(publication)
        assert summary["counts"] == publication.counts()
        assert Path(summary["root"]) == publication.root

    def test_table(self, publication: Publication) -> None:
        """The readable summary has one line per type and a total."""
        result = CliRunner().invoke(main, ["info"])
        assert result.exit_code == 0
        rows = [line.split() for line in result.stdout.splitlines()[1:]]
        assert rows[-1] == ["total", str(len(publication))]
        assert {row[0]: int(row[1]) for row in rows[:-1]} == publication.counts()

    def test_bad_json_is_a_clear_error(self, copy_of: Path) -> None:
        """An unreadable file is reported by name, with exit 1 and no traceback."""
        (copy_of / "Organization" / "broken.json").write_text("{not json", encoding="utf-8")
        result = CliRunner().invoke(main, ["info", "--resources", str(copy_of)])
        assert result.exit_code == 1
        assert "broken.json: not readable JSON" in result.output
        assert "Traceback" not in result.output

    def test_misplaced_file_is_a_clear_error(self, copy_of: Path) -> None:
        """A resource stored under the wrong path is refused with the path it belongs at."""
        source = copy_of / "Organization" / "fda.json"
        source.rename(copy_of / "Organization" / "elsewhere.json")
        result = CliRunner().invoke(main, ["info", "--resources", str(copy_of)])
        assert result.exit_code == 1
        assert "belongs at Organization/fda.json" in result.output

    def test_missing_folder_is_a_usage_error(self, tmp_path: Path) -> None:
        """A folder that does not exist is a usage error (exit 2)."""
        result = CliRunner().invoke(main, ["info", "--resources", str(tmp_path / "nope")])
        assert result.exit_code == 2


class TestNarrative:
    """``fhir-pub narrative`` keeps narratives in step with the data."""

    def test_bundled_is_current(self, publication: Publication) -> None:
        """The bundled publication's narratives are all up to date."""
        result = CliRunner().invoke(main, ["narrative"])
        assert result.exit_code == 0
        assert f"{len(publication)} narratives are up to date" in result.output

    def test_detects_and_rewrites_stale(self, copy_of: Path) -> None:
        """A data change makes the narrative stale; ``--write`` regenerates exactly that file."""
        path = copy_of / "Organization" / "fda.json"
        resource = json.loads(path.read_text(encoding="utf-8"))
        resource["name"] = "Food and Drug Administration"
        path.write_text(json.dumps(resource, indent=2) + "\n", encoding="utf-8")

        checked = CliRunner().invoke(main, ["narrative", "--resources", str(copy_of)])
        assert checked.exit_code == 1
        assert "stale narrative: Organization/fda" in checked.output

        written = CliRunner().invoke(main, ["narrative", "--resources", str(copy_of), "--write"])
        assert written.exit_code == 0
        assert written.stdout.strip() == "rewrote Organization/fda"
        rewritten = json.loads(path.read_text(encoding="utf-8"))
        assert "<h3>Food and Drug Administration</h3>" in rewritten["text"]["div"]

        again = CliRunner().invoke(main, ["narrative", "--resources", str(copy_of)])
        assert again.exit_code == 0

    def test_type_without_a_renderer_is_a_clear_error(self, tmp_path: Path) -> None:
        """A folder holding a type the generator cannot narrate is an error message, not a traceback."""
        (tmp_path / "ImplementationGuide").mkdir()
        guide = {"resourceType": "ImplementationGuide", "id": "g", "url": "http://example.org/g", "name": "G"}
        guide |= {"status": "active", "packageId": "example.g", "fhirVersion": ["5.0.0"]}
        (tmp_path / "ImplementationGuide" / "g.json").write_text(json.dumps(guide), encoding="utf-8")
        result = CliRunner().invoke(main, ["narrative", "--resources", str(tmp_path)])
        assert result.exit_code == 1
        assert "no narrative renderer for ImplementationGuide" in result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)

    def test_profiles_and_value_sets_are_current(self) -> None:
        """Our StructureDefinitions and ValueSets carry the narrative the generator makes from them today."""
        checked = 0
        for path in sorted((ROOT / "profiles").glob("*/*.json")):
            resource = json.loads(path.read_text(encoding="utf-8"))
            if resource["resourceType"] in {"StructureDefinition", "ValueSet"}:
                assert resource["text"]["div"] == render(resource), path.name
                checked += 1
        assert checked > 30


class TestValidate:
    """``fhir-pub validate`` reports, and exits 0 (valid), 1 (errors) or 2 (usage)."""

    def test_bundled_is_valid(self, publication: Publication) -> None:
        """The bundled publication validates clean, exit 0."""
        result = CliRunner().invoke(main, ["validate"])
        assert result.exit_code == 0, result.output
        assert f"{len(publication)} resources checked: 0 errors, 0 warnings" in result.output

    def test_json_outcome(self) -> None:
        """``--format json`` prints the OperationOutcome."""
        result = CliRunner().invoke(main, ["validate", "--format", "json"])
        assert result.exit_code == 0
        outcome = json.loads(result.stdout)
        assert outcome["resourceType"] == "OperationOutcome"
        assert outcome["issue"][0]["code"] == "informational"

    def test_errors_exit_1_with_report(self, copy_of: Path) -> None:
        """A broken file and a wrong code are reported by file, with element and rule; exit 1."""
        (copy_of / "Organization" / "broken.json").write_text("{not json", encoding="utf-8")
        path = copy_of / "MedicationKnowledge" / "besponsa.json"
        resource = json.loads(path.read_text(encoding="utf-8"))
        resource["status"] = "draft"
        path.write_text(json.dumps(resource), encoding="utf-8")
        result = CliRunner().invoke(main, ["validate", str(copy_of)])
        assert result.exit_code == 1
        assert "broken.json" in result.output
        assert "not valid JSON" in result.output
        assert "MedicationKnowledge.status" in result.output
        assert "[profile/MedicationKnowledge.status.binding]" in result.output
        assert "2 errors" in result.output
        assert "Traceback" not in result.output

    def test_json_errors(self, copy_of: Path) -> None:
        """With ``--format json`` errors are OperationOutcome issues with expressions."""
        path = copy_of / "Organization" / "fda.json"
        resource = json.loads(path.read_text(encoding="utf-8"))
        resource["active"] = "yes"
        path.write_text(json.dumps(resource), encoding="utf-8")
        result = CliRunner().invoke(main, ["validate", "--format", "json", str(copy_of)])
        assert result.exit_code == 1
        (issue,) = json.loads(result.stdout)["issue"]
        assert (issue["severity"], issue["code"], issue["expression"]) == (
            "error",
            "structure",
            ["Organization.active"],
        )

    def test_missing_path_is_usage_error(self, tmp_path: Path) -> None:
        """A path that does not exist is a usage error: exit 2."""
        result = CliRunner().invoke(main, ["validate", str(tmp_path / "missing")])
        assert result.exit_code == 2


class TestSchemas:
    """``fhir-pub schemas`` publishes the JSON Schemas the profiles compile to."""

    def test_writes_usable_schemas(self, tmp_path: Path, publication: Publication) -> None:
        """One valid 2020-12 schema per resource profile; each accepts the resources that declare it."""
        import jsonschema

        result = CliRunner().invoke(main, ["schemas", "--out", str(tmp_path)])
        assert result.exit_code == 0, result.output
        files = sorted(tmp_path.glob("*.schema.json"))
        assert len(files) == len(load_conformance().resource_profiles) > 12
        schemas = {}
        for path in files:
            schema = json.loads(path.read_text(encoding="utf-8"))
            jsonschema.Draft202012Validator.check_schema(schema)
            schemas[schema["$id"].removesuffix(".schema.json")] = jsonschema.Draft202012Validator(schema)
        for entry in publication:
            (profile,) = entry.resource["meta"]["profile"]
            assert list(schemas[profile].iter_errors(entry.resource)) == []
        broken = dict(publication.get("ClinicalUseDefinition/effect-rash") or {}, type="side-effect")
        assert list(schemas[broken["meta"]["profile"][0]].iter_errors(broken))


class TestDocumentation:
    """Everything the CLI offers is documented in the README."""

    def test_every_command_in_readme(self) -> None:
        """Each command appears in the README's Commands table with each of its options."""
        readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
        for name, command in main.commands.items():
            row = next((line for line in readme.splitlines() if line.startswith(f"| `fhir-pub {name}")), None)
            assert row is not None, f"fhir-pub {name} is not in the README"
            for param in command.params:
                if isinstance(param, click.Option) and "--help" not in param.opts:
                    assert any(opt in row for opt in param.opts), f"{name} {param.opts} not documented"

    def test_every_setting_in_readme(self) -> None:
        """Each FHIR_PUB_* setting appears in the README's settings table."""
        from fhir_pub.settings import Settings

        readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
        for name in Settings.model_fields:
            assert f"| `FHIR_PUB_{name.upper()}` |" in readme, name


class TestPolish:
    """The CLI's messages: plurals, option names in errors, usage exit codes, no stray output when piped."""

    def test_singular_counts(self) -> None:
        """One resource, one error: the summary says so in the singular."""
        organization = Path(__file__).resolve().parent.parent / "resources" / "Organization" / "fda.json"
        result = CliRunner().invoke(main, ["validate", str(organization)])
        assert "1 resource checked: 1 error, 0 warnings" in result.output

    def test_bad_since_is_a_usage_error_naming_the_option(self, tmp_path: Path) -> None:
        """A --since that is not an instant exits 2 and names --since, not the HTTP ``_since``."""
        result = CliRunner().invoke(main, ["export", "--out", str(tmp_path / "x"), "--since", "yesterday"])
        assert result.exit_code == 2
        assert "--since='yesterday': expected an instant" in result.output
        assert "_since" not in result.output

    def test_bad_type_filter_names_the_option(self, tmp_path: Path) -> None:
        """An export error about a filter names --type-filter, not ``_typeFilter``."""
        result = CliRunner().invoke(
            main, ["export", "--out", str(tmp_path / "x"), "--type-filter", "Foo?x=1"]
        )
        assert result.exit_code == 1
        assert "--type-filter='Foo?x=1': 'Foo' is not a type" in result.output
        assert "_typeFilter" not in result.output

    def test_export_piped_writes_nothing_to_stderr(self, tmp_path: Path) -> None:
        """Not on a terminal, export prints its summary, and nothing on stderr (no progress label)."""
        result = subprocess.run(
            [sys.executable, "-m", "fhir_pub", "export", "--out", str(tmp_path / "x"), "--type", "Group"],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        assert result.stderr == ""
        assert result.stdout.splitlines()[-1] == f"wrote {tmp_path / 'x'} (1 resource, manifest.json)"
