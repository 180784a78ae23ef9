"""R4B's invariants on the converted R4B forms: scripts/r4b-definitions, the check, the build, $validate."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import io
import json
import shutil
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import orjson
import pytest
import requests
from conftest import free_port, start, stop

from fhir_pub.build import BuildError, build, check_converted
from fhir_pub.publication import Publication
from fhir_pub.store import Store
from fhir_pub.validation import earlier
from fhir_pub.validation.r5 import R4B_DEFINITIONS, base_constraints, datatypes

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
CORE = "http://hl7.org/fhir/StructureDefinition/"
NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">An organization</div>'}


def script(name: str) -> ModuleType:
    """A script of scripts/ (no .py suffix) imported as a module, as running it would find its imports."""
    sys.path.insert(0, str(SCRIPTS))
    try:
        loader = importlib.machinery.SourceFileLoader(name.replace("-", "_"), str(SCRIPTS / name))
        spec = importlib.util.spec_from_loader(loader.name, loader)
        assert spec is not None
        module = importlib.util.module_from_spec(spec)
        loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPTS))


def constraint(key: str, source: str, expression: str, severity: str = "error") -> dict[str, str]:
    return {
        "key": key,
        "severity": severity,
        "human": f"rule {key}",
        "expression": expression,
        "source": source,
    }


def package(folder: Path) -> Path:
    """A tiny package in the shape of hl7.fhir.r4b.core: two types, a profile, a ValueSet, one README."""
    thing = {
        "resourceType": "StructureDefinition",
        "url": f"{CORE}Thing",
        "type": "Thing",
        "derivation": "specialization",
        "baseDefinition": f"{CORE}DomainResource",
        "differential": {
            "element": [
                {
                    "path": "Thing",
                    "constraint": [
                        constraint("thg-1", f"{CORE}Thing", "name.exists()"),
                        constraint("dom-2", f"{CORE}DomainResource", "contained.contained.empty()"),
                        constraint("ele-1", f"{CORE}Element", "hasValue()"),
                    ],
                },
                {"path": "Thing.part", "constraint": [constraint("thg-2", f"{CORE}Thing", "x", "warning")]},
            ]
        },
        "snapshot": {
            "element": [
                {"path": "Thing"},
                {"path": "Thing.name"},
                {"path": "Thing.value[x]", "type": [{"code": "string"}, {"code": "CodeableReference"}]},
                {"path": "Thing.part"},
                {"path": "Thing.part.part", "contentReference": "#Thing.part"},
            ]
        },
    }
    domain = {
        "resourceType": "StructureDefinition",
        "url": f"{CORE}DomainResource",
        "type": "DomainResource",
        "derivation": "specialization",
        "baseDefinition": f"{CORE}Resource",
        "differential": {
            "element": [
                {"path": "DomainResource", "constraint": [constraint("dom-2", f"{CORE}DomainResource", "y")]}
            ]
        },
        "snapshot": {"element": [{"path": "DomainResource"}, {"path": "DomainResource.text"}]},
    }
    profile = {**thing, "url": "http://example.org/Thing", "derivation": "constraint"}
    files: dict[str, Any] = {
        "StructureDefinition-Thing.json": thing,
        "StructureDefinition-DomainResource.json": domain,
        "StructureDefinition-thing-profile.json": profile,
        "ValueSet-x.json": {"resourceType": "ValueSet"},
    }
    archive = folder / "core.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for name, content in {**files, "README.md": "not a definition"}.items():
            data = content.encode() if isinstance(content, str) else json.dumps(content).encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return archive


class TestScripts:
    """scripts/r4b-definitions and scripts/r5-definitions share their code and differ in what they keep."""

    def test_r4b_table(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """Own constraints (not inherited, not ele-1), bases, choices and content references; no profile."""
        module = script("r4b-definitions")
        assert module.main(["r4b-definitions", str(package(tmp_path))], module.PACKAGE, module.entry) == 0
        written = json.loads(capsys.readouterr().out)
        assert written["package"] == "hl7.fhir.r4b.core#4.3.0"
        assert written["types"] == {
            "DomainResource": {
                "base": "Resource",
                "constraints": [["DomainResource", "dom-2", "error", "rule dom-2", "y"]],
            },
            "Thing": {
                "base": "DomainResource",
                "constraints": [
                    ["Thing", "thg-1", "error", "rule thg-1", "name.exists()"],
                    ["Thing.part", "thg-2", "warning", "rule thg-2", "x"],
                ],
                "choices": {"Thing.value": ["String", "CodeableReference"]},
                "elsewhere": {"Thing.part.part": "Thing.part"},
            },
        }

    def test_r5_table_keeps_the_order_of_children(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        """The R5 script reads the same package through the same functions, and keeps element order."""
        module = script("r5-definitions")
        assert module.main(["r5-definitions", str(package(tmp_path))], module.PACKAGE, module.entry) == 0
        written = json.loads(capsys.readouterr().out)
        assert written["package"] == "hl7.fhir.r5.core#5.0.0"
        table = written["types"]
        assert table["Thing"]["children"] == {"": ["name", "value[x]", "part"], "part": ["part"]}
        assert [c[1] for c in table["Thing"]["constraints"]] == ["thg-1", "thg-2"]
        assert "choices" not in table["Thing"]

    def test_r4b_search_parameters(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        """scripts/r4b-search-parameters lists each SearchParameter under every type it is based on."""
        archive = tmp_path / "sp.tgz"
        with tarfile.open(archive, "w:gz") as tar:
            for sp in (
                {"resourceType": "SearchParameter", "url": "http://x/a", "code": "a", "base": ["T", "U"]},
                {"resourceType": "SearchParameter", "url": "http://x/b", "code": "b", "base": ["T"]},
                {"resourceType": "ValueSet", "url": "http://x/vs"},
            ):
                data = json.dumps(sp).encode()
                info = tarfile.TarInfo(f"package/{sp['resourceType']}-{sp['url'][-1]}.json")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
        module = script("r4b-search-parameters")
        assert module.main(["r4b-search-parameters", str(archive)]) == 0
        written = json.loads(capsys.readouterr().out)
        assert written == {
            "package": "hl7.fhir.r4b.core#4.3.0",
            "types": {"T": {"a": "http://x/a", "b": "http://x/b"}, "U": {"a": "http://x/a"}},
        }

    def test_the_file_is_the_scripts(self) -> None:
        """r4b-definitions.json is one type a line, from hl7.fhir.r4b.core 4.3.0, with R4B's own rules."""
        text = R4B_DEFINITIONS.read_text(encoding="utf-8")
        assert text.startswith('{"package": "hl7.fhir.r4b.core#4.3.0", "types": {\n')
        types = json.loads(text)["types"]
        assert len(text.splitlines()) == len(types) + 2
        assert "grp-1" in {c[1] for c in types["Group"]["constraints"]}  # R4B's; R5 has no grp-1
        assert "CodeableReference" in types["Extension"]["choices"]["Extension.value"]  # R4 has none
        assert {"Extension", "Period", "string"} <= set(datatypes("4.3"))
        assert "Organization" not in datatypes("4.3")
        keys = [c["key"] for _, c in base_constraints("Organization", "4.3")]
        assert keys[:6] == ["dom-2", "dom-4", "dom-3", "dom-6", "dom-5", "dom-r4b"]
        assert "org-1" in keys


