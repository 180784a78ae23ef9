"""Layer 3: FHIRPath invariants of our profiles and of the R5 types they constrain, compiled once.

A profile is validated as its snapshot would be: the invariants of its base type, as the official R5
definitions give them (:mod:`fhir_pub.validation.r5`), then its own
(``fhirpub-*``). Each constraint is evaluated at every occurrence of the element it is defined on: resource
profiles by element path (``Provenance.agent``), datatype profiles at every element of their type
(``Reference``).
The same machinery checks the converted R4B forms against R4B's own invariants
(``InvariantSet(None, "4.3")``, see :mod:`fhir_pub.validation.earlier`): every datatype's at each element
of that type, each resource type's (with DomainResource's) by element path, as R4B's snapshots have them
(https://hl7.org/fhir/R4B/conformance-rules.html#constraints). No profile of this publication applies there.
ele-1 applies to every element of every resource; evaluating its FHIRPath at each one would cost more than
all other layers together, so it is checked natively with the same meaning (no empty object, array or
string, no object holding only an ``id``).
https://hl7.org/fhir/R5/conformance-rules.html#constraints
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache, cached_property, lru_cache
from typing import Any, NamedTuple

from fhirpathpy.engine.nodes import ResourceNode

from fhir_pub.conformance import R5_BASE, Conformance
from fhir_pub.definitions import Node, element_at, is_backbone, walk_json
from fhir_pub.graph import ENVIRONMENT
from fhir_pub.validation.dependencies import Plan, analyze
from fhir_pub.validation.fhirpath import Compiled, compile_expression, html_checks, resolvable
from fhir_pub.validation.issues import Issue, Severity
from fhir_pub.validation.r5 import base_constraints, core_types, datatypes

NATIVE = {"ele-1"}
MEMO_LIMIT = 100_000
MEMO_BYTES = 16 << 20  # keys hold the values read: bounded in bytes as well as in number
ENVIRONMENT_DEFAULTS: dict[str, list[str]] = {"referencedBy": [], "referrerTypes": [], "sources": []}
REF_1 = (
    "reference.exists()  implies (reference.startsWith('#').not() or (reference.substring(1).trace('url') in "
    "%rootResource.contained.id.trace('ids')) or (reference='#' and %rootResource!=%resource))"
)


def ref_1(focus: Mapping[str, Any], variables: Mapping[str, Any]) -> bool | None:
    """ref-1 in Python, for the hottest invariant (every Reference, memo-unfriendly: every value differs).

    Equal to fhirpathpy on :data:`REF_1` (a property test compares them); None where the input is
    unusual enough that fhirpathpy should decide.
    """
    reference = focus.get("reference")
    if reference is None:
        return True
    if not isinstance(reference, str):
        return None
    if not reference.startswith("#") or reference == "#":
        # For "#", substring(1) is empty, so the membership term is empty and so is the whole expression
        # unless the last term holds: either way it does not evaluate to false.
        return True
    root = variables.get("rootResource")
    contained = root.get("contained", []) if isinstance(root, dict) else None
    if not isinstance(contained, list) or not all(isinstance(c, dict) for c in contained):
        return None
    ids = [c.get("id") for c in contained]
    if not all(isinstance(i, str) and i for i in ids):
        return None
    return reference[1:] in ids


# txt-1 and txt-2 on Narrative.div, moved to the Narrative (see _on_element).
NARRATIVE_CHECKS = "`div`.all(htmlChecks())"


def narrative_checks(focus: Mapping[str, Any], variables: Mapping[str, Any]) -> bool | None:
    """txt-1/txt-2 in Python: every narrative is one unique string, so memoizing FHIRPath saves nothing.

    Equal to fhirpathpy on :data:`NARRATIVE_CHECKS` (a property test compares them); None where
    fhirpathpy should decide (a primitive extension ``_div``, a value that is not a string).
    """
    if "_div" in focus:
        return None
    if "div" not in focus:
        return True  # all() of nothing is true
    div = focus["div"]
    return _html_checks_once(div) if isinstance(div, str) else None


@lru_cache(maxsize=16)
def _html_checks_once(div: str) -> bool:
    """txt-1 and txt-2 check the same div one after the other: parse it once."""
    return html_checks(div)


# dom-2 to dom-5, on every resource: each reads only the resource's contained resources.
CONTAINED_RULES = {
    "dom-2": "contained.contained.empty()",
    "dom-3": (
        "contained.where((('#'+id in (%resource.descendants().reference | "
        "%resource.descendants().ofType(canonical) | %resource.descendants().ofType(uri) | "
        "%resource.descendants().ofType(url))) or descendants().where(reference = '#').exists() or "
        "descendants().where(ofType(canonical) = '#').exists() or "
        "descendants().where(ofType(canonical) = '#').exists()).not()).trace('unmatched', id).empty()"
    ),
    "dom-4": "contained.meta.versionId.empty() and contained.meta.lastUpdated.empty()",
    "dom-5": "contained.meta.security.empty()",
}
DOM_6 = "text.`div`.exists()"
REF_2 = "reference.exists() or identifier.exists() or display.exists() or extension.exists()"


def nothing_contained(focus: Mapping[str, Any], variables: Mapping[str, Any]) -> bool | None:
    """dom-2 to dom-5 where nothing is contained: each is then true (it tests an empty collection).

    None where something is: fhirpathpy decides (a property test compares the two).
    """
    return True if "contained" not in focus and "_contained" not in focus else None


def has_narrative(focus: Mapping[str, Any], variables: Mapping[str, Any]) -> bool | None:
    """dom-6: whether the resource has a narrative ``div``; None where fhirpathpy should decide."""
    if "text" not in focus and "_text" not in focus:
        return False
    text = focus.get("text")
    if isinstance(text, dict) and "_div" not in text and isinstance(text.get("div"), str) and text["div"]:
        return True
    return None


def reference_has_content(focus: Mapping[str, Any], variables: Mapping[str, Any]) -> bool | None:
    """ref-2 where the Reference has a reference or a display (about every one); else fhirpathpy decides."""
    for name in ("reference", "display"):
        value = focus.get(name)
        if isinstance(value, str) and value:
            return True
    return None


def without(name: str) -> Any:
    """A native form of a rule that holds whenever element ``name`` is absent; else fhirpathpy decides.

    R5's prov-1, prov-2 and prov-3 (on each Provenance.agent) can be false only when the agent has an
    ``onBehalfOf``, docRef-1 and docRef-2 only with a ``facilityType`` or ``practiceSetting``: each term
    they need is empty otherwise. Their other terms ``resolve()`` references, which the memo cannot key
    (what resolves differs per request), so without this every agent of every Provenance ran three
    FHIRPath evaluations. A property test compares them with fhirpathpy.
    """

    def holds(focus: Mapping[str, Any], variables: Mapping[str, Any]) -> bool | None:
        return True if name not in focus and f"_{name}" not in focus else None

    return holds


ABSENT_RULES = {
    (
        "prov-1",
        "who.resolve().exists() and onBehalfOf.resolve().exists() implies "
        "who.resolve() != onBehalfOf.resolve()",
    ): "onBehalfOf",
    (
        "prov-2",
        "who.resolve().ofType(PractitionerRole).practitioner.resolve().exists() and "
        "onBehalfOf.resolve().ofType(Practitioner).exists() implies "
        "who.resolve().practitioner.resolve() != onBehalfOf.resolve()",
    ): "onBehalfOf",
    (
        "prov-3",
        "who.resolve().ofType(Organization).exists() and "
        "onBehalfOf.resolve().ofType(PractitionerRole).organization.resolve().exists() implies "
        "who.resolve() != onBehalfOf.resolve().organization.resolve()",
    ): "onBehalfOf",
    ("docRef-1", "facilityType.empty() or context.where(resolve() is Encounter).empty()"): "facilityType",
    (
        "docRef-2",
        "practiceSetting.empty() or context.where(resolve() is Encounter).empty()",
    ): "practiceSetting",
}


# R4B's texts of ref-1 and dom-3 (the converted R4B forms): they mean what R5's do where the natives answer
# (no reference, or one that is not "#..."; nothing contained). Property tests compare them too.
R4B_REF_1 = (
    "reference.startsWith('#').not() or (reference.substring(1).trace('url') in %rootResource.contained.i"
    "d.trace('ids')) or (reference='#' and %rootResource!=%resource)"
)
R4B_DOM_3 = (
    "contained.where(((id.exists() and ('#'+id in (%resource.descendants().reference | %resource.descenda"
    "nts().as(canonical) | %resource.descendants().as(uri) | %resource.descendants().as(url)))) or descen"
    "dants().where(reference = '#').exists() or descendants().where(as(canonical) = '#').exists() or desc"
    "endants().where(as(uri) = '#').exists()).not()).trace('unmatched', id).empty()"
)

# Expressions evaluated in Python, by (key, exact R5 text): a changed expression falls back to FHIRPath.
# ref-2 and dom-2 to dom-6 apply to every Reference or resource and are mostly decided by a key lookup or
# two; through the memo, working out the memo key alone took 3 to 8 µs each time.
NATIVE_EXPRESSIONS = {
    ("ref-1", REF_1): ref_1,
    ("ref-2", REF_2): reference_has_content,
    ("txt-1", NARRATIVE_CHECKS): narrative_checks,
    ("txt-2", NARRATIVE_CHECKS): narrative_checks,
    ("dom-6", DOM_6): has_narrative,
    **dict.fromkeys(CONTAINED_RULES.items(), nothing_contained),
    ("ref-1", R4B_REF_1): ref_1,
    ("dom-3", R4B_DOM_3): nothing_contained,
    **{rule: without(name) for rule, name in ABSENT_RULES.items()},
}


@dataclass(frozen=True)
class Invariant:
    """One FHIRPath constraint, where it applies, and its compiled form."""

    key: str
    severity: str
    human: str
    expression: str
    context: str
    profile: str
    compiled: Compiled = field(repr=False, compare=False)
    plan: Plan = field(repr=False, compare=False)
    native: Any = field(default=None, repr=False, compare=False)
    number: int = field(default=-1, repr=False, compare=False)

    @cached_property
    def reads_environment(self) -> bool:
        """Whether the expression may read a graph variable (``%sources`` ...), known once all is read."""
        return any(f"%{name}" in self.expression for name in ENVIRONMENT)

    @cached_property
    def focus_free(self) -> bool:
        """Whether the result depends on the graph variables only, not on the resource (see dependencies)."""
        reads = self.plan.reads
        roots = {path[0] for path, _, _ in reads.paths}
        return not reads.opaque and not reads.uses_index and roots <= {f"%{name}" for name in ENVIRONMENT}


class Deferred(NamedTuple):
    """An evaluation left for when the graph is complete.

    ``focus`` and ``resource`` are both None when the invariant reads only graph variables (then any
    focus gives the same result, and one evaluation serves every resource of the same graph shape).
    """

    number: int  # the invariant's position in InvariantSet.all
    expression: str  # the element it is evaluated on
    type_path: str
    focus: Any
    resource: Any


# The canonical version of the core definitions of a release other than R5 (its types share R5's URLs).
CORE_VERSIONS = {"4.3": "4.3.0"}


@cache
def _compiled(expression: str, release: str = "5.0") -> tuple[Compiled, Plan]:
    compiled = compile_expression(expression, release)
    return compiled, Plan(analyze(getattr(compiled, "parsedPath", {})))


def _on_element(path: str, expression: str, release: str = "5.0") -> tuple[str, str]:
    """Move a constraint on a primitive element to its parent (``Narrative.div``: Narrative, ``div.all(e)``).

    The walker visits complex values only; ``all()`` evaluates ``e`` on each value of the primitive,
    which is what a constraint on that element means.
    """
    element = element_at(path, release) if "." in path else None
    if element is None or not element.is_primitive:
        return path, expression
    parent, name = path.rsplit(".", 1)
    return parent, f"`{name}`.all({expression})"  # backticks: `div` is also a FHIRPath operator


def _class_key(path: str) -> str:
    """The fhir.resources type name of an element inside a datatype: ``Timing.repeat`` -> ``TimingRepeat``."""
    return "".join(part[:1].upper() + part[1:] for part in path.split("."))


def _snapshot_constraints(profile: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(element path, constraint) of the base type's invariants, then of the profile's own.

    A profile constraint restating a base one (same key on the same element) is not evaluated twice.
    """
    base = base_constraints(str(profile["type"]))
    yield from base
    seen = {(path, constraint["key"]) for path, constraint in base}
    for element, constraint in _constraints(profile):
        if (element["path"], constraint["key"]) not in seen:
            yield element["path"], constraint


