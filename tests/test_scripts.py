"""The project's scripts: the test command leaves the quickstart's served install alone."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A stand-in for python3 whose ``-m venv DIR`` makes DIR/bin with tools that log their call and succeed, so
# the test sees what scripts/test would install into and run, in a second, without pip or the network.
FAKE_PYTHON = """#!/bin/sh
log="$FAKE_LOG"
echo "python3 $*" >> "$log"
if [ "$1" = "-m" ] && [ "$2" = "venv" ]; then
    mkdir -p "$3/bin"
    for tool in python ruff mypy pytest; do
        printf '#!/bin/sh\\necho "%s/bin/%s $*" >> "%s"\\n' "$3" "$tool" "$log" > "$3/bin/$tool"
        chmod +x "$3/bin/$tool"
    done
fi
"""


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` with its size and modification time."""
    return {
        str(path.relative_to(folder)): (path.stat().st_size, path.stat().st_mtime_ns)
        for path in sorted(folder.rglob("*"))
    }


class TestScriptsTest:
    """``scripts/test`` (quickstart 2) runs in its own environment, never the served ``.venv``."""

    def test_does_not_touch_dot_venv(self, tmp_path: Path) -> None:
        """A checkout's ``.venv`` is byte for byte the same after scripts/test, which used ``.venv-test``."""
        checkout = tmp_path / "checkout"
        (checkout / "scripts").mkdir(parents=True)
        shutil.copy2(ROOT / "scripts" / "test", checkout / "scripts" / "test")
        served = checkout / ".venv" / "bin"
        served.mkdir(parents=True)
        (served / "fhir-pub").write_text("#!/bin/sh\n# the server quickstart 1 runs\n", encoding="utf-8")
        before = snapshot(checkout / ".venv")
        shims = tmp_path / "shims"
        shims.mkdir()
        (shims / "python3").write_text(FAKE_PYTHON, encoding="utf-8")
        (shims / "python3").chmod(0o755)
        log = tmp_path / "calls.log"
        env = {**os.environ, "PATH": f"{shims}:{os.environ['PATH']}", "FAKE_LOG": str(log)}
        result = subprocess.run(
            [str(checkout / "scripts" / "test"), "-q"], env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        assert snapshot(checkout / ".venv") == before
        calls = log.read_text(encoding="utf-8").splitlines()
        assert calls[0] == "python3 -m venv .venv-test"
        assert any(".venv-test/bin/python -m pip install" in call and "-e .[test]" in call for call in calls)
        assert calls[-1] == ".venv-test/bin/pytest -q"
        assert not any(".venv/" in call for call in calls)

    def test_test_environment_is_ignored(self) -> None:
        """``.venv-test`` is kept out of git and out of the image's build context, like ``.venv``."""
        assert ".venv-test/" in (ROOT / ".gitignore").read_text(encoding="utf-8").splitlines()
        assert ".venv-test" in (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()

    def test_docs_run_tools_from_the_test_environment(self) -> None:
        """Where the README runs pytest or a bench script, it uses ``.venv-test`` (editable, test extras)."""
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        assert ".venv/bin/pytest" not in readme
        assert ".venv/bin/python bench" not in readme
        assert ".venv/bin/pip install -e" not in readme


class TestImageAndRelease:
    """The Dockerfile is operable and the release files exist and point only at files that exist."""

    def test_dockerfile(self) -> None:
        """A healthcheck on /healthz, exact base versions, a jobs folder, and no fixed worker count."""
        dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
        assert "HEALTHCHECK" in dockerfile
        assert "/healthz" in dockerfile
        bases = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("FROM ")]
        assert bases
        assert all(base.count(".") >= 2 or "@sha256:" in base for base in bases), bases
        assert "ENV FHIR_PUB_JOBS_DIR=/home/fhirpub/jobs" in dockerfile
        assert not any(line.startswith("CMD") and "--workers" in line for line in dockerfile.splitlines())

    def test_check_image_is_outside_the_test_command(self) -> None:
        """scripts/check-image exists, is executable, and scripts/test does not run it."""
        script = ROOT / "scripts" / "check-image"
        assert os.access(script, os.X_OK)
        assert "check-image" not in (ROOT / "scripts" / "test").read_text(encoding="utf-8")

    def test_release_files(self) -> None:
        """LICENSE states all three licences; CHANGELOG and SECURITY exist; the README has the disclaimer."""
        licence = (ROOT / "LICENSE").read_text(encoding="utf-8")
        for statement in ("MIT License", "CC-BY-4.0", "belong to their publishers"):
            assert statement in licence
        assert (ROOT / "CHANGELOG.md").is_file()
        assert (ROOT / "SECURITY.md").is_file()
        assert "Not medical advice" in (ROOT / "README.md").read_text(encoding="utf-8")

    def test_profiles_readme_points_only_inside_the_repository(self) -> None:
        """Every backquoted relative path in profiles/README.md names a file or folder of the repository."""
        text = (ROOT / "profiles" / "README.md").read_text(encoding="utf-8")
        for name in re.findall(r"`([\w./-]+\.json)`", text):
            assert (ROOT / "profiles" / name).exists(), name


class TestCheckClients:
    """``scripts/check-clients`` (real third-party clients) parses; its NDJSON checker tells good from bad."""

    def test_scripts_parse_and_ndjson_checker_judges(self, tmp_path: Path) -> None:
        """It passes ``bash -n``, the helpers compile, check_ndjson.py accepts good and rejects bad."""
        script = ROOT / "scripts" / "check-clients"
        assert os.access(script, os.X_OK)
        assert "check-clients" not in (ROOT / "scripts" / "test").read_text(encoding="utf-8")
        assert subprocess.run(["bash", "-n", str(script)], capture_output=True, check=False).returncode == 0
        helpers = ROOT / "scripts" / "clients"
        for name in ("python_clients.py", "check_ndjson.py"):
            source = (helpers / name).read_text(encoding="utf-8")
            compile(source, name, "exec")
        checker = [sys.executable, str(helpers / "check_ndjson.py")]

        def judge(folder: Path, *expect: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*checker, str(folder), "--expect", *expect], capture_output=True, text=True, timeout=60
            )

        good = tmp_path / "good"
        good.mkdir()
        lines = [json.dumps({"resourceType": "Organization", "id": f"o{n}"}) for n in range(3)]
        (good / "1.Organization.ndjson").write_text("\n".join(lines) + "\n", encoding="utf-8")
        manifest = {"output": [{"type": "Organization", "url": "x", "count": 3}], "error": []}
        (good / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        result = judge(good, "Organization=3", "Group=0")
        assert result.returncode == 0, result.stdout
        assert "\nFAIL" not in "\n" + result.stdout
        assert judge(good, "Organization=4").returncode == 1  # a count the server does not report
        assert judge(good, "Group=0").returncode == 1  # a type the server does not list

        for name, text in [
            ("not-json", lines[0] + "\n{not json\n"),
            ("wrong-type", json.dumps({"resourceType": "Group", "id": "g"}) + "\n"),
            ("repeated-id", lines[0] + "\n" + lines[0] + "\n"),
        ]:
            bad = tmp_path / name
            bad.mkdir()
            (bad / "Organization.ndjson").write_text(text, encoding="utf-8")
            count = str(len(text.splitlines()))
            result = judge(bad, f"Organization={count}")
            assert result.returncode == 1, (name, result.stdout)
            assert "FAIL ndjson Organization.ndjson" in result.stdout, (name, result.stdout)
