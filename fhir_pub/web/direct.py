"""Direct reads: a default read or vread answered with one indexed lookup, before any framework code.

At the R5 base the stored resource; at ``[base]/R4B`` and ``[base]/R4`` the form the build converted it to.

The publication never changes, so a read's answer is a function of the stored resource and of the request
headers that can change it (``Accept``, ``Accept-Encoding``, ``Origin``, ``Prefer``, host, scheme, forwarded
headers). For each combination of those headers (a *variant*) the first read goes through the full Flask
path, and its answer is learned as a template: every header either a constant, or one of the values a read
fills from the stored row (ETag, Last-Modified, Content-Length, Content-Location, Date). Later reads of any
resource in that variant are filled in from the template and the row, without Flask.

A template is only kept when the full answer is exactly explained by it (the body is the stored bytes, or
their gzip encoding; every varying header is one of the slots), and reads that might answer otherwise go
to the full path: a query string, unknown types and ids, a version that is not the current one, conditional
writes, a coding other than gzip or none. ``tests/test_direct.py`` checks the two paths answer alike for
every resource, conditional variant and Accept / Accept-Encoding combination.
"""

from __future__ import annotations

import gzip
import re
import threading
import time
from collections.abc import Iterable
from datetime import datetime
from functools import lru_cache
from typing import Any
from urllib.parse import parse_qsl

import orjson
from werkzeug.datastructures import MultiDict
from werkzeug.http import http_date

from fhir_pub import handlers
from fhir_pub.handlers import BASE_SUFFIXES, VERSION_NAMES, FhirVersion
from fhir_pub.settings import Settings
from fhir_pub.store import Store, Stored
from fhir_pub.web.cache import CONDITIONAL, KEY_FIELDS, Entry, Environ, StartResponse, WSGIApp, not_modified
from fhir_pub.web.formats import prefer

# [base], or a version's own base ([base]/R4B, [base]/R4), then Type/id and an optional /_history/vid.
READ = re.compile(
    r"/fhir(/R4B|/R4)?/([A-Z][A-Za-z]{1,63})/([A-Za-z0-9\-.]{1,64})(/_history/([A-Za-z0-9\-.]{1,64}))?"
)
VERSION_OF_BASE = {suffix: version for version, suffix in BASE_SUFFIXES.items()}
# Every request input a read's answer can depend on, but the path (the query string is always empty here).
VARIANT_FIELDS = tuple(field for field in KEY_FIELDS if field not in ("PATH_INFO", "QUERY_STRING"))
MIN_COMPRESSED = 500  # bytes: flask-compress leaves smaller bodies alone (COMPRESS_MIN_SIZE)
ETAG, LAST_MODIFIED, LENGTH, LOCATION, DATE = range(5)
Slot = int | str | tuple[int, str]  # a slot number, a constant header value, or (LOCATION, base)
Template = tuple[str, tuple[tuple[str, Slot], ...], bool]  # status, headers, gzip-encoded body


