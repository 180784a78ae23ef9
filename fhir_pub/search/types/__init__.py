"""The search-parameter types this server supports, one module each, and the registry everything asks.

The query parser (modifiers, prefixes, values), the build's indexer (rows and tables), the engine (SQL,
sort keys, stored totals) and the CapabilityStatement (what is offered) all read ``TYPES``: a
SearchParameter whose type is not a key here (number, quantity, composite) is not offered.
"""

from __future__ import annotations

from fhir_pub.search.types.base import Context, ParamType, Totals, Value
from fhir_pub.search.types.date import Date
from fhir_pub.search.types.reference import Reference
from fhir_pub.search.types.string import String
from fhir_pub.search.types.text import FullText
from fhir_pub.search.types.token import Token
from fhir_pub.search.types.uri import Uri

TYPES: dict[str, ParamType] = {t.name: t for t in (Token(), String(), Reference(), Date(), Uri(), FullText())}

__all__ = ["TYPES", "Context", "ParamType", "Totals", "Value"]
