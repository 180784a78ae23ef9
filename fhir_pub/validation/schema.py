"""Compile StructureDefinition differentials into JSON Schema (2020-12); read jsonschema errors as issues.

A profile's schema is the R5 structure of its type (from the fhir.resources models) with the profile's
rules laid over the elements they constrain: cardinality, fixed and pattern values, required and
extensible bindings to enumerable value sets, reference target types, and slices discriminated by value.
Datatype profiles (``kind = complex-type``) apply to every element of their type, through ``$defs``.
Subschemas that carry no rule are pruned: jsonschema pays for every subschema it descends into.

Every rule carries an ``x-rule`` annotation (key, severity, issue code, human message) next to the
keyword that checks it, so an error can be reported as a person would state it.
https://hl7.org/fhir/R5/elementdefinition.html, https://json-schema.org/draft/2020-12
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import jsonschema
import orjson

from fhir_pub.conformance import R5_BASE, VERIFIED_CODES, Conformance
from fhir_pub.definitions import elements, is_backbone
from fhir_pub.validation.issues import Issue, Severity

Schema = dict[str, Any]
FIXED_PREFIXES = ("fixed", "pattern")
STRENGTH_SEVERITY = {"required": "error", "extensible": "warning"}


@dataclass
class _Node:
    """The differential elements of one element path, with nested children and named slices."""

    element: dict[str, Any] | None = None
    children: dict[str, _Node] = field(default_factory=dict)
    slices: dict[str, _Node] = field(default_factory=dict)

    def empty(self) -> bool:
        return self.element is None and not self.children and not self.slices


def _tree(differential: list[dict[str, Any]]) -> _Node:
    """Arrange differential elements by their ids (``A.b:slice.c``) into a tree."""
    root = _Node()
    for element in differential:
        node = root
        for part in element["id"].split(".")[1:]:
            name, _, slice_name = part.partition(":")
            node = node.children.setdefault(name, _Node())
            if slice_name:
                node = node.slices.setdefault(slice_name, _Node())
        node.element = element
    return root


def _value_of(element: dict[str, Any], prefix: str) -> tuple[str, Any] | None:
    for key, value in element.items():
        if key.startswith(prefix) and key[len(prefix) : len(prefix) + 1].isupper():
            return key, value
    return None


def _pattern_schema(value: Any) -> Schema:
    """Schema for a FHIR pattern: objects match on the listed properties, arrays contain each item."""
    if isinstance(value, dict):
        return {
            "type": "object",
            "required": sorted(value),
            "properties": {k: _pattern_schema(v) for k, v in value.items()},
        }
    if isinstance(value, list):
        return {"type": "array", "allOf": [{"contains": _pattern_schema(v)} for v in value]}
    return {"const": value}


def _add(schema: Schema, checks: list[Schema]) -> None:
    """Append checks to a schema's ``allOf`` (JSON Schema forbids an empty ``allOf``)."""
    if checks:
        schema.setdefault("allOf", []).extend(checks)


def _rule(key: str, severity: str, code: str, human: str) -> dict[str, str]:
    return {"key": key, "severity": severity, "code": code, "human": human}


