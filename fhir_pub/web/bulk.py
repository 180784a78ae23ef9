"""Bulk Data export over HTTP: kick-off, status, files, cancel (https://hl7.org/fhir/uv/bulkdata/STU2/export.html).

The kick-off needs ``Prefer: respond-async`` (400 without it, as the IG requires); a missing ``Accept``,
``*/*`` or ``application/json`` is taken as ``application/fhir+json``, any other media type is 406.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterator
from pathlib import Path

import orjson
from flask import Blueprint, Response, request, send_file

from fhir_pub import handlers
from fhir_pub.errors import Gone, Invalid, NotFound, NotSupported
from fhir_pub.jobs import JobStore
from fhir_pub.settings import Settings
from fhir_pub.web import fhir, formats
from fhir_pub.web.state import app_state

blueprint = Blueprint("bulk", __name__)
SUPPORTED = {"_outputFormat", "_since", "_type", "_elements", "_typeFilter"}
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


def _kickoff(resource_type: str | None) -> Response:
    prefer = formats.preferences(request)
    if "respond-async" not in prefer:
        raise Invalid("Prefer: respond-async is required for $export (Bulk Data IG)", expression="Prefer")
    accept = request.headers.get("Accept")
    if accept and accept.strip() != "*/*":
        formats.best_match(accept, ["application/fhir+json", "application/json"])  # else 406
    version = fhir.fhir_version(fhir.ALL_VERSIONS)  # [base]/R4B, [base]/R4 or fhirVersion in Accept
    root = formats.base_url(_settings(), request)
    query = request.query_string.decode("latin-1")
    kickoff_url = root + request.path.removeprefix("/fhir") + (f"?{query}" if query else "")
    context = handlers.Context(
        app_state().store, fhir.public_base(), tuple(_parameters()), fhir_version=version
    )
    lenient = prefer.get("handling") == "lenient"
    return formats.respond(
        handlers.export_kickoff(context, jobs(), resource_type, kickoff_url, lenient), request
    )


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


@blueprint.get("/$export-status/<job_id>")
def status(job_id: str) -> Response:
    """202 while running (X-Progress, Retry-After; 429 when polled too fast); then the manifest."""
    answer = handlers.export_status(jobs(), job_id, _settings().export_poll_interval)
    return formats.respond(answer, request)


@blueprint.delete("/$export-status/<job_id>")
def cancel(job_id: str) -> Response:
    """Cancel a job (running or done): 202; its files are deleted and its status URL answers 404."""
    return formats.respond(handlers.export_cancel(jobs(), job_id), request)


@blueprint.get("/$export-file/<job_id>/<name>")
def file(job_id: str, name: str) -> Response:
    """One output file: application/fhir+ndjson (gzip on request); 410 once expired."""
    jobs().sweep()
    state = jobs().read(job_id)
    if state is not None and state["status"] == "expired":
        raise Gone(f"the files of export {job_id} have expired")
    state = handlers.live_job(jobs(), job_id)
    if state["status"] != "complete" or not FILE_NAME.match(name):
        raise NotFound(f"no file {name} in export {job_id}")
    path: Path = jobs().root / job_id / "files" / name
    if not path.is_file():
        raise NotFound(f"no file {name} in export {job_id}")
    version = state.get("params", {}).get("fhirVersion", "5.0")
    # https://hl7.org/fhir/R5/http.html#version-parameter: a converted form names its version
    media = "application/fhir+ndjson" + ("" if version == "5.0" else f"; fhirVersion={version}")
    if not request.accept_encodings.best_match(["gzip"]) or name.endswith(".gz"):
        return send_file(path, mimetype=media, max_age=0)
    # Compressed as it streams: the file may be far larger than memory.
    response = Response(_gzipped(path), mimetype=media, direct_passthrough=True)
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
