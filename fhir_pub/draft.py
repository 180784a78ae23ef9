"""Draft a fact file from a leaflet's text: its sections, their list items, one candidate fact per item.

Three layouts are read, the ones fhir-pub publishes from: MedlinePlus drug pages (``medlineplus``),
Lexidrug patient education as MSK publishes it (``lexidrug``), and section 17 of a US prescribing
information, patient counseling (``uspi17``). A layout is known by its section headings, matched by a
few key words each (never the publishers' sentences). Every drafted fact carries ``review``: the wording
is the leaflet's own and must be restated, and the kind, seriousness and code only suggested; ``fhir-pub
generate`` refuses a fact still marked for review. A code is suggested only where the verified table has
the item's exact term as a display.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import tomli_w

from fhir_pub.errors import PublicationError
from fhir_pub.facts import Codes

SERIOUS = "http://terminology.hl7.org/CodeSystem/adverse-event-seriousness|serious"
# Sections whose items describe the product (names, use, dosing, storage) rather than a clinical use.
PRODUCT = "product"


@dataclass(frozen=True)
class Rule:
    """A section heading of a layout: its key words, and what its items suggest."""

    pattern: str
    kind: str  # a ClinicalUseDefinition kind, or PRODUCT
    serious: bool | None = None

    def matches(self, line: str) -> bool:
        """Whether ``line`` is this heading."""
        return re.search(self.pattern, line, re.IGNORECASE) is not None


@dataclass(frozen=True)
class Layout:
    """One leaflet format: how it is recognised, where its content starts and stops, its headings."""

    name: str
    marker: str  # a line that only this layout has
    rules: tuple[Rule, ...]
    end: str  # the first line after the content (disclaimers, page furniture)
    bullets: bool  # items are "- " lines (else each line or paragraph is one)
    loinc: str  # the document type, a verified LOINC code
    document_type: str


LEXIDRUG = Layout(
    "lexidrug",
    r"^(patient & caregiver education|what is this drug used for\?)$",
    (
        Rule(r"^warning$", "warning"),
        Rule(r"^brand names", PRODUCT),
        Rule(r"used for\?$", "indication"),
        Rule(r"\bbefore i\b", "warning"),
        Rule(r"know or do while", "warning"),
        Rule(r"side effects .*right away\??$", "undesirable-effect", True),
        Rule(r"^what are some other side effects", "undesirable-effect", False),
        Rule(r"best (taken|used)\?$|miss a dose\?$|store and/or throw out", PRODUCT),
        Rule(r"^general drug facts$", "warning"),
    ),
    r"^(consumer information use and disclaimer|last reviewed date)$",
    True,
    "http://loinc.org|34895-3",
    "Patient education leaflet",
)
MEDLINEPLUS = Layout(
    "medlineplus",
    r"medlineplus drug information$|^why is this medication prescribed\?$",
    (
        Rule(r"^important warning:?$", "warning"),
        Rule(r"^why is this medication prescribed\?$", "indication"),
        Rule(r"^how should this medicine be used\?$", PRODUCT),
        Rule(r"^other uses for this medicine$", "warning"),
        Rule(r"special precautions", "warning"),
        Rule(r"special dietary", "warning"),
        Rule(r"side effects can this medication cause\?$", "undesirable-effect"),
        Rule(r"forget a dose\?$|storage and disposal", PRODUCT),
        Rule(r"^in case of emergency", "warning"),
        Rule(r"^what other information should i know\?$", "warning"),
        Rule(r"^brand names$", PRODUCT),
    ),
    r"^(last revised|browse drugs)",
    False,
    "http://loinc.org|34895-3",
    "Consumer drug information",
)
USPI17 = Layout(
    "uspi17",
    r"patient counseling information",
    (),  # headings are the topics themselves: see _uspi_sections
    r"^(did you find an answer|report adverse event)",
    False,
    "http://loinc.org|88436-1",
    "Patient counseling information (US prescribing information, section 17)",
)
LAYOUTS = {layout.name: layout for layout in (LEXIDRUG, MEDLINEPLUS, USPI17)}


@dataclass(frozen=True)
class Item:
    """One list item (or paragraph) of a section, with the lead-in it follows, if any."""

    text: str
    lead: str = ""
    serious: bool | None = None


@dataclass
class Section:
    """A section of a leaflet: its heading as written, what it suggests, and its items."""

    heading: str
    kind: str
    serious: bool | None = None
    items: list[Item] = field(default_factory=list)


@dataclass(frozen=True)
class Leaflet:
    """A leaflet read into its layout, title and sections."""

    layout: Layout
    title: str
    sections: tuple[Section, ...]


def _lines(text: str) -> list[str]:
    return [re.sub(r"\s+", " ", line).strip() for line in text.splitlines()]


def detect(text: str) -> Layout:
    """The layout of a leaflet's text; PublicationError if it is none of the three."""
    lines = _lines(text)
    for layout in (USPI17, MEDLINEPLUS, LEXIDRUG):
        if any(re.search(layout.marker, line, re.IGNORECASE) for line in lines):
            return layout
    raise PublicationError(
        "not a leaflet layout fhir-pub reads (MedlinePlus drug page, Lexidrug / MSK patient education, "
        "USPI section 17 patient counseling): none of their section headings is there"
    )


