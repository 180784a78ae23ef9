"""Fact files: the bundled Besponsa fact file regenerates resources/ byte for byte; new drugs generate."""

from __future__ import annotations

import copy
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from fhir_pub.cli import main
from fhir_pub.conformance import load_conformance
from fhir_pub.errors import PublicationError
from fhir_pub.facts import Codes, generate, generate_files, read_facts, write_files

ROOT = Path(__file__).resolve().parent.parent
BESPONSA = ROOT / "facts" / "besponsa.toml"
EXAMPLE = Path(__file__).parent / "data" / "facts" / "examplamab.toml"


@pytest.fixture(scope="module")
def codes() -> Codes:
    return Codes.of(load_conformance(ROOT / "profiles"))


class TestBesponsa:
    """The bundled publication is maintained as one fact file."""

    def test_regenerates_every_resource_exactly(self, codes: Codes, tmp_path: Path) -> None:
        """Generated into an empty folder, the fact file gives resources/ file for file, byte for byte."""
        written = write_files(generate_files([BESPONSA], codes), tmp_path)
        committed = sorted(
            str(p.relative_to(ROOT / "resources")) for p in (ROOT / "resources").glob("*/*.json")
        )
        assert committed == sorted(written)
        for key in committed:
            assert (ROOT / "resources" / key).read_bytes() == (tmp_path / key).read_bytes(), key

    def test_provenance_names_the_leaflets_the_file_names(self, codes: Codes) -> None:
        """Each fact's Provenance names exactly the leaflets its sources list, in that order."""
        facts = read_facts(BESPONSA)
        resources = generate(facts, codes)
        documents = {key: leaflet["id"] for key, leaflet in facts["leaflets"].items()}
        for fact in facts["facts"]:
            entity = resources[f"Provenance/{fact['id']}"]["entity"]
            expected = [f"DocumentReference/{documents[s]}" for s in fact["sources"]]
            assert expected == [e["what"]["reference"] for e in entity]

    def test_per_element_provenance_follows_the_traced_table(self, codes: Codes) -> None:
        """The drug's Provenance per leaflet names exactly the elements [product.traced] gives it."""
        facts = read_facts(BESPONSA)
        resources = generate(facts, codes)
        for key in facts["leaflets"]:
            expected = sorted(p for p, sources in facts["product"]["traced"].items() if key in sources)
            provenance = resources.get(f"Provenance/besponsa-{key}", {"target": []})
            assert expected == sorted(t["extension"][0]["valueString"] for t in provenance["target"])

    def test_cli_check_passes_on_the_bundled_publication(self) -> None:
        """``fhir-pub generate`` finds facts/ beside resources/ and reports that every file matches."""
        result = CliRunner().invoke(main, ["generate"])
        assert result.exit_code == 0, result.output
        count = len(list((ROOT / "resources").glob("*/*.json")))
        assert f"{count} resources match 1 fact file" in result.output


class TestNewDrug:
    """A fact file for a drug fhir-pub never saw generates a complete, traced set of resources."""

    def test_generates_the_resources(self, codes: Codes) -> None:
        """Product, medication, leaflet, organisation, facts and their Provenance, each with a narrative."""
        resources = generate(read_facts(EXAMPLE), codes)
        assert sorted(resources) == [
            "ClinicalUseDefinition/effect-nausea",
            "ClinicalUseDefinition/warning-sunlight",
            "DocumentReference/acme-examplamab",
            "Medication/examplamab-vial",
            "MedicationKnowledge/examplamab",
            "Organization/acme-pub",
            "Provenance/effect-nausea",
            "Provenance/examplamab-acme",
            "Provenance/warning-sunlight",
        ]
        assert all(r["text"]["status"] == "generated" for r in resources.values())
        nausea = resources["ClinicalUseDefinition/effect-nausea"]
        coding = nausea["undesirableEffect"]["symptomConditionEffect"]["concept"]["coding"]
        assert coding == [{"system": "http://snomed.info/sct", "code": "422587007", "display": "Nausea"}]
        assert nausea["subject"] == [
            {"reference": "Medication/examplamab-vial", "display": "Examplamab vial"}
        ]
        issues = resources["MedicationKnowledge/examplamab"]["clinicalUseIssue"]
        assert [i["reference"] for i in issues] == [
            "ClinicalUseDefinition/effect-nausea",
            "ClinicalUseDefinition/warning-sunlight",
        ]
        targets = resources["Provenance/examplamab-acme"]["target"]
        assert [t["extension"][0]["valueString"] for t in targets] == [
            "MedicationKnowledge.code.text",
            "Medication.code.text",
        ]


