"""FHIRPath for invariants: fhirpathpy with the R5 model plus the functions it lacks.

fhirpathpy 2.x has no ``hasValue()``, ``htmlChecks()``, ``resolve()``, ``lowBoundary()``,
``highBoundary()`` or ``comparable()``; R5 invariants use all of them. They are supplied here through
fhirpathpy's user invocation table. ``trace()`` is silenced (fhirpathpy prints to stdout by default).
https://hl7.org/fhir/R5/fhirpath.html#functions
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from types import MappingProxyType
from typing import Any

import fhirpathpy
from fhirpathpy.engine.nodes import FP_DateTime, FP_Quantity, FP_Type, ResourceNode
from fhirpathpy.models import models
from lxml import etree

from fhir_pub.validation.r5 import r4b_model

Compiled = Callable[..., list[Any]]

# The resources that resolve() can reach, set by the validator for the resources it is checking.
RESOLVABLE: contextvars.ContextVar[Mapping[str, Mapping[str, Any]]] = contextvars.ContextVar("resolvable")
NOTHING_RESOLVABLE: Mapping[str, Mapping[str, Any]] = MappingProxyType({})


def resolvable() -> Mapping[str, Mapping[str, Any]]:
    """The resources ``resolve()`` can reach in the current validation (none outside one)."""
    return RESOLVABLE.get(NOTHING_RESOLVABLE)


# https://hl7.org/fhir/R5/narrative.html#xhtml: the elements a narrative may use.
NARRATIVE_ELEMENTS = frozenset(
    [
        "a",
        "abbr",
        "acronym",
        "b",
        "big",
        "blockquote",
        "br",
        "caption",
        "cite",
        "code",
        "col",
        "colgroup",
        "dd",
        "dfn",
        "div",
        "dl",
        "dt",
        "em",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "hr",
        "i",
        "img",
        "li",
        "ol",
        "p",
        "pre",
        "q",
        "samp",
        "small",
        "span",
        "strong",
        "sub",
        "sup",
        "table",
        "tbody",
        "td",
        "tfoot",
        "th",
        "thead",
        "tr",
        "tt",
        "ul",
        "var",
    ]
)
XHTML = "{http://www.w3.org/1999/xhtml}"
# Untrusted XHTML: no DTDs, no entities, no network, bounded tree.
_PARSER = etree.XMLParser(
    resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False
)
_SCRIPT_URL = re.compile(r"^\s*(javascript|vbscript|data):", re.IGNORECASE)
# An image may be inline, as a data: URL of an image type (R5's own generated narratives are full of them;
# https://hl7.org/fhir/R5/narrative.html); a data: URL anywhere else can carry markup and script.
_IMAGE_DATA = re.compile(r"^\s*data:image/[a-z0-9.+-]+[;,]", re.IGNORECASE)


def html_checks(div: Any) -> bool:
    """Return whether a narrative ``div`` is XHTML FHIR allows (txt-1) and has content (txt-2)."""
    if not isinstance(div, str):
        return False
    try:
        root = etree.fromstring(div.encode("utf-8"), _PARSER)
    except (etree.XMLSyntaxError, ValueError):
        return False
    docinfo = root.getroottree().docinfo
    if root.tag != f"{XHTML}div" or docinfo.doctype or docinfo.internalDTD is not None:
        return False
    for element in root.iter():
        if not isinstance(element.tag, str):  # comments pass; entities and processing instructions do not
            if isinstance(element, (etree._ProcessingInstruction, etree._Entity)):
                return False
            continue
        if not element.tag.startswith(XHTML) or element.tag[len(XHTML) :] not in NARRATIVE_ELEMENTS:
            return False
        for name, value in element.attrib.items():
            local = name.rsplit("}", 1)[-1].lower()
            if local.startswith("on") or (local in {"href", "src"} and _SCRIPT_URL.match(value)):
                inline_image = local == "src" and element.tag == f"{XHTML}img" and _IMAGE_DATA.match(value)
                if not inline_image:
                    return False
    has_text = any(text.strip() for text in root.itertext())  # some text that is not whitespace
    return has_text or root.find(f".//{XHTML}img") is not None


def _single(inputs: list[Any]) -> Any:
    return inputs[0] if len(inputs) == 1 else None


def _has_value(inputs: list[Any]) -> list[bool]:
    value = _single(inputs)
    return [len(inputs) == 1 and value is not None and not isinstance(value, (dict, list))]


def _html_checks(inputs: list[Any]) -> list[bool]:
    return [len(inputs) == 1 and html_checks(inputs[0])]


def _resolve(inputs: list[Any]) -> list[Any]:
    index = resolvable()
    out = []
    for item in inputs:
        reference = item.get("reference") if isinstance(item, dict) else item
        if isinstance(reference, str) and reference in index:
            target = index[reference]
            node = ResourceNode.create_node(target, str(target.get("resourceType")))  # type: ignore[no-untyped-call]
            out.append(node)
    return out


def _decimals(value: Any) -> int:
    text = format(value, "f") if isinstance(value, Decimal) else repr(value)
    return len(text.split(".", 1)[1]) if "." in text and "e" not in text.lower() else 0


class Bound(FP_Type):
    """The boundary of a Quantity: a number with its unit, ordered only against the same unit."""

    def __init__(self, value: Decimal, unit: tuple[Any, ...]) -> None:
        super().__init__()
        self.value = value
        self.unit = unit

    def compare(self, other: Any) -> int:  # type: ignore[override]  # fhirpathpy calls a0.compare(b0)
        """Order two boundaries of the same unit; boundaries of different units compare as equal.

        R5 invariants guard the ordering with ``comparable()``, so the result for different units never
        decides an outcome; fhirpathpy evaluates both sides of ``or``, so it must not fail either.
        """
        if not isinstance(other, Bound) or other.unit != self.unit:
            return 0
        return (self.value > other.value) - (self.value < other.value)


_DATE = re.compile(r"^(\d{4})(-(\d{2}))?(-(\d{2}))?(T[0-9:.]+)?(Z|[+-]\d{2}:\d{2})?$")
_MONTH_DAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)


def _date_boundary(text: str, sign: int) -> Any:
    match = _DATE.match(text)
    if match is None:
        return None
    year, month, day, time, zone = (
        match.group(1),
        match.group(3),
        match.group(5),
        match.group(6),
        match.group(7),
    )
    if month is None:
        month = "01" if sign < 0 else "12"
    if day is None:
        last = _MONTH_DAYS[int(month) - 1]
        if last == 29 and not (int(year) % 4 == 0 and (int(year) % 100 != 0 or int(year) % 400 == 0)):
            last = 28
        day = "01" if sign < 0 else f"{last:02d}"
    if time is None:
        time = "T00:00:00.000" if sign < 0 else "T23:59:59.999"
    return FP_DateTime(f"{year}-{month}-{day}{time}{zone or ''}")  # type: ignore[no-untyped-call]


def _boundary(value: Any, sign: int) -> Any:
    """The lowest (sign -1) or highest (sign +1) value a decimal, Quantity or date could stand for."""
    if isinstance(value, str):
        return _date_boundary(value, sign)
    if isinstance(value, FP_Quantity):  # fhirpathpy converts UCUM quantities itself
        number = _boundary(value.value, sign)
        return None if number is None else Bound(number, ("http://unitsofmeasure.org", value.unit.strip("'")))
    if isinstance(value, dict) and "value" in value:
        number = _boundary(value["value"], sign)
        unit = (value.get("system"), value.get("code")) if value.get("code") else (value.get("unit"),)
        return None if number is None else Bound(number, unit)
    if isinstance(value, bool) or not isinstance(value, (int, float, Decimal)):
        return None
    half = Decimal(5) * Decimal(10) ** -(_decimals(value) + 1)
    return Decimal(str(value)) + sign * half


def _low(inputs: list[Any], *_: Any) -> list[Any]:
    value = _boundary(_single(inputs), -1)
    return [] if value is None else [value]


def _high(inputs: list[Any], *_: Any) -> list[Any]:
    value = _boundary(_single(inputs), +1)
    return [] if value is None else [value]


def _comparable(inputs: list[Any], other: Any) -> list[bool]:
    theirs = other[0] if isinstance(other, list) and other else other
    theirs = getattr(theirs, "data", theirs)
    mine = _single(inputs)
    if isinstance(mine, Bound) and isinstance(theirs, Bound):
        return [mine.unit == theirs.unit]
    return [isinstance(mine, (int, float, Decimal)) and isinstance(theirs, (int, float, Decimal))]


USER_FUNCTIONS: dict[str, dict[str, Any]] = {
    "hasValue": {"fn": _has_value, "arity": {0: []}},
    "htmlChecks": {"fn": _html_checks, "arity": {0: []}},
    "resolve": {"fn": _resolve, "arity": {0: []}},
    "lowBoundary": {"fn": _low, "arity": {0: [], 1: ["Integer"]}},
    "highBoundary": {"fn": _high, "arity": {0: [], 1: ["Integer"]}},
    "comparable": {"fn": _comparable, "arity": {1: ["AnyAtRoot"]}},
}
OPTIONS = {"userInvocationTable": USER_FUNCTIONS, "traceFn": lambda label, value: None}


def compile_expression(expression: str, release: str = "5.0") -> Compiled:
    """Compile a FHIRPath expression once, against a release's model (R5's; R4B's for 4.3), with the above.

    A leading ``$this.`` is dropped: at the top of an expression ``$this`` is the focus
    (https://hl7.org/fhirpath/N1/#functions), which fhirpathpy sets only inside a function's argument
    (R5's sdf-26, ``$this.where(...)``, could not be evaluated).
    """
    if expression.startswith("$this."):
        expression = expression[len("$this.") :]
    model = models["r5"] if release == "5.0" else r4b_model()  # fhirpathpy has no R4B model of its own
    compiled: Compiled = fhirpathpy.compile(expression, model, OPTIONS)
    return compiled