def _rule(layout: Layout, line: str) -> Rule | None:
    return next((rule for rule in layout.rules if rule.matches(line)), None)


def _is_lead(line: str) -> bool:
    """A line that introduces the items after it (``... call your doctor right away:``)."""
    return line.endswith((":", ","))


def _content(layout: Layout, lines: Sequence[str]) -> list[str]:
    end = next((i for i, line in enumerate(lines) if re.search(layout.end, line, re.IGNORECASE)), len(lines))
    return list(lines[:end])


def _headed_sections(layout: Layout, lines: Sequence[str]) -> Iterator[Section]:
    """Sections of a layout with fixed headings; a heading followed by another is a table of contents."""
    content = _content(layout, lines)
    following = [next((later for later in content[i + 1 :] if later), "") for i in range(len(content))]
    section: Section | None = None
    lead, serious, last_bullet = "", None, False
    for index, line in enumerate(content):
        if not line:
            last_bullet = False
            continue
        rule = _rule(layout, line)
        if rule is not None:
            if not layout.bullets and _rule(layout, following[index]) is not None:
                continue  # a table of contents entry, not the section
            if section is not None:
                yield section
            section = Section(line, rule.kind, rule.serious)
            lead, serious, last_bullet = "", rule.serious, False
            continue
        if (
            section is None
            or not re.search(r"[a-z]{2}", line, re.IGNORECASE)
            or line.startswith(("http", ")"))
        ):
            continue
        if layout.bullets and line.startswith("- "):
            section.items.append(Item(line[2:].strip(), lead, serious))
            last_bullet = True
        elif layout.bullets and last_bullet and section.items and content[index - 1]:
            # a bullet's text wrapped onto the next line
            previous = section.items.pop()
            section.items.append(Item(f"{previous.text} {line}", previous.lead, previous.serious))
        elif _is_lead(line):
            lead = line
            if section.kind == "undesirable-effect" and section.serious is None:
                serious = bool(re.search(r"\bserious\b", line, re.IGNORECASE))
        else:
            section.items.append(Item(line, lead, serious))
            last_bullet = False
    if section is not None:
        yield section


def _uspi_sections(lines: Sequence[str]) -> Iterator[Section]:
    """USPI section 17: each topic is a short heading line, then the counseling paragraphs under it."""
    start = next(i for i, line in enumerate(lines) if re.search(USPI17.marker, line, re.IGNORECASE))
    content = _content(USPI17, lines[start + 1 :])
    section: Section | None = None
    blanks = 0
    for line in content:
        if not line:
            blanks += 1
            continue
        heading = len(line.split()) <= 16 and not line.endswith((".", ":", ";", ",", "?", "]"))
        if heading or section is None or (blanks >= 2 and section.items):
            # a topic; a paragraph after two blank lines and no heading starts a topic of its own
            if section is not None and section.items:
                yield section
            section = Section(line if heading else "", "warning")
        blanks = 0
        if not heading:
            section.items.append(Item(line))
    if section is not None and section.items:
        yield section


def _title(layout: Layout, lines: Sequence[str]) -> str:
    filled = [line for line in lines if line]
    if layout is USPI17:
        return next(line for line in filled if re.search(USPI17.marker, line, re.IGNORECASE))
    if layout is MEDLINEPLUS:
        for line in filled:
            found = re.match(r"^(.+): MedlinePlus Drug Information$", line, re.IGNORECASE)
            if found:
                return found.group(1)
    for line in filled:  # the first line that is neither a banner nor a heading
        if not line.isupper() and _rule(layout, line) is None and len(line) < 80:
            return line
    return filled[0] if filled else ""


