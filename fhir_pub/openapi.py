"""The endpoint in OpenAPI 3.1, derived from its CapabilityStatement (no second source of truth).

The CapabilityStatement says which types, interactions, search parameters, includes and operations exist;
this module restates that in OpenAPI's terms so that generic HTTP tooling (schemathesis, Swagger UI, client
generators) can drive the API. Bodies are described loosely (a FHIR resource of the right type), because the
FHIR resource schemas are the StructureDefinitions' job, not this document's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FHIR_JSON = "application/fhir+json"
FHIR_XML = "application/fhir+xml"
# https://hl7.org/fhir/R5/datatypes.html#id
ID_PATTERN = r"^[A-Za-z0-9\-\.]{1,64}$"
# The result parameters every search takes (https://hl7.org/fhir/R5/search.html#return).
RESULT_PARAMETERS: dict[str, dict[str, Any]] = {
    "_count": {"type": "integer", "minimum": 0},
    "_offset": {"type": "integer", "minimum": 0},
    "_sort": {"type": "string"},
    "_summary": {"type": "string", "enum": ["true", "false", "text", "data", "count"]},
    "_total": {"type": "string", "enum": ["none", "estimate", "accurate"]},
    "_elements": {"type": "string"},
    "_format": {"type": "string", "enum": ["json", "xml", "html", FHIR_JSON, FHIR_XML]},
}
# https://hl7.org/fhir/uv/bulkdata/export.html#query-parameters
EXPORT_PARAMETERS = ("_outputFormat", "_since", "_type", "_typeFilter", "_elements")


def _resource(*types: str) -> dict[str, Any]:
    """The schema of a FHIR resource of one of ``types``."""
    return {
        "type": "object",
        "required": ["resourceType"],
        "properties": {"resourceType": {"type": "string", "enum": list(types)}},
    }


def _answer(description: str, schema: dict[str, Any], media: str = FHIR_JSON) -> dict[str, Any]:
    """A response: FHIR documents come as JSON, XML or HTML (``_format`` or ``Accept``)."""
    if media != FHIR_JSON:
        return {"description": description, "content": {media: {"schema": schema}}}
    return {
        "description": description,
        "content": {FHIR_JSON: {"schema": schema}, FHIR_XML: {}, "text/html": {}},
    }


# Every error is an OperationOutcome (4xx for the request's faults; 500 only for a failed export job).
ERRORS = {
    "4XX": _answer("The request was refused; the OperationOutcome says why.", _resource("OperationOutcome"))
}


def _candidate() -> dict[str, Any]:
    """A $validate body: any JSON document; what is wrong with it is the operation's answer (200)."""
    # https://hl7.org/fhir/R5/resource-operation-validate.html: the result is an OperationOutcome either way.
    return {"required": True, "content": {FHIR_JSON: {"schema": {}}, "application/json": {"schema": {}}}}


