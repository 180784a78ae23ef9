"""Required bindings of R5's coded elements: the concepts each allows, from the official definitions.

``r5-bindings.json`` beside this module is written by ``scripts/r5-bindings`` from hl7.fhir.r5.core 5.0.0
and the HL7 Terminology package hl7.terminology.r5 (both CC0), which holds the terminology.hl7.org code
systems behind Condition.clinicalStatus and its like. It holds only bindings whose ValueSet those packages
list in full; the others (languages, MIME types, currencies, UCUM, filtered ValueSets) are not checked here
rather than guessed.
https://hl7.org/fhir/R5/terminologies.html#required: "the concept in this element SHALL be from the
specified value set".

What "from the value set" means per datatype:

- a ``code`` carries no system (the binding implies it): its value must be one of the ValueSet's codes;
- a ``Coding`` is a concept by its system and code together (https://hl7.org/fhir/R5/datatypes.html#Coding):
  the pair must be in the ValueSet, so the right code under another system, or under none, is not;
- a ``CodeableConcept`` may say one concept in several codings (translations) plus text
  (https://hl7.org/fhir/R5/datatypes.html#CodeableConcept): at least one coding must be in the ValueSet;
  the others, and the text, are free.

A CodeableConcept with text and no coding under a required binding is an error. Text is what extensible
and weaker bindings fall back on when no code fits (https://hl7.org/fhir/R5/terminologies.html#extensible);
a required binding has no such fallback, and the HL7 validator reports it the same way ("No code
provided, and a code is required from the value set"). A Coding or CodeableConcept that states no concept
at all (no code, no text: only an id or extensions, such as a data-absent-reason,
https://hl7.org/fhir/extensions/StructureDefinition-data-absent-reason.html) is left alone: there is
nothing to compare with the ValueSet, and ele-1 already refuses an empty element.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from functools import cache, partial
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from fhir_pub.definitions import Node, elements
from fhir_pub.validation.issues import Issue

R5_BINDINGS = Path(__file__).with_name("r5-bindings.json")
SHOWN = 8  # allowed codes listed in a message at most

Concept = tuple[str | None, str]  # (system, code) of a Coding; a Coding may lack its system


class Tables(NamedTuple):
    """``r5-bindings.json`` read: element -> ValueSet, and ValueSet -> what it allows, per kind of element."""

    code_bindings: dict[str, str]
    codes: dict[str, frozenset[str]]
    coded_bindings: dict[str, str]
    concepts: dict[str, frozenset[Concept]]


@cache
def _tables() -> Tables:
    document = orjson.loads(R5_BINDINGS.read_bytes())
    return Tables(
        document["bindings"],
        {url: frozenset(values) for url, values in document["codes"].items()},
        document["coded"],
        {
            url: frozenset((system, code) for system, codes in by_system.items() for code in codes)
            for url, by_system in document["concepts"].items()
        },
    )


def _url(table: Mapping[str, str], path: str, type_name: str, name: str) -> str | None:
    """The ValueSet bound to element ``name`` of a node: by its element path, else by its datatype's."""
    return table.get(f"{path}.{name}") or table.get(f"{type_name}.{name}")


def required_codes(path: str, type_name: str, name: str) -> frozenset[str] | None:
    """The codes the ``code`` element ``name`` of a node at ``path`` (of ``type_name``) allows, if bound."""
    tables = _tables()
    url = _url(tables.code_bindings, path, type_name, name)
    return None if url is None else tables.codes[url]


def required_concepts(path: str, type_name: str, name: str) -> frozenset[Concept] | None:
    """The (system, code) pairs a Coding or CodeableConcept element ``name`` allows, if R5 binds it."""
    tables = _tables()
    url = _url(tables.coded_bindings, path, type_name, name)
    return None if url is None else tables.concepts[url]


def location(node: Node, name: str, index: int | None) -> str:
    """The FHIRPath of element ``name`` of a node, or of its item ``index`` when it repeats."""
    return f"{node.expression}.{name}" + ("" if index is None else f"[{index}]")


