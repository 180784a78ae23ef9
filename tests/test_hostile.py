"""Malformed and hostile requests against a real server (granian): each has its status and issue code.

Expected values follow the FHIR spec: statuses from https://hl7.org/fhir/R5/http.html and
https://hl7.org/fhir/R5/search.html#errors, issue codes from https://hl7.org/fhir/R5/valueset-issue-type.html.
``CATALOG`` (hand-written) and ``GENERATED`` (malformed values for every published search parameter) are
module-level tables, so the requests tried and statuses expected can be counted from them.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest
from conftest import free_port, start, stop

from fhir_pub.conformance import load_conformance
from fhir_pub.publication import load
from fhir_pub.search.parameters import registry

MIB = 1024 * 1024
# What no answer may show: tracebacks, source or file-system paths, library or interpreter versions.
LEAKS = re.compile(
    r"Traceback|File \"|\.py\"|\.py:\d|/work/|site-packages|/tmp/|pytest-of|/usr/lib|/home/|"
    r"Werkzeug/|Python/\d|granian/\d|flask/\d|errors\.pydantic\.dev|sqlite3\.|OperationalError|"
    r"line \d+, in ",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Case:
    """One request and what the spec says it gets: a status and the first issue's code.

    For a 2xx search the code is that of the ``search.mode = outcome`` entry (None: there is none);
    for a 2xx ``$validate`` it is the first issue of the OperationOutcome.
    """

    id: str
    method: str
    target: str
    status: int
    code: str | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""


JSON = {"Content-Type": "application/fhir+json"}
XML = {"Content-Type": "application/fhir+xml"}
ASYNC = {"Prefer": "respond-async"}
STRICT = {"Prefer": "handling=strict"}
ORG = b'{"resourceType": "Organization", "id": "x", "name": "x"}'


def _nested(depth: int) -> bytes:
    return b'{"resourceType": "Organization", "extension": ' + b"[" * depth + b"]" * depth + b"}"


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9)


def _parameters(**values: str) -> bytes:
    parameter = [{"name": name, "valueString": value} for name, value in values.items()]
    return json.dumps({"resourceType": "Parameters", "parameter": parameter}).encode()


XXE = (
    b'<?xml version="1.0"?><!DOCTYPE Organization [<!ENTITY xxe SYSTEM "file:///etc/passwd">]>'
    b'<Organization xmlns="http://hl7.org/fhir"><name value="&xxe;"/></Organization>'
)
LAUGHS = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    + b"".join(
        b'<!ENTITY lol%d "%s">' % (n, (b"&lol%d;" % (n - 1) if n > 1 else b"&lol;") * 10)
        for n in range(1, 10)
    )
    + b']><Organization xmlns="http://hl7.org/fhir"><name value="&lol9;"/></Organization>'
)
EXTERNAL_DTD = (
    b'<?xml version="1.0"?><!DOCTYPE Organization SYSTEM "http://127.0.0.1:9/evil.dtd">'
    b'<Organization xmlns="http://hl7.org/fhir"><name value="x"/></Organization>'
)
PARAMETER_ENTITY = (
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY % p SYSTEM "file:///etc/hostname"> %p;]>'
    b'<Organization xmlns="http://hl7.org/fhir"/>'
)
XML_ORG = b'<Organization xmlns="http://hl7.org/fhir"><id value="x"/><name value="x"/></Organization>'
AT_LIMIT = "&".join(["name=" + "a" * 1000] * 8) + "&_id="  # + 122 characters: a URL of 8,192
LONG = "a" * 9000  # past the app's URL limit (8 KiB), below granian's (64 KiB)

CATALOG: list[Case] = [
    # --- ids, paths, traversal (https://hl7.org/fhir/R5/http.html#read: unknown resource -> 404) ---
    Case("read-unknown-id", "GET", "/fhir/Organization/nope", 404, "not-found"),
    Case("read-id-too-long", "GET", "/fhir/Organization/" + "x" * 65, 404, "not-found"),
    Case("read-id-bad-chars", "GET", "/fhir/Organization/a%20b%3Cscript%3E", 404, "not-found"),
    Case("read-id-nul", "GET", "/fhir/Organization/fda%00", 404, "not-found"),
    Case("read-id-sql", "GET", "/fhir/Organization/fda'%20OR%20'1'='1", 404, "not-found"),
    Case("read-id-unicode", "GET", "/fhir/Organization/%E2%80%AEfda", 404, "not-found"),
    Case("read-id-bad-utf8", "GET", "/fhir/Organization/%C3%28", 404, "not-found"),
    Case("traversal-raw", "GET", "/fhir/../../etc/passwd", 404, "not-found"),
    Case("traversal-encoded", "GET", "/fhir/Organization/..%2F..%2F..%2Fetc%2Fpasswd", 404, "not-found"),
    Case("traversal-dot-encoded", "GET", "/fhir/%2e%2e/%2e%2e/etc/passwd", 404, "not-found"),
    Case("traversal-backslash", "GET", "/fhir/Organization/..%5C..%5Cwin.ini", 404, "not-found"),
    Case("path-parameter", "GET", "/fhir/Organization/fda;jsessionid=1", 404, "not-found"),
    Case("vread-unknown-version", "GET", "/fhir/Organization/fda/_history/2", 404, "not-found"),
    Case("vread-bad-version", "GET", "/fhir/Organization/fda/_history/-1", 404, "not-found"),
    Case("history-unknown-id", "GET", "/fhir/Organization/nope/_history", 404, "not-found"),
    Case("unknown-operation", "GET", "/fhir/Organization/fda/$everything", 404, "not-found"),
    # http.html#search: "404 Not Found - resource type not supported"
    Case("unknown-type-read", "GET", "/fhir/Patient/1", 404, "not-supported"),
    Case("unknown-type-search", "GET", "/fhir/Patient?name=x", 404, "not-supported"),
    Case("lowercase-type", "GET", "/fhir/organization/fda", 404, "not-supported"),
    Case("unknown-type-history", "GET", "/fhir/Foo/_history", 404, "not-supported"),
    Case("operation-as-type", "GET", "/fhir/$foo", 404, "not-supported"),
    Case("unknown-_type", "GET", "/fhir?_type=Patient", 404, "not-supported"),
    Case("outside-fhir-base", "GET", "/etc/passwd", 404, "not-found"),
    # --- every write verb (a read-only publication: http.html, 405 Method Not Allowed) ---
    Case("create", "POST", "/fhir/Organization", 405, "not-supported", JSON, ORG),
    Case("update", "PUT", "/fhir/Organization/fda", 405, "not-supported", JSON, ORG),
    Case("patch", "PATCH", "/fhir/Organization/fda", 405, "not-supported", JSON, b"[]"),
    Case("delete", "DELETE", "/fhir/Organization/fda", 405, "not-supported"),
    Case("conditional-delete", "DELETE", "/fhir/Organization?name=x", 405, "not-supported"),
    Case("conditional-update", "PUT", "/fhir/Organization?name=x", 405, "not-supported", JSON, ORG),
    Case("transaction", "POST", "/fhir", 405, "not-supported", JSON, b'{"resourceType":"Bundle"}'),
    Case("transaction-slash", "POST", "/fhir/", 405, "not-supported", JSON, b"{}"),
    Case("delete-history", "DELETE", "/fhir/Organization/fda/_history/1", 405, "not-supported"),
    Case("post-metadata", "POST", "/fhir/metadata", 405, "not-supported"),
    Case("trace", "TRACE", "/fhir/metadata", 405, "not-supported"),
    Case("unknown-verb", "BREW", "/fhir/metadata", 405, "not-supported"),
    # --- _count, _offset (search.html#count: the server may return fewer; a bad number is an error) ---
    Case("count-negative", "GET", "/fhir/Organization?_count=-1", 400, "invalid"),
    Case("count-text", "GET", "/fhir/Organization?_count=ten", 400, "invalid"),
    Case("count-decimal", "GET", "/fhir/Organization?_count=1.5", 400, "invalid"),
    Case("count-plus", "GET", "/fhir/Organization?_count=%2B5", 400, "invalid"),
    Case("count-superscript", "GET", "/fhir/Organization?_count=%C2%B2", 400, "invalid"),
    Case("count-empty", "GET", "/fhir/Organization?_count=", 400, "invalid"),
    Case("count-huge", "GET", "/fhir/Organization?_count=99999999999999999999999", 200, None),
    Case("count-zero", "GET", "/fhir/Organization?_count=0", 200, None),
    Case("offset-negative", "GET", "/fhir/Organization?_offset=-20", 400, "invalid"),
    Case("offset-huge", "GET", "/fhir/Organization?_offset=99999999999999999999999", 200, None),
    Case("history-count-huge", "GET", "/fhir/_history?_count=99999999999999999999", 200, None),
    Case("history-count-superscript", "GET", "/fhir/_history?_count=%C2%B2", 400, "invalid"),
    Case("history-count-negative", "GET", "/fhir/_history?_count=-1", 400, "invalid"),
    Case("history-since-garbage", "GET", "/fhir/_history?_since=yesterday", 400, "invalid"),
    Case("history-since-no-zone", "GET", "/fhir/_history?_since=2024-01-01T00:00:00", 400, "invalid"),
    # --- result parameters ---
    Case("sort-large-page", "GET", "/fhir/Provenance?_sort=-recorded&_count=500", 200, None),
    Case("summary-bad", "GET", "/fhir/Organization?_summary=maybe", 400, "invalid"),
    Case("total-bad", "GET", "/fhir/Organization?_total=lots", 400, "invalid"),
    Case("sort-unknown", "GET", "/fhir/Organization?_sort=colour", 200, "not-supported"),
    Case("sort-unknown-strict", "GET", "/fhir/Organization?_sort=colour", 400, "not-supported", STRICT),
    Case("elements-junk", "GET", "/fhir/Organization?_elements=,,,%00,..", 200, None),
    # --- includes: loops and fan-out (every include of every match, iterated, is capped per page) ---
    Case("include-bad-syntax", "GET", "/fhir/Organization?_include=partof", 400, "invalid"),
    Case("include-too-many-parts", "GET", "/fhir/Organization?_include=a:b:c:d", 400, "invalid"),
    Case("include-recurse", "GET", "/fhir/Organization?_include:recurse=*", 400, "not-supported"),
    Case("include-unknown-type", "GET", "/fhir/Organization?_include=0:0", 400, "invalid"),
    Case("include-unknown-param", "GET", "/fhir/Organization?_include=Organization:colour", 400, "invalid"),
    Case("include-not-reference", "GET", "/fhir/Organization?_include=Organization:name", 400, "invalid"),
    Case(
        "include-bad-target", "GET", "/fhir/Organization?_include=Organization:partof:Group", 400, "invalid"
    ),
    Case("include-other-source", "GET", "/fhir/Organization?_include=Provenance:target", 400, "invalid"),
    Case(
        "include-other-source-iterate",
        "GET",
        "/fhir/Organization?_include:iterate=Provenance:target",
        200,
        None,
    ),
    Case(
        "revinclude-never-refers", "GET", "/fhir/Provenance?_revinclude=Organization:partof", 400, "invalid"
    ),
    Case("revinclude-refers", "GET", "/fhir/Organization?_revinclude=Provenance:agent", 200, None),
    Case(
        "include-loop",
        "GET",
        "/fhir/ClinicalUseDefinition?_include:iterate=*&_revinclude:iterate=*&_count=500",
        200,
        None,
    ),
    Case("include-star-system", "GET", "/fhir?_include=*&_revinclude=*&_count=500", 200, None),
    Case(
        "include-repeated",
        "GET",
        "/fhir/Provenance?" + "&".join(["_include:iterate=*"] * 50 + ["_revinclude:iterate=*"] * 50),
        200,
        None,
    ),
    # --- malformed values, prefixes, modifiers, escapes (search.html#errors: a bad value is a 400) ---
    Case("date-garbage", "GET", "/fhir/Organization?_lastUpdated=notadate", 400, "invalid"),
    Case("date-month-13", "GET", "/fhir/Organization?_lastUpdated=2024-13-01", 400, "invalid"),
    Case("date-hour-25", "GET", "/fhir/Organization?_lastUpdated=2024-01-01T25:00:00Z", 400, "invalid"),
    Case("date-year-5-digits", "GET", "/fhir/Organization?_lastUpdated=99999-01-01", 400, "invalid"),
    Case("date-prefix-only", "GET", "/fhir/Organization?_lastUpdated=ge", 400, "invalid"),
    Case("date-bad-prefix", "GET", "/fhir/Organization?_lastUpdated=xx2024-01-01", 400, "invalid"),
    Case("date-double-prefix", "GET", "/fhir/Organization?_lastUpdated=gele2024", 400, "invalid"),
    Case("date-year-9999-gt", "GET", "/fhir/Organization?_lastUpdated=gt9999-12-31T23:59:59Z", 200, None),
    Case("token-three-parts", "GET", "/fhir/Organization?identifier=a|b|c", 400, "invalid"),
    Case("token-lone-backslash", "GET", "/fhir/Organization?identifier=abc%5C", 400, "invalid"),
    Case("token-bad-escape", "GET", "/fhir/Organization?identifier=a%5Cxb", 400, "invalid"),
    Case("string-good-escape", "GET", "/fhir/Organization?name=a%5C,b", 200, None),
    Case("empty-value", "GET", "/fhir/Organization?name=", 400, "invalid"),
    Case("empty-or-value", "GET", "/fhir/Organization?name=a,,b", 400, "invalid"),
    Case("percent-broken", "GET", "/fhir/Organization?name=%ZZ%", 200, None),
    Case("percent-bad-utf8", "GET", "/fhir/Organization?name=%C3%28%FF", 200, None),
    Case("sql-in-value", "GET", "/fhir/Organization?name=%27%3B%20DROP%20TABLE%20resource%3B--", 200, None),
    Case("like-wildcards", "GET", "/fhir/Organization?name:contains=%25_%5C%5C", 200, None),
    Case("fts-syntax", "GET", "/fhir/Organization?_text=%22a%22%20OR%20NEAR(x*%20y)%20%5E", 200, None),
    Case("modifier-unsupported", "GET", "/fhir/Organization?name:below=x", 400, "not-supported"),
    Case("modifier-unknown", "GET", "/fhir/Organization?name:fuzzy=x", 400, "not-supported"),
    Case("modifier-identifier", "GET", "/fhir/Organization?partof:identifier=x", 400, "not-supported"),
    Case("modifier-wrong-type", "GET", "/fhir/ClinicalUseDefinition?subject:Patient=x", 400, "invalid"),
    Case("missing-not-boolean", "GET", "/fhir/Organization?name:missing=maybe", 400, "invalid"),
    Case("in-unknown-valueset", "GET", "/fhir/Organization?type:in=http://x.example/vs", 400, "invalid"),
    Case("unknown-parameter", "GET", "/fhir/Organization?colour=blue", 200, "not-supported"),
    Case("unknown-parameter-strict", "GET", "/fhir/Organization?colour=blue", 400, "not-supported", STRICT),
    Case("sql-in-name", "GET", "/fhir/Organization?name%27--=x", 200, "not-supported"),
    Case("chain-too-deep", "GET", "/fhir/Organization?" + "partof." * 6 + "name=x", 400, "invalid"),
    Case("chain-not-reference", "GET", "/fhir/Organization?name.name=x", 400, "invalid"),
    Case("has-malformed", "GET", "/fhir/Organization?_has:Provenance:target=x", 400, "invalid"),
    Case("has-unknown-type", "GET", "/fhir/Organization?_has:Nope:target:agent=x", 400, "invalid"),
    Case(
        "has-nested-deep",
        "GET",
        "/fhir/Organization?" + "_has:Organization:partof:" * 6 + "name=x",
        400,
        "invalid",
    ),
    Case("or-values-at-limit", "GET", "/fhir/Organization?_id=" + ",".join(["a"] * 100), 200, None),
    Case("or-values-past-limit", "GET", "/fhir/Organization?_id=" + ",".join(["a"] * 101), 400, "too-costly"),
    Case("many-and-values", "GET", "/fhir/Organization?" + "&".join(["name=a"] * 800), 200, None),
    # SQLite's expression depth (1000) is reached by 1,300 ANDed filters: a 400, not a 500
    Case("too-many-and-values", "GET", "/fhir/Organization?" + "&".join(["_id=a"] * 1300), 400, "too-costly"),
    Case("value-at-limit", "GET", "/fhir/Organization?name:contains=" + "a" * 2048, 200, None),
    Case("value-past-limit", "GET", "/fhir/Organization?name:contains=" + "a" * 2049, 400, "too-long"),
    # --- URL and header size (limits.py answers before granian's own, bare, limits) ---
    Case("url-too-long", "GET", "/fhir/Organization?name=" + LONG, 414, "too-long"),
    Case("path-too-long", "GET", "/fhir/Organization/" + LONG, 414, "too-long"),
    Case("header-too-large", "GET", "/fhir/metadata", 431, "too-long", {"X-Padding": "a" * 40_000}),
    Case(
        "headers-too-large-total",
        "GET",
        "/fhir/metadata",
        431,
        "too-long",
        {f"X-Pad-{n}": "a" * 1000 for n in range(40)},
    ),
    Case("header-at-limit", "GET", "/fhir/metadata", 200, None, {"X-Padding": "a" * 30_000}),
    Case("url-at-limit", "GET", "/fhir/Organization?" + AT_LIMIT + "b" * 122, 200, None),
    Case("url-past-limit", "GET", "/fhir/Organization?" + AT_LIMIT + "b" * 123, 414, "too-long"),
    # --- formats (http.html#mime-type: 406 when nothing acceptable can be produced) ---
    Case("format-unknown", "GET", "/fhir/metadata?_format=text/turtle", 406, "not-supported"),
    Case("format-garbage", "GET", "/fhir/metadata?_format=%00%FF", 406, "not-supported"),
    Case("accept-unknown", "GET", "/fhir/Organization/fda", 406, "not-supported", {"Accept": "image/png"}),
    Case("accept-garbage", "GET", "/fhir/metadata", 406, "not-supported", {"Accept": ";;;,,,q=x"}),
    Case("accept-xml", "GET", "/fhir/Organization/fda", 200, None, {"Accept": "application/fhir+xml"}),
    Case("format-wins", "GET", "/fhir/metadata?_format=json", 200, None, {"Accept": "image/png"}),
    # --- $validate bodies (resource-operation-validate.html: 200 + outcome; 4xx only if it cannot run) ---
    Case("validate-no-type", "POST", "/fhir/$validate", 415, "not-supported", {}, ORG),
    Case(
        "validate-text", "POST", "/fhir/$validate", 415, "not-supported", {"Content-Type": "text/plain"}, ORG
    ),
    Case("validate-not-json", "POST", "/fhir/$validate", 400, "invalid", JSON, b"{not json"),
    Case("validate-bad-utf8", "POST", "/fhir/$validate", 400, "invalid", JSON, b'{"a": "\xff"}'),
    Case("validate-array", "POST", "/fhir/$validate", 200, "structure", JSON, b"[]"),
    Case(
        "validate-unknown-type",
        "POST",
        "/fhir/$validate",
        200,
        "not-supported",
        JSON,
        b'{"resourceType":"X"}',
    ),
    Case("validate-deep", "POST", "/fhir/$validate", 400, "invalid", JSON, _nested(5000)),
    Case("validate-too-big", "POST", "/fhir/$validate", 413, "too-long", JSON, b" " * (9 * MIB) + ORG),
    Case("validate-no-resource", "POST", "/fhir/$validate", 400, "invalid", JSON, _parameters(mode="create")),
    Case(
        "validate-bad-mode",
        "POST",
        "/fhir/$validate",
        400,
        "invalid",
        JSON,
        b'{"resourceType":"Parameters","parameter":[{"name":"mode","valueCode":"x"},'
        b'{"name":"resource","resource":{"resourceType":"Organization"}}]}',
    ),
    Case("validate-wrong-type", "POST", "/fhir/Medication/$validate", 400, "invalid", JSON, ORG),
    Case(
        "validate-form",
        "POST",
        "/fhir/$validate",
        415,
        "not-supported",
        {"Content-Type": "multipart/form-data"},
    ),
    # --- XML bodies: a DOCTYPE (DTD, entities) is refused; nothing is expanded or fetched ---
    Case("xml-xxe", "POST", "/fhir/$validate", 400, "invalid", XML, XXE),
    Case("xml-billion-laughs", "POST", "/fhir/$validate", 400, "invalid", XML, LAUGHS),
    Case("xml-external-dtd", "POST", "/fhir/$validate", 400, "invalid", XML, EXTERNAL_DTD),
    Case("xml-parameter-entity", "POST", "/fhir/$validate", 400, "invalid", XML, PARAMETER_ENTITY),
    Case("xml-malformed", "POST", "/fhir/$validate", 400, "invalid", XML, b"<Organization"),
    Case("xml-not-fhir", "POST", "/fhir/$validate", 400, "invalid", XML, b"<html><body/></html>"),
    Case(
        "xml-unknown-type",
        "POST",
        "/fhir/$validate",
        400,
        "invalid",
        XML,
        b'<Nope xmlns="http://hl7.org/fhir"/>',
    ),
    Case(
        "xml-unknown-element",
        "POST",
        "/fhir/$validate",
        400,
        "invalid",
        XML,
        b'<Organization xmlns="http://hl7.org/fhir"><colour value="x"/></Organization>',
    ),
    Case(
        "xml-bad-boolean",
        "POST",
        "/fhir/$validate",
        400,
        "invalid",
        XML,
        b'<Organization xmlns="http://hl7.org/fhir"><active value="maybe"/></Organization>',
    ),
    # a lone Organization is judged on its own (single-resource mode): dom-6, no narrative, comes first
    Case("xml-valid", "POST", "/fhir/Organization/$validate", 200, "invariant", XML, XML_ORG),
    Case("xml-wrong-type", "POST", "/fhir/Medication/$validate", 400, "invalid", XML, XML_ORG),
    # --- compressed request bodies: gzip is decoded under the body limit; other codings are refused ---
    Case(
        "gzip-bomb",
        "POST",
        "/fhir/$validate",
        413,
        "too-long",
        {**JSON, "Content-Encoding": "gzip"},
        _gzip(b"{" + b" " * (10 * MIB) + b"}"),
    ),
    Case(
        "gzip-ok",
        "POST",
        "/fhir/$validate",
        200,
        "invariant",
        {**JSON, "Content-Encoding": "gzip"},
        _gzip(ORG),
    ),
    Case(
        "gzip-corrupt",
        "POST",
        "/fhir/$validate",
        400,
        "invalid",
        {**JSON, "Content-Encoding": "gzip"},
        b"\x1f\x8bjunk",
    ),
    Case(
        "brotli-body",
        "POST",
        "/fhir/$validate",
        415,
        "not-supported",
        {**JSON, "Content-Encoding": "br"},
        ORG,
    ),
    Case(
        "deflate-body",
        "POST",
        "/fhir/$validate",
        415,
        "not-supported",
        {**JSON, "Content-Encoding": "x-y"},
        ORG,
    ),
    # --- POST _search (search.html#search: form-encoded only) ---
    Case("search-post-json", "POST", "/fhir/Organization/_search", 415, "not-supported", JSON, b"{}"),
    Case(
        "search-post-huge-value",
        "POST",
        "/fhir/Organization/_search",
        400,
        "too-long",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"name=" + b"a" * 60_000,
    ),
    Case(
        "search-post-too-big",
        "POST",
        "/fhir/Organization/_search",
        413,
        "too-long",
        {"Content-Type": "application/x-www-form-urlencoded"},
        b"name=" + b"a" * (9 * MIB),
    ),
    # --- $export (https://hl7.org/fhir/uv/bulkdata/STU2/export.html) ---
    Case("export-no-prefer", "GET", "/fhir/$export", 400, "invalid"),
    Case("export-bad-format", "GET", "/fhir/$export?_outputFormat=text/csv", 400, "invalid", ASYNC),
    Case("export-bad-since", "GET", "/fhir/$export?_since=soon", 400, "invalid", ASYNC),
    Case("export-unknown-type", "GET", "/fhir/$export?_type=Patient", 400, "invalid", ASYNC),
    Case("export-unknown-param", "GET", "/fhir/$export?_patient=x", 400, "invalid", ASYNC),
    Case(
        "export-typefilter-count",
        "GET",
        "/fhir/$export?_typeFilter=Organization%3F_count%3D5",
        400,
        "invalid",
        ASYNC,
    ),
    Case(
        "export-typefilter-bad",
        "GET",
        "/fhir/$export?_typeFilter=Organization%3Fname%3Aping%3Dx",
        400,
        "not-supported",
        ASYNC,
    ),
    Case("export-accept-html", "GET", "/fhir/$export", 406, "not-supported", {**ASYNC, "Accept": "text/csv"}),
    Case("export-post-not-json", "POST", "/fhir/$export", 400, "invalid", {**ASYNC, **JSON}, b"{{"),
    Case("export-post-not-parameters", "POST", "/fhir/$export", 400, "invalid", {**ASYNC, **JSON}, ORG),
    Case(
        "export-post-parameter-not-list",
        "POST",
        "/fhir/$export",
        400,
        "invalid",
        {**ASYNC, **JSON},
        b'{"resourceType":"Parameters","parameter":{"name":"_type"}}',
    ),
    Case("export-status-unknown", "GET", "/fhir/$export-status/" + "0" * 32, 404, "not-found"),
    Case("export-status-traversal", "GET", "/fhir/$export-status/..%2F..%2Fetc", 404, "not-found"),
    Case("export-status-long-id", "GET", "/fhir/$export-status/" + "a" * 300, 404, "not-found"),
    Case("export-cancel-unknown", "DELETE", "/fhir/$export-status/" + "0" * 32, 404, "not-found"),
    Case(
        "export-file-unknown",
        "GET",
        "/fhir/$export-file/" + "0" * 32 + "/Organization.ndjson",
        404,
        "not-found",
    ),
    Case("export-file-traversal", "GET", "/fhir/$export-file/..%2F../..%2Fp.sqlite", 404, "not-found"),
]


def _generated() -> list[Case]:
    """Malformed values for every search parameter the server publishes, per parameter type."""
    params = registry(load_conformance())
    types = sorted(load().counts())
    bad_values = {
        "token": ["a|b|c", "x\\"],
        "date": ["2024-02-30", "ge", "eq2024-01-01T10", "tomorrow"],
        "reference": ["x\\"],
        "string": ["x\\"],
        "uri": ["x\\"],
        "number": ["ten", "gt"],
        "quantity": ["ten||", "gtx"],
        "special": [],
    }
    cases, seen = [], set()
    for resource_type in types:
        for code, param in sorted(params.for_type(resource_type).items()):
            if param.url in seen:
                continue
            seen.add(param.url)
            base = f"/fhir/{resource_type}?"
            cases.append(
                Case(f"gen-{code}-bad-modifier", "GET", f"{base}{code}:nope=x", 400, "not-supported")
            )
            if param.type == "special":  # no modifiers at all on _text / _content
                cases.append(
                    Case(f"gen-{code}-missing", "GET", f"{base}{code}:missing=true", 400, "not-supported")
                )
            else:
                cases.append(
                    Case(f"gen-{code}-missing-maybe", "GET", f"{base}{code}:missing=2", 400, "invalid")
                )
            cases.append(Case(f"gen-{code}-empty", "GET", f"{base}{code}=", 400, "invalid"))
            for n, value in enumerate(bad_values[param.type]):
                target = f"{base}{code}={quote(value, safe='')}"
                cases.append(Case(f"gen-{code}-bad-{param.type}-{n}", "GET", target, 400, "invalid"))
    return cases


GENERATED = _generated()


def send(base: str, case: Case) -> tuple[int, dict[str, str], bytes]:
    """Send a request exactly as written (no client-side normalisation of the target)."""
    host, port = base.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        connection.putrequest(case.method, case.target, skip_accept_encoding=True)
        for name, value in case.headers.items():
            connection.putheader(name, value)
        if case.body or case.method in {"POST", "PUT", "PATCH"}:
            connection.putheader("Content-Length", str(len(case.body)))
        # The server may answer (413) before taking the whole body: then read what it said.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            connection.endheaders(case.body or None)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, built: Path) -> Iterator[str]:
    """One real ``fhir-pub serve`` (granian) for the whole catalog."""
    port = free_port()
    process = start(tmp_path_factory.mktemp("hostile"), built, port)
    yield f"http://127.0.0.1:{port}"
    stop(process)


SEEN: Counter[int] = Counter()  # statuses answered, for the report


def first_code(status: int, body: bytes) -> str | None:
    """The issue code a response carries: an error's OperationOutcome, or a Bundle's outcome entry."""
    document = json.loads(body)
    if document["resourceType"] == "Bundle" and document["type"] == "searchset":
        entries = document.get("entry", [])  # an empty Bundle has no entry (FHIR JSON has no empty arrays)
        outcomes = [e["resource"] for e in entries if e["search"]["mode"] == "outcome"]
        return str(outcomes[0]["issue"][0]["code"]) if outcomes else None
    if status >= 300 or document["resourceType"] == "OperationOutcome":
        assert document["resourceType"] == "OperationOutcome"
        return str(document["issue"][0]["code"])
    return None


def check(base: str, case: Case) -> None:
    """The expected status and code, an OperationOutcome for every error, and nothing internal shown."""
    status, headers, body = send(base, case)
    SEEN[status] += 1
    assert status < 500, (case.id, status, body[:300])
    shown = body.decode("utf-8", "replace") + "\n".join(f"{k}: {v}" for k, v in headers.items())
    assert not LEAKS.search(shown), (case.id, LEAKS.search(shown))
    assert "server" not in {k.lower() for k in headers} or not re.search(r"\d", headers.get("server", ""))
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered.get("x-content-type-options") == "nosniff", (case.id, headers)  # even when refused early
    if status >= 400:
        assert headers["content-type"].startswith("application/fhir+json"), (case.id, headers)
    fhir_json = headers.get("content-type", "").startswith("application/fhir+json")
    code = first_code(status, body) if body and fhir_json else None
    assert (status, code) == (case.status, case.code), (case.id, body[:400])


@pytest.mark.parametrize("case", CATALOG, ids=[c.id for c in CATALOG])
def test_catalog(server: str, case: Case) -> None:
    """Each hand-written hostile request gets the status and issue code the spec gives it."""
    check(server, case)


@pytest.mark.parametrize("case", GENERATED, ids=[c.id for c in GENERATED])
def test_generated(server: str, case: Case) -> None:
    """Malformed values for each published search parameter are a 400, never a 5xx."""
    check(server, case)


def test_catalog_is_large_and_unique() -> None:
    """At least 80 hand-written rows, each id once."""
    assert len(CATALOG) >= 80
    assert len({c.id for c in CATALOG}) == len(CATALOG)


def test_granian_own_limits_are_above_the_apps(server: str) -> None:
    """Past granian's limits the answer is granian's bare 414/431 (no body); the server keeps serving."""
    too_long = Case("granian-414", "GET", "/fhir/Organization?name=" + "a" * 70_000, 414, None)
    too_many = Case("granian-431", "GET", "/fhir/metadata", 431, None, {f"X-H-{n}": "a" for n in range(120)})
    for case in (too_long, too_many):
        status, _, body = send(server, case)
        assert (status, body) == (case.status, b"")
    assert send(server, Case("after", "GET", "/fhir/metadata", 200, None))[0] == 200


@pytest.fixture(scope="module")
def tight(tmp_path_factory: pytest.TempPathFactory, built: Path) -> Iterator[str]:
    """A server with tiny limits: 3 included resources per page, no export job slot."""
    port = free_port()
    process = start(tmp_path_factory.mktemp("tight"), built, port, max_includes="3", export_max_jobs="0")
    yield f"http://127.0.0.1:{port}"
    stop(process)


@pytest.fixture(scope="module")
def slow(tmp_path_factory: pytest.TempPathFactory, built: Path) -> Iterator[str]:
    """A server whose search time budget (1 ns) no search of more than 1,000 SQLite steps fits in."""
    port = free_port()
    process = start(tmp_path_factory.mktemp("slow"), built, port, search_timeout="0.000000001")
    yield f"http://127.0.0.1:{port}"
    stop(process)


INCLUDES = "/fhir/ClinicalUseDefinition?_include:iterate=*&_revinclude:iterate=*&_count=500"
LIMITS = {
    "tight": [
        # search.html#errors: the page is answered, with a warning outcome entry for what was cut
        Case("include-fan-out-capped", "GET", INCLUDES, 200, "too-costly"),
        Case(
            "include-under-cap",
            "GET",
            "/fhir/MedicationKnowledge?_include=MedicationKnowledge:monograph",
            200,
            None,
        ),
        # Bulk Data IG: too many jobs is 429 with Retry-After
        Case("export-no-slot", "GET", "/fhir/$export", 429, "throttled", ASYNC),
    ],
    "slow": [
        Case("search-over-budget", "GET", "/fhir/Provenance?_sort=-recorded&_count=500", 400, "too-costly"),
        Case("search-over-budget-include", "GET", INCLUDES, 400, "too-costly"),
        Case("read-has-no-budget", "GET", "/fhir/Organization/fda", 200, None),
    ],
}


@pytest.mark.parametrize(
    ("name", "case"),
    [(n, c) for n, cases in LIMITS.items() for c in cases],
    ids=lambda x: getattr(x, "id", x),
)
def test_limits(request: pytest.FixtureRequest, name: str, case: Case) -> None:
    """The limits that need their own settings: include fan-out, export slots, the search time budget."""
    base = request.getfixturevalue(name)
    check(base, case)
    if case.id == "export-no-slot":
        assert send(base, case)[1]["retry-after"].isdigit()
    if case.id == "include-fan-out-capped":
        bundle = json.loads(send(base, case)[2])
        assert [e["search"]["mode"] for e in bundle["entry"]].count("include") == 3


def test_xml_validates_like_json(server: str) -> None:
    """A published resource posted as FHIR XML gets the same $validate outcome as its JSON form."""
    read = Case("read", "GET", "/fhir/DocumentReference/medlineplus-a617041", 200, None)
    as_json = send(server, read)[2]
    as_xml = send(server, Case("read", "GET", read.target, 200, None, {"Accept": "application/fhir+xml"}))[2]
    outcomes = [
        json.loads(
            send(server, Case("v", "POST", "/fhir/DocumentReference/$validate", 200, None, kind, body))[2]
        )
        for kind, body in ((JSON, as_json), (XML, as_xml))
    ]
    assert outcomes[0] == outcomes[1]
    assert outcomes[0]["issue"][0]["severity"] == "information"


def test_xxe_reads_nothing(server: str) -> None:
    """The external entity is never resolved: the answer holds nothing of the file it names."""
    status, _, body = send(server, Case("xxe", "POST", "/fhir/$validate", 400, None, XML, XXE))
    assert status == 400
    assert b"root:" not in body