def _operation(summary: str, ok: dict[str, dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"summary": summary, "responses": {**ok, **ERRORS}, **extra}


def _query(name: str, schema: dict[str, Any], description: str = "") -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


def _path(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "path", "required": True, "schema": schema}


def _search_parameters(resource: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The query parameters of a type's search: its search parameters, includes and result parameters."""
    out = [
        _query(
            p["name"], {"type": "string"}, f"{p.get('type', '')} search parameter ({p.get('definition', '')})"
        )
        for p in resource.get("searchParam", [])
    ]
    for name, values in (("_include", "searchInclude"), ("_revinclude", "searchRevInclude")):
        if resource.get(values):
            out.append(_query(name, {"type": "string", "enum": list(resource[values])}))
    return out + [_query(name, schema) for name, schema in RESULT_PARAMETERS.items()]


def openapi(capability: Mapping[str, Any], base: str) -> dict[str, Any]:
    """The OpenAPI document of the endpoint with CapabilityStatement ``capability``, served at ``base``."""
    rest = capability["rest"][0]
    resources = rest.get("resource", [])
    bundle, outcome = _resource("Bundle"), _resource("OperationOutcome")
    resource_id, version_id = (
        _path("id", {"type": "string", "pattern": ID_PATTERN}),
        _path("vid", {"type": "string", "pattern": ID_PATTERN}),
    )
    paths: dict[str, Any] = {
        "/metadata": {
            "get": _operation(
                "The CapabilityStatement", {"200": _answer("The statement", _resource("CapabilityStatement"))}
            )
        },
        "/": {
            "get": _operation(
                "Search across types",
                {"200": _answer("A searchset Bundle", bundle)},
                parameters=[
                    _query("_type", {"type": "string"}, "Comma-separated resource types"),
                    *(_query(name, schema) for name, schema in RESULT_PARAMETERS.items()),
                ],
            )
        },
        "/_history": {
            "get": _operation("The history of every resource", {"200": _answer("A history", bundle)})
        },
    }
    operations = {o["name"] for o in rest.get("operation", [])}
    if "validate" in operations:
        paths["/$validate"] = {
            "post": _operation(
                "Validate a resource against its profiles",
                {"200": _answer("The validation result", outcome)},
                requestBody=_candidate(),
            )
        }
    if "export" in operations:
        paths["/$export"] = {
            "get": _operation(
                "Start a Bulk Data export (https://hl7.org/fhir/uv/bulkdata/export.html)",
                {"202": {"description": "Accepted; poll the Content-Location"}},
                parameters=[
                    {
                        "name": "Prefer",
                        "in": "header",
                        "required": True,
                        "schema": {"const": "respond-async"},
                    },
                    *(_query(name, {"type": "string"}) for name in EXPORT_PARAMETERS),
                ],
            )
        }
        paths["/$export-status/{job}"] = {
            "parameters": [_path("job", {"type": "string"})],
            "get": _operation(
                "An export's status, then its manifest",
                {
                    "200": _answer("The manifest", {"type": "object"}, "application/json"),
                    "202": {"description": "Still running (X-Progress, Retry-After)"},
                    "500": _answer("The export failed", outcome),
                },
            ),
            "delete": _operation(
                "Cancel an export and delete its files", {"202": {"description": "Deleted"}}
            ),
        }
        paths["/$export-file/{job}/{name}"] = {
            "parameters": [_path("job", {"type": "string"}), _path("name", {"type": "string"})],
            "get": _operation(
                "One exported file",
                {"200": {"description": "NDJSON", "content": {"application/fhir+ndjson": {}}}},
            ),
        }
    for resource in resources:
        kind = resource["type"]
        one = _resource(kind)
        parameters = _search_parameters(resource)
        paths[f"/{kind}"] = {
            "get": _operation(
                f"Search {kind}",
                {"200": _answer("A searchset Bundle", bundle)},
                parameters=parameters,
            )
        }
        # The format is negotiated by the query string or Accept, never by the body.
        form = {p["name"]: p["schema"] for p in parameters if p["name"] != "_format"}
        paths[f"/{kind}/_search"] = {
            "post": _operation(
                f"Search {kind} with a form body",
                {"200": _answer("A searchset Bundle", bundle)},
                requestBody={
                    "required": False,
                    "content": {
                        "application/x-www-form-urlencoded": {
                            "schema": {"type": "object", "properties": form}
                        }
                    },
                },
            )
        }
        paths[f"/{kind}/_history"] = {
            "get": _operation(f"The history of every {kind}", {"200": _answer("A history", bundle)})
        }
        read = {"200": _answer(f"The {kind}", one), "304": {"description": "Not modified (If-None-Match)"}}
        paths[f"/{kind}/{{id}}"] = {"parameters": [resource_id], "get": _operation(f"Read a {kind}", read)}
        paths[f"/{kind}/{{id}}/_history"] = {
            "parameters": [resource_id],
            "get": _operation(f"The history of one {kind}", {"200": _answer("A history", bundle)}),
        }
        paths[f"/{kind}/{{id}}/_history/{{vid}}"] = {
            "parameters": [resource_id, version_id],
            "get": _operation(f"Read one version of a {kind}", read),
        }
        if any(o["name"] == "validate" for o in resource.get("operation", [])):
            paths[f"/{kind}/$validate"] = {
                "post": _operation(
                    f"Validate a {kind}",
                    {"200": _answer("The validation result", outcome)},
                    requestBody=_candidate(),
                )
            }
    software = capability.get("software", {})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": capability.get("title", "FHIR server"),
            "version": software.get("version", "0"),
            "description": f"{capability.get('description', '')} Derived from {base}/metadata.",
        },
        "servers": [{"url": base}],
        "paths": paths,
    }
