"""Parse a search query into a typed SearchRequest before anything runs (https://hl7.org/fhir/R5/search.html)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal, cast, get_args

from fhir_pub.search.parameters import Registry, SearchParam
from fhir_pub.search.syntax import InvalidSearch as InvalidSearch
from fhir_pub.search.syntax import split_unescaped as split_unescaped
from fhir_pub.search.syntax import unescape as unescape
from fhir_pub.search.types import TYPES, ParamType
from fhir_pub.search.types import Value as Value

DEFAULT_COUNT = 20
MAX_COUNT = 500  # https://hl7.org/fhir/R5/search.html#count: a larger _count gets at most this many
MAX_OFFSET = 10**9  # past the end of any publication: a larger _offset is an empty page, not an error
MAX_VALUE = 2048  # characters in one parameter value; longer is a 400 too-long (a denial of service guard)
MAX_OR = 100  # comma-separated alternatives in one parameter value; more is a 400 too-costly
Summary = Literal["true", "text", "data", "count"]  # _summary=false is no summary: None
Total = Literal["none", "estimate", "accurate"]
SUMMARY = (*get_args(Summary), "false")
TOTAL: tuple[Total, ...] = get_args(Total)
# Parameters the web layer handles (format negotiation) or that change nothing here.
IGNORED_HERE = frozenset({"_format", "_pretty"})
RESULT = frozenset(
    {"_sort", "_count", "_offset", "_include", "_revinclude", "_summary", "_elements", "_total"}
)


class TooLongValue(InvalidSearch):
    """A parameter value longer than this server reads (https://hl7.org/fhir/R5/valueset-issue-type.html)."""

    code = "too-long"


class TooManyValues(InvalidSearch):
    """More OR alternatives than this server runs in one parameter."""

    code = "too-costly"


class UnsupportedSearch(InvalidSearch):
    """A parameter or modifier this server does not support (rejected under ``handling=strict``)."""

    code = "not-supported"


@dataclass(frozen=True)
class Hop:
    """One step of a chain: forward along a reference parameter, or back from its source (``_has``)."""

    reverse: bool
    param: SearchParam  # a reference parameter of the source type
    source_type: str
    target_type: str


@dataclass(frozen=True)
class Filter:
    """One parameter occurrence: its definition, modifier and OR-values (occurrences are ANDed).

    With ``hops``, the parameter applies to the resource at the end of the chain
    (https://hl7.org/fhir/R5/search.html#chaining, #has).
    """

    name: str
    param: SearchParam
    modifier: str | None
    values: tuple[Value, ...]
    target_type: str | None = None  # reference: Type from ``subject:Medication=...`` or ``Type/id``
    hops: tuple[Hop, ...] = ()


@dataclass(frozen=True)
class Include:
    """``_include`` / ``_revinclude``: ``source_type:param[:target_type]``, or ``*``."""

    source_type: str
    param: str
    target_type: str | None
    iterate: bool
    reverse: bool


@dataclass(frozen=True)
class SearchRequest:
    """Everything a search asks, checked and typed."""

    types: tuple[str, ...]
    filters: tuple[Filter, ...] = ()
    sort: tuple[tuple[SearchParam, bool], ...] = ()  # (param, descending)
    count: int = DEFAULT_COUNT
    offset: int = 0
    includes: tuple[Include, ...] = ()
    summary: Summary | None = None
    elements: tuple[str, ...] | None = None
    total: Total = "accurate"
    ignored: tuple[tuple[str, str], ...] = field(default=())  # (parameter, why) under lenient handling


def _value(kind: ParamType, raw: str, name: str) -> Value:
    if raw == "":
        raise InvalidSearch(f"{name}: empty value in {raw!r}", expression=name)
    return kind.parse(raw, name)


MAX_HOPS = 4


def _hop_target(registry: Registry, param: SearchParam, explicit: str | None, leaf: str, key: str) -> str:
    """The type a chain continues in: given, or the only target type that has the next parameter."""
    if explicit:
        if param.targets and explicit not in param.targets:
            raise InvalidSearch(f"{key}: {param.code} cannot refer to {explicit}", expression=key)
        return explicit
    candidates = [
        t for t in param.targets if registry.get(t, leaf.split(":", 1)[0].split(".", 1)[0]) is not None
    ]
    if len(candidates) != 1:
        choices = ", ".join(candidates) or "none"
        message = f"{key}: say which type {param.code} refers to ({choices}), e.g. {param.code}:Type"
        raise InvalidSearch(message, expression=key)
    return candidates[0]


def _chained(
    resource_type: str, registry: Registry, key: str, value: str, ignored: list[tuple[str, str]], strict: bool
) -> Filter | None:
    """A chained (``a:Type.b``) or reverse-chained (``_has:Type:ref:b``) parameter, as hops plus a leaf."""
    hops: list[Hop] = []
    current, rest = resource_type, key
    while len(hops) <= MAX_HOPS:
        if rest.startswith("_has:"):
            parts = rest.split(":", 3)
            if len(parts) < 4 or not all(parts):
                raise InvalidSearch(f"{key}: expected _has:Type:reference:parameter", expression=key)
            _, source, via, rest = parts
            param = registry.get(source, via)
            if param is None or param.type != "reference":
                raise InvalidSearch(f"{key}: {via} is not a reference parameter of {source}", expression=key)
            if param.targets and current not in param.targets:
                raise InvalidSearch(f"{key}: {source}.{via} cannot refer to {current}", expression=key)
            hops.append(Hop(True, param, source, current))
            current = source
        elif "." in rest:
            head, rest = rest.split(".", 1)
            name, _, explicit = head.partition(":")
            param = registry.get(current, name)
            if param is None or param.type != "reference":
                raise InvalidSearch(
                    f"{key}: {name} is not a reference parameter of {current}", expression=key
                )
            target = _hop_target(registry, param, explicit or None, rest, key)
            hops.append(Hop(False, param, current, target))
            current = target
        else:
            leaf = _filter(current, registry, rest, value, ignored, strict)
            if leaf is None:
                return None
            return Filter(key, leaf.param, leaf.modifier, leaf.values, leaf.target_type, tuple(hops))
    raise InvalidSearch(f"{key}: chains of more than {MAX_HOPS} steps are not supported", expression=key)


def _filter(
    resource_type: str, registry: Registry, key: str, value: str, ignored: list[tuple[str, str]], strict: bool
) -> Filter | None:
    name, _, modifier = key.partition(":")
    param = registry.get(resource_type, name)
    kind = TYPES.get(param.type) if param is not None else None
    if param is None or kind is None or not kind.offers(param):
        reason = f"{name} is not a search parameter of {resource_type} here"
        if strict:
            raise UnsupportedSearch(reason, expression=key)
        ignored.append((key, reason))
        return None
    target_type = None
    mod: str | None = modifier or None
    if mod and kind.type_modifier and mod[:1].isupper():
        if param.targets and mod not in param.targets:
            raise InvalidSearch(f"{key}: {name} cannot refer to {mod}", expression=key)
        target_type, mod = mod, None
    elif mod and mod not in kind.modifiers:
        # https://hl7.org/fhir/R5/search.html#modifiers: an unsupported modifier SHALL be rejected
        raise UnsupportedSearch(
            f"{key}: modifier :{mod} is not supported on {param.type} parameters", expression=key
        )
    if mod == "missing":
        if value not in {"true", "false"}:
            raise InvalidSearch(f"{key}={value!r}: :missing takes true or false", expression=key)
        return Filter(name, param, mod, (Value(value, code=value),))
    raws = split_unescaped(value, ",")
    if len(raws) > MAX_OR:
        raise TooManyValues(
            f"{key}: {len(raws)} alternatives; at most {MAX_OR} per parameter", expression=key
        )
    return Filter(name, param, mod, tuple(_value(kind, raw, key) for raw in raws), target_type)


def whole_number(name: str, value: str, high: int) -> int:
    """A non-negative whole number in ASCII digits, any length, capped at ``high``; else a 400."""
    if not re.fullmatch(r"[0-9]+", value):
        raise InvalidSearch(f"{name}={value!r}: expected a whole number of at least 0", expression=name)
    return min(int(value), high)


def _includes(key: str, value: str, types: Sequence[str], reverse: bool, registry: Registry) -> Include:
    """One include, which must name a reference parameter of its source type that can apply here.

    Without :iterate, an ``_include`` starts from the searched types' resources, and a ``_revinclude``'s
    parameter must be able to refer to one of them (https://hl7.org/fhir/R5/search.html#include): any
    other value could never include anything, so it is a bad value (400), not a silent no-op.
    """
    iterate = key.endswith(":iterate")
    if value == "*":
        return Include("*", "*", None, iterate, reverse)
    parts = value.split(":")
    if len(parts) not in (2, 3) or not all(parts):
        raise InvalidSearch(f"{key}={value!r}: expected SourceType:parameter[:TargetType]", expression=key)
    source, code, target = parts[0], parts[1], parts[2] if len(parts) == 3 else None
    param = registry.get(source, code)
    if param is None or param.type != "reference":
        raise InvalidSearch(
            f"{key}={value!r}: {source} has no reference search parameter {code}", expression=key
        )
    if target is not None and param.targets and target not in param.targets:
        raise InvalidSearch(f"{key}={value!r}: {source}:{code} does not refer to a {target}", expression=key)
    if not iterate and not reverse and source not in types:
        message = (
            f"{key}={value!r}: this search finds {', '.join(types)}; include from {source} with :iterate"
        )
        raise InvalidSearch(message, expression=key)
    reach = [target] if target is not None else param.targets
    if not iterate and reverse and reach and not set(reach) & set(types):
        message = f"{key}={value!r}: {source}:{code} never refers to {' or '.join(types)}"
        raise InvalidSearch(message, expression=key)
    return Include(source, code, target, iterate, reverse)


def parse(
    types: Sequence[str], query: Sequence[tuple[str, str]], registry: Registry, *, strict: bool = False
) -> SearchRequest:
    """Turn ``(name, value)`` pairs into a SearchRequest for ``types`` (one, or several with ``_type``)."""
    ignored: list[tuple[str, str]] = []
    filters: list[Filter] = []
    sort: list[tuple[SearchParam, bool]] = []
    includes: list[Include] = []
    count, offset, elements = DEFAULT_COUNT, 0, None
    summary: Summary | None = None
    total: Total = "accurate"
    search_type = types[0] if len(types) == 1 else "Resource"
    for key, value in query:
        name = key.split(":", 1)[0]
        if len(value) > MAX_VALUE or len(key) > MAX_VALUE:
            raise TooLongValue(f"{key[:64]}: values longer than {MAX_VALUE} characters are not read")
        if name in IGNORED_HERE or name == "_type":
            continue
        if name == "_count":
            count = whole_number(key, value, MAX_COUNT)
        elif name == "_offset":
            offset = whole_number(key, value, MAX_OFFSET)
        elif name == "_summary":
            if value not in SUMMARY:
                raise InvalidSearch(
                    f"_summary={value!r}: expected one of {', '.join(SUMMARY)}", expression=key
                )
            summary = None if value == "false" else cast(Summary, value)
        elif name == "_total":
            if value not in TOTAL:
                raise InvalidSearch(f"_total={value!r}: expected one of {', '.join(TOTAL)}", expression=key)
            total = value
        elif name == "_elements":
            elements = tuple(e.strip() for e in value.split(",") if e.strip())
        elif name in {"_include", "_revinclude"}:
            if key not in {name, f"{name}:iterate"}:
                raise UnsupportedSearch(f"{key}: only :iterate is supported", expression=key)
            includes.append(_includes(key, value, types, name == "_revinclude", registry))
        elif name == "_sort":
            for item in value.split(","):
                descending = item.startswith("-")
                code = item[1:] if descending else item
                param = registry.get(search_type, code)
                kind = TYPES.get(param.type) if param is not None else None
                if param is None or kind is None or kind.sort is None:
                    reason = f"_sort: {code!r} is not a sortable parameter of {search_type}"
                    if strict:
                        raise UnsupportedSearch(reason, expression=key)
                    ignored.append((f"_sort={item}", reason))
                    continue
                sort.append((param, descending))
        elif name == "_has" or "." in key:
            found = _chained(search_type, registry, key, value, ignored, strict)
            if found is not None:
                filters.append(found)
        elif name.startswith("_") and registry.get(search_type, name) is None:
            reason = f"{name} is not supported by this server"
            if strict:
                raise UnsupportedSearch(reason, expression=key)
            ignored.append((key, reason))
        else:
            found = _filter(search_type, registry, key, value, ignored, strict)
            if found is not None:
                filters.append(found)
    return SearchRequest(
        tuple(types),
        tuple(filters),
        tuple(sort),
        count,
        offset,
        tuple(includes),
        summary,
        elements,
        total,
        tuple(ignored),
    )
