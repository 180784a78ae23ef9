"""A publication project: a folder with ``fhir-pub.toml``, its ``resources/`` and its own verified codes."""

from __future__ import annotations

import json
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fhir_pub.conformance import Conformance, load_conformance
from fhir_pub.errors import PublicationError
from fhir_pub.facts import FACTS_DIR
from fhir_pub.publication import bundled_dir

PROJECT_FILE = "fhir-pub.toml"
VERIFIED_CODES_FILE = "verified-codes.json"
# What the bundled publication is called when a command says which publication it read.
BUNDLED_DRUG = "Besponsa"
_KEYS = ("name", "canonical", "publisher", "version")


@dataclass(frozen=True)
class Project:
    """A publication project, as its ``fhir-pub.toml`` describes it."""

    root: Path
    name: str
    canonical: str  # the canonical base of the project's own resources
    publisher: str
    version: str

    @property
    def resources_dir(self) -> Path:
        """The project's ``resources/``: one ``<Type>/<id>.json`` per resource."""
        return self.root / "resources"

    @property
    def profiles_dir(self) -> Path | None:
        """The project's own ``profiles/`` if it has one; None: it uses the bundled profiles."""
        own = self.root / "profiles"
        return own if own.is_dir() else None

    @property
    def verified_codes(self) -> Path:
        """The project's ``verified-codes.json``, which adds its codes to the profiles' verified codes."""
        return self.root / VERIFIED_CODES_FILE

    @property
    def artifact(self) -> Path:
        """Where ``fhir-pub build`` writes the project's publication, and ``serve`` finds it."""
        return self.root / "build" / "publication.sqlite"

    @property
    def package(self) -> dict[str, str]:
        """What the project's FHIR NPM package says of it (https://hl7.org/fhir/packages.html)."""
        return {
            "name": self.name,
            "version": self.version,
            "canonical": self.canonical,
            "title": self.name,
            "description": f"{self.name}, published by {self.publisher} with fhir-pub.",
        }

    @property
    def label(self) -> str:
        """The project as a command names it: ``project "my-drugs" (/path/to/it)``."""
        return f"project {json.dumps(self.name, ensure_ascii=False)} ({self.root})"


def read_project(root: Path) -> Project:
    """Read the project whose ``fhir-pub.toml`` is in ``root``; PublicationError says what is wrong."""
    path = root / PROJECT_FILE
    try:
        with path.open("rb") as handle:
            settings = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise PublicationError(f"{root} is not a fhir-pub project: it has no {PROJECT_FILE}") from exc
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise PublicationError(f"{path}: not readable TOML ({exc})") from exc
    values = {key: settings.get(key) for key in _KEYS}
    wrong = [key for key, value in values.items() if not isinstance(value, str) or not value.strip()]
    if wrong:
        raise PublicationError(f"{path}: needs {', '.join(wrong)} (each a non-empty string)")
    if not str(values["canonical"]).startswith(("http://", "https://")):
        raise PublicationError(f"{path}: canonical must be an http(s) URL, not {values['canonical']!r}")
    return Project(root.resolve(), **{key: str(value) for key, value in values.items()})


def find_project(start: Path) -> Project | None:
    """The project of ``start``: the nearest folder at or above it with a ``fhir-pub.toml``; None if none."""
    start = start.resolve()
    for folder in (start, *start.parents):
        if (folder / PROJECT_FILE).is_file():
            return read_project(folder)
    return None


def _toml_string(value: str) -> str:
    # A JSON string is a TOML basic string: the same quotes and escapes (https://toml.io/en/v1.0.0#string).
    return json.dumps(value, ensure_ascii=False)


_README = """\
# {name}

A fhir-pub publication project.

- `fhir-pub.toml`: the project's name, canonical base, publisher and version.
- `facts/`: one fact file per drug (`fhir-pub draft LEAFLET.txt` drafts one from a leaflet);
  `fhir-pub generate --write` writes the resources they describe into `resources/`.
- `resources/`: the resources you publish, one FHIR R5 resource per file at `<Type>/<id>.json`, each
  declaring the fhir-pub profile it follows in `meta.profile`.
- `verified-codes.json`: the codes your resources use beyond the ones fhir-pub ships (a ValueSet like
  fhir-pub's own `profiles/ValueSet/verified-codes.json`). Under `compose.include` give each code with its
  `system`, `code`, `display` and the source that verified the pair, as a
  `http://hl7.org/fhir/StructureDefinition/valueset-concept-comments` extension. A Coding whose code is
  not verified is refused; give the concept as text instead when no source confirms a code.
- `profiles/` (optional): your own profiles, used instead of the ones fhir-pub ships.
- `build/`: what `fhir-pub build` writes (`build/publication.sqlite`), and `fhir-pub serve` serves.

Run the commands anywhere in this folder: `fhir-pub generate --write`, `fhir-pub validate`,
`fhir-pub narrative --write`,
`fhir-pub build`, `fhir-pub serve`.
"""


