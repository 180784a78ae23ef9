"""Validation and build in several processes give exactly what one process gives."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_pub.build import BuildError, build, source_digest
from fhir_pub.publication import bundled_dir
from fhir_pub.validation import Validator
from fhir_pub.validation.validator import PARALLEL_MIN

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A generated publication just large enough for the process pool."""
    out = tmp_path_factory.mktemp("parallel")
    script = str(ROOT / "bench" / "corpus.py")
    size = str(PARALLEL_MIN + 100)
    subprocess.run([sys.executable, script, "--resources", size, "--out", str(out)], check=True)
    return out


def content(path: Path) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows, except the build time (and the CapabilityStatement that carries it)."""
    with sqlite3.connect(path) as db:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        out = {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall() for t in sorted(tables)}
    db.close()
    out["info"] = [r for r in out["info"] if r[0] not in {"built_at", "capability"}]
    return out


class TestParallel:
    """Two workers against one."""

    def test_valid_report(self, corpus: Path) -> None:
        """A valid publication: the same (empty) report."""
        validator = Validator()
        serial = validator.validate_paths([corpus], workers=1)
        assert serial.ok
        assert serial == validator.validate_paths([corpus], workers=2)

    def test_invalid_report(self, corpus: Path, tmp_path: Path) -> None:
        """Broken resources: the same issues, in the same order."""
        broken = self.broken(corpus, tmp_path)
        validator = Validator()
        serial = validator.validate_paths([broken], workers=1)
        assert serial.errors > 20
        assert serial == validator.validate_paths([broken], workers=2)

    @staticmethod
    def broken(corpus: Path, tmp_path: Path) -> Path:
        """A copy of the corpus with every 97th file broken (unknown profile, or a narrative not a div)."""
        broken = tmp_path / "broken"
        subprocess.run(["cp", "-r", str(corpus), str(broken)], check=True)
        for index, path in enumerate(sorted(broken.rglob("*.json"))[::97]):
            resource = json.loads(path.read_text(encoding="utf-8"))
            if index % 2:
                resource["meta"]["profile"] = ["http://example.org/unknown"]
            else:
                resource["text"]["div"] = "<p>not a div</p>"
            path.write_text(json.dumps(resource), encoding="utf-8")
        return broken

    def test_refused_build(self, corpus: Path, tmp_path: Path) -> None:
        """A broken publication: both refuse, with the report validation gives, and write nothing."""
        broken = self.broken(corpus, tmp_path)
        reports = []
        for workers in (1, 2):
            with pytest.raises(BuildError) as refused:
                build(tmp_path / "out.sqlite", broken, workers=workers)
            reports.append(refused.value.report)
        assert reports[0].errors > 20
        assert reports[0] == reports[1]
        assert reports[0] == Validator().validate_paths([broken], workers=1)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["broken"]

    def test_build(self, corpus: Path, tmp_path: Path) -> None:
        """The same SQLite content."""
        one = build(tmp_path / "one.sqlite", corpus, workers=1)
        two = build(tmp_path / "two.sqlite", corpus, workers=2)
        assert one.resources == two.resources == PARALLEL_MIN + 100
        assert content(one.path) == content(two.path)
        assert one.digest == two.digest == source_digest(corpus, bundled_dir("profiles"))
