"""HTML for people: resource pages (narrative, links both ways), search results, errors, the landing page.

Narratives are shown only after passing the same XHTML check as txt-1 (otherwise as plain text), and
every HTML page carries a strict Content-Security-Policy: no scripts at all, forms only to this origin.
Everything else on a page is built from the FHIR JSON and autoescaped by Jinja.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

import nh3
import orjson
from flask import Blueprint, Request, Response, redirect, render_template, request
from markupsafe import Markup, escape
from werkzeug.exceptions import NotFound
from werkzeug.wrappers import Response as WerkzeugResponse

from fhir_pub.graph import key_of, links
from fhir_pub.handlers import BASE_SUFFIXES, VERSION_NAMES, FhirVersion
from fhir_pub.narrative import concept_text
from fhir_pub.provenance import in_document_order, sources_by_part
from fhir_pub.search.types.text import narrative_text
from fhir_pub.search.versions import R5_TYPES, served_type
from fhir_pub.store import Store
from fhir_pub.validation.fhirpath import NARRATIVE_ELEMENTS, html_checks

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)
SUMMARY = 160  # characters of a narrative shown in a search result, cut at a word


# What a narrative may keep on a page: FHIR's narrative elements, their harmless attributes, web links.
# https://hl7.org/fhir/R5/narrative.html#xhtml
_ATTRIBUTES = {
    "*": {"class", "id", "title", "lang", "dir", "style"},
    "a": {"href", "name"},
    "img": {"src", "alt"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}


def sanitized(div: str, renamed: Mapping[str, str] | None = None) -> str:
    """A narrative's XHTML rebuilt from an allow-list (nh3): no scripts, handlers or odd URL schemes.

    ``renamed`` maps an R5 type to a version's name of it (R4's ``Basic``): a relative link to
    ``ClinicalUseDefinition/x`` in a narrative, kept as it is in the converted resource, then leads to
    the resource as that version's base serves it.
    """

    def link(element: str, attribute: str, value: str) -> str:
        kind, slash, rest = value.partition("/")
        if renamed and attribute == "href" and slash and kind in renamed:
            return f"{renamed[kind]}/{rest}"
        return value

    return nh3.clean(
        div,
        tags=set(NARRATIVE_ELEMENTS),
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        clean_content_tags={"script", "style"},
        attribute_filter=link if renamed else None,
    )


def security_headers(response: Response) -> Response:
    """No MIME sniffing anywhere; HTML pages also get a strict CSP and may not be framed."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
    return response


def home_of(base: str) -> str:
    """The landing page's URL for a FHIR base (``https://example.org/fhir`` -> ``https://example.org/``).

    The base is the configured ``FHIR_PUB_BASE_URL`` when there is one, so the home link follows it.
    """
    if base.endswith("/fhir"):
        return base[: -len("/fhir")] + "/"
    parts = urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}/" if parts.netloc else "/"


_HEADING = re.compile(r"<h3>(.*?)</h3>", re.DOTALL)
_CODES = re.compile(r"\s*\((?:[a-z][a-z0-9+.-]*:[^\s()#]+#[^()]*)\)", re.IGNORECASE)


def _label(resource: Mapping[str, Any]) -> str:
    """A short name for a resource: its title or name, its code's text, its narrative heading, or Type/id."""
    for key in ("title", "name"):
        if isinstance(resource.get(key), str):
            return str(resource[key])
    # A Basic's code says what kind of thing it stands for (R4's clinical uses), not which one it is.
    if (
        resource.get("resourceType") != "Basic"
        and isinstance(resource.get("code"), dict)
        and concept_text(resource["code"])
    ):
        return concept_text(resource["code"])
    text = resource.get("text")
    heading = (
        _HEADING.search(text.get("div", ""))
        if isinstance(text, dict) and isinstance(text.get("div"), str)
        else None
    )
    if resource.get("resourceType") == "Provenance":
        return _provenance_label(resource)
    if heading:
        return html_lib.unescape(re.sub(r"<[^>]+>", "", heading.group(1)))
    return key_of(resource)


