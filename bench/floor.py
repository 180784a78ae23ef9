"""The floor of a WSGI app on granian: fhir-pub's answers replayed from memory, with no framework.

bench/results.py and the random benchmarks serve this beside nginx and fhir-pub, with the same granian
settings as ``fhir-pub serve``, so that the figures show how much of the gap to nginx is granian's own cost
per request, which no app running on it can go below. ``FLOOR_ROOT`` names a folder with ``www/`` (the
bodies nginx serves, one file per URL path) and, optionally, ``headers/`` (for a top-level file of
``www/``, the same name: the JSON list of fhir-pub's headers; without one, the answer has the headers of
the JSON list ``FLOOR_HEADERS`` names, else nginx's ``Content-Type``). ``FLOOR_PATHS``, if set, names a
file of URL paths (one a line) to hold instead of every top-level file of ``www/``: the random benchmarks'
lists, paths into ``fhir-pub export --static``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(os.environ["FLOOR_ROOT"])
ANSWERS: dict[str, tuple[bytes, list[tuple[str, str]]]] = {}
# FLOOR_HEADERS: a JSON list of the headers to send without a headers/ file; else nginx's default_type.
held = os.environ.get("FLOOR_HEADERS")
DEFAULT = (
    [(str(k), str(v)) for k, v in json.loads(Path(held).read_text())]
    if held
    else [("Content-Type", "application/fhir+json")]
)
listed = os.environ.get("FLOOR_PATHS")
names = (
    [line for line in Path(listed).read_text(encoding="utf-8").splitlines() if line]
    if listed
    else [f"/{path.name}" for path in (ROOT / "www").iterdir() if path.is_file()]
)
for name in names:
    stored = ROOT / "headers" / name.lstrip("/")
    headers = [(str(k), str(v)) for k, v in json.loads(stored.read_text())] if stored.is_file() else DEFAULT
    body = (ROOT / "www" / name.lstrip("/")).read_bytes()
    ANSWERS[name] = body, [*headers, ("Content-Length", str(len(body)))]
ANSWERS.setdefault("/ready", (b"{}", [*DEFAULT, ("Content-Length", "2")]))


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer a stored body with its headers, or 404."""
    found = ANSWERS.get(environ.get("PATH_INFO", ""))
    if found is None:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    start_response("200 OK", found[1])
    return [found[0]]
