"""fhir-pub draft: synthetic leaflets in the three layouts give the candidate facts their sections hold."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fhir_pub.cli import main
from fhir_pub.conformance import load_conformance
from fhir_pub.draft import detect, draft, draft_toml, read_leaflet
from fhir_pub.errors import PublicationError
from fhir_pub.facts import Codes, generate

LEAFLETS = Path(__file__).parent / "data" / "leaflets"
SNOMED = "http://snomed.info/sct"
SERIOUS = {
    "text": "Serious (Acme)",
    "code": "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness|serious",
}
OTHER = {"text": "Not among the effects to report right away (Acme)"}


@pytest.fixture(scope="module")
def codes() -> Codes:
    return Codes.of(load_conformance(ROOT / "profiles"))


def drafted(name: str, codes: Codes) -> list[dict[str, Any]]:
    leaflet = read_leaflet((LEAFLETS / name).read_text(encoding="utf-8"))
    facts: list[dict[str, Any]] = draft(leaflet, codes, "acme", "Acme", name)["facts"]
    return facts


def summary(facts: list[dict[str, Any]]) -> list[tuple[str, str, Any, Any]]:
    """Each fact as (kind, section, its term, its seriousness)."""
    out = []
    for fact in facts:
        term = fact.get("effect") or fact.get("disease") or fact.get("code")
        out.append((fact["kind"], fact["section"], term, fact.get("seriousness")))
    return out


class TestLayouts:
    """Each layout is recognised and split into its sections and list items."""

    @pytest.mark.parametrize(
        ("name", "layout", "title"),
        [
            ("lexidrug-examplamab.txt", "lexidrug", "Examplamab"),
            ("medlineplus-examplamab.txt", "medlineplus", "Examplamab Injection"),
            ("uspi17-examplamab.txt", "uspi17", "EXAMPLIX Patient Counseling Information (examplamab)"),
        ],
    )
    def test_detects_the_layout_and_title(self, name: str, layout: str, title: str) -> None:
        """The layout comes from the headings; the title from where the layout puts it."""
        leaflet = read_leaflet((LEAFLETS / name).read_text(encoding="utf-8"))
        assert (layout, title) == (leaflet.layout.name, leaflet.title)

    def test_lexidrug(self, codes: Codes) -> None:
        """Bulleted items per question; the call-right-away list is serious; exact terms get codes."""
        facts = drafted("lexidrug-examplamab.txt", codes)
        before = "What should I tell my doctor BEFORE I start this drug?"
        during = "What must I know or do while on this drug?"
        urgent = "What are some side effects that I should call my doctor about right away?"
        other = "What are some other side effects of this drug?"
        warning = (
            "Examplamab can upset the balance of salts in the blood. "
            "Your doctor will check your blood salts often"
        )
        assert summary(facts) == [
            ("warning", "Brand Names: US", {"text": "Examplix"}, None),
            ("warning", "Warning", {"text": warning}, None),
            (
                "indication",
                "What is this drug used for?",
                {"text": "Doctors give it for pretend fever syndrome"},
                None,
            ),
            ("warning", before, {"text": "If you have kidney trouble of any kind"}, None),
            (
                "warning",
                before,
                {"text": "If you are nursing a baby. Do not nurse while you get this drug"},
                None,
            ),
            (
                "warning",
                during,
                {"text": "Stay out of strong sunlight and use sunscreen while you take this drug"},
                None,
            ),
            (
                "warning",
                during,
                {"text": "Drink plenty of water each day unless your doctor tells you not to"},
                None,
            ),
            ("undesirable-effect", urgent, {"text": "Syncope", "code": f"{SNOMED}|271594007"}, SERIOUS),
            ("undesirable-effect", urgent, {"text": "A racing or pounding heartbeat"}, SERIOUS),
            ("undesirable-effect", other, {"text": "Headache", "code": f"{SNOMED}|25064002"}, OTHER),
            ("undesirable-effect", other, {"text": "Nausea", "code": f"{SNOMED}|422587007"}, OTHER),
            ("undesirable-effect", other, {"text": "Itchy patches on the elbows"}, OTHER),
            (
                "warning",
                "How is this drug best taken?",
                {"text": "It is given as a shot under the skin once a week"},
                None,
            ),
            ("warning", "General drug facts", {"text": "Keep every drug away from children and pets"}, None),
        ]

    def test_medlineplus(self, codes: Codes) -> None:
        """One item per line, the table of contents skipped, seriousness from the lead-in before each list."""
        facts = drafted("medlineplus-examplamab.txt", codes)
        effects = "What side effects can this medication cause?"
        precautions = "What special precautions should I follow?"
        warning = (
            "Examplamab injection may lower your blood salts to a dangerous level. "
            "Your doctor will test your blood before each dose"
        )
        assert summary(facts) == [
            ("warning", "IMPORTANT WARNING:", {"text": warning}, None),
            (
                "indication",
                "Why is this medication prescribed?",
                {"text": "Examplamab injection is used to treat pretend fever syndrome in adults"},
                None,
            ),
            (
                "warning",
                "How should this medicine be used?",
                {
                    "text": "Examplamab injection comes as a liquid given under the skin "
                    "once a week by a nurse"
                },
                None,
            ),
            ("warning", precautions, {"text": "tell your doctor if you have ever had kidney trouble"}, None),
            ("warning", precautions, {"text": "tell your doctor if you are nursing a baby"}, None),
            ("undesirable-effect", effects, {"text": "headache", "code": f"{SNOMED}|25064002"}, OTHER),
            ("undesirable-effect", effects, {"text": "nausea", "code": f"{SNOMED}|422587007"}, OTHER),
            ("undesirable-effect", effects, {"text": "constipation", "code": f"{SNOMED}|14760008"}, OTHER),
            ("undesirable-effect", effects, {"text": "fainting spells"}, SERIOUS),
            ("undesirable-effect", effects, {"text": "a pounding or racing heartbeat"}, SERIOUS),
            ("warning", "Brand names", {"text": "Examplix"}, None),
        ]
        assert facts[3]["lead"] == "Before receiving examplamab injection,"

    def test_uspi17(self, codes: Codes) -> None:
        """Each counseling topic is a warning named by its heading, its paragraph the wording."""
        facts = drafted("uspi17-examplamab.txt", codes)
        assert summary(facts) == [
            ("warning", "Low Blood Salts", {"text": "Low Blood Salts"}, None),
            ("warning", "Fainting", {"text": "Fainting"}, None),
            ("warning", "Lactation", {"text": "Lactation"}, None),
        ]
        assert facts[2]["description"] == "Tell women not to nurse while receiving EXAMPLIX. (Acme)"

    def test_not_a_leaflet(self) -> None:
        """Text in none of the layouts is refused, naming the three."""
        with pytest.raises(PublicationError, match="MedlinePlus drug page"):
            detect("Just some notes.\nNothing here.\n")


class TestDraftFile:
    """The draft is a fact file every entry of which waits for review."""

    @pytest.mark.parametrize("name", sorted(p.name for p in LEAFLETS.glob("*.txt")))
    def test_every_fact_is_sourced_and_marked(self, codes: Codes, name: str) -> None:
        """Each fact has its leaflet as source, a unique id and a review note; the file reads back."""
        leaflet = read_leaflet((LEAFLETS / name).read_text(encoding="utf-8"))
        table = draft(leaflet, codes, "acme", "Acme", name)
        document = tomllib.loads(draft_toml(table, name, leaflet.layout))
        assert document == table
        facts = document["facts"]
        assert all(f["sources"] == ["acme"] and name in f["review"] for f in facts)
        assert len({f["id"] for f in facts}) == len(facts)
        assert "review" in document["leaflets"]["acme"]

    def test_generate_refuses_a_draft(self, codes: Codes) -> None:
        """Until reviewed, a drafted fact cannot be generated into a resource."""
        leaflet = read_leaflet((LEAFLETS / "uspi17-examplamab.txt").read_text(encoding="utf-8"))
        with pytest.raises(
            PublicationError,
            match="still marked for review: warning-low-blood-salts, warning-fainting, warning-lactation",
        ):
            generate(draft(leaflet, codes, "acme", "Acme", "x"), codes)


class TestCommand:
    """``fhir-pub draft`` writes a new file and says what it found, or refuses in one line."""

    def test_writes_the_draft(self, tmp_path: Path) -> None:
        """With --out it writes the file and counts the candidate facts."""
        out = tmp_path / "facts" / "examplix.draft.toml"
        leaflet = str(LEAFLETS / "medlineplus-examplamab.txt")
        result = CliRunner().invoke(
            main, ["draft", leaflet, "--out", str(out), "--key", "nlm", "--cite", "NLM"]
        )
        assert result.exit_code == 0, result.output
        assert "11 candidate facts from 6 sections of a medlineplus leaflet" in result.output
        document = tomllib.loads(out.read_text(encoding="utf-8"))
        assert {f["sources"][0] for f in document["facts"]} == {"nlm"}
        assert document["facts"][0]["description"].endswith("(NLM)")

    def test_never_overwrites(self, tmp_path: Path) -> None:
        """An existing --out is refused, and left as it was."""
        out = tmp_path / "mine.toml"
        out.write_text("mine", encoding="utf-8")
        result = CliRunner().invoke(
            main, ["draft", str(LEAFLETS / "uspi17-examplamab.txt"), "--out", str(out)]
        )
        assert result.exit_code == 1
        assert "exists" in result.output
        assert out.read_text(encoding="utf-8") == "mine"

    @pytest.mark.parametrize(
        ("content", "message"),
        [(b"hello\nworld\n", "not a leaflet layout"), (b"\xff\xfe\x00bad", "not readable as UTF-8")],
    )
    def test_refuses_what_it_cannot_read(self, tmp_path: Path, content: bytes, message: str) -> None:
        """Text in no layout, or not text at all: exit 1 with the reason, no traceback."""
        path = tmp_path / "leaflet.txt"
        path.write_bytes(content)
        result = CliRunner().invoke(main, ["draft", str(path)])
        assert result.exit_code == 1
        assert message in result.output
        assert "Traceback" not in result.output


HEADINGS = [
    "PATIENT & CAREGIVER EDUCATION",
    "Warning",
    "What is this drug used for?",
    "What are some other side effects of this drug?",
    "Why is this medication prescribed?",
    "What side effects can this medication cause?",
    "IMPORTANT WARNING:",
    "Brand names",
    "EXAMPLIX Patient Counseling Information (examplamab)",
    "Last Revised - 01/02/2026",
    "Did you find an answer here?",
]
LINES = st.one_of(
    st.sampled_from(HEADINGS),
    st.sampled_from(
        ["", "- Headache.", "- ", "Some effects are serious. Call at once:", "x,", ")", "http://x"]
    ),
    st.text(max_size=40),
)


class TestAnyText:
    """Whatever the text, reading and drafting give a draft or a PublicationError, never a traceback."""

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(lines=st.lists(LINES, max_size=30))
    def test_draft_or_refusal(self, codes: Codes, lines: list[str]) -> None:
        """Lines of the three layouts' headings, items and noise, in any order."""
        text = "\n".join(lines)
        try:
            leaflet = read_leaflet(text)
        except PublicationError:
            return
        table = draft(leaflet, codes, "k", "K", "t.txt")
        assert tomllib.loads(draft_toml(table, "t.txt", leaflet.layout)) == table
        assert all(fact["sources"] == ["k"] for fact in table["facts"])
