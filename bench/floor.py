"""The floor of a WSGI app on granian: the files nginx serves, answered from memory with no framework.

bench/results.py serves this beside nginx and fhir-pub, with the same granian settings as ``fhir-pub
serve``, so that RESULTS.md shows how much of the gap to nginx is granian's own cost per request, which
no app running on it can go below. ``FLOOR_ROOT`` names the folder of files (one per URL path).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

FILES = {f"/{p.name}": p.read_bytes() for p in Path(os.environ["FLOOR_ROOT"]).iterdir() if p.is_file()}


def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Answer a file's bytes, or 404."""
    body = FILES.get(environ.get("PATH_INFO", ""))
    if body is None:
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", "application/fhir+json"), ("Content-Length", str(len(body)))])
    return [body]