class ProfileCompiler:
    """Compiles the profiles of one Conformance registry; shares datatype ``$defs`` across a schema."""

    def __init__(self, conformance: Conformance) -> None:
        self.conformance = conformance
        self.notes: list[str] = []
        self._defs: dict[str, Schema] = {}  # datatype definitions do not depend on the resource profile

    def compile(self, profile: dict[str, Any]) -> Schema:
        """Return the JSON Schema document for a resource profile."""
        self._profile = profile
        type_name = profile["type"]
        root = _tree(profile.get("differential", {}).get("element", []))
        body = self._object(type_name, root, type_name, overlay_only=False)
        body["properties"]["resourceType"] = {"const": type_name}
        defs = _prune_defs(self._defs)
        flattener = _Flattener(defs)
        body = flattener.flatten(_prune(body, defs) or {})
        defs = {name: flattener.flatten(defs[name]) for name in sorted(flattener.cyclic)}
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": profile["url"] + ".schema.json",
            "title": f"{profile.get('title') or profile['name']} (generated from {profile['url']})",
            **body,
            "$defs": defs,
        }

    # -- structure -------------------------------------------------------------------------------

    def _ref(self, type_name: str) -> Schema:
        """A reference to the shared definition of a datatype or backbone, generating it on first use."""
        if type_name not in self._defs:
            self._defs[type_name] = {}  # placeholder: recursive types refer to themselves
            datatype = self.conformance.datatype_profiles.get(type_name)
            node = _tree(datatype["differential"]["element"]) if datatype else _Node()
            self._defs[type_name] = self._object(type_name, node, type_name, overlay_only=False)
        return {"$ref": f"#/$defs/{type_name}"}

    def _object(
        self, type_name: str, node: _Node, path: str, *, overlay_only: bool, own_rules: bool = True
    ) -> Schema:
        """Schema of an object of ``type_name`` (``overlay_only``: just what ``node`` constrains)."""
        properties: Schema = {}
        checks: list[Schema] = []
        for name, info in elements(type_name).items():
            child = node.children.get(name)
            if overlay_only and child is None:
                continue
            child_path = f"{path}.{name}"
            item = self._item(info.type_name, info.is_primitive, child, child_path, overlay_only)
            prop: Schema
            prop = ({"items": item} if item else {}) if info.is_list else item
            if child is not None and child.element is not None:
                checks.extend(self._cardinality(name, info.is_list, child.element, child_path, prop))
            if child is not None and child.slices:
                _add(prop, list(self._slices(info.type_name, child, child_path)))
                needed = [s for s, n in child.slices.items() if int((n.element or {}).get("min", 0)) > 0]
                if needed and not int((child.element or {}).get("min", 0)):
                    human = f"{child_path} is required: slice '{needed[0]}' needs at least one entry"
                    checks.append(
                        {
                            "required": [name],
                            "x-rule": _rule(f"{child_path}:{needed[0]}", "error", "required", human),
                        }
                    )
            if prop:
                properties[name] = prop
        schema: Schema = {"properties": properties}
        _add(schema, checks)
        if own_rules and node.element is not None:
            _add(schema, self._value_rules(type_name, node.element, path))
        return schema

    def _item(
        self, type_name: str, primitive: bool, node: _Node | None, path: str, overlay_only: bool
    ) -> Schema:
        """Schema of one value of an element (one item when the element repeats)."""
        rules = self._value_rules(type_name, node.element, path) if node is not None and node.element else []
        if primitive:
            return {"allOf": rules} if rules else {}
        if type_name in {"Resource", "DomainResource"}:
            return {}
        nested_overlay = node is not None and (node.children or node.slices)
        if is_backbone(type_name) and nested_overlay:
            assert node is not None
            inline = self._object(type_name, node, path, overlay_only=False)
            _add(inline, rules)
            return inline
        # An overlay lies over an object its type's definition already checks (the parent's ``$ref``):
        # referring to the definition again would check every rule in it twice, and report each failure
        # twice (a Coding with an unverified code, under a sliced ``coding``).
        parts: list[Schema] = [] if overlay_only else [self._ref(type_name)]
        if nested_overlay:
            assert node is not None
            parts.append(self._object(type_name, node, path, overlay_only=True, own_rules=False))
        parts.extend(rules)
        return parts[0] if len(parts) == 1 else {"allOf": parts}

    # -- rules -----------------------------------------------------------------------------------

    def _cardinality(
        self, name: str, is_list: bool, element: dict[str, Any], path: str, prop: Schema
    ) -> Iterator[Schema]:
        """Checks on the parent object for an element's ``min``/``max`` (array limits go on ``prop``)."""
        low = int(element.get("min", 0))
        high = element.get("max", "*")
        if low > 0:
            yield {
                "required": [name],
                "x-rule": _rule(f"{path}.min", "error", "required", f"{path} is required (at least {low})"),
            }
        if high == "0":
            yield {
                "not": {"required": [name]},
                "x-rule": _rule(
                    f"{path}.max", "error", "structure", f"{path} is not allowed in this profile"
                ),
            }
            return
        if is_list and (low > 1 or high not in {"*", None}):
            limits: Schema = {}
            if low > 1:
                limits["minItems"] = low
            if high not in {"*", None}:
                limits["maxItems"] = int(high)
            human = f"{path} must occur {low}..{high} times"
            _add(prop, [{**limits, "x-rule": _rule(f"{path}.cardinality", "error", "structure", human)}])

    def _value_rules(self, type_name: str, element: dict[str, Any], path: str) -> list[Schema]:
        """Rules on one value: fixed and pattern values, binding, reference targets."""
        rules: list[Schema] = []
        for prefix in FIXED_PREFIXES:
            found = _value_of(element, prefix)
            if found is None:
                continue
            key, value = found
            schema = {"const": value} if prefix == "fixed" else _pattern_schema(value)
            # A pattern on a primitive is an exact value, as fixed is:
            # https://hl7.org/fhir/R5/elementdefinition-definitions.html#ElementDefinition.pattern_x_
            exact = prefix == "fixed" or not isinstance(value, (dict, list))
            human = f"{path} must be {value!r}" if exact else f"{path} must match the pattern {value!r}"
            rules.append({**schema, "x-rule": _rule(f"{path}.{key}", "error", "value", human)})
        binding = element.get("binding")
        if binding and binding.get("strength") in STRENGTH_SEVERITY and binding.get("valueSet"):
            rule = self._binding(type_name, binding, path)
            if rule:
                rules.append(rule)
        targets = [t for ty in element.get("type", []) for t in ty.get("targetProfile", [])]
        if targets and type_name in {"Reference", "CodeableReference"}:
            rules.append(self._targets(type_name, targets, path))
        return rules

    def _binding(self, type_name: str, binding: dict[str, Any], path: str) -> Schema | None:
        url = binding["valueSet"]
        codes = self.conformance.expand(url)
        if codes is None:
            self.notes.append(
                f"{path}: value set {url} cannot be enumerated here; its binding is not checked"
            )
            return None
        strength = binding["strength"]
        severity = STRENGTH_SEVERITY[strength]
        pairs = sorted(codes)
        systems: dict[str, list[str]] = {}
        for system, code in pairs:
            systems.setdefault(system, []).append(code)
        coding = {
            "anyOf": [
                {"required": ["system", "code"], "properties": {"system": {"const": s}, "code": {"enum": c}}}
                for s, c in sorted(systems.items(), key=lambda item: (-len(item[1]), item[0]))
            ]
        }
        human = f"{path} must use a code from {url} ({strength} binding)"
        rule = _rule(f"{path}.binding", severity, "code-invalid", human)
        if type_name == "Coding" and self.conformance.draws_on(url, VERIFIED_CODES):
            rule["verified"] = url  # the failing Coding is named in the message (_issue)
        if type_name in {"code", "string", "uri"}:
            return {"enum": sorted({c for _, c in pairs}), "x-rule": rule}
        if type_name == "Coding":
            return {**coding, "x-rule": rule}
        concept: Schema = {"properties": {"coding": {"contains": coding}}}
        if strength == "required":
            concept["required"] = ["coding"]
        else:  # extensible: text alone is allowed when no code fits, but a coded concept must use the set
            concept = {"if": {"required": ["coding"]}, "then": concept}
        if type_name == "CodeableConcept":
            return {**concept, "x-rule": rule}
        if type_name == "CodeableReference":
            return {"properties": {"concept": concept}, "x-rule": rule}
        return None

    def _targets(self, type_name: str, targets: list[str], path: str) -> Schema:
        types = sorted({self._profile_type(t) for t in targets})
        alternatives = "|".join(map(re.escape, types))
        pattern = rf"^({alternatives})/[A-Za-z0-9\-.]{{1,64}}(/_history/[A-Za-z0-9\-.]{{1,64}})?$"
        reference: Schema = {"properties": {"reference": {"pattern": pattern}}}
        schema = reference if type_name == "Reference" else {"properties": {"reference": reference}}
        human = f"{path} must refer to {' or '.join(types)}"
        return {**schema, "x-rule": _rule(f"{path}.targetProfile", "error", "invalid", human)}

    def _profile_type(self, url: str) -> str:
        if url.startswith(R5_BASE):
            return url[len(R5_BASE) :]
        profile = self.conformance.by_url.get(url)
        if profile is None:
            self.notes.append(f"target profile {url} is unknown")
            return url.rsplit("/", 1)[-1]
        return str(profile["type"])

    def _slices(self, type_name: str, node: _Node, path: str) -> Iterator[Schema]:
        """Slices of a repeating element, discriminated by value (``discriminator.type`` value or pattern)."""
        slicing = (node.element or {}).get("slicing", {})
        discriminators = [
            d["path"] for d in slicing.get("discriminator", []) if d.get("type") in {"value", "pattern"}
        ]
        matchers: list[Schema] = []
        for name, slice_node in node.slices.items():
            match = self._slice_match(slice_node, discriminators)
            matchers.append(match)
            element = slice_node.element or {}
            low, high = int(element.get("min", 0)), element.get("max", "*")
            if low > 0 or high not in {"*", None}:
                limits: Schema = {"contains": match, "minContains": low}
                if high not in {"*", None}:
                    limits["maxContains"] = int(high)
                human = f"{path} must hold {low}..{high} entries of slice '{name}'"
                yield {**limits, "x-rule": _rule(f"{path}:{name}", "error", "structure", human)}
            inner = (
                self._object(type_name, slice_node, f"{path}:{name}", overlay_only=True)
                if slice_node.children
                else None
            )
            rules = self._value_rules(type_name, element, f"{path}:{name}")
            if (inner is not None and inner.get("properties")) or rules:
                then = {"allOf": [s for s in [inner, *rules] if s]}
                yield {"items": {"if": match, "then": then}}
        if slicing.get("rules") == "closed" and matchers:
            human = f"{path} allows only the slices {', '.join(node.slices)}"
            yield {
                "items": {"anyOf": matchers},
                "x-rule": _rule(f"{path}.slicing", "error", "structure", human),
            }

    def _slice_match(self, node: _Node, discriminators: list[str]) -> Schema:
        properties: Schema = {}
        for discriminator in discriminators:
            child = node.children.get(discriminator)
            found = None
            if child is not None and child.element is not None:
                found = _value_of(child.element, "fixed") or _value_of(child.element, "pattern")
            if found is None:
                self.notes.append(f"slice discriminator {discriminator} has no fixed value")
                continue
            properties[discriminator] = {"const": found[1]}
        return {"required": sorted(properties), "properties": properties}


