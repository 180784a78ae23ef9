"""Configuration: one object, read from ``FHIR_PUB_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Everything the server can be told. Nothing else in fhir-pub reads the environment."""

    model_config = SettingsConfigDict(env_prefix="FHIR_PUB_", frozen=True, use_attribute_docstrings=True)

    publication: Path | None = None
    """The built publication (``fhir-pub build``); None: build the bundled one into ``cache_dir``."""
    cache_dir: Path = Path.home() / ".cache" / "fhir-pub"
    """Where the bundled publication is built when no ``publication`` is given."""
    base_url: str | None = None
    """The public FHIR base URL (``https://example.org/fhir``) when behind a proxy; None: from the request."""
    trusted_proxies: int = 0
    """How many reverse proxies in front are trusted to set ``X-Forwarded-For/Proto/Host/Port/Prefix``."""
    response_cache: int = 64
    """MiB of GET responses to keep in memory per worker (the publication never changes); 0: none."""
    threads: int = Field(default=4, ge=1, le=64)
    """Threads per worker process that run requests (granian's blocking threads)."""
    direct_reads: bool = True
    """Answer default reads from the store before the framework (the same answer, faster); false: never."""
    direct_searches: bool = True
    """Answer type searches from the handler before the framework (the same answer, faster); false: never."""
    jobs_dir: Path | None = None
    """Where export jobs and their files live (writable, else $export is 503); None: cache_dir/jobs"""
    export_expiry: int = 3600
    """Seconds an export's files stay downloadable (then 410)."""
    export_max_jobs: int = 2
    """Bulk exports running at once; more get 429 with Retry-After."""
    export_poll_interval: float = 1.0
    """Seconds a client should wait between status polls; polling faster gets 429."""
    search_timeout: float = Field(default=10.0, gt=0)
    """Seconds one search may run in SQLite; a longer one is stopped and answered 400 ``too-costly``."""
    max_includes: int = Field(default=1000, ge=0)
    """Resources ``_include``/``_revinclude`` add to one page; past it they are cut, with a warning."""
    cors_origins: str = "*"
    """Origins allowed to call from a browser (comma-separated), ``*`` for any; empty: no CORS."""
