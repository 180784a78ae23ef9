"""The synthetic corpus generator (bench/corpus.py): valid whole graphs, deterministic, shaped like ours."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_pub.publication import Publication, load
from fhir_pub.validation import Validator

ROOT = Path(__file__).resolve().parent.parent


def generate(out: Path, resources: int, seed: int) -> dict[str, int]:
    """Run the generator as the benchmarks do; its printed count per type."""
    script = str(ROOT / "bench" / "corpus.py")
    done = subprocess.run(
        [sys.executable, script, "--resources", str(resources), "--seed", str(seed), "--out", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    summary = json.loads(done.stdout)
    assert summary["resources"] == resources
    return dict(summary["types"])


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*.json"))}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    """A generated corpus of 1,000 resources, seed 7, and the counts the generator printed."""
    out = tmp_path_factory.mktemp("corpus")
    return out, generate(out, 1000, 7)


class TestCorpus:
    """What the benchmarks rely on."""

    def test_valid(self, corpus: tuple[Path, dict[str, int]]) -> None:
        """Every layer of the validator, graph included, finds no error and no warning."""
        report = Validator().validate_paths([corpus[0]])
        assert report.checked == 1000
        assert [f"{i.source}: {i.message}" for i in report.issues] == []

    def test_counts_match_files(self, corpus: tuple[Path, dict[str, int]]) -> None:
        """The printed counts are the files written, each where ``fhir-pub`` expects it."""
        folder, counts = corpus
        written = load(folder)  # checks <Type>/<id>.json placement and unique ids
        assert counts == written.counts()

    def test_type_mix(self, corpus: tuple[Path, dict[str, int]], publication: Publication) -> None:
        """The same types as the bundled publication, in about its proportions, and one graph per drug."""
        counts = corpus[1]
        real = publication.counts()
        assert set(real) == set(counts)
        drugs = counts["MedicationKnowledge"]
        assert drugs == counts["Medication"] == counts["Group"] > 1
        assert counts["Organization"] == drugs * real["Organization"]
        # A Provenance per clinical use, and per other fact-bearing resource of the real publication (where
        # the real one traces an element by element, one per source, a synthetic drug has one for all).
        targets = {t["reference"] for p in publication.of_type("Provenance") for t in p["target"]}
        fixed = len(targets) - real["ClinicalUseDefinition"]
        assert counts["Provenance"] == counts["ClinicalUseDefinition"] + drugs * fixed
        share = counts["ClinicalUseDefinition"] / 1000
        assert real["ClinicalUseDefinition"] / sum(real.values()) == pytest.approx(share, abs=0.1)

    def test_deterministic(self, corpus: tuple[Path, dict[str, int]], tmp_path: Path) -> None:
        """Same seed and size: the same bytes; another seed: other content."""
        generate(tmp_path / "again", 1000, 7)
        assert files(corpus[0]) == files(tmp_path / "again")
        generate(tmp_path / "other", 1000, 8)
        assert files(corpus[0]) != files(tmp_path / "other")

    def test_exact_odd_size(self, tmp_path: Path) -> None:
        """An odd size is met exactly too (a drug with a fourth leaflet)."""
        counts = generate(tmp_path, 1001, 3)
        assert sum(counts.values()) == 1001

    def test_synthetic_text(self, corpus: tuple[Path, dict[str, int]], publication: Publication) -> None:
        """No name of the real drug or its leaflets' organizations appears; the text says it is synthetic."""
        # fhir-pub itself is named in every profile url; the others must not appear.
        names = {r["name"] for r in publication.of_type("Organization") if r["id"] != "fhir-pub"}
        names |= {n for r in publication.of_type("MedicationKnowledge") for n in r["name"]}
        names |= {"Besponsa", "inotuzumab", "MedlinePlus"}
        text = b"".join(files(corpus[0]).values()).decode()
        assert [name for name in sorted(names) if name in text] == []
        drug = json.loads((corpus[0] / "MedicationKnowledge" / "d000001.json").read_text(encoding="utf-8"))
        assert drug["code"]["text"].startswith("Synthetic drug 00001")

    def test_too_small(self, tmp_path: Path) -> None:
        """A size below one complete drug is refused with a message, not a traceback."""
        done = subprocess.run(
            [sys.executable, str(ROOT / "bench" / "corpus.py"), "--resources", "5", "--out", str(tmp_path)],
            capture_output=True,
            text=True,
        )
        assert (done.returncode, done.stdout) == (1, "")
        assert "at least" in done.stderr
        assert list(tmp_path.iterdir()) == []