class InvariantSet:
    """All invariants of a Conformance registry, ready to evaluate; or, without one, a release's own.

    ``InvariantSet(None, "4.3")`` holds R4B's: each datatype's at every element of its type, and each
    resource type's by :meth:`core`.
    """

    def __init__(self, conformance: Conformance | None, release: str = "5.0") -> None:
        self.release = release
        self.by_type: dict[str, list[Invariant]] = {}
        self.by_profile: dict[str, dict[str, list[Invariant]]] = {}
        self.failures: list[str] = []
        self.all: list[Invariant] = []
        self._lock = threading.Lock()  # core() adds invariants while requests are served
        # A release's own datatype invariants, compiled when an element of the type is first met (most
        # of R4B's 50-odd datatypes never occur in a publication, and compiling is what costs).
        self._pending: dict[str, list[tuple[Mapping[str, Any], str, str, str]]] = {}
        if conformance is None:
            for type_name in datatypes(release):
                for element_path, constraint in base_constraints(type_name, release):
                    path, expression = _on_element(element_path, constraint.get("expression", ""), release)
                    key = type_name if path == type_name else _class_key(path)
                    self._pending.setdefault(key, []).append(
                        (constraint, expression, path, self._url(type_name))
                    )
        datatype_profiles = {} if conformance is None else conformance.datatype_profiles
        resource_profiles = {} if conformance is None else conformance.resource_profiles
        for type_name, profile in datatype_profiles.items():
            for element_path, constraint in _snapshot_constraints(profile):
                path, expression = _on_element(element_path, constraint.get("expression", ""))
                key = type_name if path == type_name else _class_key(path)
                self._add(self.by_type.setdefault(key, []), constraint, expression, path, profile["url"])
        for url, profile in resource_profiles.items():
            by_path = self.by_profile.setdefault(url, {})
            for element_path, constraint in _snapshot_constraints(profile):
                path, expression = _on_element(element_path, constraint.get("expression", ""))
                self._add(by_path.setdefault(path, []), constraint, expression, path, url)
        self._memo: dict[tuple[str, str, str | bytes], bool | None] = {}
        self._memo_bytes = 0
        self._applicable: dict[
            tuple[str, str, tuple[str, ...]], tuple[list[Invariant], list[Invariant], list[Invariant]]
        ] = {}

    def _add(
        self,
        bucket: list[Invariant],
        constraint: Mapping[str, Any],
        expression: str,
        context: str,
        profile: str,
    ) -> None:
        if constraint["key"] in NATIVE or not expression:
            return
        try:
            compiled, plan = _compiled(expression, self.release)
        except Exception as exc:  # fhirpathpy raises bare Exceptions for grammar errors
            self.failures.append(f"{constraint['key']} in {profile}: cannot compile ({exc})")
            return
        invariant = Invariant(
            constraint["key"],
            constraint.get("severity", "error"),
            constraint.get("human", ""),
            expression,
            context,
            profile,
            compiled,
            plan,
            NATIVE_EXPRESSIONS.get((constraint["key"], expression)),
            len(self.all),
        )
        self.all.append(invariant)
        bucket.append(invariant)

    def _url(self, type_name: str) -> str:
        """The canonical of the release's own definition of a type (``|4.3.0`` for R4B's)."""
        version = CORE_VERSIONS.get(self.release)
        return f"{R5_BASE}{type_name}" + (f"|{version}" if version else "")

    def core(self, type_name: str) -> str:
        """The canonical of R5's (or the set's release's) own definition of a resource type, ready to use.

        For a resource judged on its own without a profile of this publication: R5's invariants of the
        type (and of DomainResource, Resource) apply as a profile would. Made on first use.
        """
        url = self._url(type_name)
        with self._lock:
            if url not in self.by_profile:
                by_path: dict[str, list[Invariant]] = {}
                for element_path, constraint in base_constraints(type_name, self.release):
                    path, expression = _on_element(
                        element_path, constraint.get("expression", ""), self.release
                    )
                    self._add(by_path.setdefault(path, []), constraint, expression, path, url)
                self._applicable.clear()
                self.by_profile[url] = by_path
        return url

    def issues(
        self,
        resource: Mapping[str, Any],
        profiles: list[str],
        environment: Mapping[str, Any],
        source: str | None,
        nodes: Sequence[Node] | None = None,
        deferred: list[Deferred] | None = None,
    ) -> list[Issue]:
        """Evaluate every applicable invariant on ``resource`` and return the failures.

        With ``deferred``, invariants that read graph variables are not evaluated but appended there, for
        :meth:`evaluate_deferred` once the graph is complete (``environment`` is then not used).
        """
        variables = {**ENVIRONMENT_DEFAULTS, **environment, "resource": resource, "rootResource": resource}
        found: list[Issue] = list(ele_1(resource, source))
        applicable = self._applicable
        key_of_profiles = tuple(profiles)
        for node in nodes if nodes is not None else walk_json(resource, self.release):
            where = (node.type_name, node.path, key_of_profiles)
            split = applicable.get(where)
            if split is None:
                if len(applicable) >= MEMO_LIMIT:  # only a hostile resource declares that many profiles
                    applicable.clear()
                split = applicable[where] = self._split(node.type_name, node.path, profiles)
            candidates, now, waiting = split
            if deferred is None:
                now = candidates
            elif waiting:
                type_path = self._type_path(node)
                for invariant in waiting:
                    if invariant.focus_free:
                        deferred.append(Deferred(invariant.number, node.expression, type_path, None, None))
                    else:
                        deferred.append(
                            Deferred(invariant.number, node.expression, type_path, node.value, resource)
                        )
            if not now:
                continue
            wrap = node.info is not None
            found.extend(
                self._evaluate(
                    now, variables, node.value, node.expression, self._type_path(node), wrap, source
                )
            )
        return found

    def _split(
        self, type_name: str, path: str, profiles: list[str]
    ) -> tuple[list[Invariant], list[Invariant], list[Invariant]]:
        """The invariants at one element: all, those evaluated at once, those that wait for the graph.

        Each list keeps the order the invariants are defined in (see :meth:`issues`).
        """
        if type_name in self._pending:
            with self._lock:
                for constraint, expression, context, url in self._pending.pop(type_name, ()):
                    self._add(self.by_type.setdefault(type_name, []), constraint, expression, context, url)
        candidates = [*self.by_type.get(type_name, ())]
        for url in profiles:
            candidates.extend(self.by_profile.get(url, {}).get(path, ()))
        now = [i for i in candidates if not i.reads_environment]
        return candidates, now, [i for i in candidates if i.reads_environment]

    def evaluate_deferred(
        self, item: Deferred, environment: Mapping[str, Any], source: str | None
    ) -> list[Issue]:
        """Evaluate one deferred invariant with the complete graph's ``environment``."""
        number, expression, type_path, focus, resource = item
        if focus is None:  # reads graph variables only: any focus gives the same result
            focus = resource = {}
        variables = {**ENVIRONMENT_DEFAULTS, **environment, "resource": resource, "rootResource": resource}
        wrap = "." in expression
        return list(self._evaluate([self.all[number]], variables, focus, expression, type_path, wrap, source))

    def _evaluate(
        self,
        candidates: list[Invariant],
        variables: Mapping[str, Any],
        value: Any,
        expression: str,
        type_path: str,
        wrap: bool,
        source: str | None,
    ) -> Iterator[Issue]:
        index_token = id(resolvable())
        for invariant in candidates:
            if invariant.native is not None and isinstance(value, dict):
                passed = invariant.native(value, variables)
                if passed is not None:
                    if not passed:
                        level: Severity = "warning" if invariant.severity == "warning" else "error"
                        message = f"{invariant.key}: {invariant.human}"
                        yield Issue(
                            level, "invariant", message, expression, source, invariant.key, "invariant"
                        )
                    continue
            key = invariant.plan.key(value, variables, index_token)
            memo_key = (invariant.expression, type_path, key) if key is not None else None
            if memo_key is not None and memo_key in self._memo:
                passed = self._memo[memo_key]
            else:
                passed = self._run(invariant, value, wrap, type_path, variables)
                if memo_key is not None:
                    if len(self._memo) >= MEMO_LIMIT or self._memo_bytes >= MEMO_BYTES:
                        self._memo.clear()
                        self._memo_bytes = 0
                    self._memo[memo_key] = passed
                    self._memo_bytes += len(memo_key[2])
            if passed is None and invariant.profile.startswith(R5_BASE):
                # HL7's own rule that this FHIRPath engine cannot evaluate (exs-1, opd-3 ...): not a finding
                # about the resource, so a warning that it went unchecked (the HL7 validator's habit too).
                message = f"{invariant.key} could not be evaluated here on {expression}: not checked"
                key = invariant.key
                yield Issue("warning", "not-supported", message, expression, source, key, "invariant")
            elif passed is None:  # a rule of this publication's profiles must be checkable
                message = f"{invariant.key} could not be evaluated on {expression}"
                yield Issue("error", "processing", message, expression, source, invariant.key, "invariant")
            elif not passed:
                severity: Severity = "warning" if invariant.severity == "warning" else "error"
                message = f"{invariant.key}: {invariant.human}"
                yield Issue(severity, "invariant", message, expression, source, invariant.key, "invariant")

    def _type_path(self, node: Node) -> str:
        """The type FHIRPath sees a node as: its element path for a backbone element, else its type."""
        if self.release != "5.0":  # R4B's Timing and Dosage are BackboneElements, yet datatypes
            return node.type_name if node.type_name in core_types(self.release) else node.path
        return node.path if is_backbone(node.type_name) else node.type_name

    @staticmethod
    def _run(
        invariant: Invariant, value: Any, wrap: bool, type_path: str, variables: Mapping[str, Any]
    ) -> bool | None:
        """Evaluate once: True (holds, or empty), False (fails), None (could not be evaluated)."""
        focus = value
        if wrap:  # an element inside the resource: typed by its path
            focus = ResourceNode.create_node(value, type_path)  # type: ignore[no-untyped-call]
        try:
            result = invariant.compiled(focus, dict(variables))
        except Exception:  # an expression that cannot run on this input is itself a finding
            return None
        return result != [False]


