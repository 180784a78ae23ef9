"""The Flask application: ``create_app`` is the only way an app is made (also for ``fhir_pub.wsgi``)."""

from __future__ import annotations

from flask import Flask, Response, request
from flask_compress import Compress
from flask_cors import CORS
from werkzeug.middleware.proxy_fix import ProxyFix

from fhir_pub.build import bundled_publication
from fhir_pub.handlers import BASE_SUFFIXES
from fhir_pub.settings import Settings
from fhir_pub.store import Store
from fhir_pub.web import bulk, errors, fhir, formats, html, limits, operations
from fhir_pub.web.cache import ResponseCache
from fhir_pub.web.direct import DirectReads, DirectSearches
from fhir_pub.web.state import AppState, app_state, install

MAX_BODY = 8 * 1024 * 1024  # bytes: a larger request body is refused with 413
# flask-compress leaves the FHIR media types alone unless told (https://hl7.org/fhir/R5/http.html#compression)
COMPRESSED = [
    "application/fhir+json",
    "application/fhir+xml",
    "application/fhir+ndjson",
    "application/json",
    "application/xml",
    "text/html",
]
# Headers a browser app may read from responses (CORS).
EXPOSED = ["ETag", "Last-Modified", "Content-Location", "Location", "X-Progress", "Retry-After"]


def create_app(settings: Settings | None = None) -> Flask:
    """Make the app serving one built publication (the bundled one unless settings name another)."""
    settings = settings if settings is not None else Settings()
    app = Flask("fhir_pub", template_folder="web/templates")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    app.config["COMPRESS_MIMETYPES"] = COMPRESSED
    app.config["COMPRESS_ALGORITHM"] = ["gzip", "br"]
    Compress(app)
    if settings.cors_origins:
        origins = (
            "*" if settings.cors_origins == "*" else [o.strip() for o in settings.cors_origins.split(",")]
        )
        # A literal "*" (not an echoed origin) keeps public responses cacheable without Vary: Origin.
        # A read-only server: the preflight names only the methods some route accepts.
        CORS(
            app,
            origins=origins,
            expose_headers=EXPOSED,
            send_wildcard=origins == "*",
            methods=["GET", "HEAD", "POST", "OPTIONS"],
        )
    if settings.trusted_proxies:
        count = settings.trusted_proxies
        proxied = ProxyFix(
            app.wsgi_app, x_for=count, x_proto=count, x_host=count, x_port=count, x_prefix=count
        )
        app.wsgi_app = proxied  # type: ignore[method-assign]
    path = (
        settings.publication if settings.publication is not None else bundled_publication(settings.cache_dir)
    )
    store = Store(path)
    install(app, AppState(settings, store))
    app.register_blueprint(operations.blueprint, url_prefix="/fhir")
    app.register_blueprint(bulk.blueprint, url_prefix="/fhir")
    app.register_blueprint(fhir.blueprint, url_prefix="/fhir")
    for name, version in fhir.URL_VERSIONS.items():  # R4B and R4 ($validate only says it is R5's)
        prefix, suffix = f"/fhir{BASE_SUFFIXES[version]}", name.removeprefix("fhir")
        app.register_blueprint(operations.blueprint, url_prefix=prefix, name=f"operations{suffix}")
        app.register_blueprint(bulk.blueprint, url_prefix=prefix, name=f"bulk{suffix}")
        app.register_blueprint(fhir.blueprint, url_prefix=prefix, name=name)
    app.add_url_rule("/healthz", "healthz", lambda: {"status": "ok"})
    app.add_url_rule("/", "landing", lambda: landing_page(app))
    app.register_blueprint(html.blueprint)  # /search/{type}: the landing page's forms
    level = int(app.config.get("COMPRESS_LEVEL", 6))
    if settings.direct_searches:  # inside the response cache: a repeated search is still a cache hit
        app.wsgi_app = DirectSearches(app.wsgi_app, store, settings, level)  # type: ignore[method-assign]
    if settings.response_cache:
        app.wsgi_app = ResponseCache(  # type: ignore[method-assign]
            app.wsgi_app, settings.response_cache << 20, uncached=bulk.uncached
        )
    if settings.direct_reads:
        app.wsgi_app = DirectReads(app.wsgi_app, store, level)  # type: ignore[method-assign]
    app.wsgi_app = limits.Limits(app.wsgi_app, MAX_BODY)  # type: ignore[method-assign]  # outermost
    errors.register(app)
    app.after_request(lambda response: html.security_headers(_allow(response)))
    return app


def _allow(response: Response) -> Response:
    """OPTIONS names what the URL really accepts: Flask's own answer counts the write catch-all's verbs."""
    if request.method == "OPTIONS" and request.path.startswith("/fhir"):
        response.headers["Allow"] = fhir.allowed_methods()
    return response


def landing_page(app: Flask) -> Response:
    """The human landing page."""
    state = app_state()
    body = html.landing(formats.base_url(state.settings, request), state.store)
    return Response(body, content_type=formats.HTML)