def _listed(values: Iterable[str]) -> str:
    ordered = sorted(values)
    return ", ".join(ordered[:SHOWN]) + (", ..." if len(ordered) > SHOWN else "")


def _expected(allowed: frozenset[Concept]) -> str:
    systems = sorted({system or "" for system, _ in allowed})
    return "; ".join(
        f"{system}: {_listed(c for s, c in allowed if (s or '') == system)}" for system in systems
    )


def _given(coding: Mapping[str, Any]) -> str:
    system, code = coding.get("system"), coding.get("code")
    return f"{system}|{code}" if isinstance(system, str) else f"{code} (no system)"


def codings_of(value: dict[str, Any], type_name: str) -> list[dict[str, Any]]:
    """The codings of a Coding (itself) or of a CodeableConcept (its ``coding``), JSON objects only."""
    if type_name == "Coding":
        return [value]
    listed = value.get("coding")
    return [c for c in listed if isinstance(c, dict)] if isinstance(listed, list) else []


def concept_problem(value: Any, type_name: str, url: str, allowed: frozenset[Concept]) -> str | None:
    """Why a Coding or CodeableConcept is not a concept of its required ValueSet, or None when it is.

    One coding whose (system, code) the ValueSet holds is enough; text or a display without a code is
    not; a value that states no concept (no code, display or text) is not judged (module docstring).
    """
    if not isinstance(value, dict):
        return None  # a wrong shape is the structure layer's to report
    codings = codings_of(value, type_name)
    coded = [c for c in codings if isinstance(c.get("code"), str)]
    if any((c.get("system"), c["code"]) in allowed for c in coded):
        return None
    binding, expected = f"{url} (a required binding in R5)", f"expected {_expected(allowed)}"
    if coded:
        given = ", ".join(_given(c) for c in coded)
        return f"{given} {'is' if len(coded) == 1 else 'are'} not a concept of {binding}: {expected}"
    if "text" in value or any("display" in c for c in codings):
        return f"no code, only text or a display, where {binding} needs one of its codes: {expected}"
    return None


def binding_issues(nodes: Iterable[Node], source: str | None) -> Iterator[Issue]:
    """An error for each coded value outside its element's required R5 ValueSet.

    An element is found by its element path (``Patient.contact.gender``, for a resource's own and
    backbone elements) or its datatype's (``Address.use``). A ``code`` is checked against the ValueSet's
    codes, a Coding or CodeableConcept against its (system, code) pairs (see the module docstring).
    """
    tables = _tables()
    for node in nodes:
        if not isinstance(node.value, dict):
            continue
        for name, value in node.value.items():
            check = _judge(tables, node, name)
            if check is None:
                continue
            values = value if isinstance(value, list) else [value]
            for index, item in enumerate(values):
                problem = check(item)
                if problem is not None:
                    where = location(node, name, index if isinstance(value, list) else None)
                    yield Issue("error", "code-invalid", problem, where, source, "binding", "binding")


def _judge(tables: Tables, node: Node, name: str) -> Callable[[Any], str | None] | None:
    """How to judge a value of element ``name`` of a node against its required binding; None if unbound."""
    url = _url(tables.code_bindings, node.path, node.type_name, name)
    if url is not None:
        return partial(_code_problem, url=url, allowed=tables.codes[url])
    url = _url(tables.coded_bindings, node.path, node.type_name, name)
    info = None if url is None else elements(node.type_name).get(name)
    if url is None or info is None:
        return None
    return partial(concept_problem, type_name=info.type_name, url=url, allowed=tables.concepts[url])


def _code_problem(value: Any, url: str, allowed: frozenset[str]) -> str | None:
    if not isinstance(value, str) or value in allowed:
        return None  # a non-string is the structure layer's to report
    return f"{value!r} is not a code of {url} (a required binding in R5): expected {_listed(allowed)}"