def _prune_defs(defs: dict[str, Schema]) -> dict[str, Schema]:
    """Drop the rule-free parts of every definition, and the definitions left empty (to a fixed point)."""
    live = dict(defs)
    while True:
        pruned = {name: _prune(schema, live) for name, schema in live.items()}
        kept = {name: schema for name, schema in pruned.items() if schema}
        if kept.keys() == live.keys() and kept == live:
            return kept
        live = kept


def _prune(schema: Schema, defs: dict[str, Schema]) -> Schema | None:
    """Return ``schema`` without subschemas that check nothing, or None if nothing is left to check."""
    if "$ref" in schema:
        return schema if schema["$ref"].rsplit("/", 1)[-1] in defs else None
    out: Schema = {}
    for key, value in schema.items():
        if key in {"properties"}:
            props = {name: p for name, sub in value.items() if (p := _prune(sub, defs))}
            if props:
                out[key] = props
        elif key in {"items", "not", "if", "then", "contains"}:
            sub = _prune(value, defs) if isinstance(value, dict) else value
            if sub is not None:
                out[key] = sub
            elif key in {"not", "contains", "if"}:
                out[key] = {}
        elif key in {"allOf", "anyOf"}:
            subs = [p for sub in value if (p := _prune(sub, defs)) is not None]
            if key == "anyOf" or subs:
                out[key] = subs if key == "allOf" else [_prune(sub, defs) or {} for sub in value]
        else:
            out[key] = value
    if set(out) == {"allOf"} and len(out["allOf"]) == 1:
        return dict(out["allOf"][0])  # a lone branch checks the same without one more descent
    meaningful = set(out) - {"x-rule", "type"}
    return out if meaningful else None