def _provenance_label(resource: Mapping[str, Any]) -> str:
    """``Provenance of <target>, from <source>``: a Provenance's own heading only says ``Provenance``."""

    def named(references: Iterable[Any]) -> list[str]:
        found = [
            str(r.get("display") or r.get("reference"))
            for r in references
            if isinstance(r, dict) and (r.get("display") or r.get("reference"))
        ]
        return list(dict.fromkeys(found))

    targets = named(resource.get("target", []))
    sources = named(e.get("what") for e in resource.get("entity", []) if isinstance(e, dict))
    label = f"Provenance of {'; '.join(targets) or key_of(resource)}"
    return f"{label}, from {'; '.join(sources)}" if sources else label


def shortened(text: str, limit: int = SUMMARY) -> str:
    """``text`` without the ``(system#code)`` notes narratives carry, cut at a word if it is long."""
    text = " ".join(_CODES.sub("", text).split())
    if len(text) <= limit:
        return text
    cut = text[: limit + 1].rsplit(" ", 1)[0].rstrip(" ,;:.-")
    return f"{cut} …"


class Served:
    """The publication as one FHIR version's base serves it: R5's resources, or the build's R4B or R4 forms.

    Keys are that version's (``Basic/x`` for an R4 clinical use); what the build indexed only in R5 (who
    refers to what, the Provenance of each part) is looked up by the R5 key and answered in the version's
    forms, so every link and title on a page stays on the base it was asked on.
    """

    def __init__(self, store: Store, fhir_version: FhirVersion = "5.0") -> None:
        self.store = store
        self.fhir_version = fhir_version
        self.renamed = {r5: name for name, r5 in R5_TYPES.get(fhir_version, {}).items()}

    @property
    def types(self) -> Collection[str]:
        """The resource types served at this version."""
        if self.fhir_version == "5.0":
            return self.store.types
        return self.store.converted_types(self.fhir_version)

    def r5_key(self, key: str) -> str:
        """The R5 key of one of this version's keys (``Basic/x`` -> ``ClinicalUseDefinition/x`` in R4)."""
        kind, slash, rid = key.partition("/")
        return f"{R5_TYPES.get(self.fhir_version, {}).get(kind, kind)}{slash}{rid}"

    def key(self, r5_key: str) -> str:
        """The key this version gives an R5 key."""
        kind, slash, rid = r5_key.partition("/")
        return f"{served_type(self.fhir_version, kind)}{slash}{rid}"

    def read(self, key: str) -> dict[str, Any] | None:
        """The resource ``Type/id`` in this version, or None."""
        kind, _, rid = key.partition("/")
        if not rid or "/" in rid:
            return None
        if self.fhir_version == "5.0":
            stored = self.store.read(kind, rid)
        else:
            stored = self.store.read_converted(self.fhir_version, kind, rid)
        return None if stored is None else dict(orjson.loads(stored.body))

    def r5(self, key: str) -> dict[str, Any] | None:
        """The R5 resource behind one of this version's keys."""
        kind, _, rid = self.r5_key(key).partition("/")
        stored = self.store.read(kind, rid) if rid and "/" not in rid else None
        return None if stored is None else dict(orjson.loads(stored.body))

    def referrers(self, key: str) -> list[dict[str, Any]]:
        """The resources referring to ``key``, in this version's forms, in the store's order."""
        found = list(self.store.referrers(self.r5_key(key)))
        if self.fhir_version == "5.0":
            return found
        keys = [(served_type(self.fhir_version, str(r["resourceType"])), str(r["id"])) for r in found]
        bodies = self.store.read_converted_many(self.fhir_version, keys)
        return [orjson.loads(bodies[k]) for k in keys if k in bodies]

    def count(self, kind: str) -> int | None:
        """How many resources of a type this version serves; None for a type it does not serve."""
        if kind not in self.types:
            return None
        if self.fhir_version == "5.0":
            return self.store.count((kind,))
        return self.store.count_converted(self.fhir_version, kind)


