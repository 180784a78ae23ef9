"""The README's 'Publish your own drug', run line by line: init, draft, review, generate, build, serve."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import requests
from conftest import ROOT, free_port, stop

from fhir_pub.conformance import load_conformance
from fhir_pub.draft import draft, read_leaflet
from fhir_pub.facts import Codes

DATA = Path(__file__).parent / "data"
GUIDE = DATA / "guide"
# The leaflets the guide drafts from: synthetic ones, where the guide expects the reader's.
LEAFLETS = {
    "examplamab.txt": DATA / "leaflets" / "lexidrug-examplamab.txt",
    "samplinib.txt": DATA / "leaflets" / "medlineplus-samplinib.txt",
}


def guide_lines() -> list[str]:
    """The shell lines of the guide's code block, as the README has them."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Publish your own drug\n", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.DOTALL)
    assert block is not None, "the guide has no bash block"
    return [line for line in block.group(1).splitlines() if line.strip()]


def fhir_pub() -> str:
    """The installed ``fhir-pub`` console script beside this interpreter."""
    return shutil.which("fhir-pub", path=str(Path(sys.executable).parent)) or "fhir-pub"


def review(project: Path) -> None:
    """The guide's human step: the reviewed fact files and the product codes they need."""
    for path in (GUIDE / "facts").glob("*.toml"):
        shutil.copy(path, project / "facts" / path.name)
    shutil.copy(GUIDE / "verified-codes.json", project / "verified-codes.json")


def get(url: str, server: subprocess.Popen[bytes]) -> requests.Response:
    deadline = time.monotonic() + 30
    while True:
        try:
            return requests.get(url, timeout=10)
        except requests.ConnectionError:
            if server.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def entries(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in bundle.get("entry", [])]


class TestGuide:
    """Following the guide literally publishes both drugs, each fact traced to its own leaflet."""

    def test_publish_two_drugs(self, tmp_path: Path) -> None:
        """Every line runs; both drugs are searchable; each Provenance names the right leaflet."""
        (tmp_path / "leaflets").mkdir()
        for name, source in LEAFLETS.items():
            shutil.copy(source, tmp_path / "leaflets" / name)
        port = str(free_port())
        cwd = tmp_path
        env = {"FHIR_PUB_JOBS_DIR": str(tmp_path / "jobs")}
        server: subprocess.Popen[bytes] | None = None
        log = (tmp_path / "serve.log").open("wb")
        answers: dict[str, requests.Response] = {}
        ran: list[str] = []
        try:
            for line in guide_lines():
                command, _, comment = line.partition("#")
                if not command.strip():
                    assert comment.strip().startswith("review"), f"an unknown step: {line}"
                    review(cwd)
                    ran.append("review")
                    continue
                for step in command.replace("8080", port).split("&&"):
                    words = shlex.split(step)
                    ran.append(words[0] + (f" {words[1]}" if words[0] == "fhir-pub" else ""))
                    if words[0] == "cd":
                        cwd = (cwd / words[1]).resolve()
                    elif words[0] == "curl":
                        assert server is not None, "the guide asks the server before serving"
                        answers[words[1]] = get(words[1], server)
                    elif words[-1] == "&":
                        server = subprocess.Popen(
                            [fhir_pub(), *words[1:-1], "--workers", "1"],
                            cwd=cwd,
                            env={**os.environ, **env},
                            stdout=log,
                            stderr=subprocess.STDOUT,
                            start_new_session=True,
                        )
                    else:
                        assert words[0] == "fhir-pub", f"an unknown command: {step}"
                        done = subprocess.run(
                            [fhir_pub(), *words[1:]],
                            cwd=cwd,
                            capture_output=True,
                            text=True,
                            timeout=300,
                            env={**os.environ, **env},
                        )
                        assert done.returncode == 0, f"{step}: {done.stdout}{done.stderr}"
            self.check(cwd, answers, port)
        finally:
            if server is not None:
                stop(server)
            log.close()
        expected = ["fhir-pub init", "cd", "fhir-pub draft", "fhir-pub draft", "review"]
        expected += ["fhir-pub generate", "fhir-pub validate", "fhir-pub build", "fhir-pub serve"]
        assert ran == [*expected, "curl", "curl", "curl"]

    def check(self, project: Path, answers: dict[str, requests.Response], port: str) -> None:
        """What the served publication answers, against the reviewed fact files."""
        base = f"http://127.0.0.1:{port}/fhir"
        assert all(answer.status_code == 200 for answer in answers.values())
        for drug in ("examplamab", "samplinib"):
            found = entries(answers[f"{base}/MedicationKnowledge?code:text={drug}"].json())
            assert [drug] == [r["id"] for r in found]
        traced = entries(
            answers[f"{base}/Provenance?target=ClinicalUseDefinition/samplinib-effect-diarrhea"].json()
        )
        assert [[e["what"]["reference"] for e in p["entity"]] for p in traced] == [
            ["DocumentReference/ehl-samplinib"]
        ]
        everything = requests.get(f"{base}/MedicationKnowledge", timeout=10).json()
        assert everything["total"] == 2
        for path in sorted((project / "facts").glob("*.toml")):
            facts = tomllib.loads(path.read_text(encoding="utf-8"))
            documents = {key: leaflet["id"] for key, leaflet in facts["leaflets"].items()}
            for fact in facts["facts"]:
                bundle = requests.get(
                    f"{base}/Provenance", params={"target": f"ClinicalUseDefinition/{fact['id']}"}, timeout=10
                ).json()
                expected = [f"DocumentReference/{documents[s]}" for s in fact["sources"]]
                assert [expected] == [[e["what"]["reference"] for e in p["entity"]] for p in entries(bundle)]
            product = facts["product"]
            for key in facts["leaflets"]:
                provenance = requests.get(f"{base}/Provenance/{product['id']}-{key}", timeout=10).json()
                paths = sorted(t["extension"][0]["valueString"] for t in provenance["target"])
                assert sorted(p for p, keys in product["traced"].items() if key in keys) == paths
                assert [f"DocumentReference/{documents[key]}"] == [
                    e["what"]["reference"] for e in provenance["entity"]
                ]

    def test_review_kept_the_drafts_codes(self) -> None:
        """The reviewed files keep the drafts' leaflet keys, and each effect code is one the draft found."""
        codes = Codes.of(load_conformance(ROOT / "profiles"))
        for name, key, cite in (("examplamab", "acme", "Acme"), ("samplinib", "ehl", "EHL")):
            leaflet = read_leaflet(LEAFLETS[f"{name}.txt"].read_text(encoding="utf-8"))
            drafted = draft(leaflet, codes, key, cite, name)
            reviewed = tomllib.loads((GUIDE / "facts" / f"{name}.toml").read_text(encoding="utf-8"))
            assert list(drafted["leaflets"]) == list(reviewed["leaflets"])
            suggested = {f["effect"].get("code") for f in drafted["facts"] if "effect" in f} - {None}
            kept = {f["effect"]["code"] for f in reviewed["facts"] if "code" in f.get("effect", {})}
            assert kept
            assert kept <= suggested
            assert all("review" not in f for f in reviewed["facts"])
