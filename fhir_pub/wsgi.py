"""The production entry point: ``fhir_pub.wsgi:app``, configured from ``FHIR_PUB_*`` settings."""

from fhir_pub.web import create_app

app = create_app()