def _refs(schema: Any) -> set[str]:
    """The names of the definitions a schema refers to, directly."""
    if isinstance(schema, dict):
        found = {schema["$ref"].rsplit("/", 1)[-1]} if "$ref" in schema else set()
        for value in schema.values():
            found |= _refs(value)
        return found
    if isinstance(schema, list):
        return set().union(*(_refs(v) for v in schema)) if schema else set()
    return set()


class _Flattener:
    """Inline ``$ref`` to definitions off any reference cycle, and merge rule-free ``allOf`` branches.

    jsonschema pays for each reference lookup and each subschema it descends into; the flat schema checks
    the same rules with fewer of both. Every datatype reaches every other through ``extension``, so the
    cycles are cut at the most-referenced definitions (Extension first), which stay referenced; every other
    definition is flattened once and shared.
    """

    def __init__(self, defs: dict[str, Schema]) -> None:
        self.defs = defs
        self._edges = {name: _refs(schema) & set(defs) for name, schema in defs.items()}
        self.cyclic: set[str] = set()
        while on_cycle := {name for name in defs if name not in self.cyclic and self._reaches(name)}:
            indegree = {name: sum(name in self._edges[other] for other in on_cycle) for name in on_cycle}
            self.cyclic.add(max(sorted(on_cycle), key=lambda name: indegree[name]))
        self._done: dict[str, Schema] = {}

    def _reaches(self, start: str) -> bool:
        """Whether ``start`` reaches itself without passing through a definition kept as a reference."""
        seen: set[str] = set()
        todo = list(self._edges[start])
        while todo:
            current = todo.pop()
            if current == start:
                return True
            if current not in seen and current not in self.cyclic:
                seen.add(current)
                todo.extend(self._edges[current])
        return False

    def flatten(self, schema: Any) -> Any:
        """The flat form of one schema."""
        if isinstance(schema, list):
            return [self.flatten(item) for item in schema]
        if not isinstance(schema, dict):
            return schema
        if "$ref" in schema and len(schema) == 1:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name in self.cyclic or name not in self.defs:
                return schema
            if name not in self._done:
                self._done[name] = self.flatten(self.defs[name])
            return self._done[name]
        out = {k: (v if k in {"x-rule", "const", "enum"} else self.flatten(v)) for k, v in schema.items()}
        if "allOf" in out:
            kept = []
            for branch in out.pop("allOf"):
                if _mergeable(branch, out):
                    _merge_into(out, branch)
                else:
                    kept.append(branch)
            if kept:
                out["allOf"] = kept
        return out


