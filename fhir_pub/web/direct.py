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

from werkzeug.http import http_date

from fhir_pub.handlers import BASE_SUFFIXES
from fhir_pub.store import Store, Stored
from fhir_pub.web.cache import CONDITIONAL, KEY_FIELDS, Entry, Environ, StartResponse, WSGIApp, not_modified

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
        status, headers, body = self._fill(template, stored, path)
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
        self, template: Template, stored: Stored, path: str
    ) -> tuple[str, list[tuple[str, str]], bytes]:
        """The answer's status, headers and (GET) body, from the template and the stored row."""
        status, headers, encoded = template
        body = gzip.compress(stored.body, self.level, mtime=0) if encoded else stored.body
        suffix = path[5:]  # after "/fhir"
        slots = (f'W/"{stored.version}"', _http_instant(stored.last_updated), str(len(body)), "", _now())
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


def _template(captured: list[Any], body: bytes, stored: Stored, path: str) -> Template | None:
    """The template explaining one full GET answer, or None when something in it is not explained."""
    status, headers = captured
    if not status.startswith("200"):
        return None
    encoded = any(n.lower() == "content-encoding" for n, _ in headers)
    if encoded:
        if [v for n, v in headers if n.lower() == "content-encoding"] != ["gzip"]:
            return None
        if gzip.decompress(body) != stored.body:
            return None
    elif body != stored.body:
        return None
    etag = f'W/"{stored.version}"'
    last_modified = _http_instant(stored.last_updated)
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
        elif lower == "content-location" and value.endswith(suffix):
            slots.append((name, (LOCATION, value[: -len(suffix)])))
        elif lower in ("etag", "last-modified", "content-location"):
            return None  # a value the row does not explain
        else:
            slots.append((name, value))
    return status, tuple(slots), encoded
