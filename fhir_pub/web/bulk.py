"""Bulk Data export over HTTP: kick-off, status, files, cancel (https://hl7.org/fhir/uv/bulkdata/STU2/export.html).

The kick-off needs ``Prefer: respond-async`` (400 without it, as the IG requires); a missing ``Accept``,
``*/*`` or ``application/json`` is taken as ``application/fhir+json``, any other media type is 406.
"""

from __future__ import annotations

import math
import re
import threading
import zlib
from collections.abc import Iterator
from email.utils import formatdate
from pathlib import Path
from typing import Any

import orjson
from flask import Blueprint, Response, request, send_file

from fhir_pub.errors import Gone, Invalid, NotFound, NotSupported, TooManyRequests
from fhir_pub.export import OUTPUT_FORMATS, ExportRequest, check_type_filters, parse_instant
from fhir_pub.handlers import Answer
from fhir_pub.jobs import ACTIVE, JobStore
from fhir_pub.settings import Settings
from fhir_pub.validation.issues import Issue, operation_outcome
from fhir_pub.web import formats
from fhir_pub.web.state import app_state

blueprint = Blueprint("bulk", __name__)
SUPPORTED = {"_outputFormat", "_since", "_type", "_elements", "_typeFilter"}
_TYPE_FILTER_SPLIT = re.compile(r",(?=[A-Z][A-Za-z]+\?)")
FILE_NAME = re.compile(r"^[A-Za-z]+\.ndjson(\.gz)?$")


def uncached(path: str) -> bool:
    """Bulk export URLs: job state changes as it runs, and files are streamed; no response cache."""
    return "$export" in path


def _settings() -> Settings:
    return app_state().settings


def jobs() -> JobStore:
    """The job store of this app."""
    settings = _settings()
    root = settings.jobs_dir if settings.jobs_dir is not None else settings.cache_dir / "jobs"
    return JobStore(root, settings.export_expiry, settings.export_max_jobs, app_state().clock)


def _parameters() -> list[tuple[str, str]]:
    if request.method == "GET":
        return list(request.args.items(multi=True))
    if not request.get_data():
        return list(request.args.items(multi=True))
    try:
        body = orjson.loads(request.get_data())
    except orjson.JSONDecodeError as exc:
        raise Invalid(f"the kick-off body is not JSON: {exc.msg}") from exc
    if not isinstance(body, dict) or body.get("resourceType") != "Parameters":
        raise Invalid("a POST kick-off takes a Parameters resource")
    parameters = body.get("parameter", [])
    if not isinstance(parameters, list):
        raise Invalid("Parameters.parameter must be a list", expression="Parameters.parameter")
    pairs = []
    for parameter in parameters:
        if not isinstance(parameter, dict) or "name" not in parameter:
            raise Invalid("each parameter needs a name", expression="Parameters.parameter")
        values = [v for k, v in parameter.items() if k.startswith("value")]
        pairs.append((str(parameter["name"]), str(values[0]) if values else ""))
    return pairs


def _request(
    resource_type: str | None, pairs: list[tuple[str, str]], lenient: bool
) -> tuple[ExportRequest, list[str]]:
    types: list[str] = []
    elements: list[str] = []
    filters: list[str] = []
    since = None
    warnings = []
    for name, value in pairs:
        if name == "_outputFormat":
            value = value.replace(" ", "+")  # an unencoded "+" in a query string arrives as a space
            if value not in OUTPUT_FORMATS:
                raise Invalid(
                    f"_outputFormat={value!r}: this server writes application/fhir+ndjson", expression=name
                )
        elif name == "_since":
            since = parse_instant(value)
        elif name == "_type":
            types += [t.strip() for t in value.split(",") if t.strip()]
        elif name == "_elements":
            elements += [e.strip() for e in value.split(",") if e.strip()]
        elif name == "_typeFilter":
            filters += [f for f in _TYPE_FILTER_SPLIT.split(value) if f]
        elif lenient:
            warnings.append(f"parameter {name} is not supported and was ignored")
        else:
            raise Invalid(
                f"parameter {name} is not supported (Prefer: handling=lenient ignores it)", expression=name
            )
    store = app_state().store
    if resource_type is not None:
        if types and types != [resource_type]:
            raise Invalid(
                f"_type must name only {resource_type} on [base]/{resource_type}/$export", expression="_type"
            )
        types = [resource_type]
    unknown = sorted({t for t in [*types, *(f.split("?", 1)[0] for f in filters)] if t not in store.types})
    if unknown:
        raise Invalid(f"not in this publication: {', '.join(unknown)}", expression="_type")
    check_type_filters(store, filters)
    return ExportRequest(
        tuple(dict.fromkeys(types)), since, tuple(filters), tuple(dict.fromkeys(elements))
    ), warnings


def _kickoff(resource_type: str | None) -> Response:
    prefer = formats.preferences(request)
    if "respond-async" not in prefer:
        raise Invalid("Prefer: respond-async is required for $export (Bulk Data IG)", expression="Prefer")
    accept = request.headers.get("Accept")
    if accept and accept.strip() != "*/*":
        formats.best_match(accept, ["application/fhir+json", "application/json"])  # else 406
    export_request, warnings = _request(resource_type, _parameters(), prefer.get("handling") == "lenient")
    store = jobs()
    store.sweep()
    base = formats.base_url(_settings(), request)
    query = request.query_string.decode("latin-1")
    kickoff_url = base + request.path.removeprefix("/fhir") + (f"?{query}" if query else "")
    state = store.admit(export_request, kickoff_url, base, warnings)
    if state is None:
        raise TooManyRequests(
            f"{store.max_active} exports are running; try again later", headers={"Retry-After": "10"}
        )
    publication = app_state().store
    threading.Thread(target=store.run, args=(state, publication, export_request), daemon=True).start()
    return _informational("export started", {"Content-Location": f"{base}/$export-status/{state['id']}"})


