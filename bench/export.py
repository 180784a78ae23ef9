"""Bulk export throughput against the machine's raw sequential write speed, measured in the same run.

Two publications: the bundled one, and a generated one of at least 1,000,000 resources. The large one
starts from a normal build of the bundled publication; copies of its resources (each with its own id)
are then added to the resource table directly, because this measures export, not build or validation,
and the build's precomputed NDJSON is recomputed (``write_ndjson``, as the build does).
For each, three things are timed, each over several runs, and medians reported:

- ``offline``: ``fhir_pub.export.export`` (what ``fhir-pub export`` runs), every type, no filters;
- ``server``: a ``$export`` job through ``JobStore.run`` (progress reporting, manifest, job state);
- ``raw``: writing the same number of bytes to a file in the same folder, 1 MiB at a time, then fsync
  (what ``dd conv=fsync`` measures).

An export fsyncs its files before it appears (a crash must not leave a "complete" export with truncated
files), so raw write is timed to disk too: the ratio compares like with like.

    .venv-test/bin/python bench/export.py [--resources 1000000] [--runs 5] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from fhir_pub.build import build, write_ndjson
from fhir_pub.export import ExportRequest, export
from fhir_pub.jobs import JobStore
from fhir_pub.store import Store


def grow(path: Path, target: int) -> int:
    """Add renamed copies of the publication's resources until it holds at least ``target``; the count."""
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT type, id, version, last_updated, body, updated FROM resource").fetchall()
        total = len(rows)
        copy = 0
        while total < target:
            copy += 1
            batch = []
            for kind, rid, version, last_updated, body, updated in rows:
                new_id = f"{rid}-c{copy}"
                renamed = bytes(body).replace(f'"id":"{rid}"'.encode(), f'"id":"{new_id}"'.encode(), 1)
                batch.append((kind, new_id, version, last_updated, renamed, updated))
            db.executemany("INSERT INTO resource VALUES (?, ?, ?, ?, ?, ?)", batch)
            total += len(batch)
        write_ndjson(db)  # as a build would
    return total


def raw_write(folder: Path, size: int) -> float:
    """Seconds to write ``size`` bytes sequentially, 1 MiB per write."""
    chunk = os.urandom(1 << 20)
    target = folder / "raw.bin"
    start = time.perf_counter()
    with target.open("wb") as sink:
        left = size
        while left > 0:
            sink.write(chunk[: min(left, len(chunk))])
            left -= len(chunk)
        sink.flush()
        os.fsync(sink.fileno())
    elapsed = time.perf_counter() - start
    target.unlink()
    return elapsed


def folder_size(folder: Path) -> int:
    """Bytes of the NDJSON files in ``folder``."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.name.endswith(".ndjson"))


def paired(run: Callable[[Path], Path], scratch: Path, runs: int) -> tuple[list[float], list[float], int]:
    """``runs`` pairs of (export seconds, raw-write seconds for the same bytes), each from a quiet disk.

    The disk here is shared and noisy, so each export is paired with a raw write right after it and the
    ratio is taken per pair.
    """
    exports, raws, size = [], [], 0
    for attempt in range(runs):
        out = scratch / f"out-{attempt}"
        os.sync()
        start = time.perf_counter()
        files = run(out)
        exports.append(time.perf_counter() - start)
        size = folder_size(files)
        shutil.rmtree(out)
        os.sync()
        raws.append(raw_write(scratch, size))
    return exports, raws, size


def measure(label: str, path: Path, scratch: Path, runs: int) -> dict[str, dict[str, float]]:
    """Print the medians for one publication; return them by way (``offline``, ``server``).

    Each way's figures: ``resources``, ``bytes``, ``seconds`` (median), ``raw_seconds`` (median) and
    ``ratio`` (median of the per-pair export-to-raw-write ratios).
    """
    store = Store(path)
    count = store.count(None)

    def offline(out: Path) -> Path:
        export(store, ExportRequest(), out)
        return out

    def server(out: Path) -> Path:
        jobs = JobStore(out)
        state = jobs.create(ExportRequest(), "http://bench/fhir/$export", "http://bench/fhir", [])
        jobs.run(state, store, ExportRequest())
        assert jobs.read(state["id"])["status"] == "complete"  # type: ignore[index]
        return out / state["id"] / "files"

    print(f"{label}: {count:,} resources")
    results = {}
    for name, run in (("offline", offline), ("server", server)):
        exports, raws, size = paired(run, scratch, runs)
        seconds, raw = statistics.median(exports), statistics.median(raws)
        ratio = statistics.median(r / e for e, r in zip(exports, raws, strict=True))
        print(
            f"  {name:8} {count / seconds:>10,.0f} resources/s  {size / seconds / 1e6:>7,.0f} MB/s"
            f"  ({size / 1e6:,.0f} MB in {seconds:.2f} s)   raw write {size / raw / 1e6:,.0f} MB/s"
            f"  -> {ratio:.2f} of raw (median of {runs} pairs)"
        )
        results[name] = {
            "resources": count,
            "bytes": size,
            "seconds": seconds,
            "raw_seconds": raw,
            "ratio": ratio,
        }
    return results


def main() -> None:
    """Measure the bundled publication, then the generated corpus."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resources", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="fhir-pub-bench-", dir=args.dir))
    try:
        small = build(scratch / "bundled.sqlite").path
        measure("bundled publication", small, scratch, args.runs)
        large = scratch / "large.sqlite"
        shutil.copy(small, large)
        start = time.perf_counter()
        total = grow(large, args.resources)
        print(f"(generated {total:,} resources in {time.perf_counter() - start:.1f} s)")
        measure("generated corpus", large, scratch, args.runs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
