"""The clinical reading's findings: safety wording, severity words per leaflet, and the fidelity faults."""

from __future__ import annotations

import re
from typing import Any

import pytest
from conftest import source_sets

from fhir_pub.publication import Publication

CHANGED = (
    "warning-embryo-fetal-toxicity",
    "warning-contraception-females",
    "warning-contraception-males",
    "warning-post-transplant-mortality",
)


def warning(publication: Publication, rid: str) -> str:
    """The markdown description of one warning."""
    resource = publication.get(f"ClinicalUseDefinition/{rid}")
    assert resource is not None
    return str(resource["warning"]["description"])


def line_of(text: str, start: str) -> str:
    """The first line of ``text`` that starts with ``start``."""
    return next(line for line in text.splitlines() if line.startswith(start))


class TestPregnancyAfterTheLastDose:
    """A pregnancy in the birth-control period after the last dose gets MSK's instruction, as MSK's."""

    def test_embryo_fetal_warning(self, publication: Publication) -> None:
        """MSK's call covers the 8- and 5-month periods; MedlinePlus and Pfizer say during treatment."""
        text = warning(publication, "warning-embryo-fetal-toxicity")
        msk = line_of(text, "- MSK:")
        for words in ("right away", "after your last dose", "8 months for you", "5 months for a partner"):
            assert words in msk
        assert "while you are receiving Besponsa" in line_of(text, "- MedlinePlus:")
        assert "during treatment" in line_of(text, "- Pfizer:")
        assert "during treatment, call the doctor" not in text  # the old wording, bounded at the last dose

    def test_contraception_warnings(self, publication: Publication) -> None:
        """Both contraception warnings say to call about a pregnancy in their own after-dose period."""
        females = warning(publication, "warning-contraception-females")
        assert "in the 8 months after your last dose (MSK)" in females
        males = warning(publication, "warning-contraception-males")
        call = line_of(males, "If your partner becomes pregnant, call the doctor")
        assert "in the 5 months after your last dose (MSK)" in call
        assert "Pfizer" not in call  # Pfizer's advice to call is addressed to women


class TestSymptomsAfterATransplant:
    """The urgent symptom list is worded for a transplant after Besponsa, MedlinePlus's version kept."""

    def test_wording(self, publication: Publication) -> None:
        """No 'during treatment' bound on the list, and Pfizer's infection advice has no time bound."""
        text = warning(publication, "warning-post-transplant-mortality")
        assert "transplant during treatment" not in text
        assert "If you have a transplant after Besponsa" in text
        assert "which words it for a transplant while you are receiving Besponsa" in text
        pfizer = line_of(text, "Report any signs of infection")
        assert "during" not in pfizer
        assert "while" not in pfizer


class TestChangedResourcesHaveNewVersions:
    """A corrected resource gets a new version, so clients and caches holding the old one revalidate."""

    def test_versions(self, publication: Publication) -> None:
        """The four corrected warnings are past version 1, updated on or after 2026-12-02."""
        for rid in CHANGED:
            resource = publication.get(f"ClinicalUseDefinition/{rid}")
            assert resource is not None
            meta = resource["meta"]
            assert int(meta["versionId"]) >= 2
            assert meta["lastUpdated"] >= "2026-12-02T00:00:00Z"


# The severity words each leaflet uses (MSK says "deadly", which the publication renders as "fatal").
SEVERITY = re.compile(r"\b(severe|life-threatening|fatal)\b", re.IGNORECASE)
VOCABULARY = {
    "MSK": {"severe", "life-threatening", "fatal"},
    "MedlinePlus": {"severe", "life-threatening"},
    "Pfizer": {"severe", "life-threatening", "fatal"},
}
LEAFLET = re.compile(r"\b(MSK|MedlinePlus|Pfizer)\b")


def texts(value: Any) -> list[str]:
    """Every string of a resource's data, leaving out the narrative (generated from the data)."""
    if isinstance(value, dict):
        return [t for key, item in value.items() if key != "div" for t in texts(item)]
    if isinstance(value, list):
        return [t for item in value for t in texts(item)]
    return [value] if isinstance(value, str) else []


def clauses(text: str) -> list[str]:
    """A text cut at the marks that end one leaflet's statement: ``.``, ``;``, ``:`` and new lines."""
    return [c.strip() for c in re.split(r"[.;:\n]", text) if c.strip()]


def credit(clause: str) -> set[str]:
    """Who a clause credits its severity words to.

    That is the first parenthesis after the last of them (``fatal (MSK)``), else the leaflet the clause
    names before them (``Pfizer says ... fatal``).
    """
    last = list(SEVERITY.finditer(clause))[-1]
    after = re.search(r"\(([^)]*)\)", clause[last.end() :])
    if after:
        return set(LEAFLET.findall(after.group(1)))
    return set(LEAFLET.findall(clause[: last.start()]))


