"""fhir-pub: publish drug leaflets as validated FHIR R5 resources and serve them read-only."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fhir-pub")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = ["__version__"]
