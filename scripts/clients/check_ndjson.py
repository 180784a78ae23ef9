"""Check the NDJSON files a Bulk Data client downloaded, one PASS/FAIL line per check.

Every non-empty line must parse as a JSON object whose ``resourceType`` is the type the file is named for
(``1.Provenance.ndjson`` or ``Provenance.ndjson``), no id may come twice in a type, and each type's line
count must equal the expected count. The expectation comes from the server at run time
(``--base URL``: ``GET [base]/[type]?_summary=count`` for every type its CapabilityStatement lists, so a
type the server holds none of must have no file) or is given (``--expect Type=N ...``). A
``manifest.json`` next to the files, when the client saved one, must have an empty ``error`` list and
``count``s that equal the lines downloaded. Exit status 1 if any check fails.

Usage: check_ndjson.py FOLDER (--base URL [--types T1,T2] | --expect TYPE=COUNT ...)
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any


def get_json(url: str) -> Any:
    """GET ``url`` as FHIR JSON."""
    request = urllib.request.Request(url, headers={"Accept": "application/fhir+json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def server_counts(base: str) -> dict[str, int]:
    """Each type the CapabilityStatement lists, with the ``total`` of ``_summary=count``."""
    capability = get_json(f"{base}/metadata")
    kinds = [entry["type"] for entry in capability["rest"][0]["resource"]]
    return {kind: int(get_json(f"{base}/{kind}?_summary=count")["total"]) for kind in kinds}


def file_type(path: Path) -> str:
    """The resource type a downloaded file is named for."""
    return path.name.removesuffix(".ndjson").rsplit(".", 1)[-1]


def check(folder: Path, expected: dict[str, int]) -> list[tuple[bool, str]]:
    """Every check's outcome and its line, in order."""
    results: list[tuple[bool, str]] = []
    lines: Counter[str] = Counter()
    files = sorted(folder.glob("*.ndjson"))
    if not files:
        results.append((False, f"no .ndjson files in {folder}"))
    for path in files:
        kind = file_type(path)
        seen: set[str] = set()
        problems: list[str] = []
        count = 0
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            count += 1
            try:
                resource = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(f"line {number} is not JSON ({exc.msg})")
                continue
            if not isinstance(resource, dict) or resource.get("resourceType") != kind:
                got = resource.get("resourceType") if isinstance(resource, dict) else type(resource).__name__
                problems.append(f"line {number} is a {got}")
                continue
            if resource.get("id") in seen:
                problems.append(f"line {number} repeats id {resource.get('id')}")
            seen.add(str(resource.get("id")))
        lines[kind] += count
        detail = "; ".join(problems[:3]) + (f" and {len(problems) - 3} more" if len(problems) > 3 else "")
        results.append((not problems, f"{path.name}: {count} lines" + (f": {detail}" if problems else "")))
    for kind in sorted(set(expected) | set(lines)):
        want = expected.get(kind)
        if want is None:
            results.append((False, f"{kind}: {lines[kind]} exported, but the server lists no such type"))
        else:
            results.append((lines[kind] == want, f"{kind}: {lines[kind]} exported, {want} expected"))
    manifest_path = folder / "manifest.json"
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        errors = manifest.get("error", [])
        results.append((errors == [], f"manifest error list: {len(errors)} files"))
        stated: Counter[str] = Counter()
        for output in manifest.get("output", []):
            stated[output["type"]] += int(output.get("count", 0))
        total = sum(stated.values())
        results.append((stated == lines, f"manifest counts equal the lines downloaded ({total})"))
    return results


def parse_expect(values: list[str]) -> dict[str, int]:
    """``Type=N`` pairs as a mapping."""
    expected: dict[str, int] = {}
    for value in values:
        kind, _, count = value.partition("=")
        expected[kind] = int(count)
    return expected


def main(argv: list[str] | None = None) -> int:
    """Check the folder and print one line per check and a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--base", help="FHIR base URL of the server that exported the files")
    source.add_argument("--expect", nargs="+", metavar="TYPE=COUNT", help="the expected counts")
    parser.add_argument("--types", help="with --base: the export's _type (comma-separated); others expect 0")
    args = parser.parse_args(argv)
    expected = server_counts(args.base.rstrip("/")) if args.base else parse_expect(args.expect)
    if args.types:
        wanted = set(args.types.split(","))
        expected = {kind: count if kind in wanted else 0 for kind, count in expected.items()}
    results = check(args.folder, expected)
    for ok, line in results:
        print(f"{'PASS' if ok else 'FAIL'} ndjson {line}")
    failed = sum(1 for ok, _ in results if not ok)
    print(f"ndjson: {len(results) - failed} PASS, {failed} FAIL")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
