"""FHIR search: parameters from SearchParameter resources, request parsing, indexing and matching."""
