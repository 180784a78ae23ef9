"""Locate and load a publication: a folder of ``<Type>/<id>.json`` FHIR resources."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from importlib import resources as importlib_resources
from pathlib import Path
from typing import Any

from fhir_pub.errors import PublicationError

Resource = dict[str, Any]

# A wheel carries the bundled publication inside the package (see pyproject.toml, force-include);
# a source checkout or an editable install keeps it at the top of the repository.
_PACKAGED = "_bundled"
_SOURCE_ROOT = Path(__file__).resolve().parent.parent


def bundled_dir(kind: str) -> Path:
    """Return the folder of the bundled ``resources`` or ``profiles``, wherever the package lives."""
    if kind not in {"resources", "profiles"}:
        raise ValueError(f"unknown bundled folder {kind!r}")
    packaged = Path(str(importlib_resources.files("fhir_pub"))) / _PACKAGED / kind
    if packaged.is_dir():
        return packaged
    source = _SOURCE_ROOT / kind
    if source.is_dir():
        return source
    raise PublicationError(f"the bundled {kind} folder is missing from this installation of fhir-pub")


@dataclass(frozen=True)
class Entry:
    """One resource of a publication, with the file it was read from."""

    path: Path
    resource: Resource

    @property
    def key(self) -> str:
        """The resource's relative reference, ``Type/id``."""
        return f"{self.resource['resourceType']}/{self.resource['id']}"


@dataclass(frozen=True)
class Publication:
    """All resources of one publication, keyed by ``Type/id``."""

    root: Path
    entries: Mapping[str, Entry] = field(default_factory=dict)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries.values())

    def __len__(self) -> int:
        return len(self.entries)

    def get(self, reference: str) -> Resource | None:
        """Return the resource for a relative reference ``Type/id``, or None."""
        entry = self.entries.get(reference)
        return entry.resource if entry else None

    def of_type(self, resource_type: str) -> list[Resource]:
        """Return the resources of one type, ordered by id."""
        return sorted(
            (e.resource for e in self if e.resource["resourceType"] == resource_type),
            key=lambda r: str(r["id"]),
        )

    def counts(self) -> dict[str, int]:
        """Return the number of resources per type, ordered by type name."""
        return dict(sorted(Counter(e.resource["resourceType"] for e in self).items()))


def read_json(path: Path) -> Any:
    """Read one JSON file; a PublicationError names the file when it cannot be read or parsed."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PublicationError(f"{path}: not readable JSON ({exc})") from exc


def resource_files(root: Path) -> list[Path]:
    """Return the ``*.json`` files below ``root`` in a stable order."""
    return sorted(p for p in root.rglob("*.json") if p.is_file())


def load(root: Path | None = None) -> Publication:
    """Read every ``<Type>/<id>.json`` below ``root`` (default: the bundled resources).

    Raises PublicationError naming the file for unreadable JSON, a missing ``resourceType``/``id``,
    a file whose path does not match its type and id, or a duplicate ``Type/id``.
    """
    root = root if root is not None else bundled_dir("resources")
    if not root.is_dir():
        raise PublicationError(f"{root} is not a folder")
    entries: dict[str, Entry] = {}
    for path in resource_files(root):
        resource = read_json(path)
        if not isinstance(resource, dict) or not resource.get("resourceType") or not resource.get("id"):
            raise PublicationError(f"{path}: not a FHIR resource (needs resourceType and id)")
        entry = Entry(path, resource)
        expected = Path(resource["resourceType"]) / f"{resource['id']}.json"
        if path.relative_to(root) != expected:
            raise PublicationError(f"{path}: holds {entry.key}, so it belongs at {expected}")
        if entry.key in entries:
            raise PublicationError(f"{path}: duplicate {entry.key}")
        entries[entry.key] = entry
    return Publication(root=root, entries=entries)