class DirectReads:
    """WSGI middleware answering default reads from the store and a learned per-variant template."""

    def __init__(self, app: WSGIApp, store: Store, compress_level: int = 6) -> None:
        self.app = app
        self.store = store
        self.level = compress_level
        self._templates: dict[tuple[Any, ...], Template | None] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Answer a default read directly once its variant is learned; anything else goes to the app."""
        method = environ.get("REQUEST_METHOD")
        if (
            method not in ("GET", "HEAD")
            or environ.get("QUERY_STRING")
            or environ.get("HTTP_IF_MATCH")
            or environ.get("HTTP_IF_UNMODIFIED_SINCE")
        ):
            return self.app(environ, start_response)
        path = environ.get("PATH_INFO", "")
        match = READ.fullmatch(path)
        if match is None:
            return self.app(environ, start_response)
        base, kind, rid, vid = match[1], match[2], match[3], match[5]
        if base is None:
            stored = self.store.read(kind, rid)
        else:  # the form the build converted the resource to, at that version's base
            stored = self.store.read_converted(VERSION_OF_BASE[base], kind, rid)
        if stored is None or (vid is not None and vid != stored.version):
            return self.app(environ, start_response)  # the full path words the 404
        key = (
            method,
            base,
            vid is not None,
            len(stored.body) >= MIN_COMPRESSED,
            *map(environ.get, VARIANT_FIELDS),
        )
        if key not in self._templates:
            return self._learn(key, environ, start_response, stored, path)
        template = self._templates[key]
        if template is None:
            return self.app(environ, start_response)
        status, headers, body = _fill(
            template, stored.body, stored.version, stored.last_updated, path, self.level
        )
        if environ.get("HTTP_IF_NONE_MATCH") is not None or environ.get("HTTP_IF_MODIFIED_SINCE") is not None:
            entry = Entry(status, headers, body)
            if status.startswith("200") and not_modified(entry, environ):
                start_response("304 Not Modified", entry.not_modified_headers)
                return [b""]
        start_response(status, headers)
        return [b""] if method == "HEAD" else [body]

    def _learn(
        self, key: tuple[Any, ...], environ: Environ, start_response: StartResponse, stored: Stored, path: str
    ) -> Iterable[bytes]:
        """Answer through the full path, and keep the answer's template if the answer is explained by it.

        A conditional request is learned from the unconditional answer, then answered by the full path.
        """
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, list(headers)]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        def keep(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, list(headers)]
            return lambda data: None

        method = str(environ.get("REQUEST_METHOD"))
        if method == "HEAD" or environ.get("HTTP_IF_NONE_MATCH") or environ.get("HTTP_IF_MODIFIED_SINCE"):
            # learned from the unconditional GET (a HEAD has no body to check), answered by the full path
            plain = {k: v for k, v in environ.items() if k not in CONDITIONAL} | {"REQUEST_METHOD": "GET"}
            body = b"".join(self.app(plain, keep))
            self._keep(key, captured, body, stored, path)
            return self.app(environ, start_response)
        body = b"".join(self.app(environ, capture))
        self._keep(key, captured, body, stored, path)
        return [body]

    def _keep(
        self, key: tuple[Any, ...], captured: list[Any], body: bytes, stored: Stored, path: str
    ) -> None:
        template = _template(captured, body, stored, path) if captured else None
        with self._lock:
            self._templates.setdefault(key, template)


def _fill(
    template: Template, plain: bytes, version: str | None, last_modified: str | None, path: str, level: int
) -> tuple[str, list[tuple[str, str]], bytes]:
    """An answer's status, headers and (GET) body, from its template, its body and its validators."""
    status, headers, encoded = template
    body = gzip.compress(plain, level, mtime=0) if encoded else plain
    suffix = path[5:]  # after "/fhir"
    slots = (
        f'W/"{version}"',
        _http_instant(last_modified) if last_modified else "",
        str(len(body)),
        "",
        _now(),
    )
    filled: list[tuple[str, str]] = []
    for name, value in headers:
        if isinstance(value, str):
            filled.append((name, value))
        elif isinstance(value, int):
            filled.append((name, slots[value]))
        else:  # (LOCATION, the public base)
            filled.append((name, value[1] + suffix))
    return status, filled, body


@lru_cache(maxsize=4096)
def _http_instant(instant: str) -> str:
    """An ISO instant as an HTTP date (a publication repeats a few, so each is formatted once)."""
    return http_date(datetime.fromisoformat(instant))


_clock: list[Any] = [0, ""]


def _now() -> str:
    """The Date header's value, formatted once a second."""
    second = int(time.time())
    if _clock[0] != second:
        _clock[:] = [second, http_date(second)]
    return str(_clock[1])


def _template(
    captured: list[Any], body: bytes, stored: Stored | None, path: str, plain: bytes = b""
) -> Template | None:
    """The template explaining one full GET answer, or None when something in it is not explained.

    The answer's body must be ``stored``'s (a read) or ``plain`` (a search's Bundle), or its gzip encoding.
    """
    status, headers = captured
    if not status.startswith("200"):
        return None
    expected = stored.body if stored is not None else plain
    encoded = any(n.lower() == "content-encoding" for n, _ in headers)
    if encoded:
        if [v for n, v in headers if n.lower() == "content-encoding"] != ["gzip"]:
            return None
        if gzip.decompress(body) != expected:
            return None
    elif body != expected:
        return None
    etag = f'W/"{stored.version}"' if stored is not None else None
    last_modified = _http_instant(stored.last_updated) if stored is not None else None
    suffix = path.split("/fhir", 1)[1]
    slots: list[tuple[str, Slot]] = []
    for name, value in headers:
        lower = name.lower()
        if lower == "etag" and value == etag:
            slots.append((name, ETAG))
        elif lower == "last-modified" and value == last_modified:
            slots.append((name, LAST_MODIFIED))
        elif lower == "content-length":
            slots.append((name, LENGTH))
        elif lower == "date":
            slots.append((name, DATE))
        elif lower == "content-location" and stored is not None and value.endswith(suffix):
            slots.append((name, (LOCATION, value[: -len(suffix)])))
        elif lower in ("etag", "last-modified", "content-location"):
            return None  # a value the row does not explain
        else:
            slots.append((name, value))
    return status, tuple(slots), encoded


# [base], or a version's own base, then a resource type: a type search (GET [base]/[type]?params).
SEARCH = re.compile(r"/fhir(/R4B|/R4)?/([A-Z][A-Za-z]{1,63})")
RENDERED = frozenset({"_format", "_pretty"})  # read by the rendering, not the handler: the full path's
Learned = tuple[str, FhirVersion, bool]  # a variant's public base, FHIR version, Prefer: handling=strict


