"""Static export speed (``fhir-pub export --static``) against writing the same files directly, in one run.

Two publications: the bundled one, and a generated one (``grow`` from bench/export.py: renamed copies of
the bundled resources added to a normal build). For each, over several runs, medians of:

- ``static``: ``fhir_pub.static.write_static`` (what ``fhir-pub export --static`` runs): read every
  resource from the store, write two files each (read and vread) plus two, set mtimes, flush them to
  disk (an fsync per file for small folders, one sync(2) past 256 entries), rename the folder into place;
- ``raw``: the same files (same tree, same bytes) written straight from memory, then each file and
  folder fsynced: the floor for a file-per-URL export that survives a crash. Nearly all of both is
  fsync, so the figures are the disk's.

Each static run is paired with a raw run right after it and the ratio taken per pair (the disk is shared
and noisy).

    .venv-test/bin/python bench/static.py [--resources 5000] [--runs 3] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from export import grow  # bench/export.py, next to this file

from fhir_pub.atomic import fsync
from fhir_pub.build import build
from fhir_pub.static import write_static
from fhir_pub.store import Store


def raw_write(folder: Path, files: list[tuple[str, bytes]]) -> float:
    """Seconds to write ``files`` (relative path, bytes) under ``folder``, every file and folder fsynced."""
    start = time.perf_counter()
    folders = set()
    for name, body in files:
        path = folder / name
        if path.parent not in folders:
            path.parent.mkdir(parents=True, exist_ok=True)
            folders.add(path.parent)
        path.write_bytes(body)
    # Then every file fsynced, then the folders, deepest first: the per-file floor (write_static uses one
    # sync(2) instead once a folder has more than 256 files).
    for written in [*(folder / name for name, _ in files), *sorted(folders, key=lambda p: -len(p.parts))]:
        fsync(written)
    fsync(folder)
    return time.perf_counter() - start


def measure(label: str, path: Path, scratch: Path, runs: int) -> None:
    """Print the medians for one publication."""
    store = Store(path)
    statics, raws, count, size = [], [], 0, 0
    for attempt in range(runs):
        out = scratch / f"static-{attempt}"
        os.sync()
        start = time.perf_counter()
        result = write_static(store, out)
        statics.append(time.perf_counter() - start)
        files = [(p.relative_to(out).as_posix(), p.read_bytes()) for p in out.rglob("*") if p.is_file()]
        count, size = result.files, sum(len(body) for _, body in files)
        shutil.rmtree(out)
        os.sync()
        raws.append(raw_write(scratch / f"raw-{attempt}", files))
        shutil.rmtree(scratch / f"raw-{attempt}")
    seconds, raw = statistics.median(statics), statistics.median(raws)
    ratio = statistics.median(r / s for s, r in zip(statics, raws, strict=True))
    print(
        f"{label}: {result.resources:,} resources, {count:,} files, {size / 1e6:,.1f} MB\n"
        f"  static {seconds:.3f} s ({count / seconds:,.0f} files/s)"
        f"   raw {raw:.3f} s ({count / raw:,.0f} files/s)"
        f"  -> {ratio:.2f} of raw (median of {runs} pairs)"
    )


def main() -> None:
    """Measure the bundled publication, then the generated corpus."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--resources", type=int, default=5_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="fhir-pub-bench-", dir=args.dir))
    try:
        small = build(scratch / "bundled.sqlite").path
        measure("bundled publication", small, scratch, args.runs)
        large = scratch / "large.sqlite"
        shutil.copy(small, large)
        grow(large, args.resources)
        measure("generated corpus", large, scratch, args.runs)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
