"""The ``fhir-pub`` command line: a thin click layer over the library."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlencode, urlsplit

import click
import jsonschema

from fhir_pub import __version__
from fhir_pub.build import BuildError, build, bundled_publication, source_digest
from fhir_pub.draft import LAYOUTS, draft, draft_toml, read_leaflet
from fhir_pub.errors import FhirPubError
from fhir_pub.export import ExportRequest, export, file_url, manifest, parse_instant
from fhir_pub.facts import Codes, differing, fact_files, generate_files, write_files
from fhir_pub.handlers import VERSION_NAMES, FhirVersion
from fhir_pub.narrative import with_narrative
from fhir_pub.package import write_package
from fhir_pub.project import Sources, init_project, locate
from fhir_pub.publication import Publication, load
from fhir_pub.settings import Settings
from fhir_pub.static import write_static
from fhir_pub.store import Store
from fhir_pub.validation import Report, Validator, candidate_from_file
from fhir_pub.validation.validator import gather

F = TypeVar("F", bound=Callable[..., Any])


def _folder_option(name: str, help_text: str) -> Callable[[F], F]:
    """A ``--NAME PATH`` option for an existing folder, passed as ``NAME_dir`` (default None: found)."""
    return click.option(
        f"--{name}",
        f"{name}_dir",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        default=None,
        help=help_text,
    )


resources_option = _folder_option(
    "resources", "Folder of <Type>/<id>.json resources (default: the project's, else the bundled ones)."
)
profiles_option = _folder_option(
    "profiles",
    "Folder of StructureDefinitions and ValueSets (default: the project's, else the bundled profiles).",
)
project_option = _folder_option(
    "project", "The project folder (default: the nearest folder with a fhir-pub.toml, here or above)."
)


def _locate(
    project_dir: Path | None, resources_dir: Path | None = None, profiles_dir: Path | None = None
) -> Sources:
    """The sources a command reads (the project of the current folder, or the bundled publication)."""
    try:
        return locate(Path.cwd(), project_dir, resources_dir, profiles_dir)
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc


def _sources(
    project_dir: Path | None,
    resources_dir: Path | None = None,
    profiles_dir: Path | None = None,
    paths: tuple[Path, ...] = (),
) -> Sources:
    """The sources a command reads, said in one line on stderr so that no one reads a copy unawares."""
    sources = _locate(project_dir, resources_dir, profiles_dir)
    click.echo(f"fhir-pub: {sources.describe(paths)}", err=True)
    return sources


def _validator(sources: Sources) -> Validator:
    try:
        return Validator(sources.conformance())
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc


def _load(resources_dir: Path) -> Publication:
    try:
        return load(resources_dir)
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="fhir-pub")
def main() -> None:
    """Publish drug leaflets as FHIR R5 resources."""


@main.command()
@project_option
@resources_option
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def info(project_dir: Path | None, resources_dir: Path | None, as_json: bool) -> None:
    """Show where the publication is and how many resources of each type it holds."""
    publication = _load(_sources(project_dir, resources_dir).resources)
    counts = publication.counts()
    if as_json:
        click.echo(json.dumps({"root": str(publication.root), "total": len(publication), "counts": counts}))
        return
    click.echo(f"Publication: {publication.root}")
    for resource_type, count in counts.items():
        click.echo(f"  {resource_type:<24}{count:>6}")
    click.echo(f"  {'total':<24}{len(publication):>6}")


@main.command()
@project_option
@resources_option
@click.option("--write", is_flag=True, help="Rewrite each file whose narrative is out of date.")
def narrative(project_dir: Path | None, resources_dir: Path | None, write: bool) -> None:
    """Check (or with --write, regenerate) the generated narrative of every resource."""
    publication = _load(_sources(project_dir, resources_dir).resources)
    try:
        stale = [entry for entry in publication if with_narrative(entry.resource) != entry.resource]
    except ValueError as error:  # a resource type the generator has no narrative for
        raise click.ClickException(str(error)) from None
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


@main.command()
@click.argument("facts", nargs=-1, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@project_option
@resources_option
@click.option("--write", is_flag=True, help="Write each generated resource whose file differs.")
def generate(
    facts: tuple[Path, ...], project_dir: Path | None, resources_dir: Path | None, write: bool
) -> None:
    """Check (or with --write, write) the resources generated from fact files (default: facts/*.toml)."""
    sources = _sources(project_dir, resources_dir)
    paths = list(facts) or fact_files(sources.resources.parent)
    if not paths:
        raise click.ClickException(
            f"no fact files: give one, or put them in {sources.resources.parent / 'facts'}"
        )
    try:
        files = generate_files(paths, Codes.of(sources.conformance()))
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    if write:
        for key in write_files(files, sources.resources):
            click.echo(f"wrote {key}")
        click.echo(f"{plural(len(files), 'resource')} generated from {plural(len(paths), 'fact file')}")
        return
    stale = differing(files, sources.resources)
    for key in stale:
        click.echo(f"differs from its fact file: {sources.resources / key}", err=True)
    if stale:
        raise click.ClickException(
            f"{len(stale)} of {len(files)} generated resources differ; run fhir-pub generate --write"
        )
    click.echo(f"{plural(len(files), 'resource')} match {plural(len(paths), 'fact file')}")


@main.command("draft")
@click.argument("leaflet", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the draft fact file here (a new file) [default: print it].",
)
@click.option(
    "--key", default=None, help="The leaflet's key in the facts' sources [default: the layout's name]."
)
@click.option("--cite", default=None, help="How wording cites the leaflet, e.g. MSK [default: the key].")
@click.option(
    "--layout",
    type=click.Choice(sorted(LAYOUTS)),
    default=None,
    help="The leaflet's layout [default: recognised from its headings].",
)
@project_option
def draft_command(
    leaflet: Path,
    out: Path | None,
    key: str | None,
    cite: str | None,
    layout: str | None,
    project_dir: Path | None,
) -> None:
    """Draft a fact file from LEAFLET (text): one candidate fact per list item, each marked for review."""
    sources = _sources(project_dir)
    if out is not None and out.exists():
        raise click.ClickException(f"{out} exists; give a new file (a draft never overwrites)")
    try:
        text = leaflet.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise click.ClickException(f"{leaflet}: not readable as UTF-8 text ({exc})") from exc
    try:
        read = read_leaflet(text, layout)
        name = key or read.layout.name
        table = draft(read, Codes.of(sources.conformance()), name, cite or name, leaflet.name)
    except FhirPubError as exc:
        raise click.ClickException(f"{leaflet}: {exc.diagnostics}") from exc
    document = draft_toml(table, leaflet.name, read.layout)
    if out is None:
        click.echo(document, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(document, encoding="utf-8")
    sections = len(read.sections)
    click.echo(
        f"wrote {out}: {plural(len(table['facts']), 'candidate fact')} from {plural(sections, 'section')} "
        f"of a {read.layout.name} leaflet, each marked for review",
        err=True,
    )


def plural(count: int, word: str) -> str:
    """``1 resource``, ``2 resources``, ``0 errors``."""
    return f"{count} {word}{'' if count == 1 else 's'}"


# The HTTP parameters export's errors name, and the options they are given as on the command line.
_OPTIONS = {"_typeFilter": "--type-filter", "_type": "--type", "_elements": "--elements", "_since": "--since"}


def _as_options(diagnostics: str) -> str:
    """An export error in the CLI's words: ``--type-filter=...`` rather than the HTTP ``_typeFilter=...``."""
    return re.sub(r"(?<![\w-])(_typeFilter|_type|_elements|_since)\b", lambda m: _OPTIONS[m[1]], diagnostics)


@contextlib.contextmanager
def _progress(length: int, label: str) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr when it is a terminal; silent (no label either) when piped or redirected."""
    if not sys.stderr.isatty():
        yield lambda _n: None
        return
    with click.progressbar(length=length, label=label, file=sys.stderr) as bar:
        yield bar.update


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
    summary = (
        f"{plural(report.checked, 'resource')} checked: "
        f"{plural(report.errors, 'error')}, {plural(report.warnings, 'warning')}"
    )
    click.echo(click.style(summary, fg="green" if report.ok else "red"))


@main.command()
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@project_option
@profiles_option
@click.option(
    "--format",
    "output",
    type=click.Choice(["text", "json"]),
    default="text",
    show_default=True,
    help="A readable report, or the OperationOutcome as JSON.",
)
@click.option(
    "--single",
    is_flag=True,
    help="Judge each file on its own (any R5 resource): no orphan or unique-id rules, no fhir-pub profile "
    "required (R5's own invariants apply without one), references to other files only warned about.",
)
def validate(
    paths: tuple[Path, ...], project_dir: Path | None, profiles_dir: Path | None, output: str, single: bool
) -> None:
    """Validate resources (files or folders, default the project's, else the bundled ones) as one publication.

    Four layers: structure (fhir.resources R5), profiles (compiled to JSON Schema), FHIRPath invariants,
    and the reference graph. Exit 0 when there is no error, 1 when there is any.
    """
    sources = _sources(project_dir, None, profiles_dir, paths)
    validator = _validator(sources)
    if single:
        reports = [
            validator.validate_one(candidate_from_file(p)) for p in gather(list(paths) or [sources.resources])
        ]
        report = Report(tuple(i for r in reports for i in r.issues), len(reports))
    else:
        report = validator.validate_paths(list(paths) or [sources.resources])
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
@project_option
@profiles_option
def schemas(out: Path, project_dir: Path | None, profiles_dir: Path | None) -> None:
    """Write the JSON Schema each resource profile compiles to, one file per profile."""
    validator = _validator(_sources(project_dir, None, profiles_dir))
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
    default=None,
    help="The file to write [default: build/publication.sqlite in a project, else ./publication.sqlite].",
)
@project_option
@resources_option
@profiles_option
@click.option(
    "--attach",
    "attach_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="Folder of leaflet copies to embed in the DocumentReferences (matched by url file name or id).",
)
@click.option(
    "--reuse",
    "reuse",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="A previous build whose unchanged resources are taken over [default: the output file, if any].",
)
@click.option("--cold", is_flag=True, help="Reuse nothing: check and convert every resource again.")
def build_command(
    out: Path | None,
    project_dir: Path | None,
    resources_dir: Path | None,
    profiles_dir: Path | None,
    attach_dir: Path | None,
    reuse: Path | None,
    cold: bool,
) -> None:
    """Validate and compile the publication into one immutable file for serving.

    Refuses to build on any validation error (exit 1, with the report); the file appears only when complete.
    A project's publication is built into the project, where ``serve`` finds it. Resources unchanged since
    the previous build (the output file, or ``--reuse``) keep their validation result; the file written is
    the same as without (``--cold``).
    """
    sources = _sources(project_dir, resources_dir, profiles_dir)
    _say_if_facts_differ(sources)
    if out is None:
        own = sources.project is not None and not sources.explicit_resources
        out = sources.project.artifact if sources.project is not None and own else Path("publication.sqlite")
    try:
        previous = None if cold else reuse or out
        built = build(
            out,
            sources.resources,
            sources.profiles,
            attach_dir,
            verified_codes=sources.verified_codes,
            reuse=previous,
        )
    except BuildError as exc:
        _print_report(exc.report)
        raise click.ClickException(exc.diagnostics) from exc
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    for line in built.attached:
        click.echo(f"attached {line}")
    counted = f"{plural(built.resources, 'resource')} and {plural(built.conformance, 'conformance resource')}"
    reused = f", {plural(built.reused, 'resource')} unchanged since {previous}" if built.reused else ""
    click.echo(f"built {built.path}: {counted} (sources {built.digest[:12]}{reused})")


def _say_if_facts_differ(sources: Sources) -> None:
    """One stderr line when resources/ no longer hold what the fact files beside them generate."""
    paths = fact_files(sources.resources.parent)
    if not paths:
        return
    try:
        files = generate_files(paths, Codes.of(sources.conformance()))
    except FhirPubError as exc:
        click.echo(f"fhir-pub: the fact files cannot be generated: {exc.diagnostics}", err=True)
        return
    stale = differing(files, sources.resources)
    if stale:
        click.echo(
            f"fhir-pub: {plural(len(stale), 'resource')} in {sources.resources} differ from the fact files "
            f"(first {stale[0]}): building them as they are; run fhir-pub generate --write to regenerate",
            err=True,
        )


def available_cpus() -> int:
    """The CPUs this process may use: its affinity mask, lowered by a cgroup v2 CPU quota (containers)."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:  # "max 100000" is no quota; "200000 100000" is 2 CPUs (https://docs.kernel.org/admin-guide/cgroup-v2.html)
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text(encoding="utf-8").split()
        if quota != "max":
            cpus = min(cpus, max(1, int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    return max(1, min(cpus, 64))


def settings_reference() -> str:
    """One line per ``FHIR_PUB_*`` setting with its default and description, from the Settings object."""
    lines = []
    for name, field in Settings.model_fields.items():
        default = "none" if field.default is None else str(field.default)
        lines.append(f"FHIR_PUB_{name.upper()} (default {default}): {field.description}")
    return "\n".join(lines)


def _check_port_free(host: str, port: int) -> None:
    """Refuse a port another process listens on, before granian shares it (SO_REUSEPORT) or tracebacks."""
    if port == 0:
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise click.ClickException(f"cannot listen on {host}: {exc.strerror}") from exc
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        # SO_REUSEADDR only ignores connections left in TIME_WAIT; a listening socket still refuses the bind.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise click.ClickException(
                    f"port {port} on {host} is already in use by another program; "
                    "stop it or choose another --port"
                ) from exc
            raise click.ClickException(f"cannot listen on {host}:{port}: {exc.strerror}") from exc


class _ServeCommand(click.Command):
    """``serve``, whose help ends with the settings reference (generated, so it is always complete)."""

    def format_epilog(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The FHIR_PUB_* settings, one paragraph each, without click's rewrapping into one block."""
        with formatter.section("Settings (environment variables)"):
            for line in settings_reference().splitlines():
                formatter.write_text(line)


@main.command(cls=_ServeCommand)
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="Port to listen on."
)
@click.option(
    "--workers",
    default=None,
    type=click.IntRange(1, 64),
    help="Worker processes [default: the available CPUs, from the affinity mask and cgroup quota].",
)
@click.option(
    "--publication",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A built publication (default: the project's build, else the bundled one, built if needed).",
)
@project_option
def serve(
    host: str, port: int, workers: int | None, publication: Path | None, project_dir: Path | None
) -> None:
    """Serve the publication read-only over FHIR R5 at http://HOST:PORT/fhir (granian)."""
    from granian import Granian
    from granian.constants import Interfaces

    settings = Settings()
    if publication is not None:
        path = publication
    else:
        sources = _sources(project_dir)
        path = _built(sources, settings)
    try:
        Store(path)  # opened here once, so a file that is not a publication is refused before listening
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    _check_port_free(host, port)
    os.environ["FHIR_PUB_PUBLICATION"] = str(path.resolve())  # handed to the worker processes' Settings
    count = workers if workers is not None else available_cpus()
    click.echo(f"serving {path} at http://{host}:{port}/fhir ({count} worker{'s' * (count != 1)})")
    # The store answers from memory-mapped SQLite pages: a few threads per worker keep both cores busy.
    Granian(
        "fhir_pub.wsgi:app",
        address=host,
        port=port,
        workers=count,
        interface=Interfaces.WSGI,
        blocking_threads=settings.threads,
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
    "--base-url",
    default=None,
    callback=lambda _ctx, _param, value: _http_url(value),
    help="The http(s) URL the folder's files will be served from: manifest.json gives each file's URL "
    "under it. Without it, manifest.json gives file:// URIs of the written files.",
)
@click.option(
    "--publication",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="A built publication (default: the project's build, else the bundled one, built if needed).",
)
@project_option
def export_command(
    out: Path | None,
    static: Path | None,
    types: tuple[str, ...],
    since: str | None,
    type_filters: tuple[str, ...],
    elements: str | None,
    compressed: bool,
    base_url: str | None,
    publication: Path | None,
    project_dir: Path | None,
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
        "--base-url": base_url,
    }
    given = [name for name, value in ndjson_only.items() if value]
    if static is not None and given:
        raise click.UsageError(f"{', '.join(given)}: only with --out; --static writes every resource")
    settings = Settings()
    # Export reads a built publication, not sources, and keeps stderr quiet when piped: no sources line.
    path = publication if publication is not None else _built(_locate(project_dir), settings)
    try:
        store = Store(path)
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    if static is not None:
        _export_static(store, static)
        return
    assert out is not None  # one of the two, checked above
    try:
        request = ExportRequest(
            types=tuple(t for value in types for t in value.split(",") if t),
            since=parse_instant(since, "--since") if since else None,
            type_filters=type_filters,
            elements=tuple(e for e in (elements or "").split(",") if e),
            gzip=compressed,
        )
    except FhirPubError as exc:  # a bad option value is a usage error (exit 2), like click's own
        raise click.UsageError(_as_options(exc.diagnostics)) from exc
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
        with _progress(total, "exporting") as update:
            result = export(
                store,
                request,
                out,
                update,
                lambda r: manifest(
                    r,
                    transaction_time,
                    f"$export?{query}" if query else "$export",
                    file_url(out, base_url),
                    None,
                    request.since is not None,
                ),
            )
    except FhirPubError as exc:
        raise click.ClickException(_as_options(exc.diagnostics)) from exc
    for kind, name, count in result.files:
        click.echo(f"{name}: {count} {kind}")
    click.echo(f"wrote {out} ({plural(sum(c for _, _, c in result.files), 'resource')}, manifest.json)")


def _http_url(value: str | None) -> str | None:
    """An absolute http(s) URL (``--base-url``), else a usage error."""
    if value is not None:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.netloc:
            raise click.BadParameter(f"{value!r} is not an absolute http(s) URL", param_hint="--base-url")
    return value


def _export_static(store: Store, folder: Path) -> None:
    try:
        with _progress(store.count(), "writing") as update:
            result = write_static(store, folder, update)
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    click.echo(f"wrote {folder} ({plural(result.resources, 'resource')}, {plural(result.files, 'file')})")


@main.command("package")
@click.option(
    "--out", "out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="The .tgz to write."
)
@click.option(
    "--fhir-version",
    "fhir_version",
    type=click.Choice(list(VERSION_NAMES)),
    default="5.0",
    show_default=True,
    help="The package's FHIR version: R5, or the R4B (4.3) or R4 (4.0) form the server serves at [base]/R4B, "
    "[base]/R4 (its resources and CapabilityStatement, without the R5 profiles).",
)
@project_option
@resources_option
@profiles_option
def package_command(
    out: Path,
    fhir_version: FhirVersion,
    project_dir: Path | None,
    resources_dir: Path | None,
    profiles_dir: Path | None,
) -> None:
    """Write the publication and its profiles as a FHIR NPM package (.tgz) that FHIR tooling can load.

    At ``--fhir-version 4.3`` or ``4.0`` it is the publication in FHIR R4B or R4, depending on that
    version's core package; what it leaves out of the R5 package, and why, is in its other/README.md.
    """
    sources = _sources(project_dir, resources_dir, profiles_dir)
    try:
        own = sources.project is not None and not sources.explicit_resources
        about = sources.project.package if sources.project is not None and own else None
        count = write_package(
            out, sources.resources, sources.profiles, sources.verified_codes, about, fhir_version
        )
    except BuildError as exc:
        _print_report(exc.report)
        raise click.ClickException(exc.diagnostics) from exc
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    click.echo(f"wrote {out}: {plural(count, 'resource')}")


def _built(sources: Sources, settings: Settings) -> Path:
    """The built publication found: the project's build, else the bundled one (built if need be)."""
    if sources.project is None:
        try:
            return bundled_publication(settings.cache_dir)
        except FhirPubError as exc:
            raise click.ClickException(exc.diagnostics) from exc
    if not sources.project.artifact.is_file():
        raise click.ClickException(
            f"{sources.project.label} is not built: run fhir-pub build first "
            f"(it writes {sources.project.artifact})"
        )
    try:
        built = Store(sources.project.artifact).info("digest").decode()
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    if built != source_digest(sources.resources, sources.profiles, sources.verified_codes):
        click.echo(
            f"fhir-pub: {sources.project.artifact} is older than the project's sources (they changed since "
            "it was built): this answers from the last build; run fhir-pub build to publish the changes",
            err=True,
        )
    return sources.project.artifact


@main.command("init")
@click.argument("folder", type=click.Path(file_okay=False, path_type=Path))
@click.option("--name", default=None, help="The publication's name [default: the folder's name].")
@click.option(
    "--canonical",
    default=None,
    help="The canonical base of its resources [default: https://example.org/fhir/NAME].",
)
@click.option("--publisher", default="unnamed publisher", show_default=True, help="Who publishes it.")
@click.option("--version", "version", default="0.1.0", show_default=True, help="Its version.")
def init_command(folder: Path, name: str | None, canonical: str | None, publisher: str, version: str) -> None:
    """Create a publication project in FOLDER (new or empty): fhir-pub.toml, resources/, verified codes."""
    name = name or folder.resolve().name
    try:
        project = init_project(
            folder, name, canonical or f"https://example.org/fhir/{name}", publisher, version
        )
    except FhirPubError as exc:
        raise click.ClickException(exc.diagnostics) from exc
    click.echo(
        f"created {project.label}: add resources under {project.resources_dir}, then fhir-pub validate"
    )