def organization(**elements: Any) -> dict[str, Any]:
    return {"resourceType": "Organization", "id": "o", "text": NARRATIVE, **elements}


EXTENSION = {"url": "http://x.org/e", "valueString": "a", "extension": [{"url": "b", "valueString": "c"}]}
PERIOD = {"start": "2021", "end": "2020"}
GROUP = {"resourceType": "Group", "text": NARRATIVE, "type": "person", "actual": False}
STATEMENT = {"resourceType": "CapabilityStatement", "text": NARRATIVE, "status": "active", "date": "2024"}
# Each breaks one R4B invariant: on the resource, on an element, on a datatype at every element of it.
BROKEN = {
    "org-1": (organization(active=True), "org-1"),
    "org-3": (organization(name="x", telecom=[{"system": "phone", "value": "1", "use": "home"}]), "org-3"),
    "per-1": (organization(name="x", identifier=[{"value": "1", "period": PERIOD}]), "per-1"),
    "ext-1": (organization(name="x", extension=[EXTENSION]), "ext-1"),
    "grp-1": ({**GROUP, "member": [{"entity": {"reference": "Group/g"}}]}, "grp-1"),
    "cpb-1": ({**STATEMENT, "kind": "instance", "fhirVersion": "4.3.0", "format": ["json"]}, "cpb-1"),
}


