"""Safety wording from the clinical reading: pregnancy after the last dose, symptoms after a transplant."""

from __future__ import annotations

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
        """The four corrected warnings are at version 2, updated 2026-12-02."""
        for rid in CHANGED:
            resource = publication.get(f"ClinicalUseDefinition/{rid}")
            assert resource is not None
            meta = resource["meta"]
            assert (meta["versionId"], meta["lastUpdated"]) == ("2", "2026-12-02T00:00:00Z")
