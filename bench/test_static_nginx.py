"""nginx serving a static export (``fhir-pub export --static``) with the README's configuration.

Not part of the test command, because it needs the nginx binary (Debian: ``apt-get install nginx-light``);
tests/test_static.py covers the same export with Python's own file server. Run it as

    .venv-test/bin/pytest bench/test_static_nginx.py
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import conftest
import test_static as shared
from conftest import free_port

from fhir_pub.static import nginx_config
from fhir_pub.store import Store

# The fixtures of tests/test_static.py: the bundled build, its static export, and a real fhir-pub serve.
built, site, fhir_pub = conftest.built, shared.site, shared.fhir_pub
ended, read_urls, serve_files = shared.ended, shared.read_urls, shared.serve_files

NGINX = """daemon off;
master_process off;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log;
events {{ worker_connections 64; }}
http {{
    access_log off;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    server {{
        listen 127.0.0.1:{port};
{snippet}    }}
}}
"""


@pytest.fixture(scope="module")
def nginx(tmp_path_factory: pytest.TempPathFactory, site: Path) -> Iterator[str]:
    """The base URL of nginx serving the export with the README's configuration (``nginx_config``)."""
    tmp, port = tmp_path_factory.mktemp("nginx"), free_port()
    conf = tmp / "nginx.conf"
    conf.write_text(NGINX.format(tmp=tmp, port=port, snippet=nginx_config(str(site))), encoding="utf-8")
    nginx_binary = shutil.which("nginx") or "/usr/sbin/nginx"
    command = [nginx_binary, "-p", str(tmp), "-e", str(tmp / "error.log"), "-c", str(conf)]
    process = serve_files(command, f"http://127.0.0.1:{port}/fhir/metadata", tmp / "error.log")
    yield f"http://127.0.0.1:{port}/fhir"
    ended(process)


class TestNginx:
    """nginx answers every read as fhir-pub does, with no Python."""

    def test_nginx_answers_every_read_like_fhir_pub(self, built: Path, fhir_pub: str, nginx: str) -> None:
        """Metadata, every read and every vread: same status, body bytes, Content-Type and Last-Modified."""
        paths = read_urls(Store(built))
        converted = Store(built).connection().execute("SELECT COUNT(*) FROM converted").fetchone()[0]
        assert len(paths) == 1 + 2 * Store(built).count() + 2 + 2 * converted  # R5, then R4B and R4
        with requests.Session() as ours, requests.Session() as theirs:
            for path in paths:
                expected, found = ours.get(fhir_pub + path, timeout=5), theirs.get(nginx + path, timeout=5)
                assert (expected.status_code, found.status_code) == (200, 200), path
                if path.endswith("/metadata"):  # the server names its base; the files cannot know theirs
                    served, base = expected.json(), fhir_pub + path.removesuffix("/metadata")
                    assert served["implementation"].pop("url") == base
                    assert served.pop("url", f"{base}/metadata") == f"{base}/metadata"
                    assert served == found.json(), path
                else:
                    assert expected.content == found.content, path
                assert expected.headers["Content-Type"] == found.headers["Content-Type"], path
                assert expected.headers.get("Last-Modified") == found.headers.get("Last-Modified") or (
                    path.endswith("/metadata")  # fhir-pub sends none for metadata; nginx the build time
                ), path

    @pytest.mark.parametrize(
        "path",
        [
            "/Organization/no-such-id",
            "/Organization/fda/_history/999",
            "/Nothing/fda",
            "/ClinicalUseDefinition?type=warning",
            "/ClinicalUseDefinition/",
            "",
            "/",
        ],
    )
    def test_not_found_is_an_operation_outcome(self, nginx: str, path: str) -> None:
        """Whatever is not a file (an unknown id or version, search) is a 404 OperationOutcome."""
        response = requests.get(nginx + path, timeout=5, allow_redirects=False)
        assert response.status_code == 404
        assert response.headers["Content-Type"] == "application/fhir+json; charset=utf-8"
        body = orjson.loads(response.content)
        assert (body["resourceType"], body["issue"][0]["code"]) == ("OperationOutcome", "not-found")

    def test_unknown_id_answers_like_fhir_pub(self, fhir_pub: str, nginx: str) -> None:
        """An unknown id: 404 with a not-found error issue from both (the wording differs)."""
        answers = [requests.get(f"{base}/Organization/no-such-id", timeout=5) for base in (fhir_pub, nginx)]
        shapes = [
            (
                r.status_code,
                r.headers["Content-Type"],
                [(i["severity"], i["code"]) for i in r.json()["issue"]],
            )
            for r in answers
        ]
        assert (
            shapes[0] == shapes[1] == (404, "application/fhir+json; charset=utf-8", [("error", "not-found")])
        )

    def test_internal_folders_are_not_urls(self, site: Path, nginx: str) -> None:
        """The vread files and the error file are reachable only through the FHIR URLs."""
        vread = next((site / "vread" / "Organization" / "fda").iterdir())
        root = nginx.removesuffix("/fhir")
        for path in (f"/vread/Organization/fda/{vread.name}", "/errors/not-found"):
            assert requests.get(root + path, timeout=5).status_code == 404

    def test_caching_headers(self, nginx: str) -> None:
        """Conditional requests work against the file server's own validators; CORS and nosniff are set."""
        url = f"{nginx}/Organization/fda"
        first = requests.get(url, headers={"Origin": "https://app.example"}, timeout=5)
        assert first.headers["Access-Control-Allow-Origin"] == "*"
        assert first.headers["X-Content-Type-Options"] == "nosniff"
        by_etag = requests.get(url, headers={"If-None-Match": first.headers["ETag"]}, timeout=5)
        by_date = requests.get(url, headers={"If-Modified-Since": first.headers["Last-Modified"]}, timeout=5)
        assert (by_etag.status_code, by_date.status_code) == (304, 304)

    def test_gzip(self, nginx: str) -> None:
        """FHIR JSON is compressed for clients that accept it, as fhir-pub does."""
        response = requests.get(f"{nginx}/metadata", headers={"Accept-Encoding": "gzip"}, timeout=5)
        assert response.headers["Content-Encoding"] == "gzip"
        assert orjson.loads(response.content)["resourceType"] == "CapabilityStatement"
