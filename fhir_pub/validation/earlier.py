"""``$validate`` at FHIR R4B and R4: a resource checked against that version's own definitions.

R4B: fhir.resources' R4B models (structure, cardinality, datatypes, unknown elements), then R4B's own
invariants from hl7.fhir.r4b.core 4.3.0 (``r4b-definitions.json``), evaluated by the engine that evaluates
R5's (:class:`fhir_pub.validation.invariants.InvariantSet` for release 4.3): an error-severity one broken is
an error, a warning one a warning, one the engine cannot evaluate a warning that it went unchecked. R4:
SMART's fhirclient models for FHIR 4.0.1 in strict mode, an implementation independent of fhir.resources.
The build applies the R4B check to every converted resource (``fhir_pub.build``); ``tests/test_versions.py``
applies both. Neither checks that version's bindings, nor R4's invariants, and the answer says so in its
first issue.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from typing import Any

from pydantic import ValidationError

from fhir_pub.validation.invariants import InvariantSet
from fhir_pub.validation.issues import Issue

log = logging.getLogger(__name__)

CHECKED_BY = {
    "4.3": "FHIR R4B's structure and datatypes (fhir.resources' R4B models) and R4B's invariants "
    "(hl7.fhir.r4b.core 4.3.0); R4B's bindings are not checked",
    "4.0": "FHIR R4's structure and datatypes (SMART fhirclient's 4.0.1 models, strict); R4's invariants "
    "and bindings are not checked",
}


def mode(version: str) -> Issue:
    """The first issue of the answer: what was checked, and what was not."""
    return Issue(
        "information",
        "informational",
        f"validated against {CHECKED_BY[version]}, nor this publication's profiles (they are R5 profiles)",
        layer="request",
    )


def check(resource: Mapping[str, Any], version: str, source: str | None = None) -> list[Issue]:
    """The issues of ``resource`` as a resource of FHIR ``version`` (4.3 or 4.0); no error when it is valid.

    At 4.3 they include R4B's invariants: errors, and warnings (a warning-severity invariant broken, or
    one not checked). ``source`` names the resource in the issues.
    """
    kind = resource.get("resourceType")
    if not isinstance(kind, str):
        return [Issue("error", "structure", "the resource has no resourceType", "resourceType", source)]
    if version != "4.3":
        return list(_r4(kind, resource))
    found = list(_r4b(kind, resource, source))
    if not found or found[0].code != "not-supported":  # a type R4B has: its invariants too
        found.extend(r4b_invariants(resource, kind, source))
    return found


@cache
def _r4b_set() -> InvariantSet:
    return InvariantSet(None, "4.3")


def r4b_invariants(resource: Mapping[str, Any], kind: str, source: str | None = None) -> list[Issue]:
    """R4B's invariants of ``resource`` (of R4B type ``kind``) that it breaks or that went unchecked.

    An element the R4B models refuse may make an expression fail; that is the "not checked" warning, and
    the models' error says what is wrong. Anything else going wrong is an error, never a crash.
    """
    invariants = _r4b_set()
    try:
        return invariants.issues(resource, [invariants.core(kind)], {}, source)
    except Exception:  # the walk met a shape the models have already refused
        log.exception("R4B invariants failed on %s", source or kind)
        message = "R4B's invariants could not be checked on this resource (internal error, logged)"
        return [Issue("error", "exception", message, kind, source, None, "invariant")]


def _r4b(kind: str, resource: Mapping[str, Any], source: str | None) -> Iterator[Issue]:
    from fhir.resources.R4B import get_fhir_model_class

    try:
        model = get_fhir_model_class(kind)
    except (ValueError, KeyError):
        yield _unknown(kind, "R4B")
        return
    try:
        model.model_validate(dict(resource))
    except ValidationError as exc:
        for error in exc.errors():
            path = _fhirpath(kind, (p for p in error["loc"] if not str(p).startswith("function-")))
            yield Issue("error", "structure", f"{path}: {error['msg']}", path, source)


def _r4(kind: str, resource: Mapping[str, Any]) -> Iterator[Issue]:
    from fhirclient.models.fhirabstractbase import FHIRValidationError  # type: ignore[import-untyped]
    from fhirclient.models.fhirelementfactory import FHIRElementFactory  # type: ignore[import-untyped]

    try:
        parsed = FHIRElementFactory.instantiate(kind, dict(resource))
    except FHIRValidationError as exc:
        yield from _flattened(exc, kind)
        return
    except (TypeError, ValueError, AttributeError) as exc:  # fhirclient's own refusals of odd input
        yield Issue("error", "structure", f"{kind}: {exc}", kind)
        return
    if getattr(parsed, "resource_type", None) != kind:  # the factory falls back to a bare Element
        yield _unknown(kind, "R4")


def _flattened(error: Exception, path: str) -> Iterator[Issue]:
    """One issue per leaf of fhirclient's nested validation errors, each with its element path."""
    from fhirclient.models.fhirabstractbase import FHIRValidationError

    if isinstance(error, FHIRValidationError):
        inner = error.errors or []
        here = _fhirpath(path, error.path.split(".")) if error.path else path
        for nested in inner:
            yield from _flattened(nested, here)
        if not inner:
            yield Issue("error", "structure", f"{here}: {error}", here)
        return
    yield Issue("error", "structure", f"{path}: {_plain(str(error))}", path)


def _fhirpath(start: str, parts: Iterable[Any]) -> str:
    """``Organization.contact[0].name`` from a path's parts (list positions are numbers)."""
    path = start
    for part in parts:
        text = str(part)
        path += f"[{text}]" if text.isdigit() else f".{text}"
    return path


def _plain(message: str) -> str:
    """Fhirclient's message without Python's class and object names."""
    message = re.sub(r"<class '(?:[\w.]+\.)?(\w+)'>", r"\1", message)
    message = re.sub(r" (?:on|in data for) <[^>]*>", "", message)
    if len(message) > 1 and message[0] == message[-1] and message[0] in "'\"":
        message = message[1:-1]  # the repr of a quoted message
    return message


def _unknown(kind: str, name: str) -> Issue:
    return Issue("error", "not-supported", f"{kind!r} is not a resource type of FHIR {name}", "resourceType")