class Labels:
    """Titles of the resources a page names, read once each, as the page's version serves them."""

    def __init__(self, served: Served) -> None:
        self._served = served
        self._known: dict[str, str] = {}

    def __call__(self, key: str, display: str | None = None) -> str:
        """The title of ``Type/id``; ``display`` (or the key) when it is not in the publication."""
        if key not in self._known:
            found = self._served.read(key)
            if found is not None:
                self._known[key] = _label(found)
            else:
                return display or key
        return self._known[key]

    def seed(self, resource: Mapping[str, Any]) -> None:
        """Remember a resource already at hand (a search result) so it is not read again."""
        self._known[key_of(resource)] = _label(resource)


def _same_with(request: Request, fmt: str) -> str:
    pairs = [(k, v) for k, v in request.args.items(multi=True) if k != "_format"]
    return f"{request.base_url}?{urlencode([*pairs, ('_format', fmt)])}"


# --- pretty JSON, highlighted on the server (the CSP forbids scripts) ---

_JSON_TOKEN = re.compile(
    r'(?P<key>"(?:[^"\\]|\\.)*")(?=\s*:)|(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)'
    r"|(?P<bool>true|false)|(?P<null>null)|(?P<punc>[{}\[\],:])|(?P<space>\s+)"
)


def highlighted_json(document: Any) -> Markup:
    """``document`` as indented JSON, each token in a ``<span>`` classed by kind; every token escaped."""
    text = orjson.dumps(document, option=orjson.OPT_INDENT_2).decode()
    out: list[str] = []
    for match in _JSON_TOKEN.finditer(text):
        kind, token = match.lastgroup, match.group()
        if kind == "space":
            out.append(token)
        else:
            out.append(f'<span class="j-{kind}">{escape(token)}</span>')
    return Markup("".join(out))


# --- resource pages ---


def _references(resource: Mapping[str, Any], base: str, labels: Labels) -> list[tuple[str, str | None, str]]:
    """(element, URL or None, title) of every reference in a resource, in document order."""
    out: list[tuple[str, str | None, str]] = []
    for link in links(resource):
        reference = link.reference
        if "/" in reference and not reference.startswith(("#", "urn:")) and "://" not in reference:
            out.append((link.path, f"{base}/{reference}", labels(reference)))
        else:
            out.append((link.path, reference if "://" in reference else None, reference))
    return out


def _sources(served: Served, key: str, base: str) -> list[tuple[str, list[tuple[str, str]]]]:
    """Per part of a resource, the leaflets stating it, from its R5 Provenances (the build's record).

    A part is named by its R5 element path, which a converted form may place elsewhere; the page at R4B
    or R4 says so.
    """
    r5_key = served.r5_key(key)
    resource = served.r5(key)
    if resource is None:
        return []
    traced = sources_by_part(r5_key, served.store.referrers(r5_key))
    note = "" if served.fhir_version == "5.0" else " (R5 element)"
    return [
        (
            f"{part}{note}" if part else "the whole resource",
            [(f"{base}/{served.key(s['reference'])}", str(s.get("display") or s["reference"])) for s in by],
        )
        for part, by in in_document_order(resource, traced)
    ]


def resource_page(resource: dict[str, Any], base: str, served: Served) -> str:
    """A resource: its narrative, what it refers to and what refers to it (by title), its JSON."""
    kind, rid = str(resource["resourceType"]), str(resource.get("id", ""))
    labels = Labels(served)
    div = (resource.get("text") or {}).get("div") if isinstance(resource.get("text"), dict) else None
    outgoing = _references(resource, base, labels)
    incoming = []
    for referrer in served.referrers(f"{kind}/{rid}") if rid else ():
        labels.seed(referrer)
        key = key_of(referrer)
        incoming.append((str(referrer["resourceType"]), f"{base}/{key}", labels(key)))
    return _render(
        "resource.html",
        served,
        title=f"{kind}: {_label(resource)}",
        kind=kind,
        base=base,
        home=home_of(base),
        search_url=f"{base}/{kind}",
        self_url=f"{base}/{kind}/{rid}",
        history_url=f"{base}/{kind}/{rid}/_history" if rid else None,
        narrative=Markup(sanitized(div, served.renamed))
        if isinstance(div, str) and html_checks(div)
        else None,
        narrative_text=narrative_text(resource),
        outgoing=outgoing,
        incoming=incoming,
        sources=_sources(served, f"{kind}/{rid}", base) if rid else [],
        json=highlighted_json(resource),
    )


