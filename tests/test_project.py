"""Publication projects: ``fhir-pub init``, finding the project of a folder, and messages about codes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from click.testing import CliRunner

from fhir_pub.cli import main
from fhir_pub.publication import Publication

NDC = "http://hl7.org/fhir/sid/ndc"


class TestUnverifiedCode:
    """A Coding whose code is not verified is reported once, naming the code, its system and the remedy."""

    def test_named_once(self, publication: Publication, tmp_path: Path) -> None:
        """A new NDC on the bundled product: one error, with the code, the system and how to add it."""
        resources = tmp_path / "resources"
        shutil.copytree(publication.root, resources)
        path = resources / "Medication" / "besponsa-vial.json"
        resource = json.loads(path.read_text(encoding="utf-8"))
        resource["code"]["coding"][0]["code"] = "0008-0100-99"
        path.write_text(json.dumps(resource), encoding="utf-8")
        result = CliRunner().invoke(main, ["validate", str(resources)])
        assert result.exit_code == 1
        assert result.stdout.count("'0008-0100-99'") == 1
        assert f"'0008-0100-99' (system {NDC}) is not a verified code" in result.stdout
        assert "add it to verified-codes.json of your project with its display and source" in result.stdout
        assert "1 error," in result.stdout
