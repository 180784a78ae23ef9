"""Search parameter expressions compiled to plain Python for the simple FHIRPath subset they use.

The R5 SearchParameter expressions are mostly paths, unions of paths (one per resource type the parameter
covers), ``ofType(T)`` on choice elements, ``where(resolve() is T)`` and ``first()``. Evaluating them with
fhirpathpy costs milliseconds per resource; walking the JSON directly costs microseconds. An expression
outside this subset raises :class:`Unsupported` and the caller falls back to fhirpathpy; tests prove the
two agree on every bundled resource and on a generated corpus.
https://hl7.org/fhir/R5/fhirpath.html, https://hl7.org/fhirpath/N1/#union-collections
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Any

Extractor = Callable[[Mapping[str, Any], Mapping[str, Any]], list[Any]]
"""``(resource, resolvable)`` to the expression's values; ``resolvable`` maps ``Type/id`` to resources."""

_NAME = r"[A-Za-z][A-Za-z0-9_]*"
_MEMBER = re.compile(rf"^{_NAME}$")
_OF_TYPE = re.compile(rf"^ofType\(({_NAME})\)$")
_WHERE_RESOLVE = re.compile(rf"^where\(resolve\(\) is ({_NAME})\)$")

# Primitive types derived from another (https://hl7.org/fhir/R5/datatypes.html#primitive).
SPECIALIZATIONS = {
    "uri": ("url", "canonical", "oid", "uuid"),
    "string": ("code", "id", "markdown"),
    "integer": ("positiveInt", "unsignedInt"),
}


class Unsupported(ValueError):
    """The expression uses FHIRPath beyond what this module compiles."""


def _split(text: str, separator: str) -> list[str]:
    """Split at ``separator`` outside parentheses and quotes."""
    parts, depth, start, quoted = [], 0, 0, False
    for index, char in enumerate(text):
        if char == "'":
            quoted = not quoted
        elif quoted:
            continue
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(text[start:index])
            start = index + 1
    if depth or quoted:
        raise Unsupported(f"unbalanced: {text}")
    parts.append(text[start:])
    return [p.strip() for p in parts]


Step = Callable[[list[Any], Mapping[str, Any]], list[Any]]


def _member(name: str) -> Step:
    def step(values: list[Any], resolvable: Mapping[str, Any]) -> list[Any]:
        out: list[Any] = []
        for value in values:
            if isinstance(value, dict):
                found = value.get(name)
                if isinstance(found, list):
                    out.extend(found)
                elif found is not None:
                    out.append(found)
        return out

    return step


def _choice(names: list[str]) -> Step:
    members = [_member(name) for name in names]

    def step(values: list[Any], resolvable: Mapping[str, Any]) -> list[Any]:
        out: list[Any] = []
        for value in values:  # per element, in element order, as fhirpathpy gives them
            for member in members:
                out.extend(member([value], resolvable))
        return out

    return step


def _where_resolve_is(kind: str) -> Step:
    def step(values: list[Any], resolvable: Mapping[str, Any]) -> list[Any]:
        out = []
        for value in values:
            reference = value.get("reference") if isinstance(value, dict) else None
            target = resolvable.get(reference) if isinstance(reference, str) else None
            if isinstance(target, Mapping) and target.get("resourceType") == kind:
                out.append(value)
        return out

    return step


def _first(values: list[Any], resolvable: Mapping[str, Any]) -> list[Any]:
    return values[:1]


def _steps(path: str, resource_type: str) -> list[Step] | None:
    """The steps of one path, or None when it starts at another resource type (so selects nothing)."""
    segments = _split(path, ".")
    steps: list[Step] = []
    head = segments[0]
    if head[:1].isupper() and _MEMBER.match(head):
        if head not in (resource_type, "Resource", "DomainResource"):
            return None  # ``AdverseEvent.subject`` on a DocumentReference: nothing
        segments = segments[1:]
    for index, segment in enumerate(segments):
        of_type = _OF_TYPE.match(segment)
        where = _WHERE_RESOLVE.match(segment)
        if _MEMBER.match(segment):
            steps.append(_member(segment))
        elif of_type and index > 0 and _MEMBER.match(segments[index - 1]):
            # A choice element: ``value.ofType(Coding)`` is ``valueCoding`` in JSON
            # (https://hl7.org/fhir/R5/json.html#choice), so the member step becomes that name.
            # A type also matches its specializations: ofType(uri) finds valueCanonical too
            # (https://hl7.org/fhir/R5/datatypes.html#primitive).
            kinds = [of_type.group(1), *SPECIALIZATIONS.get(of_type.group(1), ())]
            steps[-1] = _choice([segments[index - 1] + k[0].upper() + k[1:] for k in kinds])
        elif where:
            steps.append(_where_resolve_is(where.group(1)))
        elif segment == "first()":
            steps.append(_first)
        else:
            raise Unsupported(f"unsupported step {segment!r}")
    if not steps:
        raise Unsupported(f"empty path {path!r}")
    return steps


def _distinct(values: list[Any]) -> list[Any]:
    """FHIRPath union semantics: equal values once, in first-seen order (as fhirpathpy compares them)."""
    seen: set[str] = set()
    out = []
    for value in values:
        key = json.dumps(value, sort_keys=True)
        if key not in seen:
            seen.add(key)
            out.append(value)
    return out


def compile_native(expression: str, resource_type: str) -> Extractor:
    """Compile ``expression`` for resources of ``resource_type``; Unsupported outside the subset."""
    terms = _split(expression, "|")
    compiled: list[Extractor] = []
    for term in terms:
        if term.startswith("("):
            inner_end = _matching(term)
            inner = compile_native(term[1:inner_end], resource_type)
            rest = term[inner_end + 1 :]
            if rest == "":
                compiled.append(inner)
            elif rest == ".first()":
                compiled.append(_first_of(inner))
            else:
                raise Unsupported(f"unsupported after parentheses: {rest!r}")
            continue
        steps = _steps(term, resource_type)
        if steps is not None:
            compiled.append(_run(steps))
    if len(terms) == 1:
        return compiled[0] if compiled else lambda r, res: []

    def union(resource: Mapping[str, Any], resolvable: Mapping[str, Any]) -> list[Any]:
        return _distinct([v for part in compiled for v in part(resource, resolvable)])

    return union


def _first_of(inner: Extractor) -> Extractor:
    def extract(resource: Mapping[str, Any], resolvable: Mapping[str, Any]) -> list[Any]:
        return inner(resource, resolvable)[:1]

    return extract


def _matching(term: str) -> int:
    depth = 0
    for index, char in enumerate(term):
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth == 0:
            return index
    raise Unsupported(f"unbalanced: {term}")


def _run(steps: list[Step]) -> Extractor:
    def extract(resource: Mapping[str, Any], resolvable: Mapping[str, Any]) -> list[Any]:
        values: list[Any] = [resource]
        for step in steps:
            if not values:
                return values
            values = step(values, resolvable)
        return values

    return extract
