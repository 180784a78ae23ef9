"""FHIR JSON to FHIR XML, by the format's mapping rules (https://hl7.org/fhir/R5/xml.html).

Only the order of elements comes from the definitions (R5's, or R4B's for an R4B or R4 resource: the
types converted to R4 are R4's in R4B too); the values are mapped as they are. So XML works
for incomplete resources, which ``_elements`` and ``_summary`` produce on purpose (a model would refuse
them), keeps each value's exact JSON spelling, and is cheap.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from lxml import etree

from fhir_pub.definitions import elements, is_resource_type, model_class

FHIR_NS = "http://hl7.org/fhir"
EXTENSIONS = {"extension", "modifierExtension"}
# A narrative reaching here passed the build's checks, but it is parsed as untrusted input all the same.
_XHTML = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)


@cache
def _order(type_name: str, release: str) -> dict[str, int]:
    """Each element's position in its type's definition (unknown types keep the JSON order)."""
    try:
        sequence = model_class(type_name, release).elements_sequence()
    except (KeyError, ValueError, AttributeError):
        return {}
    return {name: index for index, name in enumerate(sequence)}


def _child_type(type_name: str, name: str, release: str) -> str:
    try:
        info = elements(type_name, release).get(name)
    except (KeyError, ValueError, AttributeError):
        return ""
    return info.type_name if info is not None else ""


def _text(value: Any) -> str:
    """A JSON primitive as its XML ``value`` attribute."""
    if value is True or value is False:
        return "true" if value else "false"
    return str(value)


def _element(parent: etree._Element, name: str, value: Any, extra: Any, type_name: str, release: str) -> None:
    """Add element ``name`` of type ``type_name`` (``extra`` is a primitive's ``_name``) to ``parent``."""
    if isinstance(value, dict) and isinstance(value.get("resourceType"), str):
        _resource(etree.SubElement(parent, f"{{{FHIR_NS}}}{name}"), value, release)
        return
    if name == "div" and isinstance(value, str):
        parent.append(etree.fromstring(value.encode(), _XHTML))
        return
    child = etree.SubElement(parent, f"{{{FHIR_NS}}}{name}")
    if isinstance(value, dict):
        if "id" in value:  # an element's id is an attribute; so is an extension's url
            child.set("id", _text(value["id"]))
        if type_name == "Extension" and "url" in value:
            child.set("url", _text(value["url"]))
        skip = {"id", "url"} if type_name == "Extension" else {"id"}
        _children(child, {k: v for k, v in value.items() if k not in skip}, type_name, release)
        return
    if isinstance(extra, dict) and "id" in extra:
        child.set("id", _text(extra["id"]))
    if value is not None:
        child.set("value", _text(value))
    if isinstance(extra, dict):
        _children(child, {k: v for k, v in extra.items() if k != "id"}, "Element", release)


def _children(node: etree._Element, value: dict[str, Any], type_name: str, release: str) -> None:
    """The elements of an object in definition order, each primitive merged with its ``_name``."""
    names = [k[1:] if k.startswith("_") else k for k in value if k not in {"resourceType", "fhir_comments"}]
    order = _order(type_name, release)
    for name in sorted(dict.fromkeys(names), key=lambda n: order.get(n, len(order))):
        item, extra = value.get(name), value.get(f"_{name}")
        child_type = _child_type(type_name, name, release) or ("Extension" if name in EXTENSIONS else "")
        if isinstance(item, list) or isinstance(extra, list):
            items = item if isinstance(item, list) else []
            extras = extra if isinstance(extra, list) else []
            for index in range(max(len(items), len(extras))):
                one = items[index] if index < len(items) else None
                more = extras[index] if index < len(extras) else None
                if one is not None or more is not None:
                    _element(node, name, one, more, child_type, release)
        else:
            _element(node, name, item, extra, child_type, release)


def _resource(parent: etree._Element | None, resource: dict[str, Any], release: str) -> etree._Element:
    """A resource as an element named for its type, under ``parent`` or as the document's root."""
    kind = str(resource["resourceType"])
    tag = f"{{{FHIR_NS}}}{kind}"
    node = etree.Element(tag, nsmap={None: FHIR_NS}) if parent is None else etree.SubElement(parent, tag)
    _children(node, resource, kind if is_resource_type(kind, release) else "", release)
    return node


def dumps(resource: dict[str, Any], pretty: bool = False, release: str = "5.0") -> bytes:
    """The FHIR XML document for a FHIR JSON resource of FHIR ``release`` (5.0, 4.3, 4.0)."""
    tree = _resource(None, resource, release)
    return bytes(etree.tostring(tree, xml_declaration=True, encoding="utf-8", pretty_print=pretty))