# --- search results: per type, the columns that matter ---

Cell = str | tuple[str, str]  # text, or (URL, text) for a link
Columns = list[tuple[str, Callable[[Mapping[str, Any], Labels, str], Cell]]]


def _concept(value: Any) -> str:
    """The text of a CodeableConcept or CodeableReference (its concept, else its reference's display)."""
    if not isinstance(value, dict):
        return ""
    if isinstance(value.get("concept"), dict):
        return concept_text(value["concept"])
    if isinstance(value.get("reference"), dict):
        return str(value["reference"].get("display") or value["reference"].get("reference") or "")
    return concept_text(value)


def _refs(values: Any, labels: Labels) -> str:
    items = values if isinstance(values, list) else [values] if isinstance(values, dict) else []
    named = [
        labels(str(v["reference"]), v.get("display"))
        if isinstance(v.get("reference"), str)
        else v.get("display")
        for v in items
        if isinstance(v, dict)
    ]
    return "; ".join(dict.fromkeys(str(n) for n in named if n))


def _status(resource: Mapping[str, Any]) -> str:
    status = resource.get("status")
    return concept_text(status) if isinstance(status, dict) else str(status or "")


def _use_of(resource: Mapping[str, Any]) -> str:
    """What a ClinicalUseDefinition is about: its effect, warning, indication or interaction."""
    if effect := resource.get("undesirableEffect"):
        return _concept(effect.get("symptomConditionEffect"))
    if warning := resource.get("warning"):
        return concept_text(warning.get("code")) or shortened(str(warning.get("description", "")))
    for part in ("indication", "contraindication"):
        if use := resource.get(part):
            return _concept(use.get("diseaseSymptomProcedure"))
    if interaction := resource.get("interaction"):
        items = [
            concept_text(i["itemCodeableConcept"]) if "itemCodeableConcept" in i else _concept(i.get("item"))
            for i in interaction.get("interactant", [])
        ]
        effect = _concept(interaction.get("effect"))
        return "; ".join(i for i in items if i) + (f" → {effect}" if effect else "")
    return ""


def _seriousness(resource: Mapping[str, Any]) -> str:
    return concept_text((resource.get("undesirableEffect") or {}).get("classification"))


def _summary(resource: Mapping[str, Any], labels: Labels, base: str) -> Cell:
    text = resource.get("description")
    if not isinstance(text, str):
        words = narrative_text(resource)
        heading = _label(resource)
        text = words[len(heading) :] if words.startswith(heading) else words
    return shortened(text)


def _title(resource: Mapping[str, Any], labels: Labels, base: str) -> Cell:
    return (f"{base}/{key_of(resource)}", _label(resource))