class TestSeverityWordsPerLeaflet:
    """A severity word is credited to one leaflet that uses it, never pooled across leaflets."""

    def test_each_clause_credits_one_leaflet_that_says_it(self, publication: Publication) -> None:
        """Each clause with a severity word names one leaflet that uses it, or its resource has one source."""
        checked = 0
        for entry in publication:
            if entry.resource["resourceType"] not in {"ClinicalUseDefinition", "MedicationKnowledge"}:
                continue
            sources = source_sets(publication).get(entry.key, set())
            for text in texts(entry.resource):
                for clause in clauses(text):
                    words = {w.lower() for w in SEVERITY.findall(clause)}
                    if not words:
                        continue
                    credited = credit(clause)
                    if not credited:  # the resource's one source states it
                        assert len(sources) == 1, (entry.key, clause)
                        continue
                    assert len(credited) == 1, (entry.key, clause)  # pooled words hide who says what
                    (leaflet,) = credited
                    assert words <= VOCABULARY[leaflet], (entry.key, clause)
                    checked += 1
        assert checked > 20

    def test_vod_effect(self, publication: Publication) -> None:
        """VOD: Pfizer says severe, life-threatening or fatal; MedlinePlus says severe or life-threatening."""
        resource = publication.get("ClinicalUseDefinition/effect-hepatic-veno-occlusive-disease")
        assert resource is not None
        tier = resource["undesirableEffect"]["classification"]["text"]
        assert "severe, life-threatening or fatal (Pfizer)" in tier
        assert "severe or life-threatening (MedlinePlus)" in tier


class TestFidelity:
    """The fidelity findings of the clinical reading stay fixed."""

    def test_seriousness_is_codeable(self, publication: Publication) -> None:
        """A serious-tier effect is coded serious (HL7 adverse-event-seriousness); the others are not."""
        serious = {
            "system": "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness",
            "code": "serious",
        }
        tiers = {"serious": 0, "other": 0}
        for resource in publication.of_type("ClinicalUseDefinition"):
            if resource["type"] != "undesirable-effect":
                continue
            classification = resource["undesirableEffect"]["classification"]
            coded = [{k: c[k] for k in ("system", "code")} for c in classification.get("coding", [])]
            if classification["text"].startswith("Serious:"):
                assert coded == [serious], resource["id"]
                tiers["serious"] += 1
            else:  # "Less serious" is the leaflets' grouping, not a claim of no lasting harm: left as text
                assert coded == [], resource["id"]
                tiers["other"] += 1
        assert min(tiers.values()) > 10

    def test_no_canada_jurisdiction(self, publication: Publication) -> None:
        """The record is a US one; MSK's Canadian brand name is kept as a brand-name fact only."""
        drug = publication.get("MedicationKnowledge/besponsa")
        assert drug is not None
        codes = {c["code"] for j in drug["intendedJurisdiction"] for c in j.get("coding", [])}
        assert codes == {"US"}
        (brands,) = [
            c for c in drug["definitional"]["drugCharacteristic"] if c["type"]["text"] == "Brand names"
        ]
        assert "Besponsa in Canada, as MSK lists them" in brands["valueString"]

    def test_no_mechanism_claim(self, publication: Publication) -> None:
        """MedlinePlus's immune-system mechanism contradicts an antibody-drug conjugate's labelling."""
        for entry in publication:
            for text in texts(entry.resource):
                assert "immune system" not in text.lower(), entry.key

    def test_qt_interaction_not_credited_to_pfizer(self, publication: Publication) -> None:
        """Pfizer never names QT-prolonging medicines."""
        sources = source_sets(publication)["ClinicalUseDefinition/interaction-qt-prolonging-medicines"]
        assert sources == {"DocumentReference/msk-inotuzumab-ozogamicin"}

    def test_infection_advice_is_in_the_infection_warning(self, publication: Publication) -> None:
        """MedlinePlus's advice to tell the doctor about an infection is in the infection warning."""
        assert "tell your doctor if you have an infection (MedlinePlus)" in warning(
            publication, "warning-infection"
        )
        assert "infection" not in warning(publication, "warning-qt-prolongation").lower()

    @pytest.mark.parametrize(
        ("rid", "leaflet"),
        [
            ("effect-dizziness", "DocumentReference/pfizer-besponsa-patient-counseling"),
            ("effect-fainting", "DocumentReference/pfizer-besponsa-patient-counseling"),
            ("effect-abnormal-heartbeat", "DocumentReference/msk-inotuzumab-ozogamicin"),
        ],
    )
    def test_effects_credit_every_leaflet_naming_them(
        self, publication: Publication, rid: str, leaflet: str
    ) -> None:
        """Pfizer names dizziness and fainting as QT symptoms; MSK names a heartbeat that feels abnormal."""
        assert leaflet in source_sets(publication)[f"ClinicalUseDefinition/{rid}"]

    def test_indication_status_is_medlineplus_wording(self, publication: Publication) -> None:
        """The disease status says whose wording settles it."""
        resource = publication.get("ClinicalUseDefinition/indication-acute-lymphoblastic-leukemia")
        assert resource is not None
        assert "MedlinePlus" in resource["indication"]["diseaseStatus"]["concept"]["text"]

    @pytest.mark.parametrize(
        ("rid", "code"),
        [("effect-low-blood-counts", None), ("effect-anemia", "271737000"), ("effect-liver-problems", None)],
    )
    def test_effects_carried_only_as_warnings_are_effects_too(
        self, publication: Publication, rid: str, code: str | None
    ) -> None:
        """Low blood counts, anemia and liver problems are undesirable effects; no narrower code is added."""
        resource = publication.get(f"ClinicalUseDefinition/{rid}")
        assert resource is not None
        assert resource["type"] == "undesirable-effect"
        codings = resource["undesirableEffect"]["symptomConditionEffect"]["concept"].get("coding", [])
        assert [c["code"] for c in codings] == ([code] if code else [])
