"""The publication as a FHIR NPM package: package.json, .index.json, and one file per resource.

https://hl7.org/fhir/packages.html; written to a scratch file and renamed, so it appears whole. Each
profile is published with its snapshot (fhir_pub/snapshot.py) beside its differential.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path
from typing import Any

import orjson

from fhir_pub import __version__
from fhir_pub.atomic import replacing
from fhir_pub.build import BuildError
from fhir_pub.conformance import CANONICAL_BASE, Conformance, load_conformance
from fhir_pub.publication import bundled_dir, load
from fhir_pub.snapshot import with_snapshot
from fhir_pub.validation import Validator

NAME = "fhir-pub.publication"
KINDS = {"StructureDefinition", "ValueSet", "CodeSystem", "SearchParameter", "CapabilityStatement"}


def index_entry(filename: str, resource: dict[str, Any]) -> dict[str, str]:
    """One file's entry in ``.index.json``: every value a string (https://hl7.org/fhir/packages.html).

    ``url``, ``version``, ``kind``, ``type``, ``supplements``, ``content`` and ``derivation`` are the
    resource's own elements of those names where they are strings (a StructureDefinition's type, a
    SearchParameter's ``token``); an element that is not one (a DocumentReference's CodeableConcept
    ``type``) is left out, not replaced. ``derivation`` tells a profile (constraint) from a type
    (specialization).
    """
    entry = {"filename": filename, "resourceType": str(resource["resourceType"]), "id": str(resource["id"])}
    for key in ("url", "version", "kind", "type", "supplements", "content", "derivation"):
        value = resource.get(key)
        if isinstance(value, str):
            entry[key] = value
    return entry


def own_conformance(registry: Conformance) -> list[dict[str, Any]]:
    """The conformance resources under our canonical base (the ImplementationGuide lists just these).

    HL7's own SearchParameters and ValueSets, which profiles/ holds to serve and validate with, are left
    to the dependency hl7.fhir.r5.core: a package redefining them would hold a second resource under
    each of their ``url|version``.
    """
    return [r for url, r in registry.by_url.items() if url.startswith(f"{CANONICAL_BASE}/")]


def write_package(
    out: Path,
    resources_dir: Path | None = None,
    profiles_dir: Path | None = None,
    verified_codes: Path | None = None,
    about: dict[str, str] | None = None,
) -> int:
    """Write the package tarball; return how many resources it holds.

    The resources are validated first, as ``build`` validates them: a package of a publication with any
    error is refused (``BuildError`` with the report) and nothing is written. ``verified_codes``, a
    project's ``verified-codes.json``, adds its codes to the profiles' own; ``about`` replaces what
    package.json says of the publication (a project's name, version, canonical, title, description).
    """
    registry = load_conformance(profiles_dir, verified_codes)
    report = Validator(registry).validate_paths([resources_dir or bundled_dir("resources")])
    if not report.ok:
        raise BuildError(report, made="packaged")
    resources = [entry.resource for entry in load(resources_dir)]
    conformance = [
        with_snapshot(r) if r["resourceType"] == "StructureDefinition" else r
        for r in own_conformance(registry)
    ]
    files: list[tuple[str, bytes]] = []
    index = []
    for resource in [*conformance, *resources]:
        filename = f"{resource['resourceType']}-{resource['id']}.json"
        files.append((filename, orjson.dumps(resource)))
        index.append(index_entry(filename, resource))
    manifest = {
        "name": NAME,
        "version": __version__,
        "canonical": CANONICAL_BASE,
        "title": "fhir-pub publication",
        "description": "Drug leaflets published as validated FHIR R5 resources, with their profiles.",
        "fhirVersions": ["5.0.0"],
        "dependencies": {"hl7.fhir.r5.core": "5.0.0"},
        "type": "fhir.ig",
        "license": "CC-BY-4.0",
        **(about or {}),
    }
    with replacing(out) as partial, tarfile.open(partial, "w:gz") as tar:
        documents = [
            ("package/package.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2)),
            (
                "package/.index.json",
                orjson.dumps({"index-version": 2, "files": index}, option=orjson.OPT_INDENT_2),
            ),
            *((f"package/{name}", data) for name, data in files),
        ]
        for name, data in documents:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return len(files)
