"""The validator: four layers over a set of resources, reported as one OperationOutcome.

1. structure: fhir.resources (R5) parses the resource;
2. profile: the declared profiles, compiled to JSON Schema, checked with jsonschema;
3. invariants: FHIRPath constraints of the profiles and of R5 (cud-1, dom-*, ref-1 ...);
4. graph: references resolve within the set to types R5 allows, ids are unique, nothing is orphaned,
   and the publication rules hold (:data:`fhir_pub.graph.PUBLICATION_RULES`).
Input is untrusted: size, encoding, JSON syntax, nesting depth and shape are checked before any layer runs,
and a failure inside a layer becomes an issue, never an exception.
"""

from __future__ import annotations

import array
import contextlib
import logging
import os
import sys
import weakref
from collections import ChainMap, Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import orjson

from fhir_pub.conformance import Conformance, load_conformance
from fhir_pub.definitions import Node, is_resource_type, walk_json
from fhir_pub.graph import (
    ANNOTATION_TYPES,
    ENVIRONMENT,
    ROOT_TYPES,
    Facts,
    Link,
    PublicationRule,
    Referrals,
    facts_of,
    key_of,
    links,
    rules_for,
)
from fhir_pub.parallel import cores, ordered_map, spans
from fhir_pub.validation.bindings import binding_issues
from fhir_pub.validation.fhirpath import RESOLVABLE
from fhir_pub.validation.invariants import Deferred, InvariantSet
from fhir_pub.validation.issues import Issue, is_error, operation_outcome
from fhir_pub.validation.schema import ProfileCompiler, Schema, SchemaValidator
from fhir_pub.validation.structure import structure_issues

log = logging.getLogger(__name__)

MAX_BYTES = 16 * 1024 * 1024
PUBLISHED_FACTS = (
    100_000  # graph facts of published resources kept per publication (a few hundred bytes each)
)
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


def _too_deep(value: Any, limit: int) -> bool:
    """Whether JSON containers nest more than ``limit`` levels (``value`` itself is level 1)."""
    level, depth = [value], 0
    while level:
        depth += 1
        if depth > limit:
            return True
        below: list[Any] = []
        for item in level:
            children = item.values() if isinstance(item, dict) else item if isinstance(item, list) else ()
            below.extend(child for child in children if isinstance(child, (dict, list)))
        level = below
    return False


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
    if _too_deep(value, MAX_DEPTH):
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
    return read_candidate(path, max_bytes)[0]


def read_candidate(path: Path, max_bytes: int = MAX_BYTES) -> tuple[Candidate, bytes | None]:
    """Read one file as a candidate, with the bytes read (None when it could not be read)."""
    source = str(path)
    try:
        with path.open("rb", buffering=0) as file:  # unbuffered: one open, the size, the bytes
            size = os.fstat(file.fileno()).st_size
            if size > max_bytes:
                message = f"{size:,} bytes is more than the limit of {max_bytes:,} bytes for one resource"
                issue = Issue("fatal", "too-long", message, None, source, None, "input")
                return Candidate(source, None, [issue]), None
            data = file.readall()
    except OSError as exc:
        issue = Issue("fatal", "exception", f"cannot read: {exc.strerror}", None, source, None, "input")
        return Candidate(source, None, [issue]), None
    return candidate_from_bytes(data, source, max_bytes), data


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