def _informational(text: str, headers: dict[str, str] | None = None) -> Response:
    """A 202 with an informational OperationOutcome."""
    outcome = operation_outcome([Issue("information", "informational", text, layer="bulk")])
    return formats.respond(Answer(orjson.dumps(outcome), status=202), request, headers)


@blueprint.route("/$export", methods=["GET", "POST"])
def export_system() -> Response:
    """Kick off an export of the whole publication."""
    return _kickoff(None)


@blueprint.route("/<resource_type>/$export", methods=["GET", "POST"])
def export_type(resource_type: str) -> Response:
    """Kick off an export of one resource type (Patient/$export is the IG's patient-level export)."""
    if resource_type == "Patient":
        raise _patient_level("patient-level export ([base]/Patient/$export)")
    return _kickoff(resource_type)


@blueprint.route("/Group/<group_id>/$export", methods=["GET", "POST"])
def export_group(group_id: str) -> Response:
    """Group-level export: not offered (the Groups here describe populations, not enrolled patients)."""
    raise _patient_level(f"group-level export ([base]/Group/{group_id}/$export)")


def _patient_level(what: str) -> NotSupported:
    return NotSupported(
        f"{what} is not supported: this publication holds no patient data. "
        "It offers [base]/$export (the whole publication) and [base]/[type]/$export for each type it serves"
    )


def _no_job(job_id: str) -> NotFound:
    return NotFound(f"no export job {job_id} (never started, cancelled, or expired)")


def _live(job_id: str) -> dict[str, Any]:
    store = jobs()
    store.sweep()
    state = store.read(job_id)
    if state is None or state["status"] in {"cancelled", "expired"}:
        raise _no_job(job_id)
    return state


@blueprint.get("/$export-status/<job_id>")
def status(job_id: str) -> Response:
    """202 while running (X-Progress, Retry-After; 429 when polled too fast); then the manifest."""
    state = _live(job_id)
    interval = _settings().export_poll_interval
    now = app_state().clock()
    if state["status"] in ACTIVE:  # only a running job is rate limited; a result may be re-read at will
        wait = interval - (now - float(state.get("lastPoll", 0.0)))
        if wait > 0:
            raise TooManyRequests(
                "polled too soon; wait as Retry-After says", headers={"Retry-After": str(math.ceil(wait))}
            )
        if not jobs().polled(job_id, now):
            raise _no_job(job_id)
        response = Response(status=202)
        del response.headers["Content-Type"]  # an empty body has no media type
        response.headers["X-Progress"] = str(state.get("progress", "running"))
        response.headers["Retry-After"] = str(math.ceil(interval))
        return response
    if state["status"] == "failed":  # the job itself failed on the server: the IG asks for a 5xx here
        issue = Issue(
            "error", "exception", f"the export failed: {state.get('error', 'unknown error')}", layer="bulk"
        )
        return formats.respond(Answer(orjson.dumps(operation_outcome([issue])), status=500), request)
    response = Response(orjson.dumps(state["manifest"]), status=200, content_type="application/json")
    response.headers["Expires"] = formatdate(state["expires"], usegmt=True)
    return response


@blueprint.delete("/$export-status/<job_id>")
def cancel(job_id: str) -> Response:
    """Cancel a job (running or done): 202; its files are deleted and its status URL answers 404."""
    _live(job_id)
    jobs().cancel(job_id)
    return _informational("export cancelled")


@blueprint.get("/$export-file/<job_id>/<name>")
def file(job_id: str, name: str) -> Response:
    """One output file: application/fhir+ndjson (gzip on request); 410 once expired."""
    jobs().sweep()
    state = jobs().read(job_id)
    if state is not None and state["status"] == "expired":
        raise Gone(f"the files of export {job_id} have expired")
    state = _live(job_id)
    if state["status"] != "complete" or not FILE_NAME.match(name):
        raise NotFound(f"no file {name} in export {job_id}")
    path: Path = jobs().root / job_id / "files" / name
    if not path.is_file():
        raise NotFound(f"no file {name} in export {job_id}")
    if not request.accept_encodings.best_match(["gzip"]) or name.endswith(".gz"):
        return send_file(path, mimetype="application/fhir+ndjson", max_age=0)
    # Compressed as it streams: the file may be far larger than memory.
    response = Response(_gzipped(path), mimetype="application/fhir+ndjson", direct_passthrough=True)
    response.headers["Content-Encoding"] = "gzip"
    response.headers["Vary"] = "Accept-Encoding"
    response.headers["Cache-Control"] = "no-cache"
    return response


def _gzipped(path: Path) -> Iterator[bytes]:
    compressor = zlib.compressobj(5, zlib.DEFLATED, 31)  # wbits 31: the gzip container
    with path.open("rb") as source:
        while chunk := source.read(1 << 20):
            if out := compressor.compress(chunk):
                yield out
    yield compressor.flush()
