"""Request limits checked before the app runs: URL length (414), header size (431), compressed bodies.

The app's limits sit below granian's own, so a client gets an OperationOutcome rather than granian's bare
answer: granian (hyper) closes with an empty 414 past a 65,534-byte request target and an empty 431 past
about 400 KiB of headers or more than 100 header fields (that count is granian's alone).
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Iterable
from typing import Any

from fhir_pub.web.cache import Environ, StartResponse, WSGIApp
from fhir_pub.web.errors import outcome_response
from fhir_pub.web.html import security_headers

MAX_URL = 8 * 1024  # characters of path plus query string; more is 414 (RFC 9110 section 15.5.15)
MAX_HEADERS = 32 * 1024  # characters of all header names and values; more is 431 (RFC 6585 section 5)
# https://hl7.org/fhir/R5/http.html#compression lets a server take compressed bodies; gzip is the one
# read here, decoded under the same cap as a plain body (so a gzip bomb is a 413, not a memory blow-up).
READ = 64 * 1024


class Limits:
    """WSGI middleware enforcing the limits above, and decoding ``Content-Encoding: gzip`` bodies."""

    def __init__(self, app: WSGIApp, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        """Refuse what is over a limit with an OperationOutcome; pass the rest on, gzip bodies decoded."""
        target = len(environ.get("PATH_INFO", "")) + len(environ.get("QUERY_STRING", ""))
        if target > MAX_URL:
            return _refuse(
                environ, start_response, 414, "too-long", f"the URL is longer than {MAX_URL} bytes"
            )
        headers = 0
        for key, value in environ.items():  # a plain loop: half the cost of sum() over a generator
            if key[:5] == "HTTP_":
                headers += len(key) + len(value)
        if headers > MAX_HEADERS:
            message = f"the request headers are larger than {MAX_HEADERS} bytes"
            return _refuse(environ, start_response, 431, "too-long", message)
        encoding = environ.get("HTTP_CONTENT_ENCODING", "").strip().lower()
        if encoding in {"", "identity"}:
            return self.app(environ, start_response)
        if encoding not in {"gzip", "x-gzip"}:
            # RFC 9110 section 15.5.16: an unsupported content coding is a 415, naming what is accepted
            message = f"Content-Encoding {encoding[:40]} is not supported; send gzip or no encoding"
            accept = {"Accept-Encoding": "gzip"}
            return _refuse(environ, start_response, 415, "not-supported", message, accept)
        body, problem = self._gunzip(environ)
        if problem is not None:
            return _refuse(environ, start_response, *problem)
        environ["wsgi.input"] = io.BytesIO(body)
        environ["CONTENT_LENGTH"] = str(len(body))
        del environ["HTTP_CONTENT_ENCODING"]
        return self.app(environ, start_response)

    def _gunzip(self, environ: Environ) -> tuple[bytes, tuple[int, str, str] | None]:
        """The decoded body, or (status, issue code, message) when it is too large or not gzip."""
        too_large = (413, "too-long", f"the decompressed body is larger than {self.max_body} bytes")
        stream: Any = environ["wsgi.input"]
        decoder = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip container only
        out, taken = bytearray(), 0
        try:
            while chunk := stream.read(READ):
                taken += len(chunk)
                if taken > self.max_body:
                    return b"", (413, "too-long", f"the request body is larger than {self.max_body} bytes")
                # Never inflate more than one byte past the cap, however small the input chunk.
                out += decoder.decompress(chunk, self.max_body + 1 - len(out))
                if len(out) > self.max_body or decoder.unconsumed_tail:
                    return b"", too_large
        except zlib.error:
            return b"", (400, "invalid", "the body is not valid gzip")
        if not decoder.eof or decoder.unused_data:
            return b"", (400, "invalid", "the body is not one complete gzip stream")
        return bytes(out), None


def _refuse(
    environ: Environ,
    start_response: StartResponse,
    status: int,
    code: str,
    message: str,
    headers: dict[str, str] | None = None,
) -> Iterable[bytes]:
    """Answer with the one error shape (an OperationOutcome), without reaching the app."""
    response = security_headers(outcome_response(status, code, message))
    response.headers.update(headers or {})
    body: Iterable[bytes] = response(environ, start_response)
    return body