def _mergeable(branch: Any, into: Schema) -> bool:
    """A branch without its own rule annotation whose keywords the parent can absorb."""
    if not isinstance(branch, dict) or "x-rule" in branch or "$ref" in branch:
        return False
    return all(key in {"properties", "items"} or key not in into for key in branch)


def _merge_into(into: Schema, branch: Schema) -> None:
    for key, value in branch.items():
        if key == "properties" and "properties" in into:
            merged = dict(into["properties"])
            for name, sub in value.items():
                merged[name] = sub if name not in merged else {"allOf": [merged[name], sub]}
            into["properties"] = merged
        elif key == "items" and "items" in into:
            into["items"] = {"allOf": [into["items"], value]}
        else:
            into[key] = value


def fhirpath_of(root: str, location: deque[str | int] | list[str | int]) -> str:
    """Turn a JSON location (keys and indexes) into a FHIRPath expression."""
    out = root
    for part in location:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


# Per profile: (subschema, value) pairs found valid. Parts repeat mostly among neighbours (a drug's own
# resources), so a small memo, cleared when full, hits as often as a large one (measured on bench/corpus.py
# publications) and costs a few MiB. Keys are serialized values (a narrative is kilobytes): bounded in
# bytes too.
MEMO_LIMIT = 1_000
MEMO_BYTES = 256 << 10


