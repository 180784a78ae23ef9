"""Assemble a searchset Bundle from stored resource bytes (no parse, no re-serialization of the resources).

https://hl7.org/fhir/R5/search.html#searchset, https://hl7.org/fhir/R5/bundle.html
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from fhir_pub.definitions import elements, mandatory

# https://hl7.org/fhir/R5/search.html#summary: a subsetted resource is tagged so
SUBSETTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"}
ALWAYS = frozenset({"resourceType", "id", "meta"})


def entry(full_url: str, resource: bytes, mode: str) -> bytes:
    """One entry: its absolute ``fullUrl``, the resource, and ``search.mode`` (match, include, outcome)."""
    return (
        b'{"fullUrl":'
        + orjson.dumps(full_url)
        + b',"resource":'
        + resource
        + b',"search":{"mode":"'
        + mode.encode()
        + b'"}}'
    )


def entries(
    base: str,
    keyed: Sequence[tuple[str, tuple[str, str]]],
    bodies: Mapping[tuple[str, str], bytes],
    summary: str | None = None,
    wanted: Sequence[str] | None = None,
    release: str = "5.0",
) -> list[bytes]:
    """The entries of ``(mode, (type, id))`` in order, from their stored bodies, subsetted as asked.

    A key without a body is left out (an include whose target the publication does not hold).
    ``release`` is the FHIR version of the bodies, whose definitions say what a summary keeps.
    """
    reduce = wanted is not None or summary in {"true", "text", "data"}
    made = []
    for mode, (kind, rid) in keyed:
        body = bodies.get((kind, rid))
        if body is not None:
            made.append(
                entry(
                    f"{base}/{kind}/{rid}", subset(body, summary, wanted, release) if reduce else body, mode
                )
            )
    return made


def searchset(entries: Sequence[bytes], total: int | None, links: Sequence[tuple[str, str]]) -> bytes:
    """The Bundle: type searchset, total (unless asked not to), links, entries."""
    head: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None:
        head["total"] = total
    head["link"] = [{"relation": relation, "url": url} for relation, url in links]
    return with_entries(orjson.dumps(head), entries)


def with_entries(head: bytes, entries: Sequence[bytes]) -> bytes:
    """A Bundle's JSON ``head`` with its entries spliced in; none, no ``entry`` at all.

    FHIR JSON has no empty arrays (https://hl7.org/fhir/R5/json.html#arrays; ele-1), so an empty
    search, ``_count=0`` or ``_summary=count`` leaves ``entry`` out.
    """
    if not entries:
        return head
    return head[:-1] + b',"entry":[' + b",".join(entries) + b"]}"


def subset(body: bytes, summary: str | None, wanted: Sequence[str] | None, release: str = "5.0") -> bytes:
    """The resource reduced per ``_summary`` (true, text, data) or ``_elements``, tagged SUBSETTED."""
    resource: dict[str, Any] = orjson.loads(body)
    kind = str(resource["resourceType"])
    known = elements(kind, release)
    # https://hl7.org/fhir/R5/search.html#elements: a server SHOULD keep the mandatory elements
    required = mandatory(kind, release)
    if summary == "data":
        keep: set[str] | frozenset[str] = set(resource) - {"text"}
    elif summary == "text":
        keep = ALWAYS | {"text"} | required
    elif summary == "true":
        keep = ALWAYS | required | {n for n, i in known.items() if i.meta.get("summary_element_property")}
    else:
        keep = ALWAYS | required | set(wanted or ())
    # A primitive's id and extensions travel beside it as "_name" (https://hl7.org/fhir/R5/json.html#primitive)
    reduced = {
        key: value for key, value in resource.items() if key in keep or (key[0] == "_" and key[1:] in keep)
    }
    meta = dict(reduced.get("meta", {}))
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    reduced["meta"] = meta
    return orjson.dumps(reduced)