COLUMNS: dict[str, Columns] = {
    "ClinicalUseDefinition": [
        ("Resource", _title),
        ("Kind", lambda r, labels, base: str(r.get("type", ""))),
        ("Subject", lambda r, labels, base: _refs(r.get("subject"), labels)),
        ("Effect, warning or indication", lambda r, labels, base: _use_of(r)),
        ("Seriousness", lambda r, labels, base: _seriousness(r)),
        ("Status", lambda r, labels, base: _status(r)),
    ],
    "DocumentReference": [
        ("Document", _title),
        ("Type", lambda r, labels, base: concept_text(r.get("type"))),
        ("Author", lambda r, labels, base: _refs(r.get("author"), labels)),
        ("Custodian", lambda r, labels, base: _refs(r.get("custodian"), labels)),
        ("Status", lambda r, labels, base: _status(r)),
    ],
    "Provenance": [
        ("Provenance", lambda r, labels, base: (f"{base}/{key_of(r)}", key_of(r))),
        ("About", lambda r, labels, base: _refs(r.get("target"), labels)),
        (
            "Sources",
            lambda r, labels, base: _refs([e.get("what") for e in r.get("entity", [])], labels),
        ),
        ("Recorded", lambda r, labels, base: str(r.get("recorded", ""))),
    ],
    "Organization": [
        ("Organization", _title),
        ("Also known as", lambda r, labels, base: ", ".join(r.get("alias", []))),
        ("Summary", _summary),
    ],
    "Medication": [
        ("Medication", _title),
        # R5's doseForm; R4B's and R4's form
        ("Dose form", lambda r, labels, base: concept_text(r.get("doseForm") or r.get("form"))),
        ("Status", lambda r, labels, base: _status(r)),
    ],
    "MedicationKnowledge": [
        ("Medicine", _title),
        # R5's name; R4B's and R4's synonym
        ("Also called", lambda r, labels, base: ", ".join(r.get("name") or r.get("synonym") or [])),
        ("Status", lambda r, labels, base: _status(r)),
    ],
    "Group": [
        ("Group", _title),
        ("Type", lambda r, labels, base: str(r.get("type", ""))),
        ("Summary", _summary),
    ],
}
CANONICAL: Columns = [
    ("Name", _title),
    ("URL", lambda r, labels, base: str(r.get("url", ""))),
    ("Version", lambda r, labels, base: str(r.get("version", ""))),
    ("Status", lambda r, labels, base: _status(r)),
]
OTHER: Columns = [("Resource", _title), ("Status", lambda r, labels, base: _status(r)), ("Summary", _summary)]
for _kind in ("StructureDefinition", "ValueSet", "SearchParameter", "ImplementationGuide"):
    COLUMNS[_kind] = CANONICAL


def _offset(bundle: Mapping[str, Any]) -> int:
    """The page's first index, from its ``self`` link's ``_offset`` (0 when it has none)."""
    for link in bundle.get("link", []):
        if link.get("relation") == "self":
            values = parse_qs(urlsplit(str(link.get("url", ""))).query).get("_offset", ["0"])
            return int(values[0]) if values[0].isdigit() else 0
    return 0


def _paging(bundle: Mapping[str, Any], matches: int) -> str:
    """``21-27 of 27``: the page's place among the matches."""
    total, first = bundle.get("total"), _offset(bundle) + 1
    if matches == 0:
        return "No matches" if total in (None, 0) else f"{total} found, none on this page"
    span = f"{first}-{first + matches - 1}" if matches > 1 else str(first)
    return f"{span} of {total}" if total is not None else span


def bundle_page(bundle: dict[str, Any], base: str, request: Request, served: Served) -> str:
    """Search results or a history: a table per resource type with its columns, and the paging links."""
    labels = Labels(served)
    tables: dict[str, dict[str, Any]] = {}
    issues: list[tuple[str, str, str]] = []
    matches = 0
    entries = bundle.get("entry", [])
    for entry in entries:
        resource = entry.get("resource", {})
        labels.seed(resource)
    for entry in entries:
        resource = entry.get("resource", {})
        mode = entry.get("search", {}).get("mode", "")
        kind = str(resource.get("resourceType", ""))
        if mode == "outcome" or kind == "OperationOutcome":
            issues.extend(_issues(resource))
            continue
        matches += mode in ("match", "")
        columns = COLUMNS.get(kind, OTHER)
        table = tables.setdefault(kind, {"heads": [name for name, _ in columns], "rows": [], "modes": False})
        cells = [_cell(value(resource, labels, base)) for _, value in columns]
        table["rows"].append((cells, mode))
        table["modes"] = table["modes"] or mode not in ("match", "")
    relations = {link["relation"]: link["url"] for link in bundle.get("link", [])}
    asked = _asked_type(request, served)
    return _render(
        "bundle.html",
        served,
        title=f"{asked}: {bundle.get('type', 'bundle')}"
        if asked
        else f"{bundle.get('type', 'bundle')}: {request.path}",
        base=base,
        home=home_of(base),
        paging=_paging(bundle, matches),
        tables=tables,
        issues=issues,
        links=[(name, relations[rel]) for rel, name in PAGES if rel in relations],
        json_url=_same_with(request, "json"),
        xml_url=_same_with(request, "xml"),
    )