class _ValidMemo:
    """The (subschema, value) pairs one profile's schema found valid, so they are not checked again.

    A subschema's verdict on a value depends on nothing else: our schemas have a single ``$id`` (every
    ``$ref`` resolves the same wherever it is met) and no ``$dynamicRef`` or ``unevaluated*``. FHIR
    resources repeat their parts (codings, references, meta, whole elements), and a valid part yields no
    error, so skipping it changes nothing; a part that fails is always checked again, so every error and
    its path is what plain jsonschema reports. The key is the subschema's identity and the value's orjson
    bytes, which are one-to-one for JSON values; a value they do not represent exactly (``null``, which
    NaN also becomes; a key that is not a string; an integer beyond 64 bits) is never memoized.
    """

    def __init__(self) -> None:
        self.valid: set[tuple[int, bytes]] = set()
        self.size = 0
        memo = self

        # jsonschema's own keywords (jsonschema/_keywords.py), with the memo around each descent.
        def properties(validator: Any, properties: Schema, instance: Any, schema: Schema) -> Any:
            if not validator.is_type(instance, "object"):
                return
            for name, subschema in properties.items():
                if name in instance:
                    yield from memo.descend(validator, instance[name], subschema, name, name)

        def items(validator: Any, items: Any, instance: Any, schema: Schema) -> Any:
            if not validator.is_type(instance, "array") or items is False or schema.get("prefixItems"):
                yield from plain_items(validator, items, instance, schema)
                return
            for index, item in enumerate(instance):
                yield from memo.descend(validator, item, items, index, None)

        base = jsonschema.Draft202012Validator
        plain_items = base.VALIDATORS["items"]
        keywords = {"properties": properties, "items": items}
        self.cls = jsonschema.validators.extend(base, keywords)  # type: ignore[no-untyped-call]

    def key(self, subschema: Any, value: Any) -> tuple[int, bytes] | None:
        """The memo key of ``value`` under ``subschema``; None when it cannot be exact."""
        try:
            encoded = orjson.dumps(value)
        except TypeError:  # orjson.JSONEncodeError: a key that is not a string, a huge integer ...
            return None
        return None if b"null" in encoded else (id(subschema), encoded)

    def descend(self, validator: Any, value: Any, subschema: Any, path: Any, schema_path: Any) -> Any:
        """``validator.descend``, skipped for a pair found valid before."""
        key = self.key(subschema, value)
        if key is not None and key in self.valid:
            return
        errors = list(validator.descend(value, subschema, path=path, schema_path=schema_path))
        if key is not None and not errors:
            self.add(key)
        yield from errors

    def add(self, key: tuple[int, bytes]) -> None:
        """Remember a valid pair (forgetting everything when full: a new drug repeats its own parts)."""
        if len(self.valid) >= MEMO_LIMIT or self.size >= MEMO_BYTES:
            self.valid.clear()
            self.size = 0
        self.valid.add(key)
        self.size += len(key[1])


class _Part:
    """One jsonschema validator over a (sub)schema, reporting issues at paths below ``prefix``."""

    def __init__(self, schema: Schema, memo: _ValidMemo | None = None) -> None:
        self.schema = schema
        self.memo = memo
        self._validator = (memo.cls if memo is not None else jsonschema.Draft202012Validator)(schema)

    def issues(self, instance: Any, prefix: list[str | int], root: str, source: str | None) -> list[Issue]:
        """The issues of ``instance``; none, without checking, for a value this part found valid before."""
        memo = self.memo
        key = memo.key(self.schema, instance) if memo is not None else None
        if memo is not None and key is not None and key in memo.valid:
            return []
        found: list[Issue] = []
        for error in self._validator.iter_errors(instance):
            found.extend(self._issues_of(error, prefix, root, source))
        if memo is not None and key is not None and not found:
            memo.add(key)
        return found

    def _rule_of(self, error: jsonschema.ValidationError) -> dict[str, str] | None:
        """The innermost ``x-rule`` on the way from this schema to the failing keyword."""
        node: Any = self.schema
        rule = node.get("x-rule")
        for step in error.absolute_schema_path:
            if isinstance(node, dict) and "$ref" in node and step not in node:
                node = self.schema["$defs"][node["$ref"].rsplit("/", 1)[-1]]
            try:
                node = node[step]
            except (KeyError, IndexError, TypeError):
                break
            if isinstance(node, dict) and "x-rule" in node:
                rule = node["x-rule"]
        return rule  # type: ignore[no-any-return]

    def _issues_of(
        self, error: jsonschema.ValidationError, prefix: list[str | int], root: str, source: str | None
    ) -> Iterator[Issue]:
        if error.validator == "allOf":  # the failing branch reports itself
            for sub in error.context or []:
                yield from self._issues_of(sub, prefix, root, source)
            return
        yield _issue(error, self._rule_of(error), prefix, root, source)


