"""Instants in history and ``_since`` are compared as moments, not as text, and the file says its format."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from conftest import bundled_count
from flask.testing import FlaskClient

from fhir_pub.artifact import FORMAT_VERSION
from fhir_pub.build import build
from fhir_pub.errors import PublicationError
from fhir_pub.export import ExportRequest, export
from fhir_pub.publication import Publication
from fhir_pub.search.dates import parse_instant, parse_range
from fhir_pub.settings import Settings
from fhir_pub.store import Store
from fhir_pub.web import create_app

# Two moments whose text sorts the other way round: 01:00+02:00 on the 22nd is 23:00Z on the 21st,
# half an hour before 23:30Z.
EARLIER = ("Organization", "fda", "2026-11-22T01:00:00+02:00")
LATER = ("Organization", "nlm", "2026-11-21T23:30:00Z")


@pytest.fixture(scope="module")
def offsets(tmp_path_factory: pytest.TempPathFactory, publication: Publication) -> Path:
    """A build of the bundled publication with two Organizations updated at instants with offsets."""
    root = tmp_path_factory.mktemp("offsets") / "resources"
    shutil.copytree(publication.root, root)
    for kind, rid, instant in (EARLIER, LATER):
        path = root / kind / f"{rid}.json"
        resource = json.loads(path.read_text())
        resource["meta"]["lastUpdated"] = instant
        path.write_text(json.dumps(resource, indent=2) + "\n")
    return build(tmp_path_factory.mktemp("built") / "p.sqlite", resources_dir=root).path


@pytest.fixture(scope="module")
def client(offsets: Path) -> FlaskClient:
    """A test client serving that build."""
    return create_app(Settings(publication=offsets)).test_client()


class TestHistory:
    """History orders and filters versions by the moment they were updated."""

    def test_since_compares_moments(self, client: FlaskClient) -> None:
        """_since=23:15Z keeps the 23:30Z update and drops the one at 01:00+02:00 (23:00Z)."""
        bundle = client.get("/fhir/Organization/_history?_since=2026-11-21T23:15:00Z").json
        ids = [e["resource"]["id"] for e in bundle["entry"]]
        assert (bundle["total"], "nlm" in ids, "fda" in ids) == (
            bundled_count("Organization") - 1,
            True,
            False,
        )

    def test_since_with_an_offset(self, client: FlaskClient, served: dict[str, Any]) -> None:
        """A _since with an offset (+ sent unescaped) is the same moment as its UTC spelling."""
        utc = client.get("/fhir/_history?_since=2026-11-21T23:59:00Z").json["total"]
        assert client.get("/fhir/_history?_since=2026-11-22T00:59:00+01:00").json["total"] == utc
        assert utc == len(served) - 2  # all but the two Organizations moved before 23:59Z

    def test_newest_first_by_moment(self, client: FlaskClient) -> None:
        """The other resources (2026-11-22T00:00Z) come first, then 23:30Z, then 01:00+02:00 last."""
        bundle = client.get("/fhir/Organization/_history").json
        ids = [e["resource"]["id"] for e in bundle["entry"]]
        assert ids[-2:] == ["nlm", "fda"]

    def test_system_history_pages_in_order(self, client: FlaskClient, served: dict[str, Any]) -> None:
        """Paging the system history walks every resource once, newest first, ties by type and id."""
        seen = []
        offset = 0
        while True:
            bundle = client.get(f"/fhir/_history?_count=50&_offset={offset}").json
            entries = bundle.get("entry", [])
            if not entries:
                break
            seen += [(e["resource"]["resourceType"], e["resource"]["id"]) for e in entries]
            offset += 50
        assert seen[-2:] == [LATER[:2], EARLIER[:2]]
        assert len(seen) == len(set(seen)) == bundle["total"]
        moments = {
            (r["resourceType"], r["id"]): parse_range(r["meta"]["lastUpdated"]).low for r in served.values()
        }
        moments.update({EARLIER[:2]: parse_range(EARLIER[2]).low, LATER[:2]: parse_range(LATER[2]).low})
        assert seen == sorted(seen, key=lambda key: (-moments[key], key))

    def test_history_reads_an_index_not_a_sort(self, offsets: Path) -> None:
        """SQLite plans the system and type history pages without a temporary sort of the table."""
        db = sqlite3.connect(offsets)
        for where in ("1 = 1", "type = 'Organization'"):
            plan = db.execute(
                "EXPLAIN QUERY PLAN SELECT type, id, body FROM resource WHERE "
                f"{where} ORDER BY updated DESC, type, id LIMIT 20 OFFSET 40"
            ).fetchall()
            assert not any("TEMP B-TREE" in row[-1] for row in plan), plan
        db.close()


class TestExportSince:
    """Bulk export's _since keeps resources updated after the moment, on both of its paths."""

    @pytest.mark.parametrize("since", ["2026-11-21T23:15:00Z", "2026-11-22T00:15:00+01:00"])
    def test_since(self, tmp_path: Path, offsets: Path, since: str) -> None:
        """Only nlm of the two is after 23:15Z; the other Organizations (00:00Z) are too."""
        store = Store(offsets)
        result = export(
            store, ExportRequest(types=("Organization",), since=parse_instant(since)), tmp_path / "x"
        )
        assert result.files == [("Organization", "Organization.ndjson", bundled_count("Organization") - 1)]
        lines = (tmp_path / "x" / "Organization.ndjson").read_text().splitlines()
        assert "fda" not in {json.loads(line)["id"] for line in lines}

    def test_since_before_everything_copies_the_whole_type(self, tmp_path: Path, offsets: Path) -> None:
        """A _since before the type's oldest moment (23:00Z) exports them all."""
        store = Store(offsets)
        request = ExportRequest(types=("Organization",), since=parse_instant("2026-11-22T00:59:00+02:00"))
        whole = [("Organization", "Organization.ndjson", bundled_count("Organization"))]
        assert export(store, request, tmp_path / "x").files == whole


class TestFormat:
    """A publication records its format, and serving refuses another."""

    def test_recorded(self, offsets: Path) -> None:
        """The build writes the format version into PRAGMA user_version."""
        db = sqlite3.connect(offsets)
        assert db.execute("PRAGMA user_version").fetchone()[0] == FORMAT_VERSION
        db.close()

    def test_other_format_refused(self, tmp_path: Path, offsets: Path) -> None:
        """A file of another format is refused with a message that says to rebuild it."""
        old = tmp_path / "old.sqlite"
        shutil.copy(offsets, old)
        db = sqlite3.connect(old)
        db.execute("PRAGMA user_version = 1")
        db.commit()
        db.close()
        with pytest.raises(PublicationError, match=r"format 1.*rebuild it with fhir-pub build"):
            Store(old)
