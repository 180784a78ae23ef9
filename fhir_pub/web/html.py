"""HTML for people: resource pages (narrative, links both ways), search results, errors, the landing page.

Narratives are shown only after passing the same XHTML check as txt-1 (otherwise as plain text), and
every HTML page carries a strict Content-Security-Policy.
"""

from __future__ import annotations

import html as html_lib
import re
from typing import Any
from urllib.parse import urlencode

import nh3
from flask import Request, Response, render_template
from markupsafe import Markup

from fhir_pub.graph import key_of
from fhir_pub.narrative import concept_text
from fhir_pub.provenance import in_document_order, sources_by_part
from fhir_pub.search.types.text import narrative_text
from fhir_pub.store import Store
from fhir_pub.validation.fhirpath import NARRATIVE_ELEMENTS, html_checks

CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'; base-uri 'self'; form-action 'none'"
)


# What a narrative may keep on a page: FHIR's narrative elements, their harmless attributes, web links.
# https://hl7.org/fhir/R5/narrative.html#xhtml
_ATTRIBUTES = {
    "*": {"class", "id", "title", "lang", "dir", "style"},
    "a": {"href", "name"},
    "img": {"src", "alt"},
    "td": {"colspan", "rowspan"},
    "th": {"colspan", "rowspan"},
}


def sanitized(div: str) -> str:
    """A narrative's XHTML rebuilt from an allow-list (nh3): no scripts, handlers or odd URL schemes."""
    return nh3.clean(
        div,
        tags=set(NARRATIVE_ELEMENTS),
        attributes=_ATTRIBUTES,
        url_schemes={"http", "https", "mailto"},
        clean_content_tags={"script", "style"},
    )


def security_headers(response: Response) -> Response:
    """No MIME sniffing anywhere; HTML pages also get a strict CSP and may not be framed."""
    response.headers["X-Content-Type-Options"] = "nosniff"
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = CSP
        response.headers["X-Frame-Options"] = "DENY"
        response.headers["Referrer-Policy"] = "no-referrer"
    return response


_HEADING = re.compile(r"<h3>(.*?)</h3>", re.DOTALL)


def _label(resource: dict[str, Any]) -> str:
    """A short name for a resource: its name or title, its code's text, its narrative heading, or Type/id."""
    for key in ("name", "title"):
        if isinstance(resource.get(key), str):
            return str(resource[key])
    if isinstance(resource.get("code"), dict) and concept_text(resource["code"]):
        return concept_text(resource["code"])
    text = resource.get("text")
    heading = (
        _HEADING.search(text.get("div", ""))
        if isinstance(text, dict) and isinstance(text.get("div"), str)
        else None
    )
    if heading:
        return html_lib.unescape(re.sub(r"<[^>]+>", "", heading.group(1)))
    return key_of(resource)


def _same_with(request: Request, fmt: str) -> str:
    pairs = [(k, v) for k, v in request.args.items(multi=True) if k != "_format"]
    return f"{request.base_url}?{urlencode([*pairs, ('_format', fmt)])}"


def resource_page(resource: dict[str, Any], base: str, store: Store) -> str:
    """A resource: its narrative, what it refers to, and what refers to it."""
    kind, rid = str(resource["resourceType"]), str(resource.get("id", ""))
    div = (resource.get("text") or {}).get("div") if isinstance(resource.get("text"), dict) else None
    outgoing = [(param, f"{base}/{t}/{i}", f"{t}/{i}") for param, t, i in store.references_from(kind, rid)]
    incoming = [(param, f"{base}/{t}/{i}", f"{t}/{i}") for param, t, i in store.references_to(kind, rid)]
    traced = sources_by_part(f"{kind}/{rid}", store.referrers(f"{kind}/{rid}"))
    sources = [
        (
            part or "the whole resource",
            [(f"{base}/{s['reference']}", str(s.get("display") or s["reference"])) for s in named],
        )
        for part, named in in_document_order(resource, traced)
    ]
    return render_template(
        "resource.html",
        title=f"{kind}: {_label(resource)}",
        base=base,
        home=base.rsplit("/fhir", 1)[0] + "/",
        self_url=f"{base}/{kind}/{rid}",
        history_url=f"{base}/{kind}/{rid}/_history" if rid else None,
        narrative=Markup(sanitized(div)) if isinstance(div, str) and html_checks(div) else None,
        narrative_text=narrative_text(resource),
        outgoing=outgoing,
        incoming=incoming,
        sources=sources,
    )


def bundle_page(bundle: dict[str, Any], base: str, request: Request) -> str:
    """Search results or a history: one row per entry, with the paging links."""
    rows = []
    for entry in bundle.get("entry", []):
        resource = entry.get("resource", {})
        mode = entry.get("search", {}).get("mode", "")
        summary = narrative_text(resource)[:160]
        rows.append((entry.get("fullUrl", ""), _label(resource), mode, summary))
    links = [(link["relation"], link["url"]) for link in bundle.get("link", [])]
    return render_template(
        "bundle.html",
        title=f"{bundle.get('type', 'bundle').capitalize()}: {request.path}",
        base=base,
        home=base.rsplit("/fhir", 1)[0] + "/",
        total=bundle.get("total"),
        rows=rows,
        links=links,
        json_url=_same_with(request, "json"),
        xml_url=_same_with(request, "xml"),
    )


def outcome_page(outcome: dict[str, Any], base: str) -> str:
    """An OperationOutcome, as a table of issues."""
    issues = [
        (
            i.get("severity"),
            i.get("code"),
            (i.get("details") or {}).get("text", ""),
            ", ".join(i.get("expression", [])),
        )
        for i in outcome.get("issue", [])
    ]
    return render_template(
        "outcome.html", title="OperationOutcome", home=base.rsplit("/fhir", 1)[0] + "/", issues=issues
    )


def page(document: dict[str, Any], base: str, request: Request, store: Store) -> str:
    """The HTML page for any FHIR document the API returns."""
    kind = document.get("resourceType")
    if kind == "Bundle":
        return bundle_page(document, base, request)
    if kind == "OperationOutcome":
        return outcome_page(document, base)
    return resource_page(document, base, store)


def landing(base: str, store: Store) -> str:
    """The landing page: the drugs and the documents the publication holds."""
    drugs = [
        (f"{base}/{r['resourceType']}/{r['id']}", _label(r)) for r in store.all_of("MedicationKnowledge")
    ]
    documents = []
    for document in store.all_of("DocumentReference"):
        titles = [c.get("attachment", {}).get("title") for c in document.get("content", [])]
        documents.append(
            (f"{base}/DocumentReference/{document['id']}", next((t for t in titles if t), document["id"]))
        )
    return render_template(
        "landing.html", title="fhir-pub", home="/", base=base, drugs=drugs, documents=documents
    )
