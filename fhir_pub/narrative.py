"""Generate the readable XHTML narrative (``text``) of each published resource from its data.

The narrative is derived, never hand-written: ``fhir-pub narrative --write`` regenerates it and a test
checks that every published resource carries exactly what :func:`render` produces.
https://hl7.org/fhir/R5/narrative.html
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from html import escape
from typing import Any

from markdown_it import MarkdownIt

XHTML_NS = "http://www.w3.org/1999/xhtml"

# CommonMark with raw HTML disabled: markdown in a resource becomes escaped, well-formed XHTML.
_markdown = MarkdownIt("commonmark", {"html": False, "xhtmlOut": True, "linkify": False})

Node = Mapping[str, Any]


def _e(value: object) -> str:
    """Escape text content the way an XML serializer writes it back, so JSON and XML narratives agree."""
    return escape(str(value), quote=False)


def _attr(value: object) -> str:
    """Escape an attribute value written between double quotes."""
    return _e(value).replace('"', "&quot;")


def concept_text(concept: Node | None) -> str:
    """Return the human text of a CodeableConcept: its ``text``, else the first coding's display or code."""
    if not concept:
        return ""
    if concept.get("text"):
        return str(concept["text"])
    for coding in concept.get("coding", []):
        if coding.get("display") or coding.get("code"):
            return str(coding.get("display") or coding.get("code"))
    return ""


def _codings(concept: Node | None) -> str:
    codes = [f"{c.get('system', '')}#{c.get('code', '')}" for c in (concept or {}).get("coding", [])]
    return f" <small>({_e(', '.join(codes))})</small>" if codes else ""


def _concept(concept: Node | None) -> str:
    return _e(concept_text(concept)) + _codings(concept)


def _reference(ref: Node | None) -> str:
    if not ref:
        return ""
    label = ref.get("display") or ref.get("reference", "")
    target = ref.get("reference")
    return f'<a href="{_attr(target)}">{_e(label)}</a>' if target else _e(label)


def _codeable_reference(value: Node | None) -> str:
    if not value:
        return ""
    if value.get("reference"):
        return _reference(value["reference"])
    return _concept(value.get("concept"))


def _markdown_html(text: str) -> str:
    return str(_markdown.render(text)).strip()


def _quantity(q: Node | None) -> str:
    if not q:
        return ""
    return _e(f"{q.get('value', '')} {q.get('unit') or q.get('code') or ''}".strip())


def _range(r: Node | None) -> str:
    if not r:
        return ""
    low, high = _quantity(r.get("low")), _quantity(r.get("high"))
    if low and high:
        return f"{low} to {high}"
    return f"at least {low}" if low else f"at most {high}"


def _row(label: str, html: str) -> str:
    return f"<tr><th>{_e(label)}</th><td>{html}</td></tr>" if html else ""


def _table(rows: Iterable[str]) -> str:
    body = "".join(rows)
    return f"<table>{body}</table>" if body else ""


def _ul(items: Iterable[str]) -> str:
    body = "".join(f"<li>{item}</li>" for item in items if item)
    return f"<ul>{body}</ul>" if body else ""


def _join(values: Iterable[str]) -> str:
    return "; ".join(v for v in values if v)


def _telecom(point: Node) -> str:
    value = str(point.get("value", ""))
    if point.get("system") == "url":
        return f'<a href="{_attr(value)}">{_e(value)}</a>'
    return _e(f"{point.get('system', '')}: {value}")


def _clinical_use_definition(r: Node) -> str:
    kind = str(r["type"])
    parts = [f"<h3>{_e(cud_title(r))}</h3>"]
    parts.append(
        _table(
            [
                _row("Kind", _e(kind)),
                _row("Category", _join(_concept(c) for c in r.get("category", []))),
                _row("Medicine", _join(_reference(s) for s in r.get("subject", []))),
                _row("Status", _concept(r.get("status"))),
            ]
        )
    )
    if kind == "warning":
        warning = r["warning"]
        if warning.get("code"):
            parts.append(f"<p><b>Concerns</b>: {_concept(warning['code'])}</p>")
        parts.append(_markdown_html(str(warning.get("description", ""))))
    elif kind == "undesirable-effect":
        effect = r["undesirableEffect"]
        parts.append(
            _table(
                [
                    _row("Effect", _codeable_reference(effect.get("symptomConditionEffect"))),
                    _row("Seriousness", _concept(effect.get("classification"))),
                    _row("Frequency", _concept(effect.get("frequencyOfOccurrence"))),
                ]
            )
        )
    elif kind == "indication":
        indication = r["indication"]
        parts.append(
            _table(
                [
                    _row("Disease", _codeable_reference(indication.get("diseaseSymptomProcedure"))),
                    _row("Disease status", _codeable_reference(indication.get("diseaseStatus"))),
                    _row("Intended effect", _codeable_reference(indication.get("intendedEffect"))),
                    _row("Population", _join(_reference(p) for p in r.get("population", []))),
                ]
            )
        )
    elif kind == "interaction":
        interaction = r["interaction"]
        parts.append(
            _table(
                [
                    _row(
                        "Interacts with",
                        _join(
                            _concept(i.get("itemCodeableConcept")) or _reference(i.get("itemReference"))
                            for i in interaction.get("interactant", [])
                        ),
                    ),
                    _row("Kind of interaction", _concept(interaction.get("type"))),
                    _row("Effect", _codeable_reference(interaction.get("effect"))),
                    _row("Management", _join(_concept(m) for m in interaction.get("management", []))),
                ]
            )
        )
    return "".join(parts)