def _only_keys(branch: Any) -> bool:
    """A root check that looks only at which keys a resource has (``required``, ``not required``)."""
    if not isinstance(branch, dict) or not set(branch) <= {"required", "not", "x-rule"}:
        return False
    return "not" not in branch or (isinstance(branch["not"], dict) and set(branch["not"]) <= {"required"})


class SchemaValidator:
    """Checks resources against one compiled profile schema and reports issues.

    ``properties`` applies each subschema to its element's value alone, so a resource is checked element
    by element: the root checks which elements are present (memoized on the set of names), and every part
    found valid is remembered (see :class:`_ValidMemo`).
    """

    def __init__(self, schema: Schema, *, check: bool = False) -> None:
        if check:  # 0.4 s per profile: the tests and ``fhir-pub schemas`` do it, not every start-up
            jsonschema.Draft202012Validator.check_schema(schema)
        self.schema = schema
        extra = set(schema) - {"$schema", "$id", "title", "$defs", "properties"}
        self._split = extra <= {"allOf"} and all(_only_keys(b) for b in schema.get("allOf", []))
        memo = _ValidMemo()
        defs = schema.get("$defs", {})
        whole = {k: v for k, v in schema.items() if k != "properties"} if self._split else schema
        self._root = _Part(whole, memo)
        self._parts = {
            name: _Part({**sub, "$defs": defs}, memo) for name, sub in schema.get("properties", {}).items()
        }
        self._valid_names: set[frozenset[str]] = set()  # the root checks only which names are present

    def issues(self, resource: dict[str, Any], source: str | None) -> list[Issue]:
        """Return the issues of ``resource`` against this schema."""
        root = str(resource.get("resourceType", "Resource"))
        if not self._split:
            return self._root.issues(resource, [], root, source)
        names = frozenset(resource)
        found = [] if names in self._valid_names else self._root.issues(resource, [], root, source)
        if not found and len(self._valid_names) < MEMO_LIMIT:
            self._valid_names.add(names)
        for name, value in resource.items():
            part = self._parts.get(name)
            if part is not None:
                found.extend(part.issues(value, [name], root, source))
        return found


def _issue(
    error: jsonschema.ValidationError,
    rule: dict[str, str] | None,
    prefix: list[str | int],
    root: str,
    source: str | None,
) -> Issue:
    where: list[str | int] = [*prefix, *error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        wanted: list[str] = error.validator_value if isinstance(error.validator_value, list) else []
        missing = [name for name in wanted if name not in error.instance]
        where = [*where, missing[0]] if missing else where
    expression = fhirpath_of(root, where)
    if rule is None:
        return Issue(
            "error", "structure", f"{expression}: {error.message}", expression, source, None, "profile"
        )
    severity: Severity = "warning" if rule["severity"] == "warning" else "error"
    message = rule["human"]
    if (
        "verified" in rule
        and isinstance(error.instance, dict)
        and isinstance(error.instance.get("code"), str)
    ):
        message = unverified_code(error.instance.get("system"), error.instance["code"])
    return Issue(severity, rule["code"], message, expression, source, rule["key"], "profile")


def unverified_code(system: Any, code: str) -> str:
    """The message for a Coding whose code is not in the verified codes: the code, its system, the remedy."""
    named = f"system {system}" if isinstance(system, str) else "no system"
    return (
        f"code {code!r} ({named}) is not a verified code; if it is right, add it to verified-codes.json "
        "of your project with its display and source"
    )