def init_project(folder: Path, name: str, canonical: str, publisher: str, version: str) -> Project:
    """Create a project in ``folder`` (new, or empty): its project file, ``resources/``, codes, README.

    Refuses (PublicationError, nothing written) a folder that holds anything, or values the project
    file could not be read back with.
    """
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise PublicationError(f"{folder} exists and is not empty; give a new or empty folder")
    values = {"name": name, "canonical": canonical, "publisher": publisher, "version": version}
    wrong = [key for key, value in values.items() if not value.strip()]
    if wrong:
        raise PublicationError(f"{', '.join(wrong)} cannot be empty")
    if not canonical.startswith(("http://", "https://")):
        raise PublicationError(f"canonical must be an http(s) URL, not {canonical!r}")
    project_file = "# A fhir-pub publication project: `fhir-pub` commands run in this folder read it.\n"
    project_file += "".join(f"{key} = {_toml_string(value)}\n" for key, value in values.items())
    try:  # checked before anything is written: the file must read back as given
        readable = tomllib.loads(project_file) == values
    except tomllib.TOMLDecodeError:
        readable = False
    if not readable:
        raise PublicationError("the name, canonical, publisher or version has a character TOML cannot hold")
    codes = {
        "resourceType": "ValueSet",
        "description": (
            "The codes this project's resources use beyond fhir-pub's own verified codes: each with its "
            "display and the source that verified it (see README.md)."
        ),
        "compose": {"include": []},
    }
    (folder / "resources").mkdir(parents=True, exist_ok=True)
    (folder / FACTS_DIR).mkdir()
    (folder / PROJECT_FILE).write_text(project_file, encoding="utf-8")
    (folder / VERIFIED_CODES_FILE).write_text(json.dumps(codes, indent=2) + "\n", encoding="utf-8")
    (folder / "README.md").write_text(_README.format(name=name), encoding="utf-8")
    (folder / ".gitignore").write_text("build/\n", encoding="utf-8")
    return read_project(folder)


@dataclass(frozen=True)
class Sources:
    """Where one publication is read from: its resources, its profiles, and the codes a project adds."""

    resources: Path
    profiles: Path
    verified_codes: Path | None
    project: Project | None
    explicit_resources: bool = False
    explicit_profiles: bool = False

    def conformance(self) -> Conformance:
        """The profiles, with the project's verified codes added when it uses them."""
        return load_conformance(self.profiles, self.verified_codes)

    @property
    def label(self) -> str:
        """The publication found (a project, or the bundled one), before any explicit folder."""
        if self.project is not None:
            return self.project.label
        return f"the bundled publication ({BUNDLED_DRUG}; no {PROJECT_FILE} here or above)"

    def describe(self, paths: Sequence[Path] = ()) -> str:
        """Which publication a command reads, in one line; ``paths``: the files it was given instead."""
        if not paths and not self.explicit_resources and not self.explicit_profiles:
            return self.label
        if self.explicit_profiles:
            profiles = f"profiles in {self.profiles}"
        elif self.project is None:
            profiles = "the bundled profiles"
        elif self.project.profiles_dir is not None:
            profiles = f"the profiles of {self.project.label}"
        else:
            profiles = f"the bundled profiles and the verified codes of {self.project.label}"
        if paths:
            return f"{', '.join(map(str, paths))}, with {profiles}"
        if self.explicit_resources:
            return f"resources in {self.resources}, with {profiles}"
        return f"{self.label}, with {profiles}"


def locate(
    start: Path,
    project_dir: Path | None = None,
    resources_dir: Path | None = None,
    profiles_dir: Path | None = None,
) -> Sources:
    """The sources a command reads: ``--project DIR`` or the project of ``start``, else the bundled ones.

    Explicit ``resources_dir`` and ``profiles_dir`` win over the project's. A project without its own
    ``profiles/`` uses the bundled profiles, with its ``verified-codes.json`` added to their codes; an
    explicit ``profiles_dir`` is used as it is.
    """
    project = read_project(project_dir) if project_dir is not None else find_project(start)
    verified: Path | None = None
    if profiles_dir is not None:
        profiles = profiles_dir
    elif project is not None and project.profiles_dir is not None:
        profiles = project.profiles_dir
    else:
        profiles = bundled_dir("profiles")
    if profiles_dir is None and project is not None and project.verified_codes.is_file():
        verified = project.verified_codes
    if resources_dir is not None:
        resources = resources_dir
    elif project is not None:
        resources = project.resources_dir
    else:
        resources = bundled_dir("resources")
    return Sources(
        resources, profiles, verified, project, resources_dir is not None, profiles_dir is not None
    )