def cud_title(r: Node) -> str:
    """Return a short human title of a ClinicalUseDefinition, e.g. ``Warning: Tumor lysis syndrome``."""
    kind = str(r.get("type", ""))
    subject: str
    if kind == "warning":
        subject = concept_text(r.get("warning", {}).get("code"))
    elif kind == "undesirable-effect":
        effect = r.get("undesirableEffect", {}).get("symptomConditionEffect", {})
        subject = concept_text(effect.get("concept"))
    elif kind == "indication":
        disease = r.get("indication", {}).get("diseaseSymptomProcedure", {})
        subject = concept_text(disease.get("concept"))
    elif kind == "interaction":
        items = r.get("interaction", {}).get("interactant", [])
        subject = _join(concept_text(i.get("itemCodeableConcept")) for i in items)
    else:
        subject = ""
    label = {"undesirable-effect": "Side effect"}.get(kind, kind.capitalize())
    return f"{label}: {subject}" if subject else label


def _dosage(d: Node) -> str:
    timing = d.get("timing", {}).get("repeat", {})
    rows = [
        _row("Instructions", _e(d.get("text", ""))),
        _row("Route", _concept(d.get("route"))),
        _row(
            "Infusion time",
            _e(f"{timing['duration']} {timing.get('durationUnit', '')}") if "duration" in timing else "",
        ),
        _row("Also", _ul(_concept(a) for a in d.get("additionalInstruction", []))),
        _row("For the patient", _e(d.get("patientInstruction", ""))),
    ]
    return _table(rows)


def _medication_knowledge(r: Node) -> str:
    parts = [f"<h3>{_e(concept_text(r.get('code')))}</h3>"]
    definitional = r.get("definitional", {})
    parts.append(
        _table(
            [
                _row("Names", _join(_e(n) for n in r.get("name", []))),
                _row("Code", _concept(r.get("code"))),
                _row("Status", _e(r.get("status", ""))),
                _row("Jurisdictions", _join(_concept(j) for j in r.get("intendedJurisdiction", []))),
                _row(
                    "Classification",
                    _ul(
                        _concept(c.get("type"))
                        + ": "
                        + _join(_concept(x) for x in c.get("classification", []))
                        for c in r.get("medicineClassification", [])
                    ),
                ),
                _row("Dose form", _concept(definitional.get("doseForm"))),
                _row("Route", _join(_concept(x) for x in definitional.get("intendedRoute", []))),
                _row(
                    "Ingredients",
                    _join(
                        f"{_codeable_reference(i.get('item'))} ({_concept(i.get('type'))})"
                        for i in definitional.get("ingredient", [])
                    ),
                ),
                _row(
                    "Characteristics",
                    _ul(
                        f"{_concept(c.get('type'))}: {_e(c.get('valueString', ''))}"
                        for c in definitional.get("drugCharacteristic", [])
                    ),
                ),
                _row("Product", _join(_reference(m) for m in r.get("associatedMedication", []))),
                _row(
                    "Regulated by",
                    _join(_reference(x.get("regulatoryAuthority")) for x in r.get("regulatory", [])),
                ),
            ]
        )
    )
    if r.get("preparationInstruction"):
        parts.append("<h4>Preparation</h4>" + _markdown_html(str(r["preparationInstruction"])))
    for guideline in r.get("indicationGuideline", []):
        parts.append(
            "<h4>Use and dosing</h4><p>For "
            + _join(_codeable_reference(i) for i in guideline.get("indication", []))
            + "</p>"
        )
        for dosing in guideline.get("dosingGuideline", []):
            items = [
                f"<b>Intent</b>: {_concept(dosing['treatmentIntent'])}"
                if dosing.get("treatmentIntent")
                else ""
            ]
            for group in dosing.get("dosage", []):
                items.extend(
                    f"<b>{_concept(group.get('type'))}</b>{_dosage(d)}" for d in group.get("dosage", [])
                )
            if dosing.get("administrationTreatment"):
                items.append(f"<b>Given with it</b>: {_concept(dosing['administrationTreatment'])}")
            items.extend(
                f"<b>{_concept(c.get('type'))}</b>: "
                + (
                    _range(c.get("valueRange"))
                    or _quantity(c.get("valueQuantity"))
                    or _concept(c.get("valueCodeableConcept"))
                )
                for c in dosing.get("patientCharacteristic", [])
            )
            parts.append(_ul(items))
    if r.get("monitoringProgram"):
        parts.append(
            "<h4>Monitoring</h4>"
            + _ul(f"{_e(m.get('name', ''))} ({_concept(m.get('type'))})" for m in r["monitoringProgram"])
        )
    if r.get("storageGuideline"):
        parts.append(
            "<h4>Storage and disposal</h4>"
            + _ul(_e(n.get("text", "")) for s in r["storageGuideline"] for n in s.get("note", []))
        )
    if r.get("monograph"):
        parts.append(
            "<h4>Sources</h4>"
            + _ul(f"{_reference(m.get('source'))} ({_concept(m.get('type'))})" for m in r["monograph"])
        )
    if r.get("clinicalUseIssue"):
        parts.append("<h4>Clinical use</h4>" + _ul(_reference(c) for c in r["clinicalUseIssue"]))
    return "".join(parts)


