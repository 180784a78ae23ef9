"""Content negotiation: ``_format`` wins over ``Accept``; JSON is stored, XML is rendered from it.

https://hl7.org/fhir/R5/http.html#mime-type; 406 when nothing acceptable can be produced.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import orjson
from fhir.resources import get_fhir_model_class
from flask import Request, Response, g
from lxml import etree
from pydantic import ValidationError
from werkzeug.datastructures import MIMEAccept
from werkzeug.http import parse_accept_header, parse_options_header

from fhir_pub.errors import Invalid, NotAcceptable
from fhir_pub.handlers import BASE_SUFFIXES, VERSION_NAMES, Answer, FhirVersion
from fhir_pub.settings import Settings
from fhir_pub.web import fhirxml, html
from fhir_pub.web.state import app_state


def base_url(settings: Settings, request: Request) -> str:
    """The public FHIR base URL: configured, or this request's."""
    return settings.base_url.rstrip("/") if settings.base_url else request.url_root.rstrip("/") + "/fhir"


FHIR_JSON = "application/fhir+json; charset=utf-8"
FHIR_XML = "application/fhir+xml; charset=utf-8"
HTML = "text/html; charset=utf-8"
# _format values (https://hl7.org/fhir/R5/http.html#parameters); "+" may arrive as a space.
FORMAT_VALUES = {
    "json": "json",
    "application/json": "json",
    "application/fhir+json": "json",
    "xml": "xml",
    "text/xml": "xml",
    "application/xml": "xml",
    "application/fhir+xml": "xml",
    "html": "html",
    "text/html": "html",
}
ACCEPTED = {
    "application/fhir+json": "json",
    "application/json": "json",
    "application/fhir+xml": "xml",
    "application/xml": "xml",
    "text/xml": "xml",
    "text/html": "html",  # a browser: it asks for HTML first
}


# https://hl7.org/fhir/R5/http.html#version-parameter: the FHIR versions this endpoint serves, as the
# fhirVersion media-type parameter names them (major.minor; a patch such as 5.0.0 names the same).
# R4B and R4 answer read, vread, search, history and metadata (the resources the build converted).
FHIR_VERSIONS: tuple[str, ...] = tuple(VERSION_NAMES)


def _version(params: dict[str, str]) -> str | None:
    """The fhirVersion a media type asks for, as major.minor (None when it names none)."""
    asked = params.get("fhirversion")
    if asked is None:
        return None
    return ".".join(asked.strip().split(".")[:2])


def _negotiate(request: Request) -> tuple[str, str | None]:
    """(format, fhirVersion asked for or None); NotAcceptable when nothing acceptable can be produced.

    Media types match by type and subtype whatever their parameters (clients send charset and
    fhirVersion), with q-values honoured; a type asking for a FHIR version not served is not acceptable.
    """
    fmt = request.args.get("_format")
    if fmt is not None:
        key, params = parse_options_header(fmt.replace(" ", "+"))
        if key not in FORMAT_VALUES:
            raise NotAcceptable(f"_format={fmt!r}: this server produces FHIR JSON or XML")
        version = _version(params)
        if version is not None and version not in FHIR_VERSIONS:
            raise NotAcceptable(_unserved(version))
        return FORMAT_VALUES[key], version
    header = request.headers.get("Accept")
    if not header:
        return "json", None
    best, version = best_match(header, list(ACCEPTED))
    return ACCEPTED[best], version


