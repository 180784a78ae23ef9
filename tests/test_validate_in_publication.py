"""One resource validated against a built publication: its neighbours are read, the report is unchanged."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest

from fhir_pub.conformance import Conformance
from fhir_pub.graph import key_of
from fhir_pub.publication import Publication
from fhir_pub.store import Store
from fhir_pub.validation import Validator, candidate_from_bytes


@pytest.fixture(scope="module")
def validator(store: Store) -> Validator:
    """The validator of the publication's own profiles."""
    return Validator(Conformance(store.path, {r["url"]: r for r in store.conformance()}))


def both(validator: Validator, store: Store, resource: dict[str, Any]) -> tuple[Any, Any]:
    """The report with every other resource loaded as context, and the one read from the publication."""
    candidate = candidate_from_bytes(orjson.dumps(resource), "resource")
    others = [r for r in store.resources.values() if key_of(r) != key_of(resource)]
    whole = validator.validate([candidate], others)
    lazy = validator.validate([candidate], publication=store)
    return whole.outcome(), lazy.outcome()


def variants(publication: Publication) -> list[tuple[str, dict[str, Any]]]:
    """Every resource as published, and changed ones: a new id (an orphan), a dangling reference."""
    out = [(entry.key, entry.resource) for entry in publication]
    for entry in list(publication)[::10]:
        renamed = copy.deepcopy(entry.resource)
        renamed["id"] = f"{renamed['id']}-copy"
        out.append((f"{entry.key} renamed", renamed))
    use = copy.deepcopy(publication.get("ClinicalUseDefinition/warning-infection"))
    use["subject"] = [{"reference": "Medication/nope"}]
    out.append(("dangling subject", use))
    return out


class TestSameReport:
    """Reading only a resource's neighbours gives the report the whole publication as context gives."""

    def test_every_resource_and_variants(
        self, validator: Validator, store: Store, publication: Publication
    ) -> None:
        """For each published resource and each variant the two outcomes are equal."""
        for name, resource in variants(publication):
            whole, lazy = both(validator, store, resource)
            assert lazy == whole, name

    def test_reads_only_neighbours(self, store: Store) -> None:
        """The referrers of the Medication are the resources whose link rows name it, not the whole set."""
        referrers = {key_of(r) for r in store.referrers("Medication/besponsa-vial")}
        assert "MedicationKnowledge/besponsa" in referrers
        assert "ClinicalUseDefinition/warning-infection" in referrers
        assert len(referrers) < store.count()
        assert not any(k.startswith("Organization/") for k in referrers)

    def test_resources_mapping(self, store: Store) -> None:
        """The lazy mapping reads by key, misses cleanly, and iterates every key once."""
        resources = store.resources
        assert resources["Organization/fda"]["id"] == "fda"
        assert "Organization/nope" not in resources
        assert "Organization/fda/_history/1" not in resources
        assert len(list(resources)) == len(resources) == store.count()