def _document_reference(r: Node) -> str:
    parts = []
    for content in r.get("content", []):
        attachment = content.get("attachment", {})
        title = attachment.get("title", r.get("id", ""))
        parts.append(f"<h3>{_e(title)}</h3>")
        parts.append(
            _table(
                [
                    _row(
                        "Address",
                        _telecom({"system": "url", "value": attachment["url"]})
                        if attachment.get("url")
                        else "",
                    ),
                    _row("Language", _e(attachment.get("language", ""))),
                    _row("Format", _e(attachment.get("contentType", ""))),
                    _row("Document date", _e(attachment.get("creation", ""))),
                ]
            )
        )
    parts.append(
        _table(
            [
                _row("Type", _concept(r.get("type"))),
                _row("Category", _join(_concept(c) for c in r.get("category", []))),
                _row("Author", _join(_reference(a) for a in r.get("author", []))),
                _row("Custodian", _reference(r.get("custodian"))),
                _row("About", _join(_reference(s) for s in [r.get("subject")] if s)),
                _row("Status", _e(f"{r.get('status', '')} / {r.get('docStatus', '')}")),
                _row("Recorded", _e(r.get("date", ""))),
            ]
        )
    )
    if r.get("description"):
        parts.append(_markdown_html(str(r["description"])))
    return "".join(parts)


def _medication(r: Node) -> str:
    return f"<h3>{_e(concept_text(r.get('code')))}</h3>" + _table(
        [
            _row("Code", _concept(r.get("code"))),
            _row("Status", _e(r.get("status", ""))),
            _row("Dose form", _concept(r.get("doseForm"))),
            _row("Ingredients", _join(_codeable_reference(i.get("item")) for i in r.get("ingredient", []))),
        ]
    )


def _organization(r: Node) -> str:
    contacts = [
        _e(concept_text(c.get("purpose")) or "Contact")
        + ": "
        + _join(_telecom(t) for t in c.get("telecom", []))
        for c in r.get("contact", [])
    ]
    parts = [f"<h3>{_e(r.get('name', ''))}</h3>"]
    parts.append(
        _table(
            [_row("Also known as", _join(_e(a) for a in r.get("alias", []))), _row("Contact", _ul(contacts))]
        )
    )
    if r.get("description"):
        parts.append(_markdown_html(str(r["description"])))
    return "".join(parts)


TARGET_PATH = "http://hl7.org/fhir/StructureDefinition/targetPath"


def target_paths(target: Node) -> list[str]:
    """The elements a Provenance target points at (R5 ``targetPath``); empty for a whole resource."""
    return [
        str(x["valueString"])
        for x in target.get("extension", [])
        if x.get("url") == TARGET_PATH and isinstance(x.get("valueString"), str)
    ]


def _target(target: Node) -> str:
    paths = target_paths(target)
    return _reference(target) + (f" <code>{_e(', '.join(paths))}</code>" if paths else "")