def best_match(header: str, produced: list[str]) -> tuple[str, str | None]:
    """The best of ``produced`` for an ``Accept`` header, and the fhirVersion asked with it.

    Media types match by type and subtype whatever their parameters, q-values honoured; one that asks
    for a FHIR version not served is not acceptable. NotAcceptable when none of ``produced`` is.
    """
    offered: list[tuple[str, float]] = []
    versions: dict[str, str | None] = {}
    unserved: list[str] = []
    for value, quality in parse_accept_header(header, MIMEAccept):
        mimetype, params = parse_options_header(value)
        version = _version(params)
        if version is not None and version not in FHIR_VERSIONS:
            unserved.append(version)
            continue
        offered.append((mimetype, quality))
        versions.setdefault(mimetype, version)
    best = MIMEAccept(offered).best_match(produced) if offered else None
    if best is None:
        if unserved:
            raise NotAcceptable(_unserved(unserved[0]))
        raise NotAcceptable(f"Accept: {header}: this server produces {', '.join(produced)}")
    return best, versions.get(best, versions.get("*/*"))


def asked_versions(request: Request) -> tuple[str, ...]:
    """The served FHIR versions a request accepts, most preferred first; () when it names none.

    A FHIR media type without ``fhirVersion`` accepts the server's default, R5 (5.0).
    """
    fmt = request.args.get("_format")
    if fmt is not None:
        version = _version(parse_options_header(fmt.replace(" ", "+"))[1])
        return (version,) if version in FHIR_VERSIONS else ()
    header = request.headers.get("Accept")
    if not header:
        return ()
    found: list[str] = []
    named = False
    for value, quality in sorted(parse_accept_header(header, MIMEAccept), key=lambda item: -item[1]):
        version = _version(parse_options_header(value)[1])
        named = named or version is not None
        version = version or "5.0"
        if quality > 0 and version in FHIR_VERSIONS and version not in found:
            found.append(version)
    return tuple(found) if named else ()


def preferences(request: Request) -> dict[str, str]:
    """The ``Prefer`` header's preferences, names and values lowercased.

    RFC 7240 compares names case-insensitively; the values read here (respond-async,
    handling=strict|lenient) are tokens.
    """
    return prefer(request.headers.getlist("Prefer"))


def prefer(headers: Iterable[str]) -> dict[str, str]:
    """The preferences of ``Prefer`` header values (a WSGI environ joins repeated ones with commas)."""
    found: dict[str, str] = {}
    for header in headers:
        for part in header.split(","):
            name, _, value = part.split(";", 1)[0].partition("=")
            if name.strip():
                found.setdefault(name.strip().lower(), value.strip().strip('"').lower())
    return found


def _unserved(version: str) -> str:
    served = ", ".join(f"fhirVersion={v}" for v in FHIR_VERSIONS)
    return f"FHIR version {version} is not served here; this endpoint serves {served} (FHIR R5, R4B, R4)"


def negotiated(request: Request) -> tuple[str, str | None]:
    """The request's format and asked-for FHIR version, negotiated once per request (kept in ``g``)."""
    found: tuple[str, str | None] | None = g.get("fhir_negotiated")
    if found is None:
        found = g.fhir_negotiated = _negotiate(request)
    return found


def preferred(request: Request) -> tuple[str, str | None]:
    """The negotiated format and version, falling back to JSON (errors must always be readable)."""
    try:
        return negotiated(request)
    except NotAcceptable:
        return "json", None


def _base_version(request: Request) -> FhirVersion:
    """The FHIR version of the base a request's path is under (``/fhir/R4B/...``); R5 otherwise."""
    for version, suffix in BASE_SUFFIXES.items():
        if request.path == f"/fhir{suffix}" or request.path.startswith(f"/fhir{suffix}/"):
            return version
    return "5.0"


