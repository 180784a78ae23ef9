"""``fhir-pub serve`` refuses clearly what it cannot serve: a taken port, a file that is not a publication."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import requests
from click.testing import CliRunner
from conftest import free_port, start, stop

from fhir_pub.cli import main
from fhir_pub.settings import Settings


def serve(publication: Path, port: int, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    """Run ``fhir-pub serve`` expecting it to exit on its own (it refuses), with its output."""
    env = {**os.environ, "FHIR_PUB_JOBS_DIR": str(tmp_path / "jobs")}
    command = [sys.executable, "-m", "fhir_pub", "serve", "--port", str(port), "--workers", "1"]
    return subprocess.run(
        [*command, "--publication", str(publication)], env=env, capture_output=True, text=True, timeout=60
    )


class TestPortInUse:
    """A port another program or another fhir-pub listens on is refused in one line, exit 1."""

    def test_port_held_by_another_program(self, built: Path, tmp_path: Path) -> None:
        """A plain listening socket held by the test makes serve refuse, with no traceback."""
        with socket.socket() as holder:
            holder.bind(("127.0.0.1", 0))
            holder.listen()
            port = holder.getsockname()[1]
            result = serve(built, port, tmp_path)
        assert result.returncode == 1
        assert result.stderr == f"Error: port {port} on 127.0.0.1 is already in use by another program; " + (
            "stop it or choose another --port\n"
        )
        assert "serving" not in result.stdout

    def test_port_held_by_another_fhir_pub(self, built: Path, tmp_path: Path) -> None:
        """A second server on a running one's port refuses, and the first alone keeps answering."""
        port = free_port()
        first = start(tmp_path, built, port)
        try:
            result = serve(built, port, tmp_path)
            assert result.returncode == 1
            assert "already in use" in result.stderr
            assert len(result.stderr.splitlines()) == 1
            assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
        finally:
            stop(first)


class TestNotAPublication:
    """``serve --publication`` with a file that is not one is refused before it listens."""

    def test_refused_before_listening(self, tmp_path: Path) -> None:
        """One error naming the file, exit 1, no "serving" line and no traceback."""
        bogus = tmp_path / "notes.txt"
        bogus.write_text("not a database, just some words\n" * 100, encoding="utf-8")
        result = serve(bogus, free_port(), tmp_path)
        assert result.returncode == 1
        assert "serving" not in result.stdout
        assert "Traceback" not in result.stderr
        assert result.stderr.startswith(f"Error: {bogus}: not a fhir-pub publication")
        assert len(result.stderr.splitlines()) == 1


class TestSettingsReference:
    """``serve --help`` lists every FHIR_PUB_* setting, generated from the Settings object."""

    def test_help_lists_every_setting_with_its_description(self) -> None:
        """Each field of Settings appears by its variable name, with a description (no field undocumented)."""
        result = CliRunner().invoke(main, ["serve", "--help"], terminal_width=2000)
        assert result.exit_code == 0
        for name, field in Settings.model_fields.items():
            assert field.description, f"{name} has no docstring"
            line = next(line for line in result.output.splitlines() if f"FHIR_PUB_{name.upper()} " in line)
            assert field.description in line


class TestJobsFolderNotWritable:
    """A jobs folder that cannot be written makes $export answer a clear OperationOutcome, not 500."""

    def test_export_answers_503_outcome(self, built: Path, tmp_path: Path) -> None:
        """Kick-off answers 503 with an OperationOutcome naming FHIR_PUB_JOBS_DIR; reads still answer."""
        blocker = tmp_path / "a-file"
        blocker.write_text("", encoding="utf-8")  # a folder under a file cannot be made, even by root
        port = free_port()
        process = start(tmp_path, built, port, jobs_dir=str(blocker / "jobs"))
        try:
            base = f"http://127.0.0.1:{port}/fhir"
            headers = {"Accept": "application/fhir+json", "Prefer": "respond-async"}
            response = requests.get(f"{base}/$export", headers=headers, timeout=10)
            assert response.status_code == 503
            outcome = response.json()
            assert outcome["resourceType"] == "OperationOutcome"
            assert "FHIR_PUB_JOBS_DIR" in json.dumps(outcome["issue"])
            assert str(blocker) not in response.text  # the server's layout is not the client's business
            assert requests.get(f"{base}/metadata", timeout=10).status_code == 200
        finally:
            stop(process)
