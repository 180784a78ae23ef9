"""The floor of a WSGI app on granian: fhir-pub's answers replayed from memory, with no framework.

bench/results.py serves this beside nginx and fhir-pub, with the same granian settings as ``fhir-pub
serve``, so that RESULTS.md shows how much of the gap to nginx is granian's own cost per request, which
no app running on it can go below. ``FLOOR_ROOT`` names a folder with ``www/`` (one file per URL path,
the bodies nginx serves) and ``headers/`` (the same names: the JSON list of fhir-pub's headers).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

ROOT = Path(os.environ["FLOOR_ROOT"])
ANSWERS: dict[str, tuple[bytes, list[tuple[str, str]]]] = {}
for path in (ROOT / "www").iterdir():
    stored = ROOT / "headers" / path.name
    headers = [(str(k), str(v)) for k, v in json.loads(stored.read_text())] if stored.exists() else []
    body = path.read_bytes()
    ANSWERS[f"/{path.name}"] = body, [*headers, ("Content-Length", str(len(body)))]


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer a stored body with its headers, or 404."""
    found = ANSWERS.get(environ.get("PATH_INFO", ""))
    if found is None:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    start_response("200 OK", found[1])
    return [found[0]]
