"""No tracked file repeats a run of 10 words from a source leaflet (checked against their fingerprint)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import subprocess
from pathlib import Path
from typing import Any

from conftest import ROOT

FINGERPRINT = ROOT / "tests" / "data" / "leaflet-fingerprint.txt"
RUN = 10
CHECKED = {".json", ".md", ".py", ".txt", ".yaml", ".yml", ".html", ".xml", ".ndjson"}


def words(text: str) -> list[str]:
    """Lowercase words, digits and apostrophes: the tokens scripts/leaflet-fingerprint hashes."""
    return re.findall(r"[a-z0-9']+", text.lower())


def strings(node: Any) -> str:
    """A resource's string values, read as a person reads them."""
    if isinstance(node, dict):
        return " ".join(strings(v) for v in node.values())
    if isinstance(node, list):
        return " ".join(strings(v) for v in node)
    return node if isinstance(node, str) else ""


def readable(path: Path) -> str:
    """A file's text; for JSON its strings, with narrative markup removed so a run split by tags counts."""
    text = path.read_text(encoding="utf-8", errors="ignore")
    if path.suffix == ".json":
        with contextlib.suppress(ValueError):  # not JSON after all: read as text
            text = strings(json.loads(text))
    return re.sub(r"<[^>]+>", " ", text)


def copied(text: str, fingerprint: set[str]) -> list[str]:
    """The runs of RUN words in ``text`` whose hash is in the fingerprint."""
    found = words(text)
    runs = (" ".join(found[i : i + RUN]) for i in range(len(found) - RUN + 1))
    return [run for run in runs if hashlib.sha256(run.encode()).hexdigest()[:16] in fingerprint]


class TestOwnWords:
    """The leaflets' facts are stated in the project's own words."""

    def test_fingerprint_is_kept(self) -> None:
        """The fingerprint holds the leaflets' thousands of runs (hashes only, no text)."""
        lines = FINGERPRINT.read_text(encoding="ascii").split()
        assert len(lines) > 3000
        assert all(re.fullmatch(r"[0-9a-f]{16}", line) for line in lines)

    def test_detects_a_copied_run(self) -> None:
        """A run whose hash is in the fingerprint is found, split by markup or not: the check can fail."""
        run = "one two three four five six seven eight nine ten"
        fingerprint = {hashlib.sha256(run.encode()).hexdigest()[:16]}
        marked = re.sub(r"<[^>]+>", " ", "Before: One, two; three <b>four</b> five six seven eight nine ten!")
        assert copied(marked, fingerprint)
        assert copied("one two three four five six seven eight nine eleven", fingerprint) == []

    def test_no_tracked_file_copies_a_leaflet(self) -> None:
        """No tracked text file holds a run of 10 words from a leaflet."""
        fingerprint = set(FINGERPRINT.read_text(encoding="ascii").split())
        tracked = subprocess.run(
            ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.split()
        hits = {}
        for name in tracked:
            path = ROOT / name
            if path.suffix in CHECKED and path.is_file() and path != FINGERPRINT:
                found = copied(readable(path), fingerprint)
                if found:
                    hits[name] = found[:2]
        assert hits == {}