class Published(Protocol):
    """A built publication as validation reads it: resources by ``Type/id``, and what refers to one."""

    @property
    def resources(self) -> Mapping[str, Mapping[str, Any]]:
        """Every resource by its key ``Type/id``, read when asked for."""

    def referrers(self, key: str) -> Iterator[Mapping[str, Any]]:
        """The resources with a literal reference to ``key``."""


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
        self._graph_variables: tuple[int, frozenset[str]] = (-1, frozenset())
        self._published_facts: weakref.WeakKeyDictionary[Any, dict[str, Facts]] = weakref.WeakKeyDictionary()

    def _facts_of(self, publication: Published) -> dict[str, Facts]:
        """The graph facts of a built publication's resources, kept as worked out (it never changes)."""
        try:
            found = self._published_facts.get(publication)
            if found is None:
                found = self._published_facts[publication] = {}
        except TypeError:  # a publication that cannot be weakly referred to: nothing kept
            return {}
        if len(found) > PUBLISHED_FACTS:
            found.clear()
        return found

    @property
    def graph_variables(self) -> frozenset[str]:
        """The graph variables (``%referencedBy`` ...) some invariant reads (worked out again as it grows)."""
        count = len(self.invariants.all)
        if self._graph_variables[0] != count:
            wanted = frozenset(
                name
                for invariant in self.invariants.all
                for name in ENVIRONMENT
                if f"%{name}" in invariant.expression
            )
            self._graph_variables = (count, wanted)
        return self._graph_variables[1]

    def validate(
        self,
        candidates: Sequence[Candidate],
        context: Sequence[Mapping[str, Any]] = (),
        profile: str | None = None,
        workers: int | None = None,
        publication: Published | None = None,
    ) -> Report:
        """Validate the candidates as one set; ``context`` resources may be referred to, not checked.

        ``publication``, when given, is a built publication the candidates join (``$validate``): their
        references resolve in it, and only the resources that refer to a candidate are read from it, so
        a check costs the same whatever the publication's size.

        The per-resource layers run in ``workers`` processes (default: one per core) when the set is
        large; the report is the same, in the same order, whatever the number.
        """
        checked = [_shape_checked(c) for c in candidates]  # whoever built them, they pass the input checks
        present = [c.resource for c in checked if c.resource is not None]
        by_key = {key_of(r): r for r in context}
        by_key.update({key_of(r): r for r in present})
        resolvable: Mapping[str, Mapping[str, Any]] = by_key
        if publication is not None:
            # The candidates stand in for their published versions; what else they reach is read lazily.
            resolvable = ChainMap(by_key, publication.resources)  # type: ignore[arg-type]
        graph = GraphCheck(self, resolvable, lambda index: checked[index].source)
        graph.add_context(context)
        if publication is not None:
            keys = {key_of(r) for r in present}
            referrers = [
                r for key in sorted(keys) for r in publication.referrers(key) if key_of(r) not in keys
            ]
            graph.add_published(referrers, self._facts_of(publication))
        type_of = _types_in(resolvable)

        def work(span: tuple[int, int]) -> list[Checked]:
            return [self.check(checked[index], index, type_of, profile) for index in range(*span)]

        with resolving(resolvable):
            spread = workers_for(len(checked), workers)
            for results in ordered_map(work, spans(len(checked), CHUNK), spread):
                for result in results:
                    graph.add(result)
        counts = Counter(key_of(r) for r in present)
        source_of = {key_of(c.resource): c.source for c in checked if c.resource is not None}
        duplicates = [
            Issue(
                "error",
                "duplicate",
                f"{key} occurs {n} times; ids must be unique per type",
                None,
                source_of[key],
                "unique-id",
                "graph",
            )
            for key, n in sorted(counts.items())
            if n > 1
        ]
        return graph.report(duplicates)

    def validate_one(
        self, candidate: Candidate, publication: Published | None = None, profile: str | None = None
    ) -> Report:
        """Single-resource mode: one resource judged on its own (``$validate``, ``validate --single``).

        Whole-publication rules (orphans, unique ids) are not applied; references resolve in
        ``publication`` when given, and the ones it resolves are checked against their target's type.
        The report's first issue says that this mode ran.
        """
        checked = _shape_checked(candidate)
        own: dict[str, Mapping[str, Any]] = {}
        if checked.resource is not None:
            own[key_of(checked.resource)] = checked.resource
        resolvable: Mapping[str, Mapping[str, Any]] = own
        if publication is not None:
            resolvable = ChainMap(own, publication.resources)  # type: ignore[arg-type]
        graph = GraphCheck(self, resolvable, lambda _: checked.source, orphans=False)
        with resolving(resolvable):
            result = self.check(checked, 0, _types_in(resolvable), profile, single=True)
        if publication is not None and result.rules:  # a publication rule sees who refers to it
            referrers = [r for key in own for r in publication.referrers(key) if key_of(r) not in own]
            graph.add_published(referrers, self._facts_of(publication))
        graph.add(result)
        report = graph.report()
        mode = Issue("information", "informational", SINGLE_MODE, None, checked.source, "mode", "request")
        return Report((mode, *report.issues), report.checked)

    def validate_paths(
        self, paths: Iterable[Path], max_bytes: int = MAX_BYTES, workers: int | None = None
    ) -> Report:
        """Validate every ``*.json`` file below the given files and folders as one set."""
        return self.validate([candidate_from_file(p, max_bytes) for p in gather(paths)], workers=workers)

    def check(
        self,
        candidate: Candidate,
        index: int,
        type_of: Callable[[str], str | None],
        profile: str | None = None,
        single: bool = False,
    ) -> Checked:
        """The per-resource layers on one resource (number ``index`` of its set), and its graph facts.

        Its input is checked (if its reader did not), then its structure, its declared profiles (and
        ``profile``), its invariants, and the type of what each reference names: ``type_of`` gives the
        type of the resource a reference resolves to, or None if nothing in reach holds it. Invariants
        that read another resource (``resolve()``) read it from the set made current by :func:`resolving`.

        ``single``: the resource is judged on its own, not as a member of this publication: it needs no
        fhir-pub profile (without one, R5's own definition of its type applies), a profile this publisher
        does not know or a reference nothing in reach resolves is a warning (it may live elsewhere).
        """
        candidate = _shape_checked(candidate)
        out = Checked(index, list(candidate.issues))
        if candidate.resource is not None:
            self._check(candidate.resource, candidate.source, type_of, profile, out, single)
        return out

    def _check(
        self,
        resource: dict[str, Any],
        source: str,
        type_of: Callable[[str], str | None],
        profile: str | None,
        out: Checked,
        single: bool = False,
    ) -> None:
        guard = self._guard
        nodes = list(walk_json(resource))  # shared by the layers
        out.layered.extend(self._resource(resource, source, nodes, profile, single))
        found = guard(lambda: list(links(resource, nodes)), "graph", source)
        found = found if isinstance(found, list) and all(isinstance(f, Link) for f in found) else []
        for link in found:
            if link.reference.startswith("#"):
                continue  # local references to contained resources: ref-1 checks them
            kind = type_of(link.reference)
            if kind is None and single:
                message = (
                    f"{link.path} refers to {link.reference}, which is not in this publication (not checked)"
                )
                out.graph.append(
                    Issue("warning", "not-found", message, link.path, source, "resolve", "graph")
                )
            elif kind is None:
                message = f"{link.path} refers to {link.reference}, which is not in the publication"
                out.graph.append(Issue("error", "not-found", message, link.path, source, "resolve", "graph"))
            elif not link.allows(kind):
                allowed = ", ".join(link.allowed)
                message = f"{link.path} refers to a {kind}; R5 allows {allowed} here"
                out.graph.append(
                    Issue("error", "invalid", message, link.path, source, "target-type", "graph")
                )
        profiles = [url for url in declared_profiles(resource) if url in self._schema_validators]
        if profile in self._schema_validators and profile not in profiles:
            profiles.append(profile)
        if single and not profiles:  # R5's own definition of the type: its invariants, dom-* included,
            profiles.append(self.invariants.core(str(resource["resourceType"])))
            found_codes = guard(lambda: list(binding_issues(nodes, source)), "binding", source)
            out.layered.extend(found_codes or [])  # and its required bindings
        deferred: list[Deferred] = []
        issues = guard(
            lambda: self.invariants.issues(resource, profiles, {}, source, nodes, deferred),
            "invariant",
            source,
        )
        out.invariant.extend(issues or [])
        out.facts = facts_of(resource, found)
        out.deferred = tuple(deferred)
        if not single:  # the publication rules, decided once the whole graph is known
            out.rules = rules_for(profiles)

    def _resource(
        self, resource: dict[str, Any], source: str, nodes: list[Node], extra: str | None, single: bool
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
                        "warning" if single else "error",
                        "not-found",
                        f"profile {url} is not known to this publisher"
                        + (" (not checked)" if single else ""),
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
        if not declared and not single:
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
class Checked:
    """What the per-resource layers found in one resource, and what the graph layer needs of it later.

    ``facts`` (its key and references) is None when the resource could not be read; ``deferred`` are
    its invariants that read the graph, evaluated when the whole set is known; ``rules`` the publication
    rules that apply to it (by its profiles), likewise.
    """

    index: int
    input: list[Issue] = field(default_factory=list)
    layered: list[Issue] = field(default_factory=list)
    graph: list[Issue] = field(default_factory=list)
    invariant: list[Issue] = field(default_factory=list)
    facts: Facts | None = None
    deferred: tuple[Deferred, ...] = ()
    rules: tuple[PublicationRule, ...] = ()

    @property
    def clean(self) -> bool:
        """Read, and no error in its layers (the build indexes and writes only such resources)."""
        found = (*self.layered, *self.graph, *self.invariant)
        return self.facts is not None and not any(is_error(issue) for issue in found)


SINGLE_MODE = (
    "validated as a single resource: structure, profiles and invariants (R5's own where it declares no "
    "profile of this publication), references resolved against this publication; publication rules "
    "(orphans, unique ids, fhirpub-cud-1, fhirpub-prov-1) not applied"
)
# Resources per span of work: fixed, so that what a span yields never depends on the number of workers.
CHUNK = 250
# Below this many resources a process pool costs more than it saves.
PARALLEL_MIN = 2000


def workers_for(count: int, workers: int | None) -> int:
    """How many processes check a set of ``count`` resources: one below PARALLEL_MIN, else as asked."""
    if count < PARALLEL_MIN:
        return 1
    return cores() if workers is None else workers


@contextlib.contextmanager
def resolving(resolvable: Mapping[str, Mapping[str, Any]]) -> Iterator[None]:
    """Make ``resolvable`` what FHIRPath's ``resolve()`` reads, for the checks run inside (forked too)."""
    token = RESOLVABLE.set(resolvable)
    try:
        yield
    finally:
        RESOLVABLE.reset(token)


def _types_in(resolvable: Mapping[str, Mapping[str, Any]]) -> Callable[[str], str | None]:
    """``type_of`` for :meth:`Validator.check` over a mapping of resources by ``Type/id``."""

    def type_of(reference: str) -> str | None:
        # Every such mapping is keyed by key_of (its type, then its id): a membership test says it, and a
        # stored publication answers one without reading the resource.
        return reference.partition("/")[0] if reference in resolvable else None

    return type_of


class GraphCheck:
    """The graph layer of one set: fed each resource's findings in order, then reports the whole set.

    ``resolvable`` is what ``resolve()`` reaches (the set, and any context); ``source(i)`` names resource
    ``i``. Only keys and references are kept (a few bytes a resource): the graph facts (who refers to
    whom) and the invariants that read them, evaluated at :meth:`report`.
    """

    def __init__(
        self,
        validator: Validator,
        resolvable: Mapping[str, Mapping[str, Any]],
        source: Callable[[int], str],
        orphans: bool = True,
    ) -> None:
        self.validator = validator
        self.orphans = orphans
        self.resolvable = resolvable
        self.source = source
        self.count = 0
        self.referrals = Referrals(validator.graph_variables)
        self.issues: dict[str, list[Issue]] = {"input": [], "layered": [], "graph": [], "invariant": []}
        # Per resource checked, in order: its key and number; per resource with deferred invariants, its
        # position in those and the (shared) invariants. Arrays and shared strings: a few bytes each.
        self.keys: list[str] = []
        self.numbers = array.array("q")
        self.deferred_at = array.array("q")
        self.deferred: list[tuple[Deferred, ...]] = []
        self._items: dict[tuple[Deferred, ...], tuple[Deferred, ...]] = {}
        self.ruled_at = array.array("q")
        self.rules: list[tuple[PublicationRule, ...]] = []

    def add(self, checked: Checked) -> None:
        """Keep one resource's issues and graph facts (resources are added in their set's order)."""
        self.count += 1
        for name in ("input", "layered", "graph", "invariant"):
            self.issues[name].extend(getattr(checked, name))
        facts = checked.facts
        if facts is None:
            return
        self.referrals.add(facts)
        if checked.deferred:
            self.deferred_at.append(len(self.keys))
            self.deferred.append(self._items.setdefault(checked.deferred, checked.deferred))
        if checked.rules:
            self.ruled_at.append(len(self.keys))
            self.rules.append(checked.rules)
        self.keys.append(sys.intern(facts.key))
        self.numbers.append(checked.index)

    def add_context(self, context: Sequence[Mapping[str, Any]]) -> None:
        """Resources that may be referred to, not checked: their references count in the graph."""
        for resource in context:
            self.referrals.add(self._facts(resource))

    def add_published(self, resources: Sequence[Mapping[str, Any]], known: dict[str, Facts]) -> None:
        """Resources of a built publication as context, their facts kept in ``known`` by key."""
        for resource in resources:
            key = key_of(resource)
            facts = known.get(key)
            if facts is None:
                facts = known[key] = self._facts(resource)
            self.referrals.add(facts)

    def _facts(self, resource: Mapping[str, Any]) -> Facts:
        found = self.validator._guard(lambda: list(links(resource)), "graph", None) or []
        return facts_of(resource, found)

    def report(self, duplicates: Sequence[Issue] = ()) -> Report:
        """The graph layer (orphans, publication rules), the invariants that read the graph; the report."""
        graph = [*duplicates, *self.issues["graph"]]
        used = self.referrals.used
        for key, index in zip(self.keys, self.numbers, strict=self.orphans):
            if not self.orphans:
                break
            kind = key.split("/", 1)[0]  # key_of: the type is what precedes the first "/"
            if kind not in ROOT_TYPES and kind not in ANNOTATION_TYPES and key not in used:
                message = (
                    f"{key} is an orphan: no other resource of the publication refers to it"
                    if not key.endswith("/")
                    else f"this {kind} has no id, so no other resource of the publication can refer to it"
                )
                issue = Issue("error", "business-rule", message, kind, self.source(index), "orphan", "graph")
                graph.append(issue)
        for position, rules in zip(self.ruled_at, self.rules, strict=True):
            key, index = self.keys[position], self.numbers[position]
            for rule in rules:
                if not rule.holds(self.referrals, key):
                    message = f"{rule.key}: {rule.human}"
                    where = key.split("/", 1)[0]
                    graph.append(
                        Issue("error", "business-rule", message, where, self.source(index), rule.key, "graph")
                    )
        invariant = self.issues["invariant"]
        with resolving(self.resolvable):
            # Most resources share their graph environment's shape (the same referrer types, the same
            # leaflets): an invariant that reads only the environment is evaluated once per shape.
            by_shape: dict[tuple[Deferred, tuple[int, int]], list[Issue]] = {}
            for position, items in zip(self.deferred_at, self.deferred, strict=True):
                key, index = self.keys[position], self.numbers[position]
                shape, source = self.referrals.shape(key), self.source(index)
                for item in items:
                    if shape is not None and item.focus is None:
                        found = by_shape.get((item, shape))
                        if found is None:
                            found = self._deferred(item, self.referrals.environment(key), None)
                            by_shape[item, shape] = found
                        invariant.extend(replace(i, source=source) for i in found)
                    else:
                        invariant.extend(self._deferred(item, self.referrals.environment(key), source))
        issues = [*self.issues["input"], *self.issues["layered"], *graph, *invariant]
        return Report(tuple(issues), self.count)

    def _deferred(self, item: Deferred, environment: dict[str, list[str]], source: str | None) -> list[Issue]:
        invariants = self.validator.invariants
        found = self.validator._guard(
            lambda: invariants.evaluate_deferred(item, environment, source), "invariant", source or ""
        )
        return list(found or [])