def rules(issues: list[Any], severity: str) -> list[str | None]:
    return sorted(i.rule for i in issues if i.severity == severity)


class TestCheck:
    """earlier.check at 4.3: R4B's models, then R4B's invariants, per element and datatype."""

    @pytest.mark.parametrize(("resource", "broken"), list(BROKEN.values()), ids=list(BROKEN))
    def test_broken_invariant_is_an_error(self, resource: dict[str, Any], broken: str) -> None:
        """Each breaks one R4B invariant (the models accept it): an error naming the key."""
        found = earlier.check(resource, "4.3", "here")
        assert not [i for i in found if i.layer == "structure"]
        assert broken in rules(found, "error")
        assert all(i.source == "here" for i in found)
        fixed = {**resource, "name": "x"} if broken == "org-1" else None
        if fixed is not None:
            assert rules(earlier.check(fixed, "4.3"), "error") == []

    def test_r4b_types_of_extension_values(self) -> None:
        """An R4B value that R4's FHIRPath model does not know (valueCodeableReference): ext-1 holds."""
        value = {"concept": {"text": "a"}}
        sound = organization(name="x", extension=[{"url": "http://x.org/e", "valueCodeableReference": value}])
        assert earlier.check(sound, "4.3") == []

    def test_warnings(self) -> None:
        """A warning invariant broken is a warning; one this engine cannot evaluate, a warning it was not."""
        contained = [{"resourceType": "Organization", "name": "y"}]
        found = earlier.check({"resourceType": "Organization", "name": "x", "contained": contained}, "4.3")
        assert rules(found, "error") == []
        assert {i.rule: i.code for i in found} == {"dom-6": "invariant", "dom-3": "not-supported"}
        assert any(i.message.endswith("not checked") for i in found)

    def test_mode_says_what_was_checked(self) -> None:
        """The first issue of $validate at R4B says invariants were checked there, bindings not."""
        text = earlier.mode("4.3").message
        assert "R4B's invariants" in text
        assert "bindings are not checked" in text
        assert "invariants and bindings are not checked" in earlier.mode("4.0").message