PAGES = [("first", "First"), ("previous", "Previous"), ("next", "Next"), ("last", "Last")]


def _cell(value: Cell) -> tuple[str | None, str]:
    return (value[0], value[1]) if isinstance(value, tuple) else (None, value)


def _asked_type(request: Request, served: Served) -> str | None:
    """The resource type a ``/fhir/{type}...`` (or ``/fhir/R4B/{type}...``) request names, if served."""
    parts = [p for p in request.path.split("/") if p]
    if parts[:1] != ["fhir"]:
        return None
    suffix = BASE_SUFFIXES.get(served.fhir_version, "")
    at = 2 if suffix and parts[1:2] == [suffix.strip("/")] else 1
    asked = parts[at] if len(parts) > at else None
    return asked if asked in served.types else None


# --- errors ---


def _issues(outcome: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    return [
        (
            str(i.get("severity", "")),
            str(i.get("code", "")),
            str((i.get("details") or {}).get("text", ""))
            + (f" ({', '.join(i['expression'])})" if i.get("expression") else ""),
        )
        for i in outcome.get("issue", [])
    ]


def outcome_page(
    outcome: dict[str, Any], base: str, kind: str | None = None, served: Served | None = None
) -> str:
    """An OperationOutcome, as a table of issues, with a way on: home, and the type's search if known."""
    return _render(
        "outcome.html",
        served,
        title="Something went wrong"
        if any(i[0] in ("error", "fatal") for i in _issues(outcome))
        else "Outcome",
        base=base,
        home=home_of(base),
        issues=_issues(outcome),
        kind=kind,
        search_url=f"{base}/{kind}" if kind else None,
    )


# --- the CapabilityStatement ---


def _documentation(kind: str, param: Mapping[str, Any], described: Mapping[str, str]) -> str:
    """A search parameter's documentation: the statement's, else its SearchParameter's for this type."""
    if param.get("documentation"):
        return str(param["documentation"])
    description = described.get(str(param.get("definition", "")), "")
    if description.startswith("Multiple Resources"):
        for line in description.splitlines():
            if line.startswith(f"* [{kind}]"):
                return line.split(":", 1)[1].strip() if ":" in line else ""
        return ""
    return " ".join(description.split())


def capability_page(statement: dict[str, Any], base: str, served: Served) -> str:
    """The CapabilityStatement as tables: per resource type its interactions and search parameters."""
    described = {
        str(p.get("url")): str(p.get("description", "")) for p in served.store.all_of("SearchParameter")
    }
    types = []
    for rest in statement.get("rest", []):
        for resource in rest.get("resource", []):
            kind = str(resource.get("type", ""))
            params = [
                (str(p.get("name", "")), str(p.get("type", "")), _documentation(kind, p, described))
                for p in resource.get("searchParam", [])
            ]
            types.append(
                {
                    "kind": kind,
                    "search_url": f"{base}/{kind}",
                    "count": served.count(kind),
                    "interactions": [str(i.get("code")) for i in resource.get("interaction", [])],
                    "operations": [str(o.get("name")) for o in resource.get("operation", [])],
                    "params": params,
                    "includes": resource.get("searchInclude", []),
                    "revincludes": resource.get("searchRevInclude", []),
                }
            )
    system = [
        (str(i.get("code")), "interaction")
        for rest in statement.get("rest", [])
        for i in rest.get("interaction", [])
    ] + [
        (f"${o.get('name')}", "operation")
        for rest in statement.get("rest", [])
        for o in rest.get("operation", [])
    ]
    facts = [
        ("Software", " ".join(str(v) for v in (statement.get("software") or {}).values())),
        ("FHIR version", str(statement.get("fhirVersion", ""))),
        ("Formats", ", ".join(statement.get("format", []))),
        ("Status", str(statement.get("status", ""))),
        ("Date", str(statement.get("date", ""))),
    ]
    return _render(
        "capability.html",
        served,
        title="CapabilityStatement",
        base=base,
        home=home_of(base),
        facts=[(name, value) for name, value in facts if value],
        system=system,
        types=types,
        json_url=f"{base}/metadata?_format=json",
    )


def page(
    document: dict[str, Any], base: str, request: Request, store: Store, fhir_version: FhirVersion = "5.0"
) -> str:
    """The HTML page for any FHIR document the API returns, in the FHIR version it was answered in."""
    served = Served(store, fhir_version)
    kind = document.get("resourceType")
    if kind == "Bundle":
        return bundle_page(document, base, request, served)
    if kind == "OperationOutcome":
        return outcome_page(document, base, _asked_type(request, served), served)
    if kind == "CapabilityStatement":
        return capability_page(document, base, served)
    return resource_page(document, base, served)


def _render(template: str, served: Served | None, **context: Any) -> str:
    """A page, its header naming the FHIR version it shows (R5 unless the page is at R4B or R4)."""
    name = VERSION_NAMES[served.fhir_version if served else "5.0"][0]
    return render_template(template, fhir_name=name, **context)


# --- the landing page, and the forms it submits ---


def search_forms(store: Store) -> list[dict[str, Any]]:
    """Per resource type the CapabilityStatement lists: its count and its search parameters."""
    statement = orjson.loads(store.capability)
    out = []
    for rest in statement.get("rest", []):
        for resource in rest.get("resource", []):
            kind = str(resource.get("type", ""))
            params = [(str(p["name"]), str(p.get("type", ""))) for p in resource.get("searchParam", [])]
            out.append(
                {
                    "kind": kind,
                    "count": store.count((kind,)) if kind in store.types else 0,
                    "params": sorted(params, key=lambda p: (p[0].startswith("_"), p[0])),
                }
            )
    return out


def landing(base: str, store: Store) -> str:
    """The landing page: every type with its count and a search form, the drugs and the documents."""
    drugs = [
        (f"{base}/{r['resourceType']}/{r['id']}", _label(r)) for r in store.all_of("MedicationKnowledge")
    ]
    documents = []
    for document in store.all_of("DocumentReference"):
        titles = [c.get("attachment", {}).get("title") for c in document.get("content", [])]
        documents.append(
            (f"{base}/DocumentReference/{document['id']}", next((t for t in titles if t), document["id"]))
        )
    home = home_of(base)
    return _render(
        "landing.html",
        None,
        title="fhir-pub",
        home=home,
        base=base,
        drugs=drugs,
        documents=documents,
        types=search_forms(store),
        form_action=f"{home}search/",
    )


blueprint = Blueprint("html", __name__)


@blueprint.get("/search/<kind>")
def search_form(kind: str) -> WerkzeugResponse:
    """A landing-page form, sent on as a FHIR search without the fields left empty (FHIR refuses those)."""
    from fhir_pub.web.formats import base_url  # formats imports this module
    from fhir_pub.web.state import app_state

    state = app_state()
    if kind not in state.store.types:
        raise NotFound(f"{kind[:64]} is not a resource type of this publication")

    pairs = _filled(request.args.items(multi=True))
    query = f"?{urlencode(pairs)}" if pairs else ""
    return redirect(f"{base_url(state.settings, request)}/{kind}{query}", code=303)


def _filled(pairs: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    return [(name, value) for name, value in pairs if value.strip()]