class DirectSearches:
    """WSGI middleware answering a type search with the handler's Bundle and a learned per-variant template.

    What a search answers is the handler's (``handlers.search``, transport-free); what the full path adds
    around it (negotiation, headers, compression, CORS, security headers) depends only on the request's
    variant, as for reads. A variant is learned from full answers: the public base (from the Bundle's
    ``self`` link) and the FHIR version (from its ``Content-Type``), checked by answering the same search
    directly and comparing bytes; then its header template, once per body size class (flask-compress
    leaves small bodies alone). Anything not so explained stays with the full path: another format, a
    status other than 200 (errors are worded there), ``_format`` or ``_pretty``, conditional headers, a
    query that is not ASCII. ``tests/test_direct.py`` checks both paths answer alike.
    """

    def __init__(self, app: WSGIApp, store: Store, settings: Settings, compress_level: int = 6) -> None:
        self.app = app
        self.store = store
        self.settings = settings
        self.level = compress_level
        self._learned: dict[tuple[Any, ...], Learned | None] = {}
        self._templates: dict[tuple[Any, ...], Template | None] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Answer a type search directly once its variant is learned; anything else goes to the app."""
        query = environ.get("QUERY_STRING", "")
        if (
            environ.get("REQUEST_METHOD") != "GET"
            or not query.isascii()
            or any(environ.get(field) for field in CONDITIONAL)
        ):
            return self.app(environ, start_response)
        path = environ.get("PATH_INFO", "")
        match = SEARCH.fullmatch(path)
        if match is None:
            return self.app(environ, start_response)
        # As werkzeug's request.args.items(multi=True): each name's values together, names in first order
        pairs = tuple(MultiDict(parse_qsl(query, keep_blank_values=True)).items(multi=True))
        if any(name in RENDERED for name, _ in pairs):
            return self.app(environ, start_response)
        variant = (match[1], *map(environ.get, VARIANT_FIELDS))
        if variant not in self._learned:
            return self._learn(variant, environ, start_response, pairs, match[2], path)
        learned = self._learned[variant]
        answer = None if learned is None else self._answer(learned, pairs, match[2])
        if answer is None:
            return self.app(environ, start_response)
        key = (variant, len(answer) >= MIN_COMPRESSED)
        if key not in self._templates:
            return self._learn(variant, environ, start_response, pairs, match[2], path)
        template = self._templates[key]
        if template is None:
            return self.app(environ, start_response)
        status, headers, body = _fill(template, answer, None, None, path, self.level)
        start_response(status, headers)
        return [body]

    def _answer(self, learned: Learned, pairs: tuple[tuple[str, str], ...], kind: str) -> bytes | None:
        """The handler's Bundle for this search, or None when the full path must answer (errors and all)."""
        base, version, strict = learned
        context = handlers.Context(
            self.store,
            base,
            pairs,
            strict=strict,
            budget=self.settings.search_timeout,
            max_includes=self.settings.max_includes,
            fhir_version=version,
        )
        try:
            answer = handlers.search(context, kind)
        except Exception:  # the full path words it (an OperationOutcome, or a logged 500)
            return None
        if answer.status != 200 or answer.headers or answer.media is not None:
            return None
        return answer.body

    def _learn(
        self,
        variant: tuple[Any, ...],
        environ: Environ,
        start_response: StartResponse,
        pairs: tuple[tuple[str, str], ...],
        kind: str,
        path: str,
    ) -> Iterable[bytes]:
        """Answer through the full path; learn the variant (and its template) if the answer is explained."""
        captured: list[Any] = []

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            captured[:] = [status, list(headers)]
            return start_response(status, headers, exc_info) if exc_info else start_response(status, headers)

        body = b"".join(self.app(environ, capture))
        if not captured or not captured[0].startswith("200"):
            return [body]  # an error teaches nothing about the variant; the next request learns
        learned = _learned_from(captured[1], body, kind, environ)
        plain = None if learned is None else self._answer(learned, pairs, kind)
        template = None if plain is None else _template(captured, body, None, path, plain)
        with self._lock:
            if template is None:
                self._learned[variant] = None  # not understood: this variant stays with the full path
            else:
                self._learned.setdefault(variant, learned)
                self._templates.setdefault((variant, len(plain or b"") >= MIN_COMPRESSED), template)
        return [body]


def _learned_from(headers: list[tuple[str, str]], body: bytes, kind: str, environ: Environ) -> Learned | None:
    """The base, version and strictness a full search answer was made with, or None if it is not a Bundle."""
    fields = {name.lower(): value for name, value in headers}
    media = fields.get("content-type", "")
    if not media.startswith("application/fhir+json"):
        return None
    try:
        plain = gzip.decompress(body) if fields.get("content-encoding") == "gzip" else body
        bundle = orjson.loads(plain)
        url = next(str(link["url"]) for link in bundle["link"] if link.get("relation") == "self")
    except (ValueError, KeyError, TypeError, StopIteration, OSError, EOFError):
        return None
    base = url.split("?", 1)[0].removesuffix(f"/{kind}")
    named = media.partition("fhirVersion=")[2].split(";")[0].strip() or "5.0"
    version = next((v for v in VERSION_NAMES if v == named), None)
    if version is None:
        return None
    strict = prefer([environ.get("HTTP_PREFER", "")]).get("handling") == "strict"
    return base, version, strict
