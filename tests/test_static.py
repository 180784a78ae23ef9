"""Static export (``fhir-pub export --static``): nginx or any file server answers reads as fhir-pub does."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import requests
from click.testing import CliRunner
from conftest import free_port, start, stop

from fhir_pub.cli import main
from fhir_pub.errors import Invalid, PublicationError
from fhir_pub.handlers import BASE_SUFFIXES, converted_capability
from fhir_pub.static import nginx_config, write_static
from fhir_pub.store import Store

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, built: Path) -> Path:
    """A static export of the bundled publication."""
    folder = tmp_path_factory.mktemp("static") / "site"
    write_static(Store(built), folder)
    return folder


def read_urls(store: Store) -> list[str]:
    """Every read and vread path of a publication (after the base), and metadata, from the store itself.

    At R5, then at R4B and R4 (``/R4B/...``, ``/R4/...``: the converted forms).
    """
    paths = ["/metadata"]
    for kind in sorted(store.types):
        for rid, stored in store.stored(kind):
            paths += [f"/{kind}/{rid}", f"/{kind}/{rid}/_history/{stored.version}"]
    for version, suffix in BASE_SUFFIXES.items():
        paths.append(f"{suffix}/metadata")
        for kind in store.converted_types(version):
            for rid, stored in store.stored_converted(version, kind):
                paths += [f"{suffix}/{kind}/{rid}", f"{suffix}/{kind}/{rid}/_history/{stored.version}"]
    return paths


def wait_for(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    """Return once ``url`` answers 200; fail with the log if the process dies or never answers."""
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(url, timeout=1).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail(f"{process.args!r} did not start: {log.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)


def serve_files(command: list[str], url: str, log: Path) -> subprocess.Popen[bytes]:
    """Start a static file server and wait until it serves ``url``."""
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    wait_for(url, process, log)
    return process


def ended(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    process.wait(timeout=15)


@pytest.fixture(scope="module")
def fhir_pub(tmp_path_factory: pytest.TempPathFactory, built: Path) -> Iterator[str]:
    """The base URL of a real ``fhir-pub serve`` of the same build."""
    port = free_port()
    process = start(tmp_path_factory.mktemp("server"), built, port)
    yield f"http://127.0.0.1:{port}/fhir"
    stop(process)


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Iterator[str]:
    """The base URL of Python's http.server serving the export with no configuration at all."""
    tmp, port = tmp_path_factory.mktemp("plain"), free_port()
    command = [
        sys.executable,
        "-m",
        "http.server",
        str(port),
        "--bind",
        "127.0.0.1",
        "--directory",
        str(site),
    ]
    process = serve_files(command, f"http://127.0.0.1:{port}/fhir/metadata", tmp / "log")
    yield f"http://127.0.0.1:{port}/fhir"
    ended(process)


class TestServedAsStaticFiles:
    """A static web server answers every read as fhir-pub does, with no Python."""

    def test_any_file_server_answers_reads(self, built: Path, fhir_pub: str, plain: str) -> None:
        """With no configuration (http.server), every read is the same bytes, and metadata the same document.

        The server's metadata says the base URL it answers at (``implementation.url``); the files cannot know
        theirs, so they leave it out and are otherwise the same.
        """
        paths = [p for p in read_urls(Store(built)) if "/_history/" not in p]
        with requests.Session() as ours, requests.Session() as theirs:
            for path in paths:
                expected, found = ours.get(fhir_pub + path, timeout=5), theirs.get(plain + path, timeout=5)
                assert (expected.status_code, found.status_code) == (200, 200), path
                if path.endswith("/metadata"):
                    served, base = expected.json(), fhir_pub + path.removesuffix("/metadata")
                    assert served["implementation"].pop("url") == base
                    assert served.pop("url", f"{base}/metadata") == f"{base}/metadata"  # R4B, R4: theirs
                    assert served == found.json()
                    assert "url" not in found.json()["implementation"]
                else:
                    assert expected.content == found.content, path


