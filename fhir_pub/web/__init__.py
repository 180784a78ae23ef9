"""The Flask application: ``create_app`` is the only way an app is made (also for ``fhir_pub.wsgi``)."""

from __future__ import annotations

from flask import Flask

from fhir_pub.build import bundled_publication
from fhir_pub.settings import Settings
from fhir_pub.store import Store
from fhir_pub.web import errors, fhir, operations

MAX_BODY = 8 * 1024 * 1024  # bytes: a larger request body is refused with 413


def create_app(settings: Settings | None = None) -> Flask:
    """Make the app serving one built publication (the bundled one unless settings name another)."""
    settings = settings if settings is not None else Settings()
    app = Flask("fhir_pub")
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    path = (
        settings.publication if settings.publication is not None else bundled_publication(settings.cache_dir)
    )
    app.extensions["fhir_pub"] = {"settings": settings, "store": Store(path)}
    app.register_blueprint(operations.blueprint, url_prefix="/fhir")
    app.register_blueprint(fhir.blueprint, url_prefix="/fhir")
    app.add_url_rule("/healthz", "healthz", lambda: {"status": "ok"})
    errors.register(app)
    return app
