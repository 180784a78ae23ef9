"""Synthetic publications of any size, shaped like the bundled one, deterministic from a seed.

Each synthetic drug is a complete graph built from the bundled publication's resources as templates: a
MedicationKnowledge, its Medication and population Group, its leaflets (DocumentReference) and their
Organizations, a varying number of ClinicalUseDefinitions (each cloned from a real one of its kind, so
the mix of kinds, codes and sizes follows the real publication), and a Provenance for each fact-bearing
resource naming the drug's own leaflets. Ids, references and every free-text string are rewritten: text
becomes "Synthetic drug 00042 ..." plus lorem ipsum filler of the original's length, so nothing reads as
a clinical fact. Codes come only from the templates, which use only verified codes (the product's NDC
and ATC codes too, which the profiles require; their text is rewritten, not the real name). Narratives are
regenerated from the data, as ``fhir-pub narrative --write`` does.

Drugs are generated one at a time and written as ``<Type>/<id>.json`` (indented like ``resources/``),
so memory does not grow with the corpus. Same seed and size, byte-identical output.

    .venv-test/bin/python bench/corpus.py --resources 100000 --seed 1 --out DIR
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import re
import shutil
import sqlite3
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fhir_pub.build import write_ndjson
from fhir_pub.graph import key_of
from fhir_pub.narrative import with_narrative
from fhir_pub.publication import bundled_dir, load
from fhir_pub.search.index import TOTALS_SCHEMA, write_totals

Resource = dict[str, Any]

# Product codes identify the real drug; the profiles require them (the only verified ones), so synthetic
# drugs keep them, but never the real drug's name: that concept's text is rewritten like free text.
PRODUCT_SYSTEMS = frozenset({"http://hl7.org/fhir/sid/ndc", "http://www.whocc.no/atc"})
# Free-text elements (strings at these keys are rewritten); codes, ids, dates, statuses and urls are not.
TEXT_KEYS = frozenset(
    {"text", "description", "name", "alias", "title", "valueString", "preparationInstruction", "value"}
)
FILLER = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore "
    "et dolore magna aliqua enim ad minim veniam quis nostrud exercitation ullamco laboris nisi aliquip "
    "ex ea commodo consequat duis aute irure in reprehenderit voluptate velit esse cillum fugiat nulla"
)
LOREM = tuple(FILLER.split(" "))
CUD_KINDS = ("indication", "contraindication", "interaction", "undesirable-effect", "warning")
MIN_CUDS = 1
# Share of drugs with a fourth leaflet (a copy of the first one's shape that only the monograph list cites);
# it also lets the last drug make an odd total exact.
EXTRA_LEAFLET = 0.25


def _merged(known: Resource | None, provenance: Resource) -> Resource:
    """One Provenance for a target that several trace element by element: every source they name, once."""
    if known is None:
        return provenance
    merged = copy.deepcopy(known)
    named = [e["what"]["reference"] for e in merged["entity"]]
    merged["entity"] += [e for e in provenance["entity"] if e["what"]["reference"] not in named]
    return merged


@dataclass(frozen=True)
class Templates:
    """The bundled publication split into the roles a synthetic drug is built from."""

    singletons: list[Resource]  # MedicationKnowledge, Medication, Group, DocumentReferences, Organizations
    uses: dict[str, list[Resource]]  # ClinicalUseDefinitions by type
    provenance: dict[str, Resource]  # the Provenance of each target key
    fixed: int  # resources per drug besides its clinical uses and their Provenance

    @classmethod
    def load(cls, root: Path | None = None) -> Templates:
        """Read the templates from the bundled resources (or ``root``)."""
        publication = load(root or bundled_dir("resources"))
        singletons, uses, provenance = [], dict[str, list[Resource]](), {}
        for entry in sorted(publication, key=lambda e: e.key):
            resource = entry.resource
            kind = resource["resourceType"]
            if kind == "ClinicalUseDefinition":
                uses.setdefault(resource["type"], []).append(resource)
            elif kind == "Provenance":
                for target in resource["target"]:
                    provenance[target["reference"]] = _merged(provenance.get(target["reference"]), resource)
            else:
                singletons.append(resource)
        fixed = len(singletons) + sum(key_of(r) in provenance for r in singletons)
        return cls(singletons, uses, provenance, fixed)

    def drug_size(self, uses: int, extra_leaflet: bool) -> int:
        """Resources in a drug with ``uses`` clinical uses (and a fourth leaflet or not)."""
        return self.fixed + 2 * uses + extra_leaflet


def _synthetic(original: str, label: str, rng: random.Random) -> str:
    """Obviously synthetic text, about as long as ``original``."""
    words = [f"Synthetic {label}"]
    size = len(words[0])
    while size < len(original):
        word = rng.choice(LOREM)
        words.append(word)
        size += len(word) + 1
    return " ".join(words)


class Drug:
    """One synthetic drug: its ids, names, and the rewriting of template resources into it."""

    def __init__(
        self, number: int, templates: Templates, rng: random.Random, uses: int, extra_leaflet: bool
    ) -> None:
        self.number = number
        self.label = f"drug {number:05d}"
        self.rng = rng
        self.templates = templates
        prefix = f"d{number:06d}"
        self.keys: dict[str, str] = {}  # template key -> synthetic key
        self.names: dict[str, str] = {}  # synthetic key -> display
        counters: dict[str, int] = {}
        for resource in templates.singletons:
            kind = resource["resourceType"]
            counters[kind] = counters.get(kind, 0) + 1
            role = {"MedicationKnowledge": "", "Medication": "-product", "Group": "-population"}.get(
                kind, f"-{kind.lower()}-{counters[kind]}"
            )
            new = f"{kind}/{prefix}{role}"
            self.keys[key_of(resource)] = new
            self.names[new] = f"Synthetic {self.label} {kind} {counters[kind]}"
        self.names[f"MedicationKnowledge/{prefix}"] = f"Synthetic {self.label}"
        self.extra = f"DocumentReference/{prefix}-documentreference-extra" if extra_leaflet else None
        if self.extra:
            self.names[self.extra] = f"Synthetic {self.label} DocumentReference extra"
        # Each clinical use is a real one of a kind drawn with the real publication's kind frequencies.
        pool = [t for kind in CUD_KINDS for t in templates.uses.get(kind, [])]
        chosen = [next(t for t in pool if t["type"] == "indication")]  # every drug has an indication
        chosen += [rng.choice(pool) for _ in range(uses - 1)]
        chosen.sort(key=lambda t: CUD_KINDS.index(t["type"]))
        self.uses: list[tuple[Resource, str]] = []
        for index, template in enumerate(chosen, 1):
            new = f"ClinicalUseDefinition/{prefix}-{template['type']}-{index}"
            self.names[new] = f"Synthetic {self.label} {template['type']} {index}"
            self.uses.append((template, new))

    def resources(self) -> Iterator[Resource]:
        """Every resource of the drug, narratives generated."""
        indications = [new for template, new in self.uses if template["type"] == "indication"]
        for template in self.templates.singletons:
            new_key = self.keys[key_of(template)]
            resource = self._rewrite(template, new_key)
            if resource["resourceType"] == "MedicationKnowledge":
                resource["clinicalUseIssue"] = [self._ref(new) for _, new in self.uses]
                for guideline in resource.get("indicationGuideline", []):
                    guideline["indication"] = [{"reference": self._ref(indications[0])}]
                if self.extra:
                    monograph = copy.deepcopy(resource["monograph"][0])
                    resource["monograph"].append({**monograph, "source": self._ref(self.extra)})
            yield with_narrative(resource)
            provenance = self.templates.provenance.get(key_of(template))
            if provenance is not None:
                yield with_narrative(self._provenance(provenance, new_key))
        if self.extra:
            leaflet = next(t for t in self.templates.singletons if t["resourceType"] == "DocumentReference")
            yield with_narrative(self._rewrite(leaflet, self.extra))
        for template, new_key in self.uses:
            yield with_narrative(self._rewrite(template, new_key))
            yield with_narrative(self._provenance(self.templates.provenance[key_of(template)], new_key))

    def _ref(self, key: str) -> dict[str, str]:
        return {"reference": key, "display": self.names[key]}

    def _provenance(self, template: Resource, target: str) -> Resource:
        resource = self._rewrite(template, f"Provenance/{target.split('/', 1)[1]}")
        resource["target"] = [self._ref(target)]
        return resource

    def _rewrite(self, template: Resource, new_key: str) -> Resource:
        resource: Resource = self._value(copy.deepcopy(template), "")
        resource["id"] = new_key.split("/", 1)[1]
        resource.pop("text", None)
        return resource

    def _display(self, coding: dict[str, Any]) -> dict[str, Any]:
        if "display" not in coding:
            return coding
        return {**coding, "display": _synthetic(coding["display"], self.label, self.rng)}

    def _value(self, value: Any, key: str) -> Any:
        if isinstance(value, list):
            return [self._value(item, key) for item in value]
        if isinstance(value, str):
            return _synthetic(value, self.label, self.rng) if key in TEXT_KEYS else value
        if not isinstance(value, dict):
            return value
        if isinstance(value.get("reference"), str):
            target = self.keys.get(value["reference"], value["reference"])
            return {**value, **self._ref(target)} if target in self.names else value
        codings = value.get("coding")
        if isinstance(codings, list):
            product = any(c.get("system") in PRODUCT_SYSTEMS for c in codings)
            if not product and key != "classification":  # a seriousness tier's text cites the leaflets
                return value  # a coded concept's text says what the code means: keep it
            if product:  # a product's code names the real drug: a synthetic drug's code names itself
                value = {**value, "coding": [self._display(c) for c in codings]}
        if "system" in value and isinstance(value.get("value"), str):  # ContactPoint
            number = self.number % 100
            fake = f"555-01{number:02d}" if value["system"] == "phone" else None
            url = f"https://example.org/synthetic/{self.number:05d}"
            return {**value, "value": fake or url}
        if "contentType" in value and isinstance(value.get("url"), str):  # Attachment
            value["url"] = f"https://example.org/synthetic/{self.number:05d}/leaflet.html"
        return {name: self._value(item, name) for name, item in value.items()}


def drug_uses(templates: Templates, rng: random.Random) -> int:
    """How many clinical uses a drug has: varying around the bundled publication's count."""
    real = sum(len(v) for v in templates.uses.values())
    return max(MIN_CUDS, round(rng.triangular(real * 0.3, real * 1.7, real)))


