"""Faults: killed or corrupt builds leave the served publication whole; SIGTERM drains requests."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests
from conftest import bundled_count, free_port, start, stop

from fhir_pub.build import build
from fhir_pub.publication import Publication


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, str]]:
    """A built publication and the base URL of a server answering from it."""
    folder = tmp_path_factory.mktemp("served")
    path = build(folder / "p.sqlite").path
    port = free_port()
    process = start(folder, path, port)
    yield path, f"http://127.0.0.1:{port}/fhir"
    stop(process)


def assert_still_serving(base: str, path: Path, before: str) -> None:
    """The artifact is byte-identical and the server answers reads and searches from it."""
    assert digest(path) == before
    assert requests.get(f"{base}/Organization/fda", timeout=10).json()["id"] == "fda"
    assert requests.get(f"{base}/ClinicalUseDefinition?_count=0", timeout=10).json()[
        "total"
    ] == bundled_count("ClinicalUseDefinition")


EFFECT = Path("ClinicalUseDefinition") / "effect-rash.json"


def _cut(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# Ways to damage a copy of the resources folder.
CORRUPTIONS: dict[str, Callable[[Path], None]] = {
    "truncated": lambda root: _cut(root / EFFECT),
    "empty": lambda root: (root / EFFECT).write_bytes(b""),
    "binary": lambda root: (root / EFFECT).write_bytes(bytes(range(256)) * 4),
    "latin-1": lambda root: (root / EFFECT).write_bytes('{"x": "caf\xe9"}'.encode("latin-1")),
    "not-a-resource": lambda root: (root / EFFECT).write_text("[1, 2, 3]"),
    "dangling": lambda root: (root / "Organization" / "fda.json").unlink(),
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupt_sources_are_refused_and_the_publication_keeps_serving(
    tmp_path: Path, publication: Publication, served: tuple[Path, str], kind: str
) -> None:
    """A build over damaged sources exits 1 naming the problem; the served artifact is untouched."""
    path, base = served
    before = digest(path)
    root = tmp_path / "resources"
    shutil.copytree(publication.root, root)
    CORRUPTIONS[kind](root)
    result = subprocess.run(
        [sys.executable, "-m", "fhir_pub", "build", "--out", str(path), "--resources", str(root)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    report = result.stdout + result.stderr
    assert "Traceback" not in report
    named = "Organization/fda" if kind == "dangling" else "effect-rash"
    assert named in report
    assert_still_serving(base, path, before)
    assert not list(path.parent.glob(f".{path.name}*"))  # no scratch file left behind


def test_build_killed_at_any_moment_leaves_the_old_or_the_new_publication(
    tmp_path: Path, served: tuple[Path, str]
) -> None:
    """SIGKILL at several points of a rebuild: the path always holds one whole publication."""
    path, base = served
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
        (whole,) = db.execute("SELECT count(*) FROM resource").fetchone()
    assert whole > 138  # the publication's resources and the conformance ones
    landed = 0
    for delay in (0.05, 0.3, 0.6, 0.9, 1.2, 1.6, 2.0):
        before = digest(path)
        process = subprocess.Popen(
            [sys.executable, "-m", "fhir_pub", "build", "--out", str(path)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(delay)
        if process.poll() is None:
            landed += 1
            process.send_signal(signal.SIGKILL)
        process.wait(timeout=300)
        after = digest(path)
        if after != before:  # the rebuild finished first: the new file must be whole
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
                assert db.execute("SELECT count(*) FROM resource").fetchone() == (whole,)
        assert requests.get(f"{base}/Organization/fda", timeout=10).status_code == 200
    assert landed >= 3, "the build finished before most kills: the test no longer exercises a kill"
    # The server keeps answering from the file it opened, whichever file now sits at the path.
    assert requests.get(f"{base}/ClinicalUseDefinition?_count=0", timeout=10).json()[
        "total"
    ] == bundled_count("ClinicalUseDefinition")
    # A later build clears the scratch files that killed builds left behind.
    build(path)
    assert not list(path.parent.glob(f".{path.name}*.partial"))


def test_sigterm_lets_in_flight_requests_finish(tmp_path: Path, served: tuple[Path, str]) -> None:
    """A request being answered when SIGTERM arrives completes; the server then exits cleanly."""
    path, _ = served
    port = free_port()
    process = start(tmp_path, path, port)
    base = f"http://127.0.0.1:{port}/fhir"
    # A $validate of a large resource keeps a worker busy for a while.
    group = {
        "resourceType": "Group",
        "type": "person",
        "membership": "definitional",
        "characteristic": [
            {"code": {"text": f"c{i}"}, "valueBoolean": True, "exclude": False} for i in range(8000)
        ],
    }
    answers: list[tuple[float, requests.Response]] = []

    def validate() -> None:
        response = requests.post(
            f"{base}/Group/$validate",
            data=json.dumps(group),
            headers={"Content-Type": "application/fhir+json"},
            timeout=120,
        )
        answers.append((time.monotonic(), response))

    worker = threading.Thread(target=validate)
    worker.start()
    time.sleep(0.5)
    process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    worker.join(timeout=120)
    assert process.wait(timeout=60) == 0
    assert answers, "the in-flight request was cut off"
    answered, response = answers[0]
    assert answered > signalled, "the request finished before SIGTERM: nothing was in flight"
    assert response.status_code == 200
    assert response.json()["resourceType"] == "OperationOutcome"
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{base}/metadata", timeout=5)
    stop_if_running(process)


def stop_if_running(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        stop(process)
