"""The ``fhir-pub`` command line: a thin click layer over the library."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode

import click
import jsonschema

from fhir_pub import __version__
from fhir_pub.build import BuildError, build, bundled_publication
from fhir_pub.conformance import load_conformance
from fhir_pub.errors import FhirPubError
from fhir_pub.export import ExportRequest, export, manifest, parse_instant
from fhir_pub.narrative import with_narrative
from fhir_pub.package import write_package
from fhir_pub.publication import Publication, bundled_dir, load
from fhir_pub.settings import Settings
from fhir_pub.static import write_static
from fhir_pub.store import Store
from fhir_pub.validation import Report, Validator

F = TypeVar("F", bound=Callable[..., Any])


def _folder_option(name: str, help_text: str) -> Callable[[F], F]:
    """A ``--NAME PATH`` option for an existing folder, passed as ``NAME_dir`` (default None: bundled)."""
    return click.option(
        f"--{name}",
        f"{name}_dir",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        default=None,
        help=help_text,
    )


resources_option = _folder_option(
    "resources", "Folder of <Type>/<id>.json resources (default: the bundled publication)."
)
profiles_option = _folder_option(
    "profiles", "Folder of StructureDefinitions and ValueSets (default: the bundled profiles)."
)


def _validator(profiles_dir: Path | None) -> Validator:
    try:
        return Validator(load_conformance(profiles_dir))
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc


def _load(resources_dir: Path | None) -> Publication:
    try:
        return load(resources_dir)
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fhir-pub")
def main() -> None:
    """Publish drug leaflets as FHIR R5 resources."""


@main.command()
@resources_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(resources_dir: Path | None, as_json: bool) -> None:
    """Show where the publication is and how many resources of each type it holds."""
    publication = _load(resources_dir)
    counts = publication.counts()
    if as_json:
        click.echo(json.dumps({"root": str(publication.root), "total": len(publication), "counts": counts}))
        return
    click.echo(f"Publication: {publication.root}")
    for resource_type, count in counts.items():
        click.echo(f"  {resource_type:<24}{count:>6}")
    click.echo(f"  {'total':<24}{len(publication):>6}")


@main.command()
@resources_option
@click.option("--write", is_flag=True, help="Rewrite each file whose narrative is out of date.")
def narrative(resources_dir: Path | None, write: bool) -> None:
    """Check (or with --write, regenerate) the generated narrative of every resource."""
    publication = _load(resources_dir)
    stale = [entry for entry in publication if with_narrative(entry.resource) != entry.resource]
    if write:
        for entry in stale:
            text = json.dumps(with_narrative(entry.resource), indent=2, ensure_ascii=False) + "\n"
            entry.path.write_text(text, encoding="utf-8")
            click.echo(f"rewrote {entry.key}")
        return
    for entry in stale:
        click.echo(f"stale narrative: {entry.key} ({entry.path})", err=True)
    if stale:
        raise click.ClickException(f"{len(stale)} of {len(publication)} narratives are out of date")
    click.echo(f"{len(publication)} narratives are up to date")


def _print_report(report: Report) -> None:
    current = None
    for issue in sorted(report.issues, key=lambda i: (i.source or "", i.expression or "")):
        if issue.source != current:
            current = issue.source
            click.echo(click.style(str(current), bold=True))
        where = (
            f"{issue.expression}: "
            if issue.expression and not issue.message.startswith(issue.expression)
            else ""
        )
        rule = f"[{issue.layer}{'/' + issue.rule if issue.rule else ''}]"
        color = {"fatal": "red", "error": "red", "warning": "yellow"}.get(issue.severity)
        click.echo(f"  {click.style(f'{issue.severity:<8}', fg=color)}{where}{issue.message} {rule}")
    summary = f"{report.checked} resources checked: {report.errors} errors, {report.warnings} warnings"
    click.echo(click.style(summary, fg="green" if report.ok else "red"))


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@profiles_option
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="A readable report, or the OperationOutcome as JSON.",
)
def validate(paths: tuple[Path, ...], profiles_dir: Path | None, output: str) -> None:
    """Validate resources (files or folders, default the bundled publication) as one publication.

    Four layers: structure (fhir.resources R5), profiles (compiled to JSON Schema), FHIRPath invariants,
    and the reference graph. Exit 0 when there is no error, 1 when there is any.
    """
    validator = _validator(profiles_dir)
    report = validator.validate_paths(list(paths) or [bundled_dir("resources")])
    if output == "json":
        click.echo(json.dumps(report.outcome(), indent=2))
    else:
        _print_report(report)
    if not report.ok:
        raise SystemExit(1)


@main.command()
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Folder to write to.",
)
@profiles_option
def schemas(out: Path, profiles_dir: Path | None) -> None:
    """Write the JSON Schema each resource profile compiles to, one file per profile."""
    validator = _validator(profiles_dir)
    out.mkdir(parents=True, exist_ok=True)
    for url, schema in sorted(validator.schemas.items()):
        jsonschema.Draft202012Validator.check_schema(schema)
        path = out / f"{url.rsplit('/', 1)[-1]}.schema.json"
        path.write_text(json.dumps(schema, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        click.echo(f"wrote {path}")
    for note in validator.notes:
        click.echo(f"note: {note}", err=True)


@main.command("build")
@click.option(
    "--out",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("publication.sqlite"),
    show_default=True,
    help="The publication file to write.",
)
@resources_option
@profiles_option
@click.option(
    "--attach",
    "attach_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of leaflet copies to embed in the DocumentReferences (matched by url file name or id).",
)
def build_command(
    out: Path, resources_dir: Path | None, profiles_dir: Path | None, attach_dir: Path | None
) -> None:
    """Validate and compile the publication into one immutable file for serving.

    Refuses to build on any validation error (exit 1, with the report); the file appears only when complete.
    """
    try:
        built = build(out, resources_dir, profiles_dir, attach_dir)
    except BuildError as exc:
        _print_report(exc.report)
        raise click.ClickException(exc.diagnostics) from exc
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    for line in built.attached:
        click.echo(f"attached {line}")
    click.echo(f"built {built.path}: {built.resources} resources (sources {built.digest[:12]})")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on."
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="Worker processes.")
@click.option(
    "--publication",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A built publication (default: build the bundled one if needed).",
)
def serve(host: str, port: int, workers: int, publication: Path | None) -> None:
    """Serve the publication read-only over FHIR R5 at http://HOST:PORT/fhir (granian)."""
    from granian import Granian
    from granian.constants import Interfaces

    settings = Settings()
    path = publication if publication is not None else bundled_publication(settings.cache_dir)
    os.environ["FHIR_PUB_PUBLICATION"] = str(path.resolve())  # handed to the worker processes' Settings
    click.echo(f"serving {path} at http://{host}:{port}/fhir")
    # The store answers from memory-mapped SQLite pages: a few threads per worker keep both cores busy.
    Granian(
        "fhir_pub.wsgi:app",
        address=host,
        port=port,
        workers=workers,
        interface=Interfaces.WSGI,
        blocking_threads=4,
        backpressure=64,
    ).serve()