def _provenance(r: Node) -> str:
    return "<h3>Provenance</h3>" + _table(
        [
            _row("About", _ul(_target(t) for t in r.get("target", []))),
            _row("Recorded", _e(r.get("recorded", ""))),
            _row("By", _join(_reference(a.get("who")) for a in r.get("agent", []))),
            _row(
                "Sources",
                _ul(f"{_reference(e.get('what'))} ({_e(e.get('role', ''))})" for e in r.get("entity", [])),
            ),
        ]
    )


def _group(r: Node) -> str:
    rows = [
        f"{_concept(c.get('code'))}: "
        + (
            _range(c.get("valueRange"))
            or _quantity(c.get("valueQuantity"))
            or _concept(c.get("valueCodeableConcept"))
        )
        + (" (excluded)" if c.get("exclude") else "")
        for c in r.get("characteristic", [])
    ]
    parts = [f"<h3>{_e(r.get('name', ''))}</h3>"]
    if r.get("description"):
        parts.append(_markdown_html(str(r["description"])))
    parts.append(_table([_row("Members", _e(r.get("type", ""))), _row("Defined by", _ul(rows))]))
    return "".join(parts)


def _element_rules(element: Node) -> str:
    rules = [
        f"{key} = {_e(json_value)}"
        for key, json_value in element.items()
        if key.startswith(("fixed", "pattern"))
    ]
    if element.get("binding"):
        binding = element["binding"]
        rules.append(f"bound ({_e(binding.get('strength', ''))}) to {_e(binding.get('valueSet', ''))}")
    targets = [t for ty in element.get("type", []) for t in ty.get("targetProfile", [])]
    if targets:
        rules.append("refers to " + ", ".join(_e(t.rsplit("/", 1)[-1]) for t in targets))
    if element.get("slicing"):
        rules.append(
            "sliced by "
            + ", ".join(_e(d.get("path", "")) for d in element["slicing"].get("discriminator", []))
        )
    rules.extend(f"<b>{_e(c['key'])}</b>: {_e(c.get('human', ''))}" for c in element.get("constraint", []))
    return "<br/>".join(rules)


def _cardinality(element: Node) -> str:
    if "min" not in element and "max" not in element:
        return ""
    return _e(f"{element.get('min', '')}..{element.get('max', '')}")


def _structure_definition(r: Node) -> str:
    rows = "".join(
        f"<tr><td>{_e(e.get('id', ''))}</td><td>{_cardinality(e)}</td><td>{_element_rules(e)}</td></tr>"
        for e in r.get("differential", {}).get("element", [])
    )
    return (
        f"<h3>{_e(r.get('title') or r.get('name', ''))}</h3>"
        + _table([_row("URL", _e(r.get("url", ""))), _row("Constrains", _e(r.get("type", "")))])
        + _markdown_html(str(r.get("description", "")))
        + f"<table><tr><th>Element</th><th>Card.</th><th>Rules</th></tr>{rows}</table>"
    )


def _value_set(r: Node) -> str:
    includes = []
    for include in r.get("compose", {}).get("include", []):
        codes = ", ".join(_e(c["code"]) for c in include.get("concept", []))
        sets = ", ".join(_e(v) for v in include.get("valueSet", []))
        includes.append(
            _join([f"{_e(include.get('system', ''))}: {codes}" if include.get("system") else "", sets])
        )
    return (
        f"<h3>{_e(r.get('title') or r.get('name', ''))}</h3>"
        + _table([_row("URL", _e(r.get("url", "")))])
        + _markdown_html(str(r.get("description", "")))
        + _ul(includes)
    )


RENDERERS: dict[str, Callable[[Node], str]] = {
    "StructureDefinition": _structure_definition,
    "ValueSet": _value_set,
    "ClinicalUseDefinition": _clinical_use_definition,
    "DocumentReference": _document_reference,
    "Group": _group,
    "Medication": _medication,
    "MedicationKnowledge": _medication_knowledge,
    "Organization": _organization,
    "Provenance": _provenance,
}


def render(resource: Node) -> str:
    """Return the narrative ``div`` for ``resource`` (its ``text`` is ignored)."""
    renderer = RENDERERS.get(str(resource.get("resourceType")))
    if renderer is None:
        raise ValueError(f"no narrative renderer for {resource.get('resourceType')}")
    return f'<div xmlns="{XHTML_NS}">{renderer(resource)}</div>'


def with_narrative(resource: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of ``resource`` whose ``text`` is the generated narrative, placed after ``meta``."""
    out: dict[str, Any] = {}
    for key, value in resource.items():
        if key == "text":
            continue
        out[key] = value
        if key == "meta":
            out["text"] = {"status": "generated", "div": render(resource)}
    if "text" not in out:
        out = {
            "resourceType": out["resourceType"],
            "text": {"status": "generated", "div": render(resource)},
        } | out
    return out
