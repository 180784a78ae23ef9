"""Token parameters: ``[system]|[code]``, indexed with system, code and the words of the human text.

https://hl7.org/fhir/R5/search.html#token
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from fhir_pub.search.syntax import InvalidSearch, like, split_unescaped, unescape
from fhir_pub.search.types.base import Context, ParamType, Row, Totals, Value
from fhir_pub.search.types.string import normalize

if TYPE_CHECKING:
    from fhir_pub.search.request import Filter


@lru_cache(maxsize=4096)  # the same codes' displays recur across a publication's resources
def words(text: str) -> str:
    """Normalized text with punctuation as spaces, for word matches (token ``:text``)."""
    return " ".join(re.sub(r"[^\w]+", " ", normalize(text)).split())


def tokens(value: Any) -> Iterator[tuple[str | None, str | None, str | None]]:
    """(system, code, text) of each token in one value: a code, Coding, CodeableConcept, Identifier, ..."""
    if isinstance(value, (bool, str, int, float)):
        yield None, str(value).lower() if isinstance(value, bool) else str(value), None
    elif isinstance(value, dict):
        if "concept" in value or ("reference" in value and "coding" not in value and "system" not in value):
            if isinstance(value.get("concept"), dict):
                yield from tokens(value["concept"])
        elif "coding" in value or ("text" in value and "value" not in value):
            text = value.get("text")
            codings = [c for c in value.get("coding", []) if isinstance(c, dict)]
            for coding in codings:
                yield coding.get("system"), coding.get("code"), text or coding.get("display")
            if not codings and isinstance(text, str):
                yield None, None, text
        elif "code" in value or "system" in value:
            yield value.get("system"), value.get("code"), value.get("display")
        elif "value" in value:  # Identifier, ContactPoint
            kind = value.get("type", {}).get("text") if isinstance(value.get("type"), dict) else None
            yield value.get("system"), str(value["value"]), kind


class Token(ParamType):
    """System and code (either may be left out), ``:text`` and ``:code-text`` words, value set ``:in``."""

    name = "token"
    modifiers = frozenset({"missing", "not", "text", "code-text", "in", "not-in"})
    table = "search_token"
    schema = """
CREATE TABLE search_token (type TEXT, id TEXT, param TEXT, system TEXT, code TEXT, text TEXT);
CREATE INDEX search_token_code ON search_token (type, param, code, system, id);
CREATE INDEX search_token_source ON search_token (type, id, param, code);
"""
    sort = ("code", "code")
    totals = Totals(
        table="search_token_total",
        columns="type TEXT NOT NULL, param TEXT NOT NULL, system TEXT NOT NULL, "
        "code TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (type, param, system, code)",
        fill="INSERT INTO search_token_total SELECT type, param, system, code, COUNT(DISTINCT id) "
        "FROM search_token WHERE system IS NOT NULL AND code IS NOT NULL GROUP BY type, param, code, system "
        "HAVING COUNT(DISTINCT id) >= ?",
        condition="(system = ? AND code = ?)",
        lookup="SELECT n FROM search_token_total WHERE type = ? AND param = ? AND system = ? AND code = ?",
    )

    def parse(self, raw: str, name: str) -> Value:
        """``code``, ``system|code``, ``|code`` (no system) or ``system|`` (any code)."""
        pieces = split_unescaped(raw, "|")
        if len(pieces) > 2:
            raise InvalidSearch(f"{name}={raw!r}: a token is [system]|[code]", expression=name)
        if len(pieces) == 2:
            return Value(raw, None, unescape(pieces[0]), unescape(pieces[1]))
        return Value(raw, None, None, unescape(raw))

    def rows(self, kind: str, rid: str, code: str, value: Any) -> Iterator[Row]:
        """One row per token: system, code and the words of its text."""
        return ((kind, rid, code, s, c, words(t) if t else None) for s, c, t in tokens(value))

    def condition(self, f: Filter, value: Value, context: Context) -> tuple[str, list[Any]]:
        """System and code as given; ``:text`` a word prefix; ``:in`` the members of a value set."""
        if f.modifier in {"in", "not-in"}:
            members = context.expand(value.code) if context.expand is not None else None
            if members is None:
                raise InvalidSearch(
                    f"{f.name}:{f.modifier}={value.code}: that value set is unknown or cannot be enumerated"
                )
            if not members:
                return "0", []
            pairs = sorted(members)
            return f"(system, code) IN (VALUES {','.join(['(?, ?)'] * len(pairs))})", [
                p for pair in pairs for p in pair
            ]
        if f.modifier == "text":
            word = like(words(value.code))
            return "(text LIKE ? ESCAPE '\\' OR text LIKE ? ESCAPE '\\')", [f"{word}%", f"% {word}%"]
        if f.modifier == "code-text":
            return "code LIKE ? ESCAPE '\\'", [f"{like(value.code)}%"]
        if value.system is None:
            return "code = ?", [value.code]
        if value.system == "":
            return "(system IS NULL AND code = ?)", [value.code]
        if value.code == "":
            return "system = ?", [value.system]
        return "(system = ? AND code = ?)", [value.system, value.code]