@main.command("export")
@click.option(
    "--out",
    "out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="A new folder to write NDJSON files and manifest.json into.",
)
@click.option(
    "--static",
    "static",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Instead, a new (or empty) folder to write metadata and every read and vread into, as files.",
)
@click.option(
    "--type", "types", multiple=True, help="Only these resource types (repeat, or comma-separated)."
)
@click.option(
    "--since", default=None, help="Only resources changed after this instant (e.g. 2026-01-01T00:00:00Z)."
)
@click.option(
    "--type-filter", "type_filters", multiple=True, help="Type?search-query, as _typeFilter (repeatable)."
)
@click.option("--elements", default=None, help="Only these elements (comma-separated), as _elements.")
@click.option("--gzip", "compressed", is_flag=True, help="Write .ndjson.gz files.")
@click.option(
    "--publication",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A built publication (default: the bundled one, built if needed).",
)
def export_command(
    out: Path | None,
    static: Path | None,
    types: tuple[str, ...],
    since: str | None,
    type_filters: tuple[str, ...],
    elements: str | None,
    compressed: bool,
    publication: Path | None,
) -> None:
    """Export the publication as NDJSON files (one per type) and a Bulk Data manifest, written atomically.

    With --static DIR instead, write what a static web server needs to answer metadata, reads and vreads.
    """
    if (out is None) == (static is None):
        raise click.UsageError("give exactly one of --out DIR (NDJSON) and --static DIR (static files)")
    ndjson_only = {
        "--type": types,
        "--since": since,
        "--type-filter": type_filters,
        "--elements": elements,
        "--gzip": compressed,
    }
    given = [name for name, value in ndjson_only.items() if value]
    if static is not None and given:
        raise click.UsageError(f"{', '.join(given)}: only with --out; --static writes every resource")
    settings = Settings()
    try:
        store = Store(publication if publication is not None else bundled_publication(settings.cache_dir))
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    if static is not None:
        _export_static(store, static)
        return
    assert out is not None  # one of the two, checked above
    try:
        request = ExportRequest(
            types=tuple(t for value in types for t in value.split(",") if t),
            since=parse_instant(since) if since else None,
            type_filters=type_filters,
            elements=tuple(e for e in (elements or "").split(",") if e),
            gzip=compressed,
        )
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    transaction_time = datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    query = urlencode(
        [
            *(("_type", ",".join(request.types)),) * bool(request.types),
            *(("_since", since),) * bool(since),
            *(("_typeFilter", f) for f in type_filters),
            *(("_elements", elements),) * bool(elements),
        ]
    )
    total = store.count(request.types or None)
    try:
        with click.progressbar(length=total, label="exporting", file=sys.stderr) as bar:
            result = export(
                store,
                request,
                out,
                bar.update,
                lambda r: manifest(
                    r,
                    transaction_time,
                    f"$export?{query}" if query else "$export",
                    lambda n: n,
                    None,
                    request.since is not None,
                ),
            )
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    for kind, name, count in result.files:
        click.echo(f"{name}: {count} {kind}")
    click.echo(f"wrote {out} ({sum(c for _, _, c in result.files)} resources, manifest.json)")


def _export_static(store: Store, folder: Path) -> None:
    try:
        with click.progressbar(length=store.count(), label="writing", file=sys.stderr) as bar:
            result = write_static(store, folder, bar.update)
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    click.echo(f"wrote {folder} ({result.resources} resources, {result.files} files)")


@main.command("package")
@click.option(
    "--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .tgz to write."
)
@resources_option
@profiles_option
def package_command(out: Path, resources_dir: Path | None, profiles_dir: Path | None) -> None:
    """Write the publication and its profiles as a FHIR NPM package (.tgz) that FHIR tooling can load."""
    try:
        count = write_package(out, resources_dir, profiles_dir)
    except BuildError as exc:
        _print_report(exc.report)
        raise click.ClickException(exc.diagnostics) from exc
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    click.echo(f"wrote {out}: {count} resources")