def files(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Relative path -> (bytes, mtime in ns) of every file below ``folder``."""
    return {
        p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file()
    }


class TestWriteStatic:
    """The library function: layout, determinism, and a folder that appears whole or not at all."""

    def test_layout(self, built: Path, site: Path) -> None:
        """Metadata, the error file, and each resource at fhir/T/id and vread/T/id/version, as stored."""
        store = Store(built)
        expected = {"fhir/metadata": store.capability}
        for kind in store.types:
            for rid, stored in store.stored(kind):
                expected[f"fhir/{kind}/{rid}"] = stored.body
                expected[f"vread/{kind}/{rid}/{stored.version}"] = stored.body
        for version, suffix in BASE_SUFFIXES.items():
            expected[f"fhir{suffix}/metadata"] = converted_capability(store, version, None)
            for kind in store.converted_types(version):
                for rid, stored in store.stored_converted(version, kind):
                    expected[f"fhir{suffix}/{kind}/{rid}"] = stored.body
                    expected[f"vread{suffix}/{kind}/{rid}/{stored.version}"] = stored.body
        found = files(site)
        assert orjson.loads(found.pop("errors/not-found")[0])["resourceType"] == "OperationOutcome"
        assert {path: body for path, (body, _) in found.items()} == expected

    def test_same_build_same_files(self, built: Path, site: Path, tmp_path: Path) -> None:
        """A second export of the build is identical, mtimes included (so are a file server's ETags)."""
        result = write_static(Store(built), tmp_path / "again")
        assert files(tmp_path / "again") == files(site)
        assert result.files == len(files(site))

    def test_empty_folder_is_filled(self, built: Path, tmp_path: Path) -> None:
        """An existing empty folder (a mount point made ready, say) is taken; no scratch folder is left."""
        (tmp_path / "out").mkdir()
        result = write_static(Store(built), tmp_path / "out")
        assert len(files(tmp_path / "out")) == result.files
        assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    def test_non_empty_folder_is_refused(self, built: Path, tmp_path: Path) -> None:
        """A folder with anything in it is left alone."""
        (tmp_path / "out").mkdir()
        (tmp_path / "out" / "keep").write_text("mine", encoding="utf-8")
        with pytest.raises(Invalid, match="not empty"):
            write_static(Store(built), tmp_path / "out")
        assert files(tmp_path / "out") == {"keep": (b"mine", (tmp_path / "out" / "keep").stat().st_mtime_ns)}

    @pytest.mark.parametrize(
        ("column", "value"), [("id", ".."), ("id", "a/b"), ("version", "../x"), ("type", "../Organization")]
    )
    def test_names_must_be_fhir_names(self, built: Path, tmp_path: Path, column: str, value: str) -> None:
        """A type, id or version that could leave its folder stops the export; nothing is left behind."""
        broken = tmp_path / "broken.sqlite"
        shutil.copyfile(built, broken)
        with sqlite3.connect(broken) as db:
            db.execute(f"UPDATE resource SET {column} = ? WHERE type = 'Group'", (value,))
        db.close()
        with pytest.raises(PublicationError, match="cannot be a file name"):
            write_static(Store(broken), tmp_path / "out")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["broken.sqlite"]


class TestCli:
    """``fhir-pub export --static DIR``."""

    def test_writes_every_file(self, built: Path, served: dict[str, Any], tmp_path: Path) -> None:
        """Two files a resource served (read and vread), at R5, R4B and R4; each metadata; the error file."""
        out = tmp_path / "site"
        result = CliRunner().invoke(main, ["export", "--static", str(out), "--publication", str(built)])
        assert result.exit_code == 0, result.output
        converted = Store(built).connection().execute("SELECT COUNT(*) FROM converted").fetchone()[0]
        expected = 2 * len(served) + 2 + 2 * converted + len(BASE_SUFFIXES)
        assert f"({len(served)} resources, {expected} files)" in result.output
        assert sum(1 for p in out.rglob("*") if p.is_file()) == expected

    def test_refuses_a_non_empty_folder(self, built: Path, tmp_path: Path) -> None:
        """An error message, exit 1, and the folder untouched."""
        (tmp_path / "site").mkdir()
        (tmp_path / "site" / "index.html").write_text("hello", encoding="utf-8")
        result = CliRunner().invoke(
            main, ["export", "--static", str(tmp_path / "site"), "--publication", str(built)]
        )
        assert (result.exit_code, result.exception.__class__) == (1, SystemExit)
        assert "exists and is not empty" in result.output
        assert [p.name for p in (tmp_path / "site").iterdir()] == ["index.html"]

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            ([], "exactly one of --out"),
            (["--out", "a", "--static", "b"], "exactly one of --out"),
            (["--static", "b", "--type", "Group"], "--type: only with --out"),
            (["--static", "b", "--since", "2026-01-01T00:00:00Z"], "--since: only with --out"),
            (["--static", "b", "--type-filter", "Group?_id=x"], "--type-filter: only with --out"),
            (["--static", "b", "--elements", "id"], "--elements: only with --out"),
            (["--static", "b", "--gzip", "--type", "Group"], "--type, --gzip: only with --out"),
        ],
    )
    def test_usage_errors(self, tmp_path: Path, args: list[str], message: str) -> None:
        """Exit 2 with the reason, before anything is built or written."""
        result = CliRunner().invoke(main, ["export", *args], env={"FHIR_PUB_CACHE_DIR": str(tmp_path)})
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert list(tmp_path.iterdir()) == []

    def test_bad_since_is_an_error_not_a_traceback(self, built: Path, tmp_path: Path) -> None:
        """An unparseable --since is a usage error (exit 2, no traceback), naming the option."""
        result = CliRunner().invoke(
            main,
            ["export", "--out", str(tmp_path / "x"), "--since", "yesterday", "--publication", str(built)],
        )
        assert (result.exit_code, result.exception.__class__) == (2, SystemExit)
        assert "--since='yesterday': expected an instant" in result.output


class TestDocumented:
    """The README shows the configuration the nginx test runs."""

    def test_readme_has_the_nginx_snippet(self) -> None:
        """The README's nginx block is ``nginx_config`` for its example root, verbatim."""
        readme = (ROOT / "README.md").read_text(encoding="utf-8")
        assert nginx_config("/srv/fhir-static") in readme
