"""Call-level trace of one search through the Flask test client: project calls and module transitions.

The bundled publication is built once (into a temporary directory, or ``--publication FILE``), the app is
created and the request sent once to warm every cache that is not per request (imports, compiled
statements); the response cache is off, so the measured request runs the whole search. It is then
run under ``sys.setprofile``: every Python call whose code lives in ``fhir_pub/`` counts, and a
*transition* is a call whose callee's module differs from the module of the project frame it was called
from (a project function calling into another project module, or back).

    .venv/bin/python bench/trace_request.py [--publication FILE] [--path '/fhir/ClinicalUseDefinition?...']
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections import Counter
from pathlib import Path
from types import FrameType
from typing import Any

import fhir_pub
from fhir_pub.build import build
from fhir_pub.settings import Settings
from fhir_pub.web import create_app

PACKAGE = str(Path(fhir_pub.__file__).resolve().parent)
REQUEST = "/fhir/ClinicalUseDefinition?type=warning&_include=ClinicalUseDefinition:subject"


def _module(frame: FrameType | None) -> str | None:
    """The project module a frame runs in (``fhir_pub.search.engine``), or None outside the project."""
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith(PACKAGE):
            relative = Path(filename).relative_to(PACKAGE).with_suffix("")
            return ".".join(("fhir_pub", *relative.parts))
        frame = frame.f_back  # a library frame between two project frames: look through it
    return None


def trace(client: Any, path: str) -> tuple[int, int, Counter[str], Counter[tuple[str, str]], int]:
    """(calls, transitions, calls per module, transitions per pair, status) for one GET of ``path``."""
    calls: Counter[str] = Counter()
    moves: Counter[tuple[str, str]] = Counter()

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        if event != "call" or not frame.f_code.co_filename.startswith(PACKAGE):
            return
        callee = _module(frame)
        assert callee is not None
        calls[callee] += 1
        caller = _module(frame.f_back)
        if caller is not None and caller != callee:
            moves[(caller, callee)] += 1

    sys.setprofile(profile)
    try:
        response = client.get(path)
    finally:
        sys.setprofile(None)
    return sum(calls.values()), sum(moves.values()), calls, moves, response.status_code


def main() -> None:
    """Build (unless given a file), warm up, trace the request and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--publication", type=Path)
    parser.add_argument("--path", default=REQUEST)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        publication = args.publication or build(Path(scratch) / "p.sqlite").path
        settings = Settings(publication=publication, response_cache=0)
        client = create_app(settings).test_client()
        warm = client.get(args.path)
        assert warm.status_code == 200, warm.status_code
        total, transitions, calls, moves, status = trace(client, args.path)
    print(f"request: GET {args.path} -> {status}")
    print(f"project function calls: {total}")
    print(f"module-to-module transitions: {transitions}")
    print("calls per module:")
    for module, n in sorted(calls.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {n:6d}  {module}")
    print("transitions (caller -> callee):")
    for (caller, callee), n in sorted(moves.items(), key=lambda item: (-item[1], item[0])):
        print(f"  {n:6d}  {caller} -> {callee}")


if __name__ == "__main__":
    main()