def respond(answer: Answer, request: Request, headers: Mapping[str, str] | None = None) -> Response:
    """The one render of an answer: FHIR JSON as stored, pretty JSON, XML or HTML, as negotiated.

    A resource read carries its weak ETag, Last-Modified and Content-Location, and answers 304 to a
    client that has it. The format follows Accept, so a shared cache must key on it (RFC 9110 12.5.5).
    """
    response = Response(status=answer.status)
    response.headers.extend(answer.headers)
    if headers:
        response.headers.update(headers)
    if answer.location is not None:
        response.headers["Content-Location"] = answer.location
    if answer.media is not None:  # not a FHIR resource (a manifest, an empty 202): sent as it is
        response.set_data(answer.body)
        if answer.media:
            response.content_type = answer.media
        else:
            del response.headers["Content-Type"]
        return response
    fmt, asked = preferred(request)
    # The version served is said back when one was asked or is not R5; an error names none
    # (https://hl7.org/fhir/R5/versioning.html#mt-version).
    version = None
    if answer.status < 400 and (asked is not None or answer.fhir_version != "5.0"):
        version = answer.fhir_version
    response.vary.add("Accept")
    suffix = "" if version is None else f"; fhirVersion={version}"
    pretty = request.args.get("_pretty") == "true"
    if fmt == "json":
        body = (
            answer.body if not pretty else orjson.dumps(orjson.loads(answer.body), option=orjson.OPT_INDENT_2)
        )
        response.set_data(body)
        response.content_type = FHIR_JSON + suffix
    elif fmt == "xml":
        response.set_data(fhirxml.dumps(orjson.loads(answer.body), pretty, answer.fhir_version))
        response.content_type = FHIR_XML + suffix
    else:
        state = app_state()
        # A page at R4B or R4 links within that version's base: a browser cannot keep an Accept parameter.
        # An error page stays on the base it was asked at.
        at = answer.fhir_version if answer.status < 400 else _base_version(request)
        base = base_url(state.settings, request) + BASE_SUFFIXES.get(at, "")
        page = html.page(orjson.loads(answer.body), base, request, state.store, at)
        response.set_data(page)
        response.content_type = HTML
    if answer.version is not None:
        response.set_etag(answer.version, weak=True)
        if answer.last_modified is not None:
            response.last_modified = datetime.fromisoformat(answer.last_modified)
        response.make_conditional(request)
    return response


FHIR_NS = "{http://hl7.org/fhir}"


def _hardened() -> Any:
    """A parser for untrusted XML: no DTD loaded, no entity expanded, nothing fetched, no huge trees.

    lxml parsers are not shared between threads, so each body gets its own.
    """
    return etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, dtd_validation=False, huge_tree=False
    )


def resource_from_xml(data: bytes) -> dict[str, Any]:
    """A FHIR XML resource as FHIR JSON; 400 for anything with a DOCTYPE, entities, or not FHIR XML.

    FHIR XML is defined by its schema, never by a DTD (https://hl7.org/fhir/R5/xml.html), so a DOCTYPE
    is refused outright: that is where external entities (XXE) and entity expansion ("billion laughs")
    would come from (https://hl7.org/fhir/R5/security.html).
    """
    try:
        root = etree.fromstring(data, parser=_hardened())
    except etree.XMLSyntaxError as exc:
        raise Invalid(f"the body is not acceptable XML: {str(exc)[:200]}") from exc
    info = root.getroottree().docinfo
    if info.doctype or info.internalDTD is not None or any(True for _ in root.iter(etree.Entity)):
        raise Invalid("XML with a DOCTYPE or entity declarations is not accepted (FHIR XML has no DTD)")
    if not isinstance(root.tag, str) or not root.tag.startswith(FHIR_NS):
        raise Invalid("the XML root is not a FHIR resource (namespace http://hl7.org/fhir)")
    name = root.tag[len(FHIR_NS) :]
    try:
        model = get_fhir_model_class(name)
    except (KeyError, ValueError) as exc:
        raise Invalid(f"{name[:64]!r} is not an R5 resource type") from exc
    try:
        parsed = model.model_validate_xml(etree.tostring(root), xmlparser=_hardened())
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise Invalid(f"the XML is not a valid {name}: {where}: {first['msg']}", expression=name) from exc
    except Exception as exc:  # the XML reader's own failures (unknown elements ...) on untrusted input
        raise Invalid(f"the XML is not a valid {name} (an element or value it cannot read)") from exc
    resource: dict[str, Any] = orjson.loads(parsed.model_dump_json())
    return resource
