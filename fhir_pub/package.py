"""The publication as a FHIR NPM package: package.json, .index.json, and one file per resource.

https://hl7.org/fhir/packages.html; written to a scratch file and renamed, so it appears whole. Each
profile is published with its snapshot (fhir_pub/snapshot.py) beside its differential.

At FHIR R4B (4.3) and R4 (4.0) the package is the publication as the server serves it at ``[base]/R4B``
and ``[base]/R4``: the build's converted forms (``fhir_pub.versions.convert``, read from a scratch build
of the same sources), that version's CapabilityStatement (``handlers.converted_capability``), and our
conformance resources only where they are valid there:

- no StructureDefinition: each of ours constrains an R5 type (its ``fhirVersion`` 5.0.0, its snapshot
  R5's), and the converted resources drop ``meta.profile`` because they do not meet them; R4 has no
  ClinicalUseDefinition and R4's MedicationKnowledge is another shape;
- no ImplementationGuide: ours describes the R5 publication (``fhirVersion`` 5.0.0, the dependency
  hl7.fhir.r5.core, the R5 profiles as ``global``); package.json says what the package is;
- a SearchParameter of ours only where that version's CapabilityStatement serves it on a type of the
  same name (``fhir_pub.search.versions``: its element is where that version has it);
- our ValueSets, converted (they hold codes, and conversion changes no code).

What is left out, and why, is written into the package (``package/other/README.md``), as HL7's IG
Publisher names a package generated for another version: the R5 package's name with ``.r4b`` or ``.r4``
(its ``generate-version`` parameter), so both can sit in one package cache. Every resource is checked
with that version's own models (``validation.earlier``) and any error refuses the package.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import orjson

from fhir_pub import __version__
from fhir_pub.atomic import replacing
from fhir_pub.build import BuildError, build
from fhir_pub.conformance import CANONICAL_BASE, Conformance, load_conformance
from fhir_pub.errors import PublicationError
from fhir_pub.handlers import VERSION_NAMES, FhirVersion, converted_capability
from fhir_pub.publication import bundled_dir, load
from fhir_pub.search import versions as search_versions
from fhir_pub.snapshot import with_snapshot
from fhir_pub.store import Store
from fhir_pub.validation import Validator, earlier
from fhir_pub.validation.issues import is_error
from fhir_pub.versions import ConversionError, Target, convert

NAME = "fhir-pub.publication"
KINDS = {"StructureDefinition", "ValueSet", "CodeSystem", "SearchParameter", "CapabilityStatement"}
# Each version's core package: the package's dependency (https://hl7.org/fhir/packages.html#dependencies).
CORE: dict[FhirVersion, str] = {
    "5.0": "hl7.fhir.r5.core",
    "4.3": "hl7.fhir.r4b.core",
    "4.0": "hl7.fhir.r4.core",
}
# The IG Publisher's suffix for a package of another version (module docstring).
SUFFIXES: dict[FhirVersion, str] = {"4.3": ".r4b", "4.0": ".r4"}
README = "package/other/README.md"
EARLIER = "Drug leaflets published as validated FHIR resources."  # the R4B and R4 packages' own
SHOWN = 20  # the errors a refused package lists


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
    fhir_version: FhirVersion = "5.0",
) -> int:
    """Write the package tarball; return how many resources it holds.

    The resources are validated first, as ``build`` validates them: a package of a publication with any
    error is refused (``BuildError`` with the report) and nothing is written. ``verified_codes``, a
    project's ``verified-codes.json``, adds its codes to the profiles' own; ``about`` replaces what
    package.json says of the publication (a project's name, version, canonical, title, description).
    ``fhir_version`` 4.3 or 4.0: the package of that version (module docstring); a resource that fails
    that version's check refuses it (``PublicationError``).
    """
    manifest = {
        "name": NAME,
        "version": __version__,
        "canonical": CANONICAL_BASE,
        "title": "fhir-pub publication",
        "description": "Drug leaflets published as validated FHIR R5 resources, with their profiles.",
        "fhirVersions": ["5.0.0"],
        "dependencies": {CORE["5.0"]: "5.0.0"},
        "type": "fhir.ig",
        "license": "CC-BY-4.0",
        **(about or {}),
    }
    if fhir_version != "5.0":
        return _write_earlier(out, fhir_version, manifest, about, resources_dir, profiles_dir, verified_codes)
    registry = load_conformance(profiles_dir, verified_codes)
    report = Validator(registry).validate_paths([resources_dir or bundled_dir("resources")])
    if not report.ok:
        raise BuildError(report, made="packaged")
    resources = [entry.resource for entry in load(resources_dir)]
    conformance = [
        with_snapshot(r) if r["resourceType"] == "StructureDefinition" else r
        for r in own_conformance(registry)
    ]
    return _write(out, manifest, [*conformance, *resources])


def _write(
    out: Path,
    manifest: dict[str, Any],
    resources: list[dict[str, Any]],
    other: Iterable[tuple[str, bytes]] = (),
) -> int:
    """The tarball: package.json, .index.json, one file per resource, then ``other`` (name, bytes)."""
    files: list[tuple[str, bytes]] = []
    index = []
    for resource in resources:
        filename = f"{resource['resourceType']}-{resource['id']}.json"
        files.append((filename, orjson.dumps(resource)))
        index.append(index_entry(filename, resource))
    with replacing(out) as partial, tarfile.open(partial, "w:gz") as tar:
        documents = [
            ("package/package.json", orjson.dumps(manifest, option=orjson.OPT_INDENT_2)),
            (
                "package/.index.json",
                orjson.dumps({"index-version": 2, "files": index}, option=orjson.OPT_INDENT_2),
            ),
            *((f"package/{name}", data) for name, data in files),
            *other,
        ]
        for name, data in documents:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mode = 0o644
            tar.addfile(info, io.BytesIO(data))
    return len(files)


def _write_earlier(
    out: Path,
    version: FhirVersion,
    manifest: dict[str, Any],
    about: dict[str, str] | None,
    resources_dir: Path | None,
    profiles_dir: Path | None,
    verified_codes: Path | None,
) -> int:
    """The package at R4B or R4: what the server serves at that base, and our conformance valid there.

    The sources are built (validated and converted, as ``fhir-pub build`` does) into a scratch file that
    is deleted afterwards; the package is read from it, so its resources are the served bytes.
    """
    name, release = VERSION_NAMES[version]
    with tempfile.TemporaryDirectory(prefix="fhir-pub-package-") as scratch:
        try:
            built = build(
                Path(scratch) / "publication.sqlite",
                resources_dir,
                profiles_dir,
                verified_codes=verified_codes,
            )
        except BuildError as exc:
            raise BuildError(exc.report, made="packaged") from exc
        store = Store(built.path)
        try:
            # The served statement has no id (it is not a stored resource); a package file needs one: R5's.
            capability = {"resourceType": "CapabilityStatement", "id": "fhir-pub"}
            capability |= orjson.loads(converted_capability(store, version, None))
            served = [
                orjson.loads(stored.body)
                for kind in store.converted_types(version)
                for _, stored in store.stored_converted(version, kind)
            ]
            registry = load_conformance(profiles_dir, verified_codes)
            conformance, left_out = conformance_at(version, own_conformance(registry), capability)
            kinds = {r["resourceType"] for r in registry.by_url.values()}
            errors = without_form(store, version, sorted(store.types - kinds))
        finally:
            store.connection().close()  # before the scratch folder goes
    resources = [*conformance, capability, *served]
    refuse_invalid(version, [*errors, *invalid(resources, version)])
    manifest = {
        **manifest,
        "name": f"{manifest['name']}{SUFFIXES[version]}",
        "title": f"{manifest['title']} (FHIR {name})",
        "description": f"{EARLIER if about is None else manifest['description']} Its FHIR {name} ({release}) "
        f"form, converted from R5 as the server serves it at [base]/{name}, without the R5 profiles: "
        "other/README.md says what was left out and why.",
        "fhirVersions": [release],
        "dependencies": {CORE[version]: release},
    }
    readme = _readme(version, manifest, resources, left_out).encode()
    return _write(out, manifest, resources, [(README, readme)])


def _target(version: FhirVersion) -> Target:
    """``convert``'s name of an earlier version (4.3 or 4.0)."""
    if version == "5.0":
        raise ValueError("R5 is not converted")
    return version


def without_form(store: Store, version: FhirVersion, kinds: list[str]) -> list[str]:
    """The publication's resources (of R5 ``kinds``) that the build could not convert to ``version``.

    The server answers that such a resource has no form at that version; a package without it would
    leave its referrers pointing at nothing (a clinical use a MedicationKnowledge names, say), so each
    is an error, with the reason ``convert`` gives.
    """
    name, _ = VERSION_NAMES[version]
    errors = []
    for kind in kinds:
        served = search_versions.served_type(version, kind)
        converted = {rid for rid, _ in store.stored_converted(version, served)}
        for rid, stored in store.stored(kind):
            if rid in converted:
                continue
            try:
                convert(orjson.loads(stored.body), _target(version))
                reason = "the build made none"
            except ConversionError as exc:
                reason = str(exc)
            errors.append(f"{kind}/{rid}: no FHIR {name} form ({reason})")
    return errors


def invalid(resources: list[dict[str, Any]], version: FhirVersion) -> list[str]:
    """Each error of each resource as a resource of ``version`` (``validation.earlier``).

    That is its own models and, at R4B, its invariants, whose warnings (dom-6 on a SearchParameter
    without narrative) are not errors.
    """
    return [
        f"{r['resourceType']}/{r['id']}: {issue.message}"
        for r in resources
        for issue in earlier.check(r, version)
        if is_error(issue)
    ]


def refuse_invalid(version: FhirVersion, errors: list[str]) -> None:
    """Raise ``PublicationError`` naming the first errors, if there are any: nothing is packaged."""
    if errors:
        shown = "; ".join(errors[:SHOWN]) + ("; ..." if len(errors) > SHOWN else "")
        raise PublicationError(
            f"{len(errors)} error{'s' if len(errors) != 1 else ''} at FHIR {VERSION_NAMES[version][0]} (each "
            f"resource converted from R5, then checked against {earlier.CHECKED_BY[version]}): {shown}; "
            "nothing was packaged"
        )


def conformance_at(
    version: FhirVersion, own: list[dict[str, Any]], capability: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[tuple[str, str]]]:
    """Our conformance resources valid at ``version``, converted; and each one left out, with the reason."""
    name, _ = VERSION_NAMES[version]
    served = {
        param["definition"]
        for entry in capability["rest"][0]["resource"]
        for param in entry.get("searchParam", [])
        if "definition" in param
    }
    kinds = {entry["type"] for entry in capability["rest"][0]["resource"]}
    kept: list[dict[str, Any]] = []
    left_out: list[tuple[str, str]] = []
    for resource in sorted(own, key=lambda r: (r["resourceType"], r["id"])):
        kind = resource["resourceType"]
        key = f"{kind}/{resource['id']}"
        if kind == "StructureDefinition":
            left_out.append(
                (
                    key,
                    f"an R5 profile of {resource.get('type')} (fhirVersion 5.0.0, R5's snapshot); the "
                    f"FHIR {name} resources do not claim it (meta.profile is dropped in conversion)",
                )
            )
            continue
        if kind == "ImplementationGuide":
            left_out.append(
                (
                    key,
                    "it describes the R5 publication (fhirVersion 5.0.0, hl7.fhir.r5.core, its R5 profiles); "
                    "package.json describes this package",
                )
            )
            continue
        if kind == "SearchParameter":
            reason = _not_served(version, resource, served, kinds)
            if reason is not None:
                left_out.append((key, reason))
                continue
        try:
            kept.append(convert(resource, _target(version)))
        except ConversionError as exc:
            left_out.append((key, f"it has no FHIR {name} form ({exc})"))
    return kept, left_out


def _not_served(
    version: FhirVersion, parameter: dict[str, Any], served: set[str], kinds: set[str]
) -> str | None:
    """Why a SearchParameter of ours is not valid at ``version`` (None: it is served there, as it is)."""
    name, _ = VERSION_NAMES[version]
    bases = [str(b) for b in parameter.get("base", [])]
    missing = [b for b in bases if b not in kinds]
    if parameter.get("url") in served and not missing:
        return None
    if missing:
        renamed = [
            f"a {b} is a {search_versions.served_type(version, b)} there, its details extensions"
            for b in missing
            if search_versions.served_type(version, b) != b
        ]
        said = f" ({'; '.join(renamed)})" if renamed else ""
        are = "is not a type" if len(missing) == 1 else "are not types"
        return f"its base {', '.join(missing)} {are} served at FHIR {name}{said}"
    reasons = {
        search_versions.NOT_SERVED[version].get(b, {}).get(str(parameter.get("code")), "") for b in bases
    } - {""}
    because = "; ".join(sorted(reasons)) or "its element is not where that version has it"
    return f"not served at FHIR {name}: {because}"


def _readme(
    version: FhirVersion,
    manifest: dict[str, Any],
    resources: list[dict[str, Any]],
    left_out: list[tuple[str, str]],
) -> str:
    """package/other/README.md: what this package holds, and what it leaves out of the R5 one and why."""
    name, release = VERSION_NAMES[version]
    counts: dict[str, int] = {}
    for resource in resources:
        counts[resource["resourceType"]] = counts.get(resource["resourceType"], 0) + 1
    held = "\n".join(f"- {kind}: {count}" for kind, count in sorted(counts.items()))
    omitted = "\n".join(f"- `{key}`: {reason}" for key, reason in left_out) or "- nothing"
    cud = (
        "\nIn R4, which has no ClinicalUseDefinition, each clinical use is a Basic of the same id (code "
        "http://hl7.org/fhir/fhir-types#ClinicalUseDefinition), its details cross-version extensions, and "
        "every reference to it (the MedicationKnowledge's clinicalUseIssue extension, each Provenance "
        "target) names Basic/[id].\n"
        if version == "4.0"
        else ""
    )
    return f"""# {manifest["name"]} {manifest["version"]}

The fhir-pub publication at FHIR {name} ({release}), depending on {CORE[version]} {release}: each
resource converted from R5 by the cross-version rules of https://hl7.org/fhir/versions.html (elements
without a place in {name} travel as http://hl7.org/fhir/5.0/StructureDefinition/extension-[path]), exactly
as the server serves it at [base]/{name}, with that base's CapabilityStatement. meta.profile is dropped:
it claims the R5 profiles, which the converted resources do not meet.
{cud}
## Held

{held}

## Left out of the R5 package, and why

{omitted}
"""