class TestBuild:
    """Every converted R4B form is checked by the build; one that breaks an R4B invariant fails it."""

    def test_every_converted_resource_passes(self, store: Store, publication: Publication) -> None:
        """The bundled publication's R4B forms: R4B's models and invariants find nothing, not a warning."""
        seen = 0
        for kind in store.converted_types("4.3"):
            for rid, stored in store.stored_converted("4.3", kind):
                assert earlier.check(orjson.loads(stored.body), "4.3") == [], (kind, rid)
                seen += 1
        assert seen == len(publication.entries)
        assert len(earlier._r4b_set().all) > 30  # the invariants of the types met, compiled and evaluated

    def test_check_converted_names_version_and_key(self) -> None:
        """The build's check of one R4B form: the issue names FHIR R4B and the key, under the resource."""
        (issue,) = check_converted(organization(active=True), "resources/Organization/o.json")
        assert (issue.severity, issue.rule, issue.layer, issue.source) == (
            "error",
            "org-1",
            "R4B",
            "resources/Organization/o.json",
        )
        assert issue.message.startswith("as converted to FHIR R4B, org-1: ")

    def test_check_converted_at_r4(self) -> None:
        """The build checks each R4 form with fhirclient's strict R4 models; an issue names FHIR R4."""
        sound = {"resourceType": "Organization", "id": "o", "name": "Org", "active": True}
        assert check_converted(sound, "x.json", "4.0") == []
        broken = {**sound, "active": "yes", "colour": "blue"}  # a string boolean; an element R4 lacks
        issues = check_converted(broken, "resources/Organization/o.json", "4.0")
        assert issues
        assert all(i.layer == "R4" and i.severity == "error" for i in issues)
        assert all(i.message.startswith("as converted to FHIR R4, ") for i in issues)
        assert any("colour" in i.message for i in issues)
        assert any("active" in i.message for i in issues)

    def test_refuses_a_resource_whose_r4b_form_breaks_an_invariant(
        self, publication: Publication, tmp_path: Path
    ) -> None:
        """R5 lets a definitional Group list members; R4B's grp-1 does not: the build fails on its R4B form.

        The R5 resource is valid (it checks clean at R5); nothing is written.
        """
        resources = tmp_path / "resources"
        shutil.copytree(publication.root, resources)
        path = resources / "Group" / "patients-1-year-and-older.json"
        group = json.loads(path.read_text(encoding="utf-8"))
        assert group["membership"] == "definitional"
        group["member"] = [{"entity": {"reference": "Group/patients-1-year-and-older"}}]
        path.write_text(json.dumps(group), encoding="utf-8")
        out = tmp_path / "p.sqlite"
        with pytest.raises(BuildError) as failure:
            build(out, resources_dir=resources)
        (issue,) = [i for i in failure.value.report.issues if i.severity == "error"]
        assert (issue.rule, issue.layer, issue.source) == ("grp-1", "R4B", str(path))
        assert "FHIR R4B" in issue.message
        assert not out.exists()


@pytest.fixture(scope="module")
def server(built: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real fhir-pub server on the built publication."""
    port = free_port()
    process = start(tmp_path_factory.mktemp("r4b-server"), built, port)
    try:
        yield f"http://127.0.0.1:{port}/fhir"
    finally:
        stop(process)


def validated(url: str, body: Any) -> requests.Response:
    return requests.post(
        url, data=orjson.dumps(body), headers={"Content-Type": "application/fhir+json"}, timeout=30
    )


class TestValidateAtR4B:
    """POST [base]/R4B/[type]/$validate applies R4B's invariants; R4's base does not."""

    def test_invariant_errors_and_warnings(self, server: str) -> None:
        """An Organization with neither name nor identifier: org-1 at R4B (200, an OperationOutcome)."""
        answer = validated(
            f"{server}/R4B/Organization/$validate", {"resourceType": "Organization", "active": True}
        )
        assert answer.status_code == 200
        issues = answer.json()["issue"]
        assert issues[0]["severity"] == "error"
        assert "org-1" in issues[0]["details"]["text"]
        assert "[R4B" not in issues[0]["diagnostics"]
        assert "invariant/org-1" in issues[0]["diagnostics"]
        assert [i["severity"] for i in issues] == ["error", "warning", "information"]  # dom-6: no narrative
        assert "R4B's invariants" in issues[-1]["details"]["text"]
        at_r4 = validated(
            f"{server}/R4/Organization/$validate", {"resourceType": "Organization", "active": True}
        )
        assert [i["severity"] for i in at_r4.json()["issue"]] == ["information"]

    def test_served_resources_and_capability_pass(self, server: str) -> None:
        """What the server serves at R4B passes R4B's invariants: reads, and its CapabilityStatement."""
        for path in ("Organization/pfizer", "Group/patients-1-year-and-older", "metadata"):
            resource = requests.get(f"{server}/R4B/{path}", timeout=30).json()
            answer = validated(f"{server}/R4B/{resource['resourceType']}/$validate", resource)
            assert [i["severity"] for i in answer.json()["issue"]] == ["information"], (path, answer.json())
