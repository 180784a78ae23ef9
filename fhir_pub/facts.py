"""Generate a publication's resources from a concise fact file (TOML): a drug, its leaflets and their facts.

A fact file (``facts/<drug>.toml``) is the maintained source of one drug's resources. It holds:

- ``[publication]``: ``recorder``, the Organization that records every Provenance, and the defaults
  ``version`` / ``updated`` (each resource's ``meta.versionId`` / ``meta.lastUpdated``) and
  ``provenance_version`` / ``recorded`` (each Provenance's);
- ``[leaflets.<key>]``: one per source. ``cite`` is how wording cites it (``(MSK)``), ``reference = true``
  marks a public reference that is not a leaflet (a label listing, a code index), ``fhir`` its
  DocumentReference;
- ``[product]``: the MedicationKnowledge (``id``, ``fhir``) and ``[product.medication]`` the marketed
  product; ``[product.traced]`` maps each element path (``MedicationKnowledge.name[0]``) to the leaflets
  that state it, from which one Provenance per leaflet names every element it states (``targetPath``);
  ``clinicalUseIssue`` is derived from the facts;
- ``[[organizations]]`` and ``[[groups]]``: ``id``, ``fhir`` and optionally ``sources`` (then a
  Provenance names them);
- ``[[facts]]``: one ClinicalUseDefinition each: ``id``, ``kind`` (``warning``, ``undesirable-effect``,
  ``indication``, ``interaction``, ``contraindication``), ``sources`` (leaflet keys), and per kind its
  wording and concepts; ``category`` and ``population`` (Group ids) for any kind.

A concept is ``{text = "...", code = "system|code"}``: the code must be in the verified table, and the
generated Coding carries the display the table gives it. Any entry may set ``version``, ``updated`` and
``provenance = {version, recorded}`` over the defaults. Every resource gets its generated narrative
(:mod:`fhir_pub.narrative`). Resources written by hand may sit beside generated ones in ``resources/``.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_pub.conformance import CANONICAL_BASE, VERIFIED_CODES, Conformance
from fhir_pub.definitions import elements, model_class
from fhir_pub.errors import PublicationError
from fhir_pub.narrative import cud_title, with_narrative
from fhir_pub.provenance import element_paths

FACTS_DIR = "facts"
TARGET_PATH = "http://hl7.org/fhir/StructureDefinition/targetPath"
PUBLICATION_STATUS = "http://hl7.org/fhir/publication-status"
_PROFILE = f"{CANONICAL_BASE}/StructureDefinition/fhir-pub-"
KINDS = ("indication", "contraindication", "interaction", "undesirable-effect", "warning")
# The backbone element of each kind of ClinicalUseDefinition (cud-1: exactly one per resource).
_BACKBONE = {
    "indication": "indication",
    "contraindication": "contraindication",
    "interaction": "interaction",
    "undesirable-effect": "undesirableEffect",
    "warning": "warning",
}
LEAFLET_ACTIVITY = "Facts restated in fhir-pub's own words from the source leaflets"
# A per-element Provenance of the drug names one leaflet.
ONE_LEAFLET_ACTIVITY = "Facts restated in fhir-pub's own words from the source leaflet"
REFERENCE_ACTIVITY = "Facts taken from a public reference that states them, not from a leaflet"

Resource = dict[str, Any]
Table = Mapping[str, Any]


def read_facts(path: Path) -> dict[str, Any]:
    """The fact file at ``path`` as a table; PublicationError if it is missing or not TOML."""
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise PublicationError(f"{path}: cannot read the fact file ({exc.strerror})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PublicationError(f"{path}: not readable TOML ({exc})") from exc


def fact_files(root: Path) -> list[Path]:
    """The fact files of a project or repository: ``facts/*.toml`` under ``root``, sorted."""
    return sorted((root / FACTS_DIR).glob("*.toml"))


@dataclass(frozen=True)
class Codes:
    """The verified table: each (system, code) with the display it must carry."""

    displays: Mapping[tuple[str, str], str]

    @classmethod
    def of(cls, conformance: Conformance) -> Codes:
        """The verified codes of ``conformance`` (the profiles' own plus a project's)."""
        value_set = conformance.by_url.get(VERIFIED_CODES) or {}
        displays = {
            (str(include["system"]), str(concept["code"])): str(concept.get("display", ""))
            for include in value_set.get("compose", {}).get("include", [])
            if include.get("system")
            for concept in include.get("concept", [])
        }
        return cls(displays)

    def coding(self, value: str, where: str) -> dict[str, str]:
        """The Coding for ``system|code``, with the table's display; PublicationError if not verified."""
        system, _, code = value.rpartition("|")
        if not system or not code:
            raise PublicationError(f"{where}: a code is written system|code, not {value!r}")
        display = self.displays.get((system, code))
        if display is None:
            raise PublicationError(f"{where}: {system}|{code} is not in the verified table; give text only")
        return {"system": system, "code": code, "display": display}

    def exact(self, term: str) -> str | None:
        """The one ``system|code`` whose display is exactly ``term`` (case aside), else None."""
        found = [
            f"{s}|{c}" for (s, c), display in self.displays.items() if display.casefold() == term.casefold()
        ]
        return found[0] if len(found) == 1 else None


class _Context:
    """What generating one fact file needs to hand: its defaults, leaflets and the codes."""

    def __init__(self, facts: Table, codes: Codes, name: str, organizations: Mapping[str, Table]) -> None:
        self.facts = facts
        own = {str(o["id"]): o for o in facts.get("organizations", [])}
        self.organizations = {**organizations, **own}
        self.codes = codes
        self.name = name
        self.publication: Table = _table(facts.get("publication", {}), f"{name}: [publication]")
        self.leaflets: dict[str, Table] = {
            key: _table(value, f"{name}: [leaflets.{key}]")
            for key, value in _table(facts.get("leaflets", {}), f"{name}: [leaflets]").items()
        }
        self.recorder = _text(self.publication, "recorder", f"{name}: [publication]")

    def meta(self, entry: Table, profile: str) -> dict[str, Any]:
        return {
            "versionId": str(entry.get("version", self.publication.get("version", "1"))),
            "lastUpdated": str(entry.get("updated", self.publication["updated"])),
            "profile": [_PROFILE + profile],
        }

    def leaflet(self, key: str, where: str) -> Table:
        leaflet = self.leaflets.get(key)
        if leaflet is None:
            raise PublicationError(
                f"{where}: no leaflet {key!r} in [leaflets] (known: {', '.join(self.leaflets)})"
            )
        return leaflet

    def concept(self, value: Any, where: str) -> dict[str, Any]:
        table = _table(value, where)
        text = _text(table, "text", where)
        codes = table.get("code", [])
        codes = [codes] if isinstance(codes, str) else _strings(codes, f"{where}: code")
        out: dict[str, Any] = {}
        if codes:
            out["coding"] = [self.codes.coding(c, where) for c in codes]
        out["text"] = text
        return out

    def provenance(
        self,
        id_: str,
        entry: Table,
        targets: list[dict[str, Any]],
        sources: list[str],
        per_element: bool = False,
    ) -> Resource:
        where = f"{self.name}: {id_}"
        overrides = _table(entry.get("provenance", {}), f"{where}: provenance")
        leaflets = [self.leaflet(key, where) for key in sources]
        recorder = self.organizations.get(self.recorder)
        if recorder is None:
            raise PublicationError(
                f"{self.name}: the recorder {self.recorder!r} is in no fact file's [[organizations]]"
            )
        reference_only = all(leaflet.get("reference") for leaflet in leaflets)
        activity = ONE_LEAFLET_ACTIVITY if per_element else LEAFLET_ACTIVITY
        if reference_only:
            activity = REFERENCE_ACTIVITY
        recorded = str(
            overrides.get("recorded", self.publication.get("recorded", self.publication["updated"]))
        )
        return {
            "resourceType": "Provenance",
            "id": id_,
            "meta": {
                "versionId": str(overrides.get("version", self.publication.get("provenance_version", "1"))),
                "lastUpdated": recorded,
                "profile": [_PROFILE + "provenance"],
            },
            "target": targets,
            "recorded": recorded,
            "activity": {"text": activity},
            "agent": [{"type": {"text": "Author"}, "who": _ref("Organization", recorder)}],
            "entity": [
                {"role": "source", "what": _ref("DocumentReference", leaflet["fhir"] | {"id": leaflet["id"]})}
                for leaflet in leaflets
            ],
        }


def _table(value: Any, where: str) -> Table:
    if not isinstance(value, Mapping):
        raise PublicationError(f"{where}: must be a table")
    return value


def _text(table: Table, key: str, where: str) -> str:
    value = table.get(key)
    if not isinstance(value, str) or not value.strip():
        raise PublicationError(f"{where}: needs {key} (a non-empty string)")
    return value


def _tables(value: Any, where: str) -> list[Table]:
    if not isinstance(value, list) or not all(isinstance(item, Mapping) for item in value):
        raise PublicationError(f"{where}: must be a list of tables")
    return value


def _strings(value: Any, where: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise PublicationError(f"{where}: must be a list of strings")
    return value


def _entry(entry: Table, where: str, body: bool = True) -> None:
    """An entry of the file: an id, a ``fhir`` table (unless ``body`` is False), optional metadata."""
    _text(entry, "id", where)
    if body:
        _table(entry.get("fhir"), f"{where}: fhir")
    for key in ("version", "updated", "display"):
        if key in entry and not isinstance(entry[key], str):
            raise PublicationError(f"{where}: {key} must be a string")
    overrides = _table(entry.get("provenance", {}), f"{where}: provenance")
    for key in ("version", "recorded"):
        if key in overrides and not isinstance(overrides[key], str):
            raise PublicationError(f"{where}: provenance.{key} must be a string")
    if "sources" in entry:
        _strings(entry["sources"], f"{where}: sources")


def check_shape(facts: Table, name: str) -> None:
    """The fact file's own structure (tables, lists, strings where they belong); PublicationError if not.

    What the ``fhir`` tables hold is FHIR, checked by ``fhir-pub validate`` once generated.
    """
    publication = _table(facts.get("publication"), f"{name}: [publication]")
    _text(publication, "recorder", f"{name}: [publication]")
    _text(publication, "updated", f"{name}: [publication]")
    for key in ("version", "provenance_version", "recorded"):
        if key in publication and not isinstance(publication[key], str):
            raise PublicationError(f"{name}: [publication] {key} must be a string")
    for key, leaflet in _table(facts.get("leaflets"), f"{name}: [leaflets]").items():
        _entry(_table(leaflet, f"{name}: [leaflets.{key}]"), f"{name}: [leaflets.{key}]")
    product = _table(facts.get("product"), f"{name}: [product]")
    _entry(product, f"{name}: [product]")
    _entry(
        _table(product.get("medication"), f"{name}: [product.medication]"), f"{name}: [product.medication]"
    )
    for path, sources in _table(product.get("traced", {}), f"{name}: [product.traced]").items():
        _strings(sources, f"{name}: [product.traced] {path}")
    for key, overrides in _table(product.get("provenance", {}), f"{name}: [product.provenance]").items():
        _table(overrides, f"{name}: [product.provenance.{key}]")
    for kind in ("organizations", "groups"):
        for index, entry in enumerate(_tables(facts.get(kind, []), f"{name}: [[{kind}]]")):
            _entry(entry, f"{name}: [[{kind}]] #{index + 1}")
    for index, fact in enumerate(_tables(facts.get("facts", []), f"{name}: [[facts]]")):
        where = f"{name}: fact {fact.get('id', f'#{index + 1}')}"
        _entry(fact, where, body=False)
        for key in ("category", "population", "interactants", "management"):
            if key in fact and not isinstance(fact[key], list):
                raise PublicationError(f"{where}: {key} must be a list")


def _display(resource_type: str, id_: str, body: Table) -> str:
    """How a reference to a resource names it: its title, name or code text."""
    if resource_type == "ClinicalUseDefinition":
        return cud_title(body)
    steps: tuple[str | int, ...] = ("code", "text")
    if resource_type == "DocumentReference":
        steps = ("content", 0, "attachment", "title")
    elif resource_type in ("Organization", "Group"):
        steps = ("name",)
    value: Any = body
    for step in steps:
        if isinstance(step, str):
            value = value.get(step) if isinstance(value, Mapping) else None
        else:
            value = value[step] if isinstance(value, list) and len(value) > step else None
    if not isinstance(value, str) or not value.strip():
        shown = ".".join(str(step) for step in steps)
        raise PublicationError(
            f"{resource_type}/{id_} needs {shown} in its fhir table: references name it by that"
        )
    return value


def _ref(resource_type: str, entry: Table) -> dict[str, str]:
    body = entry.get("fhir", entry)
    display = entry.get("display") or _display(resource_type, str(entry["id"]), body)
    return {"reference": f"{resource_type}/{entry['id']}", "display": str(display)}


def _resource(resource_type: str, id_: str, meta: dict[str, Any], body: Table) -> Resource:
    return {"resourceType": resource_type, "id": id_, "meta": meta} | dict(body)


def _clinical_use(
    ctx: _Context, fact: Table, subject: dict[str, str], groups: Mapping[str, Table]
) -> Resource:
    id_ = _text(fact, "id", f"{ctx.name}: a fact")
    where = f"{ctx.name}: fact {id_}"
    kind = _text(fact, "kind", where)
    if kind not in KINDS:
        raise PublicationError(f"{where}: kind must be one of {', '.join(KINDS)}, not {kind!r}")
    body: dict[str, Any] = {"type": kind}
    if "category" in fact:
        body["category"] = [ctx.concept(c, f"{where}: category") for c in fact["category"]]
    body["subject"] = [subject]
    body["status"] = {
        "coding": [{"system": PUBLICATION_STATUS, "code": "active", "display": "Active"}],
        "text": "Active",
    }
    if "population" in fact:
        missing = [g for g in fact["population"] if g not in groups]
        if missing:
            raise PublicationError(f"{where}: population {', '.join(missing)} is not among [[groups]]")
        body["population"] = [_ref("Group", groups[g]) for g in fact["population"]]
    backbone: dict[str, Any] = {}
    if kind in ("warning",):
        backbone["description"] = _text(fact, "description", where)
        if "code" in fact:
            backbone["code"] = ctx.concept(fact["code"], f"{where}: code")
    elif kind == "undesirable-effect":
        backbone["symptomConditionEffect"] = {"concept": ctx.concept(fact.get("effect"), f"{where}: effect")}
        if "seriousness" in fact:
            backbone["classification"] = ctx.concept(fact["seriousness"], f"{where}: seriousness")
        if "frequency" in fact:
            backbone["frequencyOfOccurrence"] = ctx.concept(fact["frequency"], f"{where}: frequency")
    elif kind in ("indication", "contraindication"):
        backbone["diseaseSymptomProcedure"] = {
            "concept": ctx.concept(fact.get("disease"), f"{where}: disease")
        }
        if "disease_status" in fact:
            backbone["diseaseStatus"] = {
                "concept": ctx.concept(fact["disease_status"], f"{where}: disease_status")
            }
        if "intended_effect" in fact:
            backbone["intendedEffect"] = {
                "concept": ctx.concept(fact["intended_effect"], f"{where}: intended_effect")
            }
    elif kind == "interaction":
        backbone["interactant"] = [
            {"itemCodeableConcept": ctx.concept(i, f"{where}: interactants")}
            for i in fact.get("interactants", [])
        ]
        if "interaction_type" in fact:
            backbone["type"] = ctx.concept(fact["interaction_type"], f"{where}: interaction_type")
        if "effect" in fact:
            backbone["effect"] = {"concept": ctx.concept(fact["effect"], f"{where}: effect")}
        if "management" in fact:
            backbone["management"] = [ctx.concept(m, f"{where}: management") for m in fact["management"]]
    body[_BACKBONE[kind]] = backbone
    return _resource("ClinicalUseDefinition", id_, ctx.meta(fact, f"clinical-use-{kind}"), body)


def _refuse_review(facts: Table, name: str) -> None:
    """A drafted entry still marked ``review`` is not a fact yet (see :mod:`fhir_pub.draft`)."""
    entries: list[Any] = [facts.get("product", {})]
    for kind in ("facts", "organizations", "groups"):
        listed = facts.get(kind, [])
        entries += listed if isinstance(listed, list) else []
    leaflets = facts.get("leaflets", {})
    if isinstance(leaflets, Mapping):
        entries += [
            dict(leaflet, id=leaflet.get("id", key))
            for key, leaflet in leaflets.items()
            if isinstance(leaflet, Mapping)
        ]
    marked = [
        str(entry.get("id", "?")) for entry in entries if isinstance(entry, Mapping) and "review" in entry
    ]
    if marked:
        raise PublicationError(
            f"{name}: still marked for review: {', '.join(marked)} (check each, then delete its review line)"
        )


def _sources(entry: Table, where: str) -> list[str]:
    sources = entry.get("sources")
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
        raise PublicationError(f"{where}: needs sources (the keys of the leaflets that state it)")
    return list(sources)


def generate(
    facts: Table, codes: Codes, name: str = "fact file", organizations: Mapping[str, Table] | None = None
) -> dict[str, Resource]:
    """Every resource a fact file describes, keyed ``Type/id``, each with its generated narrative.

    ``organizations``: those other fact files of the publication describe (by id), which this one may
    name as its recorder.

    PublicationError names the first thing in the file that cannot be generated (an unknown leaflet,
    kind or group, an unverified code, a missing field).
    """
    _refuse_review(facts, name)
    check_shape(facts, name)
    ctx = _Context(facts, codes, name, organizations or {})
    out: dict[str, Resource] = {}

    def add(resource: Resource) -> None:
        key = f"{resource['resourceType']}/{resource['id']}"
        if key in out:
            raise PublicationError(f"{name}: {key} is described twice")
        out[key] = resource

    groups: dict[str, Table] = {}
    for kind, resource_type in (("organizations", "Organization"), ("groups", "Group")):
        for entry in facts.get(kind, []):
            id_ = _text(entry, "id", f"{name}: [[{kind}]]")
            add(_resource(resource_type, id_, ctx.meta(entry, resource_type.lower()), entry["fhir"]))
            if resource_type == "Group":
                groups[id_] = entry
            if "sources" in entry:
                target = [_ref(resource_type, entry)]
                add(ctx.provenance(id_, entry, target, _sources(entry, f"{name}: {id_}")))
    for key, leaflet in ctx.leaflets.items():
        id_ = _text(leaflet, "id", f"{name}: [leaflets.{key}]")
        profile = "reference-source" if leaflet.get("reference") else "documentreference"
        add(_resource("DocumentReference", id_, ctx.meta(leaflet, profile), leaflet["fhir"]))

    product = _table(facts.get("product"), f"{name}: [product]")
    medication = _table(product.get("medication"), f"{name}: [product.medication]")
    subject = _ref("Medication", medication)
    cuds = [_clinical_use(ctx, fact, subject, groups) for fact in facts.get("facts", [])]
    knowledge_body = dict(product["fhir"])
    if cuds:
        issues = [_ref("ClinicalUseDefinition", cud) for cud in cuds]
        knowledge_body["clinicalUseIssue"] = issues
    knowledge = _resource(
        "MedicationKnowledge",
        _text(product, "id", f"{name}: [product]"),
        ctx.meta(product, "medicationknowledge"),
        knowledge_body,
    )
    drug = _resource(
        "Medication",
        _text(medication, "id", f"{name}: [product.medication]"),
        ctx.meta(medication, "medication"),
        medication["fhir"],
    )
    add(knowledge)
    add(drug)
    for fact, cud in zip(facts.get("facts", []), cuds, strict=True):
        add(cud)
        add(
            ctx.provenance(
                cud["id"], fact, [_ref("ClinicalUseDefinition", cud)], _sources(fact, f"{name}: {cud['id']}")
            )
        )
    for provenance in _traced(ctx, product, knowledge, drug, medication):
        add(provenance)
    return {key: _finished(key, resource, name) for key, resource in out.items()}


def _finished(key: str, resource: Resource, name: str) -> Resource:
    """``resource`` in definition order, with its narrative.

    A ``fhir`` table the narrative cannot be read from (a list where FHIR has an object, say) is named
    in a PublicationError, never a traceback.
    """
    ordered = in_definition_order(resource, resource["resourceType"])
    try:
        return with_narrative(ordered)
    except (AttributeError, TypeError, KeyError, IndexError, ValueError) as exc:
        raise PublicationError(
            f"{name}: {key} is not FHIR its narrative can be written from ({type(exc).__name__}: {exc}); "
            "check the shape of its fhir table against the R5 definition"
        ) from exc


def _traced(
    ctx: _Context, product: Table, knowledge: Resource, drug: Resource, medication: Table
) -> list[Resource]:
    """One Provenance per leaflet stating elements of the drug or its product, naming each (targetPath)."""
    traced = _table(product.get("traced", {}), f"{ctx.name}: [product.traced]")
    # Targets are listed in the order their elements come in the generated (definition-ordered) files.
    knowledge = in_definition_order(knowledge, "MedicationKnowledge")
    drug = in_definition_order(drug, "Medication")
    known = {*element_paths(knowledge, "MedicationKnowledge"), *element_paths(drug, "Medication")}
    by_source: dict[str, list[str]] = {}
    for path, sources in traced.items():
        if path not in known:
            raise PublicationError(f"{ctx.name}: [product.traced] names {path}, which the drug does not have")
        for source in _sources({"sources": sources}, f"{ctx.name}: [product.traced] {path}"):
            ctx.leaflet(source, f"{ctx.name}: [product.traced] {path}")
            by_source.setdefault(source, []).append(path)
    order = [*element_paths(knowledge, "MedicationKnowledge"), *element_paths(drug, "Medication")]
    position = {path: i for i, path in reversed(list(enumerate(order)))}
    refs = {
        "MedicationKnowledge": _ref("MedicationKnowledge", knowledge | {"display": product.get("display")}),
        "Medication": _ref("Medication", medication),
    }
    out = []
    for source in ctx.leaflets:
        if source not in by_source:
            continue
        targets = [
            {"extension": [{"url": TARGET_PATH, "valueString": path}]} | refs[path.split(".")[0]]
            for path in sorted(by_source[source], key=position.__getitem__)
        ]
        overrides = _table(product.get("provenance", {}), f"{ctx.name}: [product.provenance]").get(source, {})
        out.append(
            ctx.provenance(f"{knowledge['id']}-{source}", {"provenance": overrides}, targets, [source], True)
        )
    return out


def render(resource: Mapping[str, Any]) -> str:
    """A resource as the file ``resources/<Type>/<id>.json`` holds it."""
    return json.dumps(resource, indent=2, ensure_ascii=False) + "\n"


def generate_files(paths: Iterable[Path], codes: Codes) -> dict[str, str]:
    """The text of every file the fact files at ``paths`` generate, keyed ``Type/id.json``."""
    files: dict[str, str] = {}
    tables = [(path, read_facts(path)) for path in paths]
    organizations = {
        o["id"]: o
        for _, table in tables
        if isinstance(table.get("organizations"), list)
        for o in table["organizations"]
        if isinstance(o, Mapping) and isinstance(o.get("id"), str)
    }
    for path, table in tables:
        for key, resource in generate(table, codes, str(path), organizations).items():
            if f"{key}.json" in files:
                raise PublicationError(f"{path}: {key} is also described by another fact file")
            files[f"{key}.json"] = render(resource)
    return files


def write_files(files: Mapping[str, str], resources_dir: Path) -> list[str]:
    """Write ``files`` under ``resources_dir``; the keys of those whose content changed."""
    changed = []
    for key, text in files.items():
        path = resources_dir / key
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        changed.append(key)
    return changed


def in_definition_order(value: Any, type_name: str) -> Any:
    """``value`` (of R5 type ``type_name``) with every object's elements in the order R5 defines them.

    Generated files do not depend on the order a fact file lists its keys in; an element the
    definitions do not know keeps its place after the known ones (structure validation reports it).
    """
    if isinstance(value, list):
        return [in_definition_order(item, type_name) for item in value]
    if not isinstance(value, Mapping):
        return value
    if type_name in ("Resource", "DomainResource") and isinstance(value.get("resourceType"), str):
        type_name = value["resourceType"]
    known = elements(type_name)
    try:
        order = {name: i for i, name in enumerate(model_class(type_name).elements_sequence())}
    except (KeyError, ValueError, AttributeError):  # a type the models do not know keeps its order
        order = {}
    out: dict[str, Any] = {"resourceType": value["resourceType"]} if "resourceType" in value else {}
    for key in sorted(
        (k for k in value if k != "resourceType"), key=lambda k: order.get(k.removeprefix("_"), len(order))
    ):
        info = known.get(key) or known.get(key.removeprefix("_"))
        item = value[key]
        out[key] = item if info is None or info.is_primitive else in_definition_order(item, info.type_name)
    return out


def differing(files: Mapping[str, str], resources_dir: Path) -> list[str]:
    """The keys of ``files`` whose file under ``resources_dir`` is missing or holds something else."""
    return [
        key
        for key, text in files.items()
        if not (resources_dir / key).is_file() or (resources_dir / key).read_text(encoding="utf-8") != text
    ]