def read_leaflet(text: str, layout_name: str | None = None) -> Leaflet:
    """A leaflet's layout, title and sections with their items; PublicationError if unreadable."""
    if layout_name is not None and layout_name not in LAYOUTS:
        raise PublicationError(f"unknown layout {layout_name!r}: one of {', '.join(LAYOUTS)}")
    layout = LAYOUTS[layout_name] if layout_name else detect(text)
    lines = _lines(text)
    if layout is USPI17:
        if not any(re.search(USPI17.marker, line, re.IGNORECASE) for line in lines):
            raise PublicationError("no 'Patient Counseling Information' heading: not a USPI section 17")
        sections = tuple(_uspi_sections(lines))
    else:
        sections = tuple(s for s in _headed_sections(layout, lines) if s.items)
    if not sections:
        raise PublicationError(f"no section of the {layout.name} layout with any item was found")
    return Leaflet(layout, _title(layout, lines), sections)


def _slug(text: str, words: int = 5) -> str:
    found = re.findall(r"[a-z0-9]+", text.lower())
    return "-".join(found[:words]) or "item"


def _term(text: str) -> str:
    """An item as a term: its words without the closing full stop."""
    return text.strip().rstrip(".").strip()


def _concept(text: str, codes: Codes) -> dict[str, str]:
    concept = {"text": text}
    code = codes.exact(text)
    if code is not None:
        concept["code"] = code
    return concept


_PREFIX = {
    "warning": "warning",
    "undesirable-effect": "effect",
    "indication": "indication",
    "interaction": "interaction",
    "contraindication": "contraindication",
}


def draft(leaflet: Leaflet, codes: Codes, key: str, cite: str, source: str) -> dict[str, Any]:
    """The draft fact file of ``leaflet`` (as a table): its leaflet entry and one fact per item.

    ``key`` names the leaflet in ``sources``, ``cite`` is how wording cites it, ``source`` is where the
    text was read (said in each fact's ``review``).
    """
    document = {
        "id": _slug(f"{key} {leaflet.title}", 4),
        "cite": cite,
        "review": f"drafted from {source} ({leaflet.layout.name} layout): give its url, date and publisher",
        "fhir": {
            "status": "current",
            "docStatus": "final",
            "type": {
                "text": leaflet.layout.document_type,
                "coding": [codes.coding(leaflet.layout.loinc, source)],
            },
            "content": [
                {"attachment": {"contentType": "text/html", "language": "en-US", "title": leaflet.title}}
            ],
        },
    }
    facts: list[dict[str, Any]] = []
    seen: set[str] = set()
    for section in leaflet.sections:
        for item in section.items:
            kind = "warning" if section.kind == PRODUCT else section.kind
            term = _term(item.text)
            topic = section.heading if leaflet.layout is USPI17 and section.heading else term
            base = f"{_PREFIX[kind]}-{_slug(topic)}"
            id_, number = base, 1
            while id_ in seen:
                number += 1
                id_ = f"{base}-{number}"
            seen.add(id_)
            where = f"section {section.heading!r}" if section.heading else "a paragraph before any heading"
            note = f"from {where} of {source}: restate in your own words, check kind and codes"
            if section.kind == PRODUCT:
                note += "; the section describes the product (names, use, dosing, storage): see [product]"
            fact: dict[str, Any] = {
                "id": id_,
                "kind": kind,
                "sources": [key],
                "review": note,
                "section": section.heading,
            }
            if kind == "undesirable-effect":
                fact["effect"] = _concept(term, codes)
                if item.serious:
                    fact["seriousness"] = {"text": f"Serious ({cite})", "code": SERIOUS}
                elif item.serious is False:
                    fact["seriousness"] = {"text": f"Not among the effects to report right away ({cite})"}
            elif kind in ("indication", "contraindication"):
                fact["disease"] = _concept(term, codes)
            else:
                fact["code"] = _concept(topic, codes)
                fact["description"] = f"{item.text} ({cite})"
            if item.lead:
                fact["lead"] = item.lead
            facts.append(fact)
    return {"leaflets": {key: document}, "facts": facts}


def draft_toml(table: dict[str, Any], source: str, layout: Layout) -> str:
    """A drafted fact file as TOML, opened by a comment that says how to review it."""
    head = (
        f"# Draft facts from {source} ({layout.name} layout), written by fhir-pub draft.\n"
        "# Every entry is marked `review`: check it against the leaflet, restate its wording in your own\n"
        "# words,"
        " fix its kind, seriousness and codes, then delete `review` (and the notes `section`, `lead`).\n"
        "# fhir-pub generate refuses an entry still marked for review.\n\n"
    )
    return head + tomli_w.dumps(table, multiline_strings=True)
