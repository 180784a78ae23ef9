"""The ``fhir-pub`` command line: a thin click layer over the library."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from fhir_pub import __version__
from fhir_pub.errors import FhirPubError
from fhir_pub.narrative import with_narrative
from fhir_pub.publication import Publication, load

F = TypeVar("F", bound=Callable[..., Any])


def resources_option(func: F) -> F:
    """Add ``--resources PATH``: the publication folder, by default the bundled one."""
    return click.option(
        "--resources",
        "resources_dir",
        type=click.Path(exists=True, file_okay=False, path_type=Path),
        default=None,
        help="Folder of <Type>/<id>.json resources (default: the bundled publication).",
    )(func)


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
