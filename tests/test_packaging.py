"""A plain, non-editable install carries the bundled publication and finds it from any directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT

from fhir_pub.publication import Publication


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
