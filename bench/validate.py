"""Validation throughput: the publication, and a generated corpus of 10,000 resources of the same shape.

The corpus is bench/corpus.py's (synthetic drugs, each a complete graph like the bundled one, seed 1).
Runs on one core (pinned where the OS allows), from files on disk, all four layers. Then ``$validate`` of
one resource at a time, as the handler answers it (``handlers.validate``, the built publication to resolve
references in): each resource of the bundled publication as it is (publication mode: it declares one of
its profiles) and without ``meta.profile`` (single-resource mode, the official definitions only).

    .venv-test/bin/python bench/validate.py [--resources 10000] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from corpus import write  # bench/corpus.py, beside this script

from fhir_pub import handlers
from fhir_pub.build import build
from fhir_pub.publication import load
from fhir_pub.store import Store
from fhir_pub.validation import Validator, candidate_from_file
from fhir_pub.validation.invariants import InvariantSet
from fhir_pub.validation.schema import SchemaValidator
from fhir_pub.validation.structure import structure_issues
from fhir_pub.validation.validator import gather


def timed(runs: int, work: Any, setup: Any = None) -> list[float]:
    """Seconds per run; the first (warm-up) run is not counted; ``setup`` runs untimed before each."""
    argument = setup() if setup else None
    work(argument)
    out = []
    for _ in range(runs):
        argument = setup() if setup else None
        start = time.perf_counter()
        work(argument)
        out.append(time.perf_counter() - start)
    return out


def main() -> None:
    """Measure and print resources/s (median of the runs) for each corpus and per layer."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    validator = Validator()
    python = sys.version.split()[0]
    print(f"python {python}, one core; median of {args.runs} runs after a warm-up run, cold memo each run")
    print(f"{'corpus':<34}{'resources':>10}{'seconds':>10}{'resources/s':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        big = Path(tmp) / "corpus"
        write(args.resources, 1, big)
        for label, folder in (("publication (bundled)", load().root), ("generated (bench/corpus.py)", big)):
            files = gather([folder])
            report = validator.validate_paths([folder])
            assert report.ok, [i.message for i in report.issues][:5]
            # A fresh validator per run: its invariant memo starts cold, as when a corpus is validated once.
            seconds = statistics.median(
                timed(args.runs, lambda v, f=folder: v.validate_paths([f]), Validator)
            )
            print(f"{label:<34}{len(files):>10}{seconds:>10.2f}{len(files) / seconds:>13,.0f}")
        # Where the time goes, per layer, on the generated corpus (resources already read).
        candidates = [candidate_from_file(p) for p in gather([big])]
        resources = [c.resource for c in candidates if c.resource is not None]
        layers = {
            "read + JSON parse": lambda _: [candidate_from_file(p) for p in gather([big])],
            "1 structure (fhir.resources)": lambda _: [structure_issues(r, None) for r in resources],
            "2 profile (jsonschema), cold memo": lambda _: [
                fresh[r["meta"]["profile"][0]].issues(r, None)
                for fresh in [{url: SchemaValidator(s) for url, s in validator.schemas.items()}]
                for r in resources
            ],
            "3 invariants, cold memo": lambda _: [
                fresh.issues(r, r["meta"]["profile"], {}, None)
                for fresh in [InvariantSet(validator.conformance)]
                for r in resources
            ],
            "3 invariants, no memo": lambda _: [
                InvariantSet(validator.conformance).issues(r, r["meta"]["profile"], {}, None)
                for r in resources[:1000]
            ],
        }
        print(f"\nper layer on the generated corpus ({len(resources)} resources):")
        for label, work in layers.items():
            n = 1000 if "no memo" in label else len(resources)
            seconds = statistics.median(timed(max(1, args.runs // 2), work))
            print(f"  {label:<32}{n / seconds:>13,.0f} resources/s")
        single_validate(validator, Path(tmp), args.runs)


def single_validate(validator: Validator, scratch: Path, runs: int) -> None:
    """``$validate`` one resource at a time through the handler, in both modes: resources/s on one core."""
    store = Store(build(scratch / "p.sqlite").path)
    context = handlers.Context(store, "http://localhost/fhir")
    published = [entry.resource for entry in load()]
    plain = [{k: v for k, v in r.items() if k != "meta"} for r in published]
    print(f"\n$validate, one resource per call, the {len(published)} resources of the bundled publication:")
    for label, bodies in (("publication mode (its profile)", published), ("single-resource mode", plain)):

        def work(_: Any, bodies: list[dict[str, Any]] = bodies) -> None:
            for body in bodies:
                answer = handlers.validate(context, validator, None, handlers.ValidateRequest(body))
                assert answer.status == 200

        seconds = statistics.median(timed(runs, work))
        print(f"  {label:<32}{len(bodies) / seconds:>13,.0f} resources/s")


if __name__ == "__main__":
    main()
