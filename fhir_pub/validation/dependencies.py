"""What data a FHIRPath expression can read, so its results can be memoized on exactly that data.

Invariants are evaluated at thousands of elements with much the same content (the same ``dom-*`` checks
on every resource, ``ref-1`` on every Reference); fhirpathpy needs 30-150 us per evaluation. The parsed
expression tells which paths it navigates from the focus and from each ``%variable``; the result can only
depend on the data at those paths. Reads inside an iterating function (``where``, ``all``, ...) happen only
when that function's input is non-empty, so they are recorded with that input as a guard. Paths compared
with ``=`` or handed to ``descendants()``/``children()`` are read whole. Anything not understood makes the
expression opaque: it is then evaluated every time.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

Path = tuple[str, ...]  # first item: "" for the focus, or "%name" for an environment variable

ITERATING = {"where", "select", "all", "exists", "repeat", "aggregate", "any", "iif"}
PRESENCE = {"exists", "empty", "count"}
# fhirpathpy evaluates these functions' parameters on the current $this (or the focus), not on their input.
AT_ROOT = {
    "union",
    "exclude",
    "subsetOf",
    "supersetOf",
    "intersect",
    "combine",
    "comparable",
}  # without arguments, these look only at how many items there are
SUBSETTING = {"where", "first", "last", "tail", "skip", "take", "distinct", "single", "trace", "ofType", "as"}
WHOLE = {"descendants", "children", "repeat", "aggregate", "toString", "toJson", "encode"}
COMPARISONS = {"EqualityExpression", "MembershipExpression"}
TRANSPARENT = {
    "TermExpression",
    "InvocationTerm",
    "ParenthesizedTerm",
    "LiteralTerm",
}


@dataclass
class Reads:
    """The paths an expression reads: ``(path, guard, whole)``; ``opaque`` when analysis gave up.

    ``values`` are the paths whose values matter; a read path not in it is only tested for presence
    (``exists()``, ``empty()``, ``count()``) or navigated through, so its value need not be in a key.
    """

    paths: set[tuple[Path, Path | None, bool]] = field(default_factory=set)
    values: set[Path] = field(default_factory=set)
    uses_index: bool = False
    opaque: bool = False
    aliased_comparisons: set[tuple[str, str]] = field(default_factory=set)


class _Opaque(Exception):
    pass


def analyze(parsed: Mapping[str, Any]) -> Reads:
    """Return what the parsed expression (fhirpathpy's ``parsedPath``) reads."""
    reads = Reads()
    try:
        for child in parsed.get("children", []):
            _use(_visit(child, ("",), None, reads), reads)  # the result itself is a value
    except _Opaque:
        reads.opaque = True
    return reads


def _use(path: Path | None, reads: Reads) -> None:
    """Record that the value at ``path`` (not just its presence) decides the result."""
    if path is not None:
        reads.values.add(path)


def _text(node: Mapping[str, Any]) -> str:
    return str(node.get("text", ""))


def _identifier(node: Mapping[str, Any]) -> str:
    for child in node.get("children", []) or []:
        if child.get("type") == "Identifier":
            return _text(child).strip("`")
        found = _identifier(child)
        if found:
            return found
    return ""


def _visit(node: Mapping[str, Any], context: Path | None, guard: Path | None, reads: Reads) -> Path | None:
    """Record the reads of ``node`` evaluated on ``context``; return the path its value stands for, if any.

    A ``None`` context or result is a computed value (a literal, a function result, a resolved resource):
    it is determined by reads already recorded, so navigating from it records nothing.
    """
    kind = node.get("type")
    children = node.get("children", []) or []
    if kind in TRANSPARENT:
        return _visit(children[0], context, guard, reads) if children else None
    if kind in {
        "StringLiteral",
        "NumberLiteral",
        "BooleanLiteral",
        "NullLiteral",
        "DateTimeLiteral",
        "TimeLiteral",
        "QuantityLiteral",
        "DateLiteral",
        "TypeSpecifier",
        "Identifier",
    }:
        return None
    if kind == "ThisInvocation":
        return context
    if kind in {"IndexInvocation", "TotalInvocation"}:
        return None
    if kind == "ExternalConstantTerm":
        path = (f"%{_identifier(node)}",)
        reads.paths.add((path, guard, False))
        return path
    if kind == "MemberInvocation":
        return _member(context, _identifier(node), guard, reads)
    if kind == "InvocationExpression":
        left = _visit(children[0], context, guard, reads)
        invocation = children[1]
        if invocation.get("type") == "MemberInvocation":
            return _member(left, _identifier(invocation), guard, reads)
        if invocation.get("type") == "FunctionInvocation":
            return _function(invocation, left, context, guard, reads)
        return _visit(invocation, left, guard, reads)
    if kind == "FunctionInvocation":
        return _function(node, context, context, guard, reads)
    if kind == "IndexerExpression":
        left = _visit(children[0], context, guard, reads)
        _use(_visit(children[1], context, guard, reads), reads)
        return left
    if kind == "TypeExpression":
        left = _visit(children[0], context, guard, reads)
        _use(left, reads)
        if left is not None:
            reads.paths.add(((*left, "resourceType"), guard, False))
        return None
    if kind in COMPARISONS:
        sides = [_visit(child, context, guard, reads) for child in children]
        if kind == "EqualityExpression" and all(
            s is not None and len(s) == 1 and s[0].startswith("%") for s in sides
        ):
            reads.aliased_comparisons.add((sides[0][0], sides[1][0]))  # type: ignore[index]
            return None
        for side in sides:
            _use(side, reads)
            if side is not None:
                reads.paths.add((side, guard, True))
        return None
    if kind and kind.endswith("Expression"):
        for child in children:
            _use(_visit(child, context, guard, reads), reads)
        return None
    raise _Opaque(kind)


def _member(base: Path | None, name: str, guard: Path | None, reads: Reads) -> Path | None:
    if base is None:
        return None
    if name[:1].isupper() and base == ("",):  # a leading type name filters the focus on its type
        reads.paths.add((("", "resourceType"), guard, False))
        return base
    path = (*base, name)
    reads.paths.add((path, guard, False))
    return path


def _function(
    node: Mapping[str, Any], base: Path | None, context: Path | None, guard: Path | None, reads: Reads
) -> Path | None:
    name = _identifier(node)
    params = [
        c
        for child in node.get("children", []) or []
        for c in child.get("children", []) or []
        if c.get("type") == "ParamList"
    ]
    arguments = [arg for plist in params for arg in plist.get("children", []) or []]
    if base is None:  # a function of a computed value: root parameters may still read the focus
        for argument in arguments:
            _use(_visit(argument, context if name in AT_ROOT else None, guard, reads), reads)
        return None
    if not (name in PRESENCE and not arguments) and name not in SUBSETTING:
        _use(base, reads)
    if name in WHOLE:
        reads.paths.add((base, guard, True))
    if name == "resolve":
        reads.paths.add(((*base, "reference"), guard, False))
        reads.paths.add((base, guard, False))
        reads.uses_index = True
        return None
    if name in {"ofType", "is", "as"}:
        reads.paths.add(((*base, "resourceType"), guard, False))
    for argument in arguments:
        if name in ITERATING:  # evaluated once per input item, so only when there are items
            _use(_visit(argument, base, base, reads), reads)
        elif name in AT_ROOT:
            _use(_visit(argument, context, guard, reads), reads)
        else:  # evaluated on the function's input
            _use(_visit(argument, base, guard, reads), reads)
    return base if name in SUBSETTING else None


# -- keys ----------------------------------------------------------------------------------------


@dataclass
class Trie:
    """Read paths as a tree: ``whole`` keeps a subtree entire, ``value`` keeps a value, else presence only.

    (A class, not a dict with marker keys: a resource may use any string as a JSON key.)
    """

    children: dict[str, Trie] = field(default_factory=dict)
    whole: bool = False
    value: bool = False
    _by_key: dict[str, Trie | None] = field(default_factory=dict, repr=False, compare=False)

    def child(self, key: str) -> Trie | None:
        """The subtree a JSON key falls under (``_status``, ``valueRange``: their element's), if any."""
        found = self._by_key.get(key, self)
        if found is not self:
            return found
        sub = self.children.get(key)
        if sub is None and (key.startswith("_") or not key.islower()):
            sub = self.children.get(_base_name(key))
        if len(self._by_key) < KEYS_REMEMBERED:  # keys come from untrusted input: bounded
            self._by_key[key] = sub
        return sub


def _trie(paths: list[tuple[Path, bool, bool]]) -> Trie:
    root = Trie()
    for path, whole, value in paths:
        node = root
        for name in path[1:]:
            node = node.children.setdefault(name, Trie())
        node.whole = node.whole or whole
        node.value = node.value or value
    return root


def _base_name(key: str) -> str:
    """The element a JSON key belongs to: ``_status`` -> status, ``valueRange`` -> value (choice types)."""
    if key.startswith("_"):
        key = key[1:]
    for index in range(1, len(key)):
        if key[index].isupper():
            return key[:index]
    return key


KEYS_REMEMBERED = 1024


def restrict(data: Any, trie: Trie) -> Any:
    """Keep only the parts of ``data`` the trie names; presence-only leaves become ``True``."""
    if trie.whole:
        return data
    if isinstance(data, list):
        return [restrict(item, trie) for item in data]
    if not trie.value and not trie.children:
        if isinstance(data, (dict, list)):
            return True if data else data
        # What FHIRPath may count as absent or empty (None, "", 0, False) stays as it is.
        kind = type(data)
        return data if data is None or data is False or ((kind is str or kind is int) and not data) else True
    if isinstance(data, dict):
        out = {}
        for key, value in data.items():
            if key == "resourceType":
                out[key] = value
                continue
            sub = trie.child(key)
            if sub is not None:
                out[key] = restrict(value, sub)
        return out
    return data


def _present(data: Any, path: Path) -> bool:
    items = [data]
    for name in path[1:]:
        nxt: list[Any] = []
        for item in items:
            if isinstance(item, dict) and name in item:
                value = item[name]
                nxt.extend(value if isinstance(value, list) else [value])
        items = nxt
        if not items:
            return False
    return True


class Plan:
    """How to build the memo key of one expression, prepared once from its Reads."""

    def __init__(self, reads: Reads) -> None:
        self.reads = reads
        self.entries = sorted(reads.paths, key=lambda e: (e[0], e[1] or (), e[2]))
        self.guarded = any(guard is not None for _, guard, _ in self.entries)
        self._tries: dict[tuple[frozenset[int], tuple[tuple[str, str], ...]], list[tuple[str, Trie]]] = {}
        # Prepared once: the roots read (in order), the variables they need, every entry.
        self._roots = sorted({path[0] for path, _, _ in self.entries})
        self._needed = [root[1:] for root in self._roots if root]
        self._all = frozenset(range(len(self.entries)))
        self._comparisons = sorted(reads.aliased_comparisons)

    def _tries_for(
        self, active: frozenset[int], aliases: tuple[tuple[str, str], ...]
    ) -> list[tuple[str, Trie]]:
        key = (active, aliases)
        if key not in self._tries:
            alias = dict(aliases)
            by_root: dict[str, list[tuple[Path, bool, bool]]] = {}
            for index, (path, _, whole) in enumerate(self.entries):
                if index in active:
                    value = path in self.reads.values
                    by_root.setdefault(alias.get(path[0], path[0]), []).append((path, whole, value))
            self._tries[key] = [(root, _trie(paths)) for root, paths in sorted(by_root.items())]
        return self._tries[key]

    def key(self, focus: Any, variables: Mapping[str, Any], index_token: int) -> str | bytes | None:
        """The memo key of one evaluation: focus and variables cut to what can be read; None if opaque.

        orjson encodes it (several times faster than json), except where orjson is not exact: a ``null``
        may stand for NaN or an infinity, and integers beyond 64 bits are refused. Those keys come from
        json, as text; orjson's are bytes, so the two kinds never collide.
        """
        reads = self.reads
        if reads.opaque:
            return None

        def value_of(root: str) -> Any:
            return focus if root == "" else variables.get(root[1:])

        for name in self._needed:
            if name not in variables:
                return None
        if self.guarded:
            active = frozenset(
                i
                for i, (_, guard, _) in enumerate(self.entries)
                if guard is None or _present(value_of(guard[0]), guard)
            )
        else:
            active = self._all
        seen: dict[int, str] = {}
        aliases = []
        for root in self._roots:
            first = seen.setdefault(id(value_of(root)), root)
            if first != root:  # the same object under two names (%resource and %rootResource)
                aliases.append((root, first))
        parts: list[Any] = [[a, "=", b] for a, b in aliases]
        parts.extend(
            [root, restrict(value_of(root), trie)] for root, trie in self._tries_for(active, tuple(aliases))
        )
        for left, right in self._comparisons:
            parts.append([left, right, value_of(left) is value_of(right)])
        if reads.uses_index:
            parts.append(index_token)
        try:
            encoded = orjson.dumps(parts, default=str)
        except TypeError:  # orjson.JSONEncodeError is a TypeError
            encoded = b"null"
        if b"null" in encoded:
            return json.dumps(parts, default=str, separators=(",", ":"))
        return encoded
