"""What scripts/r5-definitions and scripts/r4b-definitions share: a FHIR core package's types, compacted.

Each script names its package (``hl7.fhir.r5.core@5.0.0``, ``hl7.fhir.r4b.core@4.3.0``) and what it keeps;
reading the package, the constraints each type defines and the JSON written are the same for both. The
FHIR specification is CC0.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

CORE = "http://hl7.org/fhir/StructureDefinition/"  # the canonical base of every core type, R4B and R5 alike
NATIVE = {"ele-1"}  # checked natively by fhir_pub.validation.invariants, never by FHIRPath


def definitions(archive: Path) -> list[dict[str, Any]]:
    """The StructureDefinitions of the package's core types (specializations), by type name."""
    out = []
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            name = Path(member.name).name
            if not (name.startswith("StructureDefinition-") and name.endswith(".json")):
                continue
            handle = tar.extractfile(member)
            if handle is None:
                continue
            sd = json.load(handle)
            if sd.get("derivation") == "specialization" and sd.get("url", "").startswith(CORE):
                out.append(sd)
    return sorted(out, key=lambda sd: sd["type"])


def base_of(sd: dict[str, Any]) -> str | None:
    """The core type ``sd`` specializes (None for Base, Element's and Resource's own root)."""
    base = str(sd.get("baseDefinition", ""))
    return base[len(CORE) :] if base.startswith(CORE) else None


def own_constraints(sd: dict[str, Any]) -> list[list[str]]:
    """[path, key, severity, human, expression] of each constraint the type itself defines.

    An inherited constraint (its ``source`` another type) is left to the type that defines it, so it is
    stored once; ele-1 is left out (:data:`NATIVE`).
    """
    out = []
    for element in sd["differential"]["element"]:
        for constraint in element.get("constraint", []):
            if constraint["key"] in NATIVE or constraint.get("source", sd["url"]) != sd["url"]:
                continue
            fields = ("key", "severity", "human", "expression")
            out.append([element["path"], *(str(constraint.get(f, "")) for f in fields)])
    return out


def children(sd: dict[str, Any]) -> dict[str, list[str]]:
    """Each element's children in snapshot order, keyed by the element's path below the type."""
    out: dict[str, list[str]] = {}
    for element in sd["snapshot"]["element"]:
        path = element["path"].split(".")[1:]
        if path:
            out.setdefault(".".join(path[:-1]), []).append(path[-1])
    return out


def choices(sd: dict[str, Any]) -> dict[str, list[str]]:
    """The type's choice elements (``Extension.value`` for ``value[x]``) and the types each allows.

    Type names as FHIRPath engines' models spell them (``DateTime``, ``CodeableReference``).
    """
    out = {}
    for element in sd["snapshot"]["element"]:
        if element["path"].endswith("[x]"):
            codes = [str(t["code"]) for t in element.get("type", [])]
            out[element["path"][:-3]] = [code[:1].upper() + code[1:] for code in codes]
    return out


def elsewhere(sd: dict[str, Any]) -> dict[str, str]:
    """The type's elements defined by another's content (``contentReference``), with that element's path."""
    return {
        element["path"]: str(element["contentReference"]).split("#", 1)[-1]
        for element in sd["snapshot"]["element"]
        if "contentReference" in element
    }


def table(archive: Path, entry: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """``entry(sd)`` of each core type of the package, by type name."""
    return {sd["type"]: entry(sd) for sd in definitions(archive)}


def dumps(package: str, types: dict[str, dict[str, Any]]) -> str:
    """The table as JSON, one type a line (diffs of a new package stay readable)."""
    lines = [
        f"  {json.dumps(name)}: {json.dumps(entry, ensure_ascii=False)}" for name, entry in types.items()
    ]
    return '{"package": "' + package.replace("@", "#") + '", "types": {\n' + ",\n".join(lines) + "\n}}\n"


def archive_of(argv: list[str], package: str, scratch: str) -> Path:
    """The package named in ``argv[1]``, or ``package`` fetched with npm pack into ``scratch``."""
    if len(argv) > 1:
        return Path(argv[1])
    name = subprocess.run(
        ["npm", "pack", "--silent", package], cwd=scratch, check=True, capture_output=True, text=True
    ).stdout.strip()
    return Path(scratch) / name


def main(argv: list[str], package: str, entry: Callable[[dict[str, Any]], dict[str, Any]]) -> int:
    """Print the table of the package named in ``argv[1]``, or of ``package`` fetched with npm pack."""
    with tempfile.TemporaryDirectory() as scratch:
        types = table(archive_of(argv, package, scratch), entry)
    sys.stdout.write(dumps(package, types))
    return 0
