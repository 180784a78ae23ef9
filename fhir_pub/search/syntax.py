"""The syntax every search value shares: backslash escapes, and the error a request that breaks a rule raises.

https://hl7.org/fhir/R5/search.html#escaping
"""

from __future__ import annotations

from fhir_pub.errors import Invalid


class InvalidSearch(Invalid):
    """A search request this server cannot run as asked: 400 with the offending parameter."""


def split_unescaped(text: str, sep: str) -> list[str]:
    """Split on ``sep`` where it is not escaped by a backslash (https://hl7.org/fhir/R5/search.html#escaping)."""
    parts, start = [], 0
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == sep:
            parts.append(text[start:index])
            start = index + 1
        index += 1
    parts.append(text[start:])
    return parts


def unescape(text: str) -> str:
    r"""Remove search escapes: ``\\,`` ``\\$`` ``\\|`` ``\\\\``; a lone trailing backslash is an error."""
    out, index = [], 0
    while index < len(text):
        char = text[index]
        if char == "\\":
            if index + 1 >= len(text) or text[index + 1] not in ",$|\\":
                raise InvalidSearch(f"{text!r}: a backslash must escape one of , $ | \\")
            out.append(text[index + 1])
            index += 2
            continue
        out.append(char)
        index += 1
    return "".join(out)


def like(text: str) -> str:
    """``text`` as a literal in a LIKE pattern whose escape character is the backslash."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