def _constraints(profile: Mapping[str, Any]) -> Iterator[tuple[Mapping[str, Any], Mapping[str, Any]]]:
    for element in profile.get("differential", {}).get("element", []):
        for constraint in element.get("constraint", []):
            yield element, constraint


def _all_filled(value: Any) -> bool:
    """Whether no element below ``value`` is empty in ele-1's sense (the quick test: no paths built)."""
    stack = [value]
    while stack:
        value = stack.pop()
        for child in value.values() if isinstance(value, dict) else value:
            if isinstance(child, dict):
                if not child or (len(child) == 1 and "id" in child):
                    return False
                stack.append(child)
            elif isinstance(child, list):
                if not child:
                    return False
                stack.append(child)
            elif child == "" or (child is None and not isinstance(value, list)):
                return False  # null in an array keeps primitives and their _extensions aligned
    return True


def ele_1(resource: Mapping[str, Any], source: str | None) -> Iterator[Issue]:
    """ele-1, natively: every element has a value or children (no empty value, no object with only an id).

    A primitive's ``_name`` is the same element as its ``name`` (https://hl7.org/fhir/R5/json.html#primitive):
    with a value there, an id alone is enough (``"given": ["a"], "_given": [{"id": "g1"}]``).
    """
    if _all_filled({k: v for k, v in resource.items() if k != "resourceType"}):
        return
    # (where, value, the values a _name list is aligned with)
    stack: list[tuple[str, Any, Any]] = [(str(resource.get("resourceType", "Resource")), resource, None)]
    while stack:
        expression, value, aligned = stack.pop()
        items: Any = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            if key == "resourceType":
                continue
            where = f"{expression}[{key}]" if isinstance(key, int) else f"{expression}.{key}"
            empty = (
                (child is None and not isinstance(value, list))  # https://hl7.org/fhir/R5/json.html#primitive
                or (child is not None and child in ("", [], {}))
                or (isinstance(child, dict) and set(child) == {"id"} and not _valued(value, key, aligned))
            )
            if empty:
                message = f"ele-1: {where} must have a value or children (FHIR JSON allows no empty values)"
                yield Issue("error", "structure", message, where, source, "ele-1", "invariant")
            elif isinstance(child, (dict, list)):
                primitive = isinstance(key, str) and key[:1] == "_" and isinstance(value, dict)
                stack.append((where, child, value.get(key[1:]) if primitive else None))


def _valued(parent: Any, key: str | int, aligned: Any) -> bool:
    """Whether the ``_name`` (or its item) at ``key`` sits beside a value: then its id is not all it has."""
    if isinstance(parent, dict) and isinstance(key, str) and key[:1] == "_":
        return parent.get(key[1:]) not in (None, "", [])
    if isinstance(key, int) and isinstance(aligned, list) and key < len(aligned):
        return aligned[key] not in (None, "")
    return False
