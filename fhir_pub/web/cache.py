"""A response cache in front of the app, answering repeated GET requests from memory.

The publication is immutable, so a GET answer depends only on the request. The key holds every request
input that can change a response (path, query, Accept, Accept-Encoding, Origin, Prefer, host and scheme,
forwarded headers). Conditional requests (If-None-Match,
If-Modified-Since) are answered here from the cached ETag and Last-Modified, so the app always renders
the full response that is stored. https://hl7.org/fhir/R5/http.html#cread
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from email.utils import parsedate_to_datetime
from typing import Any

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]

KEY_FIELDS = (
    "PATH_INFO",
    "QUERY_STRING",
    "HTTP_ACCEPT",
    "HTTP_ACCEPT_ENCODING",
    "HTTP_ORIGIN",
    "HTTP_PREFER",
    "HTTP_HOST",
    "SERVER_NAME",
    "SERVER_PORT",
    "SCRIPT_NAME",
    "wsgi.url_scheme",
    "HTTP_X_FORWARDED_FOR",
    "HTTP_X_FORWARDED_PROTO",
    "HTTP_X_FORWARDED_HOST",
    "HTTP_X_FORWARDED_PORT",
    "HTTP_X_FORWARDED_PREFIX",
)
CONDITIONAL = ("HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_MATCH", "HTTP_IF_UNMODIFIED_SINCE")
# Headers a 304 repeats from the full response (RFC 9110 section 15.4.5), plus CORS and security ones.
NOT_MODIFIED_DROP = {"content-length", "content-type", "content-encoding"}


class Entry:
    """One stored response."""

    __slots__ = ("body", "etag", "headers", "last_modified", "not_modified_headers", "status")

    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        found = {name.lower(): value for name, value in headers}
        self.etag = found.get("etag")
        self.last_modified = found.get("last-modified")
        self.not_modified_headers = [(n, v) for n, v in headers if n.lower() not in NOT_MODIFIED_DROP]


def _opaque(tag: str) -> str:
    tag = tag.strip()
    return tag[2:] if tag.startswith("W/") else tag


def not_modified(entry: Entry, environ: Environ) -> bool:
    """Whether the client's copy is current: If-None-Match (weak comparison) wins over If-Modified-Since."""
    if entry.etag is None and entry.last_modified is None:
        return False
    if_none_match = environ.get("HTTP_IF_NONE_MATCH")
    if if_none_match is not None:
        if entry.etag is None:
            return False
        tags = [t for t in if_none_match.split(",") if t.strip()]
        return any(t.strip() == "*" or _opaque(t) == _opaque(entry.etag) for t in tags)
    since = environ.get("HTTP_IF_MODIFIED_SINCE")
    if since is None or entry.last_modified is None:
        return False
    try:
        return parsedate_to_datetime(entry.last_modified) <= parsedate_to_datetime(since)
    except (TypeError, ValueError):
        return False


class _Flight:
    """One response being rendered, which concurrent requests for the same key wait for."""

    __slots__ = ("done", "entry")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.entry: Entry | None = None


class ResponseCache:
    """WSGI middleware: answer repeated GET/HEAD requests from memory (bounded; cleared when full)."""

    def __init__(
        self,
        app: WSGIApp,
        max_bytes: int = 64 << 20,
        max_body: int = 1 << 20,
        uncached: Callable[[str], bool] = lambda path: False,
    ) -> None:
        """Keep responses of at most ``max_body`` bytes each, ``max_bytes`` in all.

        The budget is in bytes, not entries: a client sending endless distinct URLs (a cache-busting
        crawl or an attack) must not grow a worker past it.

        Paths ``uncached`` accepts go straight to the app: answers that change over time, or are streamed.
        """
        self.app = app
        self.max_bytes = max_bytes
        self.max_body = max_body
        self._size = 0
        self.uncached = uncached
        self._entries: dict[tuple[Any, ...], Entry] = {}
        self._flights: dict[tuple[Any, ...], _Flight] = {}
        self._lock = threading.Lock()

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Answer from the cache, filling it on a miss; anything but GET/HEAD goes straight to the app."""
        method = environ.get("REQUEST_METHOD")
        if (
            method not in ("GET", "HEAD")
            or environ.get("HTTP_IF_MATCH")
            or environ.get("HTTP_IF_UNMODIFIED_SINCE")
            or self.uncached(environ.get("PATH_INFO", ""))
        ):
            return self.app(environ, start_response)
        key = tuple(map(environ.get, KEY_FIELDS))  # half the cost of a generator: 0.5 µs, not 1.2
        entry = self._entries.get(key) or self._fill(key, environ)
        if entry.status.startswith("200") and not_modified(entry, environ):
            start_response("304 Not Modified", entry.not_modified_headers)
            return [b""]
        start_response(entry.status, entry.headers)
        return [b""] if method == "HEAD" else [entry.body]

    def _fill(self, key: tuple[Any, ...], environ: Environ) -> Entry:
        """Render a missing response once: requests for it meanwhile wait for that answer (one flight).

        A burst of one costly search (a popular page going cold) then costs one search per worker, not
        one per waiting thread. A failed render (5xx or exception) is not shared: each waiter renders.
        """
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                return entry
            flight = self._flights.get(key)
            leading = flight is None
            if flight is None:
                flight = self._flights[key] = _Flight()
        if not leading:
            flight.done.wait()
            return flight.entry or self._render_and_store(key, environ)
        try:
            entry = self._render_and_store(key, environ)
            if entry.status[:1] != "5":
                flight.entry = entry  # handed to the waiters; a failure is not
            return entry
        finally:
            with self._lock:
                del self._flights[key]
            flight.done.set()

    def _render_and_store(self, key: tuple[Any, ...], environ: Environ) -> Entry:
        entry = self._render(environ)
        if entry.status[:1] == "5" or len(entry.body) > self.max_body:
            return entry
        cost = len(entry.body) + 512  # the body, and roughly its key, headers and bookkeeping
        with self._lock:
            if self._size + cost > self.max_bytes:
                self._entries.clear()
                self._size = 0
            if key not in self._entries:
                self._entries[key] = entry
                self._size += cost
        return entry

    def _render(self, environ: Environ) -> Entry:
        """Run the app for the full GET response (no conditional headers) and keep what it says."""
        plain = {k: v for k, v in environ.items() if k not in CONDITIONAL}
        plain["REQUEST_METHOD"] = "GET"
        captured: dict[str, Any] = {}

        def start(
            status: str, headers: list[tuple[str, str]], exc_info: Any = None
        ) -> Callable[[bytes], None]:
            captured["status"], captured["headers"] = status, list(headers)
            return lambda data: None

        result = self.app(plain, start)
        try:
            body = b"".join(result)
        finally:
            close = getattr(result, "close", None)
            if close is not None:
                close()
        return Entry(captured["status"], captured["headers"], body)