def generate(size: int, seed: int, templates: Templates | None = None) -> Iterator[Resource]:
    """Exactly ``size`` resources (at least one smallest drug), drug by drug."""
    templates = templates or Templates.load()
    smallest = templates.drug_size(MIN_CUDS, extra_leaflet=False)
    if size < smallest:
        raise ValueError(f"a synthetic publication has at least {smallest} resources")
    left, number = size, 0
    while left > 0:
        rng = random.Random(f"{seed}:{number}")  # per drug: a drug does not depend on the ones before
        uses, extra = drug_uses(templates, rng), rng.random() < EXTRA_LEAFLET
        if left - templates.drug_size(uses, extra) < smallest:
            # The last drug takes the remainder (an odd one with a fourth leaflet): exactly ``size``.
            extra = bool((left - templates.fixed) % 2)
            uses = (left - templates.fixed - extra) // 2
        drug = Drug(number, templates, rng, uses, extra)
        for resource in drug.resources():
            left -= 1
            yield resource
        number += 1


def write(size: int, seed: int, out: Path) -> dict[str, int]:
    """Write the corpus below ``out``; the count per type."""
    counts: dict[str, int] = {}
    folders: set[str] = set()
    for resource in generate(size, seed):
        kind = resource["resourceType"]
        if kind not in folders:
            (out / kind).mkdir(parents=True, exist_ok=True)
            folders.add(kind)
        text = json.dumps(resource, indent=2, ensure_ascii=False) + "\n"
        (out / kind / f"{resource['id']}.json").write_text(text, encoding="utf-8")
        counts[kind] = counts.get(kind, 0) + 1
    return dict(sorted(counts.items()))


