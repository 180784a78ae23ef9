"""Where a build's time goes: each layer of ``fhir_pub.build.build`` timed per resource, in one process.

A synthetic corpus (bench/corpus.py, seed 1) is built once with ``workers=1``, so every layer runs in
this process: reading the files, the three validation layers (structure with fhir.resources, profiles
with jsonschema, invariants with FHIRPath), the reference graph, indexing, and SQLite. Each layer's
functions are wrapped with a timer that counts its own time only (time spent in a nested layer, such as
a file read that indexing asks for, is that layer's). What no wrapper covers is ``other``.

The sum shows the most a build can reach on this machine's cores however well it spreads its work:
``cores / seconds per resource``. The validation layers alone give the same bound for validation with
nothing else done, which is what any build must pay with this validation stack. Single-process time
leaves out what workers add (pickling the rows to the parent), so a real build is somewhat slower.

    .venv-test/bin/python bench/build_costs.py [--resources 20000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from corpus import write  # bench/corpus.py, beside this script

from fhir_pub import build as build_module
from fhir_pub.search.index import Indexer
from fhir_pub.validation import validator as validator_module
from fhir_pub.validation.invariants import InvariantSet
from fhir_pub.validation.schema import SchemaValidator

START_UP = "start-up"
VALIDATION = ("structure (fhir.resources)", "profiles (jsonschema)", "invariants (FHIRPath)", "graph")


@dataclass
class Timer:
    """Own time per layer: a layer called inside another counts for itself, not for its caller."""

    own: dict[str, float] = field(default_factory=dict)
    clock: Callable[[], float] = time.perf_counter
    _nested: list[float] = field(default_factory=list)  # per open layer, the time of its nested layers

    def wrap(self, layer: str, function: Callable[..., Any], generates: bool = False) -> Callable[..., Any]:
        """``function``, its own time counted for ``layer``; a generator's items are made in the call."""

        def timed(*args: Any, **kwargs: Any) -> Any:
            self._nested.append(0.0)
            start = self.clock()
            try:
                result = function(*args, **kwargs)
                return list(result) if generates else result
            finally:
                spent = self.clock() - start
                nested = self._nested.pop()
                self.own[layer] = self.own.get(layer, 0.0) + spent - nested
                if self._nested:
                    self._nested[-1] += spent

        return timed


def _timed_connection(timer: Timer) -> type[sqlite3.Connection]:
    class Timed(sqlite3.Connection):
        """A connection whose statements count as SQLite time: row inserts, or the rest (index sorts)."""

        def executemany(self, sql: str, rows: Any, /) -> sqlite3.Cursor:
            run: Callable[..., sqlite3.Cursor] = super().executemany
            return timer.wrap("SQLite: insert rows", run)(sql, rows)

        def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
            run: Callable[..., sqlite3.Cursor] = super().execute
            return timer.wrap("SQLite: index sorts, totals, NDJSON", run)(sql, parameters)

    return Timed


def measure(corpus: Path, out: Path) -> tuple[int, float, dict[str, float]]:
    """Build ``corpus`` in this process with every layer timed: resources, seconds, own seconds per layer."""
    timer = Timer()
    patches: list[tuple[Any, str, str, bool]] = [
        (build_module, "load_conformance", START_UP, False),
        (build_module, "Validator", START_UP, False),
        (build_module, "registry", START_UP, False),
        (build_module, "_listing", "listing the files", False),
        (build_module, "read_candidate", "read (file, JSON)", False),
        (build_module._Reader, "_read_ahead", "read ahead (posix_fadvise)", False),
        (validator_module, "_shape_checked", "input checks (shape)", False),
        (validator_module, "walk_json", "walk (the nodes the layers share)", True),
        (validator_module, "structure_issues", VALIDATION[0], False),
        (SchemaValidator, "issues", VALIDATION[1], False),
        (InvariantSet, "issues", VALIDATION[2], False),
        (validator_module, "links", VALIDATION[3], True),
        (validator_module.GraphCheck, "report", VALIDATION[3], False),  # orphans, and invariants on the graph
        (Indexer, "add", "search index rows", False),
        (build_module._Reader, "rows", "rows (serialise, digest)", False),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name, _, _ in patches]
    connect = sqlite3.connect
    factory = _timed_connection(timer)
    try:
        for owner, name, layer, generates in patches:
            setattr(owner, name, timer.wrap(layer, getattr(owner, name), generates))
        sqlite3.connect = lambda *a, **k: connect(*a, factory=factory, **k)  # the build's one connection
        start = time.perf_counter()
        built = build_module.build(out, corpus, workers=1)
        seconds = time.perf_counter() - start
    finally:
        sqlite3.connect = connect
        for owner, name, original in saved:
            setattr(owner, name, original)
    return built.resources, seconds, timer.own


def per_resource(resources: int, seconds: float, own: dict[str, float]) -> dict[str, float]:
    """Microseconds per resource by layer, start-up left out (it is paid once), the rest as ``other``."""
    per = {layer: 1e6 * spent / resources for layer, spent in own.items() if layer != START_UP}
    total = 1e6 * (seconds - own.get(START_UP, 0.0)) / resources
    per["other (orchestration)"] = max(0.0, total - sum(per.values()))
    return per


def bounds(per: dict[str, float], cores: int) -> tuple[float, float]:
    """Resources/s on ``cores`` cores at best: with every layer, and with the validation layers alone."""
    return cores * 1e6 / sum(per.values()), cores * 1e6 / sum(per.get(layer, 0.0) for layer in VALIDATION)


def report(resources: int, seconds: float, own: dict[str, float], cores: int) -> list[str]:
    """Markdown lines: the table of layers, then the bounds on resources/s they set on ``cores`` cores."""
    per = per_resource(resources, seconds, own)
    total = sum(per.values())
    every, validation = bounds(per, cores)
    lines = ["| layer | µs per resource | share |", "|---|---:|---:|"]
    for layer, micros in sorted(per.items(), key=lambda item: -item[1]):
        lines.append(f"| {layer} | {micros:,.0f} | {micros / total:.0%} |")
    lines.append(f"| **all** | **{total:,.0f}** | 100% |")
    lines += [
        "",
        f"- start-up, once per build (profiles loaded, schemas and invariants compiled): "
        f"{own.get(START_UP, 0.0):.1f} s, not counted above",
        f"- every layer on {cores} cores, spread perfectly: at most {every:,.0f} resources/s",
        f"- the validation layers alone ({', '.join(VALIDATION)}), nothing else done: at most "
        f"{validation:,.0f} resources/s on {cores} cores",
    ]
    return lines


def main() -> None:
    """Generate a corpus, build it once with its layers timed, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=20_000)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument(
        "--json", type=Path, default=None, help="also write the figures here (for results.py)"
    )
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="fhir-pub-costs-", dir=args.dir))
    try:
        write(args.resources, 1, scratch / "corpus")
        resources, seconds, own = measure(scratch / "corpus", scratch / "out.sqlite")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print(f"python {sys.version.split()[0]}; {resources:,} resources built in {seconds:.1f} s, one process")
    print("\n".join(report(resources, seconds, own, validator_module.cores())))
    if args.json:
        args.json.write_text(json.dumps({"resources": resources, "seconds": seconds, "own": own}))


if __name__ == "__main__":
    main()
