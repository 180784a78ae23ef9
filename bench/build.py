"""Build throughput: ``fhir_pub.build.build`` (validation included) on synthetic publications.

Each size is generated once by bench/corpus.py (seed 1) into the scratch folder, then built several times,
each build in a child process of its own, so that its peak memory (``ru_maxrss`` from ``wait4``) is that
build's alone. The time is the ``build()`` call measured inside the child (imports excluded); medians are
reported, with the CPU seconds of the build and its workers (the machine is shared: when other work
competes for the cores, CPU time shows what wall time cannot).

    .venv-test/bin/python bench/build.py [--sizes 1000,100000] [--runs 3] [--workers N] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from corpus import write  # bench/corpus.py, beside this script

CHILD = """
import sys, time
from pathlib import Path
from fhir_pub.build import build
start = time.perf_counter()
workers = int(sys.argv[3]) if sys.argv[3] != "auto" else None
built = build(Path(sys.argv[2]), Path(sys.argv[1]), workers=workers)
print(time.perf_counter() - start, built.resources)
"""


def build_once(corpus: Path, out: Path, workers: str, keep: bool = False) -> tuple[float, int, int, float]:
    """Seconds, resources, peak RSS bytes and CPU seconds (its workers' too) of one build in a child.

    The built file is deleted unless ``keep``.
    """
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(corpus), str(out), workers], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"build failed ({child.returncode}) on {corpus}")
    seconds, resources = output.split()
    if not keep:
        out.unlink()
    cpu = usage.ru_utime + usage.ru_stime
    return float(seconds), int(resources), usage.ru_maxrss * 1024, cpu  # Linux reports KiB


def main() -> None:
    """Generate each size, build it ``--runs`` times, print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000", help="comma-separated corpus sizes")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", default="auto", help="validation processes (default: one per core)")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="fhir-pub-build-", dir=args.dir))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; median of {args.runs} builds per size")
    print(f"{'resources':>10}{'seconds':>10}{'resources/s':>13}{'peak MiB':>10}{'CPU s':>8}   (generated in)")
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            corpus = scratch / f"corpus-{size}"
            start = time.perf_counter()
            write(size, 1, corpus)
            generated = time.perf_counter() - start
            runs = [build_once(corpus, scratch / "out.sqlite", args.workers) for _ in range(args.runs)]
            seconds = statistics.median(r[0] for r in runs)
            peak = statistics.median(r[2] for r in runs)
            cpu = statistics.median(r[3] for r in runs)
            print(
                f"{runs[0][1]:>10,}{seconds:>10.2f}{runs[0][1] / seconds:>13,.0f}"
                f"{peak / 2**20:>10,.0f}{cpu:>8.1f}"
                f"   ({generated:.0f} s)",
                flush=True,
            )
            shutil.rmtree(corpus)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
