"""The validator: four layers over a set of resources, reported as one OperationOutcome.

1. structure: fhir.resources (R5) parses the resource;
2. profile: the declared profiles, compiled to JSON Schema, checked with jsonschema;
3. invariants: FHIRPath constraints of the profiles and of R5 (cud-1, dom-*, ref-1 ...);
4. graph: references resolve within the set to types R5 allows, ids are unique, nothing is orphaned.
Input is untrusted: size, encoding, JSON syntax, nesting depth and shape are checked before any layer runs,
and a failure inside a layer becomes an issue, never an exception.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import orjson

from fhir_pub.conformance import Conformance, load_conformance
from fhir_pub.definitions import Node, is_resource_type, walk_json
from fhir_pub.graph import Graph, build_graph, key_of
from fhir_pub.validation.fhirpath import RESOLVABLE
from fhir_pub.validation.invariants import InvariantSet
from fhir_pub.validation.issues import Issue, is_error, operation_outcome
from fhir_pub.validation.schema import ProfileCompiler, Schema, SchemaValidator
from fhir_pub.validation.structure import graph_issues, structure_issues

log = logging.getLogger(__name__)

MAX_BYTES = 16 * 1024 * 1024
MAX_DEPTH = 64


@dataclass
class Candidate:
    """One resource to validate (or what is left of it), where it came from, and what reading it found.

    ``checked`` says the input checks already ran (candidates built by this module's readers).
    """

    source: str
    resource: dict[str, Any] | None
    issues: list[Issue] = field(default_factory=list)
    checked: bool = False


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values() if isinstance(child, (dict, list)))
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item if isinstance(child, (dict, list)))
    return deepest


def candidate_from_bytes(data: bytes, source: str, max_bytes: int = MAX_BYTES) -> Candidate:
    """Decode and sanity-check one JSON resource; every problem is an issue, never an exception."""

    def fail(code: str, message: str, expression: str | None = None) -> Candidate:
        return Candidate(source, None, [Issue("fatal", code, message, expression, source, None, "input")])

    if len(data) > max_bytes:
        return fail(
            "too-long", f"{len(data):,} bytes is more than the limit of {max_bytes:,} bytes for one resource"
        )
    try:
        value = orjson.loads(data)  # strict RFC 8259: no NaN, no invalid UTF-8, nesting limited
    except orjson.JSONDecodeError as exc:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as bad:
            return fail("structure", f"not UTF-8 text (byte {bad.start})")
        if "depth limit" in str(exc).lower() or "recursion" in str(exc).lower():
            return fail("too-costly", f"JSON nested deeper than this validator reads (limit {MAX_DEPTH})")
        return fail("structure", f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}")
    return candidate_from_value(value, source)


def shape_issues(value: Any, source: str) -> list[Issue]:
    """Checks every candidate passes before any layer runs: a JSON object, not too deep, of a known type."""

    def fail(code: str, message: str, expression: str | None = None) -> list[Issue]:
        return [Issue("fatal", code, message, expression, source, None, "input")]

    if not isinstance(value, dict):
        return fail("structure", f"a FHIR resource is a JSON object, not {type(value).__name__}")
    if _depth(value) > MAX_DEPTH:
        return fail("too-costly", f"JSON nested deeper than {MAX_DEPTH} levels; no FHIR resource needs that")
    kind = value.get("resourceType")
    if not isinstance(kind, str) or not kind:
        return fail("required", "resourceType is missing", "resourceType")
    if not is_resource_type(kind):
        return fail("not-supported", f"{kind!r} is not an R5 resource type", "resourceType")
    return []


def candidate_from_value(value: Any, source: str) -> Candidate:
    """A candidate from parsed JSON, or its fatal shape issue."""
    issues = shape_issues(value, source)
    return Candidate(source, None, issues, checked=True) if issues else Candidate(source, value, checked=True)


def candidate_from_file(path: Path, max_bytes: int = MAX_BYTES) -> Candidate:
    """Read one file as a candidate; an unreadable or oversized file becomes an issue."""
    source = str(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            message = f"{size:,} bytes is more than the limit of {max_bytes:,} bytes for one resource"
            return Candidate(source, None, [Issue("fatal", "too-long", message, None, source, None, "input")])
        data = path.read_bytes()
    except OSError as exc:
        return Candidate(
            source,
            None,
            [Issue("fatal", "exception", f"cannot read: {exc.strerror}", None, source, None, "input")],
        )
    return candidate_from_bytes(data, source, max_bytes)


def _shape_checked(candidate: Candidate) -> Candidate:
    if candidate.resource is None or candidate.checked:
        return candidate
    problems = shape_issues(candidate.resource, candidate.source)
    return replace(candidate, resource=None, issues=candidate.issues + problems) if problems else candidate


def declared_profiles(resource: Mapping[str, Any]) -> list[str]:
    """The profile URLs a resource declares in ``meta.profile`` (ignoring anything that is not a string)."""
    meta = resource.get("meta")
    profiles = meta.get("profile") if isinstance(meta, dict) else None
    return [p for p in profiles if isinstance(p, str)] if isinstance(profiles, list) else []


def gather(paths: Iterable[Path]) -> list[Path]:
    """Expand files and folders into the ``*.json`` files to validate, in a stable order."""
    files: list[Path] = []
    for path in paths:
        files.extend(sorted(p for p in path.rglob("*.json") if p.is_file()) if path.is_dir() else [path])
    return files


@dataclass(frozen=True)
class Report:
    """The result of validating a set of resources."""

    issues: tuple[Issue, ...]
    checked: int

    @property
    def errors(self) -> int:
        """How many issues are errors or fatal."""
        return sum(is_error(i) for i in self.issues)

    @property
    def warnings(self) -> int:
        """How many issues are warnings."""
        return sum(i.severity == "warning" for i in self.issues)

    @property
    def ok(self) -> bool:
        """Whether nothing is in error."""
        return self.errors == 0

    def outcome(self) -> dict[str, Any]:
        """The report as a FHIR OperationOutcome."""
        return operation_outcome(self.issues)


class Validator:
    """Validates resources against the profiles of one Conformance registry (compiled once)."""

    def __init__(self, conformance: Conformance | None = None) -> None:
        self.conformance = conformance if conformance is not None else load_conformance()
        compiler = ProfileCompiler(self.conformance)
        self.schemas: dict[str, Schema] = {
            url: compiler.compile(profile) for url, profile in self.conformance.resource_profiles.items()
        }
        self._schema_validators = {url: SchemaValidator(schema) for url, schema in self.schemas.items()}
        self.notes = [*compiler.notes]
        self.invariants = InvariantSet(self.conformance)
        self.notes.extend(self.invariants.failures)

    def validate(
        self,
        candidates: Sequence[Candidate],
        context: Sequence[Mapping[str, Any]] = (),
        profile: str | None = None,
        workers: int | None = None,
    ) -> Report:
        """Validate the candidates as one set; ``context`` resources may be referred to, not checked.

        The per-resource layers run in ``workers`` processes (default: one per core) when the set is
        large; the report is the same, in the same order, whatever the number.
        """
        checked = [
            _shape_checked(c) for c in candidates
        ]  # whoever built them, candidates pass the input checks
        issues: list[Issue] = [i for c in checked for i in c.issues]
        present = [c for c in checked if c.resource is not None]
        resources = [c.resource for c in present if c.resource is not None]
        by_key = {key_of(r): r for r in context}
        by_key.update({key_of(r): r for r in resources})
        source_of = {key_of(c.resource): c.source for c in present if c.resource is not None}
        walks = {id(r): list(walk_json(r)) for r in resources}  # shared by the layers
        graph = self._guard(lambda: build_graph([*context, *resources], walks), "graph", None)
        token = RESOLVABLE.set(by_key)
        try:
            run = _Run(self, present, walks, graph, profile)
            results = _map_chunks(run, len(present), workers)
        finally:
            RESOLVABLE.reset(token)
        issues.extend(i for found, _ in results for i in found)
        if graph is not None:
            found = self._guard(lambda: list(graph_issues(resources, graph, by_key)), "graph", None) or []
            issues.extend(replace(i, source=source_of.get(i.source or "", i.source)) for i in found)
        issues.extend(i for _, found in results for i in found)
        return Report(tuple(issues), len(checked))

    def validate_paths(
        self, paths: Iterable[Path], max_bytes: int = MAX_BYTES, workers: int | None = None
    ) -> Report:
        """Validate every ``*.json`` file below the given files and folders as one set."""
        return self.validate([candidate_from_file(p, max_bytes) for p in gather(paths)], workers=workers)

    def _resource(
        self, resource: dict[str, Any], source: str, nodes: list[Node], extra: str | None
    ) -> list[Issue]:
        kind = str(resource["resourceType"])
        issues = self._guard(lambda: structure_issues(resource, source, nodes), "structure", source) or []
        declared = declared_profiles(resource)
        if extra is not None and extra not in declared:
            declared = [*declared, extra]
        known = []
        for index, url in enumerate(declared):
            profile = self.conformance.resource_profiles.get(url.split("|", 1)[0])
            where = f"{kind}.meta.profile[{index}]"
            if profile is None:
                issues.append(
                    Issue(
                        "error",
                        "not-found",
                        f"profile {url} is not known to this publisher",
                        where,
                        source,
                        "profile",
                        "profile",
                    )
                )
            elif profile["type"] != kind:
                message = f"profile {url} is for {profile['type']}, not {kind}"
                issues.append(Issue("error", "invalid", message, where, source, "profile", "profile"))
            else:
                known.append(profile["url"])
        if not declared:
            message = f"{kind}.meta.profile must name the fhir-pub profile this resource conforms to"
            issues.append(
                Issue("error", "required", message, f"{kind}.meta.profile", source, "profile", "profile")
            )
        for url in known:
            validator = self._schema_validators[url]
            issues.extend(
                self._guard(lambda v=validator: v.issues(resource, source), "profile", source) or []
            )
        return issues

    @staticmethod
    def _guard(run: Any, layer: str, source: str | None) -> Any:
        """Run one layer; an unexpected failure becomes an issue (and a log line), not a crash."""
        try:
            return run()
        except Exception:
            log.exception("validation layer %s failed on %s", layer, source)
            if source is None:
                return None
            message = f"the {layer} layer could not check this resource (internal error, logged)"
            return [Issue("error", "exception", message, None, source, None, layer)]


@dataclass
class _Run:
    """The per-resource layers over one validation's candidates: structure and profile, then invariants."""

    validator: Validator
    present: list[Candidate]
    walks: dict[int, list[Node]]
    graph: Graph | None
    profile: str | None

    def chunk(self, start: int, stop: int) -> tuple[list[Issue], list[Issue]]:
        """(structure and profile issues, invariant issues) of candidates ``start`` to ``stop``."""
        validator, walks, profile = self.validator, self.walks, self.profile
        layered: list[Issue] = []
        invariant: list[Issue] = []
        for candidate in self.present[start:stop]:
            resource = candidate.resource
            assert resource is not None
            layered.extend(validator._resource(resource, candidate.source, walks[id(resource)], profile))
            environment = self.graph.environment(key_of(resource)) if self.graph is not None else {}
            profiles = [url for url in declared_profiles(resource) if url in validator._schema_validators]
            if profile in validator._schema_validators and profile not in profiles:
                profiles.append(profile)
            found = validator._guard(
                lambda r=resource, p=profiles, e=environment, s=candidate.source: validator.invariants.issues(
                    r, p, e, s, walks[id(r)]
                ),
                "invariant",
                candidate.source,
            )
            invariant.extend(found or [])
        return layered, invariant


# Below this many resources a process pool costs more than it saves.
PARALLEL_MIN = 2000
_forked: _Run | None = None  # the run a forked worker inherits


def _chunk_in_worker(bounds: tuple[int, int]) -> tuple[list[Issue], list[Issue]]:
    assert _forked is not None
    return _forked.chunk(*bounds)


def _map_chunks(run: _Run, count: int, workers: int | None) -> list[tuple[list[Issue], list[Issue]]]:
    """Run every chunk, in forked workers when it pays; results in chunk order, so output is the same."""
    global _forked
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if workers <= 1 or count < PARALLEL_MIN or "fork" not in multiprocessing.get_all_start_methods():
        return [run.chunk(0, count)]
    size = -(-count // (workers * 8))
    bounds = [(start, min(start + size, count)) for start in range(0, count, size)]
    # fork: workers inherit the resources, walks, graph and compiled validators without pickling them.
    _forked = run
    try:
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            return pool.map(_chunk_in_worker, bounds, chunksize=1)
    finally:
        _forked = None
