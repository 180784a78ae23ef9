"""Required bindings of R5's ``code`` elements: the codes each allows, from the official definitions.

``r5-bindings.json`` beside this module is written by ``scripts/r5-bindings`` from hl7.fhir.r5.core 5.0.0
(the specification is CC0). It holds only bindings whose ValueSet the package alone lists in full; the
others (languages, MIME types, UCUM ...) are not checked here rather than guessed.
https://hl7.org/fhir/R5/terminologies.html#required
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

import orjson

from fhir_pub.definitions import Node
from fhir_pub.validation.issues import Issue

R5_BINDINGS = Path(__file__).with_name("r5-bindings.json")
SHOWN = 8  # allowed codes listed in a message at most


@cache
def _tables() -> tuple[dict[str, str], dict[str, frozenset[str]]]:
    document = orjson.loads(R5_BINDINGS.read_bytes())
    codes = {url: frozenset(values) for url, values in document["codes"].items()}
    return document["bindings"], codes


def required_codes(path: str, type_name: str, name: str) -> frozenset[str] | None:
    """The codes element ``name`` of a node at ``path`` (of type ``type_name``) allows, if R5 binds it."""
    bindings, codes = _tables()
    url = bindings.get(f"{path}.{name}") or bindings.get(f"{type_name}.{name}")
    return None if url is None else codes[url]


def binding_issues(nodes: Iterable[Node], source: str | None) -> Iterator[Issue]:
    """An error for each ``code`` value outside its element's required R5 ValueSet.

    An element is found by its element path (``Patient.contact.gender``, for a resource's own and
    backbone elements) or its datatype's (``Address.use``).
    """
    bindings, codes = _tables()
    for node in nodes:
        if not isinstance(node.value, dict):
            continue
        for name, value in node.value.items():
            url = bindings.get(f"{node.path}.{name}") or bindings.get(f"{node.type_name}.{name}")
            if url is None:
                continue
            allowed = codes[url]
            values = value if isinstance(value, list) else [value]
            for index, code in enumerate(values):
                if not isinstance(code, str) or code in allowed:
                    continue  # a non-string is the structure layer's to report
                where = f"{node.expression}.{name}" + (f"[{index}]" if isinstance(value, list) else "")
                listed = ", ".join(sorted(allowed)[:SHOWN]) + (", ..." if len(allowed) > SHOWN else "")
                message = f"{code!r} is not a code of {url} (a required binding in R5): expected {listed}"
                yield Issue("error", "code-invalid", message, where, source, "binding", "binding")
