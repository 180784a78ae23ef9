"""Run two third-party Python FHIR clients against a running fhir-pub server, one PASS/FAIL line per check.

The clients are fhirpy (Beda Software) and SMART's client-py (``fhirclient``). client-py ships R4 models
only, so it is used through its server object's raw ``request_json``. What each answer should hold is
worked out at run time from the server's own answers (every resource of every type in the
CapabilityStatement, read page by page with the standard library) and filtered here, so nothing depends on
the size or content of the publication. Exit status 1 if any check fails.

Usage: python_clients.py BASE_URL   (for example http://127.0.0.1:8080/fhir)
"""

from __future__ import annotations

import json
import sys
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

from fhirclient import client as smart_client
from fhirpy import SyncFHIRClient

Resource = dict[str, Any]


class CheckFailedError(Exception):
    """A check saw something other than what it expected."""


def expect(condition: bool, message: str) -> None:
    """Fail the running check with ``message`` unless ``condition`` holds."""
    if not condition:
        raise CheckFailedError(message)


class Checks:
    """Runs named checks and counts them; a check returns an optional detail string or raises."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def run(self, name: str, check: Callable[[], str | None]) -> None:
        """Run one check and print its PASS or FAIL line."""
        try:
            detail = check()
        except Exception as exc:  # any error, from the client or from us, is this check failing
            self.failed += 1
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
        else:
            self.passed += 1
            print(f"PASS {name}" + (f" ({detail})" if detail else ""), flush=True)


def get_json(url: str) -> Any:
    """GET ``url`` as FHIR JSON with the standard library (the ground truth the clients are held to)."""
    request = urllib.request.Request(url, headers={"Accept": "application/fhir+json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def pages(url: str) -> Iterator[Resource]:
    """Every Bundle of a search, following ``next`` links."""
    next_url: str | None = url
    while next_url:
        bundle = get_json(next_url)
        yield bundle
        next_url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)


class Ground:
    """Every resource the server holds, by type, read once through its search API."""

    def __init__(self, base: str) -> None:
        self.base = base
        self.capability: Resource = get_json(f"{base}/metadata")
        self.types: list[str] = [entry["type"] for entry in self.capability["rest"][0]["resource"]]
        self.resources: dict[str, list[Resource]] = {}
        for kind in self.types:
            found = [
                entry["resource"]
                for bundle in pages(f"{base}/{kind}?_count=500")
                for entry in bundle.get("entry", [])
                if entry.get("search", {}).get("mode", "match") == "match"
            ]
            self.resources[kind] = found

    def first(self, kind: str, having: Callable[[Resource], bool] = lambda _: True) -> Resource:
        """The first resource of ``kind`` (in the server's order) for which ``having`` holds."""
        for resource in self.resources.get(kind, []):
            if having(resource):
                return resource
        raise CheckFailedError(f"the publication holds no {kind} for this check")


def ids(resources: list[Resource]) -> list[str]:
    """The ids of ``resources``, in order."""
    return [resource["id"] for resource in resources]


def split_bundle(bundle: Resource) -> tuple[list[Resource], list[Resource]]:
    """A searchset's matches and its included resources (``search.mode``)."""
    matches: list[Resource] = []
    included: list[Resource] = []
    for entry in bundle.get("entry", []):
        mode = entry.get("search", {}).get("mode")
        if mode == "match":
            matches.append(entry["resource"])
        elif mode == "include":
            included.append(entry["resource"])
    return matches, included


def fhirpy_checks(checks: Checks, ground: Ground) -> None:
    """Reads, searches, includes and paging through fhirpy's SyncFHIRClient."""
    client = SyncFHIRClient(ground.base)

    def metadata() -> str:
        capability = client.execute("metadata", method="get")
        expect(capability["resourceType"] == "CapabilityStatement", "not a CapabilityStatement")
        expect(str(capability["fhirVersion"]).startswith("5.0"), f"fhirVersion {capability['fhirVersion']}")
        kinds = [entry["type"] for entry in capability["rest"][0]["resource"]]
        expect(kinds == ground.types, "types differ from the stdlib read")
        return f"fhirVersion {capability['fhirVersion']}, {len(kinds)} types"

    def read_every_type() -> str:
        done = 0
        for kind in ground.types:
            for wanted in ground.resources[kind][:1]:
                got = client.reference(kind, wanted["id"]).to_resource().serialize()
                expect(got == wanted, f"{kind}/{wanted['id']} read differs from its search entry")
                done += 1
        expect(done > 0, "no resource to read")
        return f"{done} types"

    def vread() -> str:
        wanted = ground.first("MedicationKnowledge")
        version = wanted["meta"]["versionId"]
        got = client.execute(f"MedicationKnowledge/{wanted['id']}/_history/{version}", method="get")
        expect(got == wanted, "vread differs from read")
        return f"MedicationKnowledge/{wanted['id']}/_history/{version}"

    def token_search() -> str:
        wanted = ground.first("MedicationKnowledge", lambda r: bool(r.get("code", {}).get("coding")))
        coding = wanted["code"]["coding"][0]
        token = f"{coding['system']}|{coding['code']}"
        found = client.resources("MedicationKnowledge").search(code=token).fetch_all()
        expected = [
            r["id"]
            for r in ground.resources["MedicationKnowledge"]
            if any(
                (c.get("system"), c.get("code")) == (coding["system"], coding["code"])
                for c in r.get("code", {}).get("coding", [])
            )
        ]
        expect(
            sorted(r["id"] for r in found) == sorted(expected), f"code={token}: {ids(found)} != {expected}"
        )
        return f"code={token}: {len(found)}"

    def string_search() -> str:
        wanted = ground.first("Organization", lambda r: bool(r.get("name")))
        prefix = wanted["name"][:4].lower()
        found = client.resources("Organization").search(name=prefix).fetch_all()
        expected = [
            r["id"]
            for r in ground.resources["Organization"]
            if any(str(n).lower().startswith(prefix) for n in [r.get("name"), *r.get("alias", [])] if n)
        ]
        expect(
            sorted(r["id"] for r in found) == sorted(expected), f"name={prefix}: {ids(found)} != {expected}"
        )
        return f"name={prefix}: {len(found)}"

    def reference_search() -> str:
        wanted = ground.first("ClinicalUseDefinition", lambda r: bool(r.get("subject")))
        target = wanted["subject"][0]["reference"]
        found = client.resources("ClinicalUseDefinition").search(subject=target).limit(500).fetch_all()
        expected = [
            r["id"]
            for r in ground.resources["ClinicalUseDefinition"]
            if target in [s.get("reference") for s in r.get("subject", [])]
        ]
        expect(
            sorted(r["id"] for r in found) == sorted(expected),
            f"subject={target}: {len(found)} != {len(expected)}",
        )
        return f"subject={target}: {len(found)}"

    def include() -> str:
        wanted = ground.first("DocumentReference", lambda r: bool(r.get("author")))
        bundle = (
            client.resources("DocumentReference")
            .search(_id=wanted["id"])
            .include("DocumentReference", "author")
            .fetch_raw()
        )
        matches, included = split_bundle(bundle)
        expect(ids(matches) == [wanted["id"]], f"matches {ids(matches)}")
        expected = sorted({a["reference"] for a in wanted["author"]})
        got = sorted(f"{r['resourceType']}/{r['id']}" for r in included)
        expect(got == expected, f"included {got} != {expected}")
        return f"DocumentReference:author -> {', '.join(got)}"

    def revinclude() -> str:
        wanted = ground.first("MedicationKnowledge")
        target = f"MedicationKnowledge/{wanted['id']}"
        bundle = (
            client.resources("MedicationKnowledge")
            .search(_id=wanted["id"])
            .revinclude("Provenance", "target")
            .fetch_raw()
        )
        matches, included = split_bundle(bundle)
        expect(ids(matches) == [wanted["id"]], f"matches {ids(matches)}")
        expected = sorted(
            r["id"]
            for r in ground.resources["Provenance"]
            if target in [t.get("reference") for t in r.get("target", [])]
        )
        expect(expected != [], f"no Provenance targets {target}: nothing to check")
        expect(
            sorted(ids(included)) == expected,
            f"{len(included)} Provenance included, {len(expected)} expected",
        )
        return f"Provenance:target -> {len(included)}"

    def paging() -> str:
        kind = max(ground.types, key=lambda k: len(ground.resources[k]))
        found = client.resources(kind).limit(7).fetch_all()
        expected = ids(ground.resources[kind])
        expect(len(set(ids(found))) == len(found), "a resource came twice")
        expect(
            sorted(ids(found)) == sorted(expected), f"{len(found)} by next links, {len(expected)} expected"
        )
        return f"{kind}, 7 a page: {len(found)} resources over {-(-len(found) // 7)} pages"

    def count() -> str:
        results = []
        for kind in ground.types:
            counted = client.resources(kind).count()
            expect(counted == len(ground.resources[kind]), f"{kind}: count() {counted}")
            results.append(counted)
        return f"{sum(results)} resources in {len(results)} types"

    for name, check in [
        ("metadata", metadata),
        ("read (one of every type)", read_every_type),
        ("vread", vread),
        ("search token", token_search),
        ("search string", string_search),
        ("search reference", reference_search),
        ("_include", include),
        ("_revinclude", revinclude),
        ("paging by next links", paging),
        ("count() (_count=0)", count),
    ]:
        checks.run(f"fhirpy {name}", check)


def fhirclient_checks(checks: Checks, ground: Ground) -> None:
    """Reads and searches through SMART client-py's FHIRServer.request_json (it has R4 models only)."""
    smart = smart_client.FHIRClient(settings={"app_id": "fhir-pub-check-clients", "api_base": ground.base})
    server = smart.server

    def search(kind: str, **params: str) -> Resource:
        answer: Resource = server.request_json(f"{kind}?{urllib.parse.urlencode(params)}")
        expect(answer.get("resourceType") == "Bundle", f"{kind} search gave {answer.get('resourceType')}")
        expect(answer.get("type") == "searchset", f"Bundle.type {answer.get('type')}")
        return answer

    def metadata() -> str:
        capability = server.request_json("metadata")
        expect(capability["resourceType"] == "CapabilityStatement", "not a CapabilityStatement")
        expect(str(capability["fhirVersion"]).startswith("5.0"), f"fhirVersion {capability['fhirVersion']}")
        operations = [op["name"] for op in capability["rest"][0].get("operation", [])]
        return f"fhirVersion {capability['fhirVersion']}, operations {', '.join(operations)}"

    def read_every_type() -> str:
        done = 0
        for kind in ground.types:
            for wanted in ground.resources[kind][:1]:
                got = server.request_json(f"{kind}/{wanted['id']}")
                expect(got == wanted, f"{kind}/{wanted['id']} read differs from its search entry")
                done += 1
        return f"{done} types"

    def token_search() -> str:
        wanted = ground.first("DocumentReference", lambda r: bool(r.get("type", {}).get("coding")))
        coding = wanted["type"]["coding"][0]
        bundle = search("DocumentReference", type=f"{coding['system']}|{coding['code']}")
        matches, _ = split_bundle(bundle)
        expected = sorted(
            r["id"]
            for r in ground.resources["DocumentReference"]
            if any(
                (c.get("system"), c.get("code")) == (coding["system"], coding["code"])
                for c in r.get("type", {}).get("coding", [])
            )
        )
        expect(sorted(ids(matches)) == expected, f"{ids(matches)} != {expected}")
        expect(bundle.get("total") == len(expected), f"total {bundle.get('total')}")
        return f"type={coding['system']}|{coding['code']}: {len(matches)}"

    def full_urls() -> str:
        bundle = search("DocumentReference")
        for entry in bundle.get("entry", []):
            resource = entry["resource"]
            want = f"{ground.base}/{resource['resourceType']}/{resource['id']}"
            expect(entry.get("fullUrl") == want, f"fullUrl {entry.get('fullUrl')} != {want}")
        return f"{len(bundle.get('entry', []))} entries"

    def reference_search() -> str:
        wanted = ground.first("DocumentReference", lambda r: bool(r.get("subject")))
        target = wanted["subject"]["reference"]
        matches, _ = split_bundle(search("DocumentReference", subject=target))
        expected = sorted(
            r["id"]
            for r in ground.resources["DocumentReference"]
            if r.get("subject", {}).get("reference") == target
        )
        expect(sorted(ids(matches)) == expected, f"{ids(matches)} != {expected}")
        return f"subject={target}: {len(matches)}"

    def include() -> str:
        wanted = ground.first("Provenance", lambda r: bool(r.get("entity")))
        bundle = search("Provenance", _id=wanted["id"], _include="Provenance:entity")
        matches, included = split_bundle(bundle)
        expect(ids(matches) == [wanted["id"]], f"matches {ids(matches)}")
        expected = sorted(
            {e["what"]["reference"] for e in wanted["entity"] if "reference" in e.get("what", {})}
        )
        got = sorted(f"{r['resourceType']}/{r['id']}" for r in included)
        expect(got == expected, f"included {got} != {expected}")
        return f"Provenance:entity -> {len(got)}"

    def paging() -> str:
        kind = max(ground.types, key=lambda k: len(ground.resources[k]))
        answer = search(kind, _count="10")
        total = answer.get("total")
        seen: list[str] = []
        count = 0
        while True:
            count += 1
            seen.extend(ids(split_bundle(answer)[0]))
            links = {link["relation"]: link["url"] for link in answer.get("link", [])}
            expect(all(url.startswith(ground.base + "/") for url in links.values()), f"links {links}")
            if "next" not in links:
                break
            answer = server.request_json(links["next"])
        expect(len(seen) == len(set(seen)), "a resource came twice")
        expect(len(seen) == total == len(ground.resources[kind]), f"{len(seen)} seen, total {total}")
        return f"{kind}: {len(seen)} over {count} pages"

    for name, check in [
        ("metadata (raw)", metadata),
        ("read (one of every type)", read_every_type),
        ("search token", token_search),
        ("search reference", reference_search),
        ("searchset fullUrl", full_urls),
        ("_include", include),
        ("paging by next links", paging),
    ]:
        checks.run(f"fhirclient {name}", check)


def main(argv: list[str]) -> int:
    """Run every check against the server at ``argv[1]``."""
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    base = argv[1].rstrip("/")
    ground = Ground(base)
    checks = Checks()
    fhirpy_checks(checks, ground)
    fhirclient_checks(checks, ground)
    print(f"python clients: {checks.passed} PASS, {checks.failed} FAIL", flush=True)
    return 1 if checks.failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
