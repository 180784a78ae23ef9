"""Run the CLI as ``python -m fhir_pub``."""

from fhir_pub.cli import main

main(prog_name="fhir-pub")