def _with(change: dict[str, Any]) -> dict[str, Any]:
    facts = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
    facts["facts"][0] |= change
    return facts


def _mutations(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Every path to a value in a parsed fact file."""
    found = [path] if path else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _mutations(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _mutations(item, (*path, index))
    return found


REPLACEMENTS: list[Any] = ["(deleted)", 7, "x", [7], {"a": 1}]


class TestRefused:
    """A fact file that cannot be generated is refused with what is wrong, never half-generated."""

    @pytest.mark.parametrize(
        ("change", "message"),
        [
            (
                {"effect": {"text": "Nausea", "code": "http://snomed.info/sct|1234"}},
                "not in the verified table",
            ),
            ({"effect": {"text": "Nausea", "code": "422587007"}}, "system|code"),
            ({"sources": ["nowhere"]}, "no leaflet 'nowhere'"),
            ({"sources": []}, "needs sources"),
            ({"kind": "side-effect"}, "kind must be one of"),
            ({"population": ["adults"]}, "not among [[groups]]"),
        ],
    )
    def test_names_the_problem(self, codes: Codes, change: dict[str, Any], message: str) -> None:
        """Each broken fact gives a PublicationError naming the fact and the problem."""
        with pytest.raises(PublicationError) as caught:
            generate(_with(change), codes, "examplamab.toml")
        assert message in caught.value.diagnostics
        assert "effect-nausea" in caught.value.diagnostics

    def test_any_broken_value_is_a_publication_error(self, codes: Codes) -> None:
        """Each value of the example deleted or replaced by a wrong type: a PublicationError or a result."""
        base = tomllib.loads(EXAMPLE.read_text(encoding="utf-8"))
        escaped = []
        tried = 0
        for path in _mutations(base):
            for replacement in REPLACEMENTS:
                facts = copy.deepcopy(base)
                parent: Any = facts
                for step in path[:-1]:
                    parent = parent[step]
                if replacement == "(deleted)":
                    del parent[path[-1]]
                else:
                    parent[path[-1]] = replacement
                tried += 1
                try:
                    generate(facts, codes)
                except PublicationError:
                    pass
                except Exception as exc:
                    escaped.append((path, replacement, repr(exc)))
        assert tried > 400
        assert escaped == []

    def test_cli_says_it_in_one_line(self, tmp_path: Path) -> None:
        """The CLI exits 1 with the message, no traceback, and writes nothing."""
        broken = tmp_path / "broken.toml"
        broken.write_text("[publication\n", encoding="utf-8")
        result = CliRunner().invoke(main, ["generate", str(broken), "--resources", str(tmp_path)])
        assert result.exit_code == 1
        assert "not readable TOML" in result.output
        assert "Traceback" not in result.output
        assert list(tmp_path.iterdir()) == [broken]

    def test_unverified_code_in_a_file(self, codes: Codes, tmp_path: Path) -> None:
        """Via generate_files too: the file is named in the message."""
        path = tmp_path / "x.toml"
        path.write_text(EXAMPLE.read_text(encoding="utf-8").replace("422587007", "999"), encoding="utf-8")
        with pytest.raises(PublicationError, match=r"x\.toml"):
            generate_files([path], codes)
        assert json.dumps(read_facts(EXAMPLE))  # the example itself stays readable


class TestBuildSaysSo:
    """``fhir-pub build`` says when resources/ no longer hold what the fact files generate."""

    def test_edited_fact_file(self, tmp_path: Path) -> None:
        """After an edit to a fact file, build names the differing resources; after generate, it is quiet."""
        runner = CliRunner()
        project = tmp_path / "drugs"
        assert runner.invoke(main, ["init", str(project)]).exit_code == 0
        guide = Path(__file__).parent / "data" / "guide"
        for path in (guide / "facts").glob("*.toml"):
            (project / "facts" / path.name).write_bytes(path.read_bytes())
        (project / "verified-codes.json").write_bytes((guide / "verified-codes.json").read_bytes())
        assert runner.invoke(main, ["generate", "--write", "--project", str(project)]).exit_code == 0
        quiet = runner.invoke(main, ["build", "--project", str(project)])
        assert quiet.exit_code == 0, quiet.output
        assert "differ from the fact files" not in quiet.output
        facts = project / "facts" / "samplinib.toml"
        facts.write_text(
            facts.read_text(encoding="utf-8").replace("(EHL).", "(EHL), as restated."), encoding="utf-8"
        )
        said = runner.invoke(main, ["build", "--project", str(project)])
        assert said.exit_code == 0, said.output
        assert "1 resource in" in said.output
        assert (
            "differ from the fact files (first ClinicalUseDefinition/samplinib-warning-ulcers.json)"
            in said.output
        )