# Where a drug's number appears: its ids (``d000042-warning-3``), its label (``drug 00042``) and its
# synthetic web addresses (``/synthetic/00042/``).
_DRUG_ID = re.compile(rb"(?<![0-9A-Za-z])d([0-9]{6})(?![0-9])")
_DRUG_LABEL = re.compile(rb"(drug |/synthetic/)([0-9]{5})(?![0-9])")
# Columns of the publication's tables that can hold a drug number; the rest (type, parameter, dates,
# systems) are copied as they are.
_RENAMED = frozenset(
    {"id", "target_id", "url", "code", "text", "norm", "value", "narrative", "content", "body"}
)
# documents, recomputed (NDJSON and totals), internal, FTS5 shadows, and what a rebuild reuses (keyed by
# file: a replica has no files of its own, and rebuilds are measured on real builds)
_SKIPPED = ("info", "ndjson", *TOTALS_SCHEMA, "sqlite_", "search_text_", "reuse")


def replicate(source: Path, out: Path, copies: int) -> int:
    """A publication ``copies`` times the size of ``source`` (a build of a corpus), in SQLite; its size.

    Copy ``k`` renumbers every drug ``n`` to ``n + k * drugs`` in every table: resources, the search
    index tables (full text included), so each copy is a set of new drugs with ids, references, labels
    and index rows of their own, as a corpus of that size would have. The precomputed NDJSON is then
    recomputed as the build does. Validation is skipped: this stands in for a build too slow to run.
    """
    shutil.copy(source, out)
    with sqlite3.connect(out) as db:
        db.execute("ATTACH DATABASE ? AS src", (f"file:{source}?mode=ro",))
        drugs = db.execute("SELECT COUNT(*) FROM src.resource WHERE type = 'MedicationKnowledge'").fetchone()[
            0
        ]
        if (copies * drugs) > 99_999:
            raise ValueError("drug labels have five digits: at most 99,999 drugs")
        offset = 0

        def renumber(value: Any) -> Any:
            if not isinstance(value, (str, bytes)):
                return value
            data = value.encode() if isinstance(value, str) else value
            data = _DRUG_ID.sub(lambda m: b"d%06d" % (int(m[1]) + offset), data)
            data = _DRUG_LABEL.sub(lambda m: m[1] + b"%05d" % (int(m[2]) + offset), data)
            return data.decode() if isinstance(value, str) else data

        db.create_function("renumber", 1, renumber, deterministic=True)
        tables = [
            row[0]
            for row in db.execute("SELECT name FROM src.sqlite_master WHERE type = 'table' ORDER BY name")
            if not row[0].startswith(_SKIPPED)
        ]
        for copy_number in range(1, copies):
            offset = copy_number * drugs
            for table in tables:
                columns = [row[1] for row in db.execute(f"PRAGMA src.table_info({table})")]
                values = ", ".join(f"renumber({c})" if c in _RENAMED else c for c in columns)
                db.execute(
                    f"INSERT INTO main.{table} ({', '.join(columns)}) SELECT {values} FROM src.{table}"
                )
        db.commit()
        db.execute("DETACH DATABASE src")
        write_ndjson(db)
        write_totals(db)
        total = int(db.execute("SELECT COUNT(*) FROM resource").fetchone()[0])
    db.close()
    return total


def main() -> None:
    """Command line: write a corpus and print the count per type."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    try:
        counts = write(args.resources, args.seed, args.out)
    except ValueError as exc:
        sys.exit(f"corpus: {exc}")
    print(json.dumps({"resources": sum(counts.values()), "types": counts}))


if __name__ == "__main__":
    main()
