"""Content negotiation: ``_format`` wins over ``Accept``; JSON is stored, XML is rendered from it.

https://hl7.org/fhir/R5/http.html#mime-type; 406 when nothing acceptable can be produced.
"""

from __future__ import annotations

import orjson
from flask import Request, Response, current_app

from fhir_pub.errors import NotAcceptable
from fhir_pub.settings import Settings
from fhir_pub.web import fhirxml, html


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


def requested(request: Request) -> str:
    """``json``, ``xml`` or ``html``, as the request asks; NotAcceptable for anything else."""
    fmt = request.args.get("_format")
    if fmt is not None:
        key = fmt.split(";", 1)[0].strip().replace(" ", "+")
        if key not in FORMAT_VALUES:
            raise NotAcceptable(f"_format={fmt!r}: this server produces FHIR JSON or XML")
        return FORMAT_VALUES[key]
    if not request.accept_mimetypes:
        return "json"
    best = request.accept_mimetypes.best_match(list(ACCEPTED))
    if best is None:
        raise NotAcceptable(f"Accept: {request.headers.get('Accept')}: this server produces FHIR JSON or XML")
    return ACCEPTED[best]


def preferred(request: Request) -> str:
    """The format to answer in, falling back to JSON (for errors, which must always be readable)."""
    try:
        return requested(request)
    except NotAcceptable:
        return "json"


def render(response: Response, request: Request) -> Response:
    """Turn a FHIR JSON response into the negotiated format (and pretty form); leave others alone."""
    if response.mimetype != "application/fhir+json" or response.direct_passthrough or not response.data:
        return response
    fmt = preferred(request)
    pretty = request.args.get("_pretty") == "true"
    if fmt == "json" and not pretty:
        return response
    document = orjson.loads(response.get_data())
    if fmt == "html":
        state = current_app.extensions["fhir_pub"]
        response.set_data(html.page(document, base_url(state["settings"], request), request, state["store"]))
        response.content_type = HTML
    elif fmt == "json":
        response.set_data(orjson.dumps(document, option=orjson.OPT_INDENT_2))
    else:
        response.set_data(fhirxml.dumps(document, pretty))
        response.content_type = FHIR_XML
    response.vary.add("Accept")
    return response
