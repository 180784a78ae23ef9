"""Build throughput: ``fhir_pub.build.build`` (validation included) on synthetic publications.

Each size is generated once by bench/corpus.py (seed 1) into the scratch folder, then built several times,
each build in a child process of its own, so that its peak memory (``ru_maxrss`` from ``wait4``) is that
build's alone. The time is the ``build()`` call measured inside the child (imports excluded); medians are
reported, with the CPU seconds of the build and its workers (the machine is shared: when other work
competes for the cores, CPU time shows what wall time cannot).

    .venv-test/bin/python bench/build.py [--sizes 1000,100000] [--runs 3] [--workers N] [--dir DIR]

Rebuild mode (``--rebuild PERCENT``, issue 21): each run is a cold build, then PERCENT of the files edited
(the next ``meta.versionId``: a different share each run) and a rebuild that reuses the cold build's file,
in turns; with ``--baseline SRC`` (a source tree, e.g. ``git archive main fhir_pub profiles resources``
unpacked) a cold build of that code joins each turn, so that the cold builds of both are compared in the
same conditions. ``--corpus DIR`` builds an existing corpus instead of generating one (it is edited).

    .venv-test/bin/python bench/build.py --sizes 100000 --rebuild 1 [--baseline SRC] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import json
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
reuse = {"reuse": Path(sys.argv[4])} if len(sys.argv) > 4 else {}
built = build(Path(sys.argv[2]), Path(sys.argv[1]), workers=workers, **reuse)
print(time.perf_counter() - start, getattr(built, "reused", 0) if reuse else built.resources)
"""


def build_once(
    corpus: Path,
    out: Path,
    workers: str,
    keep: bool = False,
    reuse: Path | None = None,
    code: Path | None = None,
) -> tuple[float, int, int, float]:
    """Seconds, resources, peak RSS bytes and CPU seconds (its workers' too) of one build in a child.

    The built file is deleted unless ``keep``. ``reuse``: the previous build to reuse (the second figure is
    then how many resources it took over); ``code``: the source tree whose fhir_pub builds (PYTHONPATH).
    """
    argv = [sys.executable, "-c", CHILD, str(corpus), str(out), workers, *([str(reuse)] if reuse else [])]
    env = dict(os.environ, PYTHONPATH=str(code)) if code is not None else None
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env=env, cwd=tempfile.gettempdir())
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


def edit(corpus: Path, percent: float, turn: int) -> int:
    """Give ``percent`` of the corpus's files their next version (a different share each turn)."""
    files = sorted(corpus.rglob("*.json"))
    step = max(1, round(100 / percent))
    for path in files[turn % step :: step]:
        resource = json.loads(path.read_bytes())
        resource["meta"]["versionId"] = str(int(resource["meta"]["versionId"]) + 1)
        path.write_text(json.dumps(resource, indent=2) + "\n", encoding="utf-8")
    return len(files[turn % step :: step])


def rebuilds(
    corpus: Path,
    scratch: Path,
    runs: int,
    percent: float,
    workers: str = "auto",
    baseline: Path | None = None,
) -> dict[str, float]:
    """Cold build, edit, rebuild (and a cold build of ``baseline``), in turns; prints them, returns medians.

    The figures: ``cold`` and ``rebuild`` seconds, their CPU seconds, ``ratio`` (rebuild over cold, of the
    medians), ``resources`` (of the cold build) and, with a baseline, ``baseline`` seconds.
    """
    cold_out, again_out = scratch / "cold.sqlite", scratch / "again.sqlite"
    cold, again, base = [], [], []
    for turn in range(runs):
        if baseline is not None:
            base.append(build_once(corpus, scratch / "base.sqlite", workers, code=baseline))
            print(f"  turn {turn + 1}: baseline cold {base[-1][0]:.2f} s", flush=True)
        cold.append(build_once(corpus, cold_out, workers, keep=True))
        edited = edit(corpus, percent, turn)
        again.append(build_once(corpus, again_out, workers, reuse=cold_out))
        print(
            f"  turn {turn + 1}: cold {cold[-1][0]:.2f} s ({cold[-1][1]:,} resources), {edited:,} edited,"
            f" rebuild {again[-1][0]:.2f} s ({again[-1][1]:,} taken over)",
            flush=True,
        )
        cold_out.unlink()
    again_out.unlink(missing_ok=True)
    figures = {
        "cold": statistics.median(r[0] for r in cold),
        "rebuild": statistics.median(r[0] for r in again),
        "cold_cpu": statistics.median(r[3] for r in cold),
        "rebuild_cpu": statistics.median(r[3] for r in again),
        "resources": float(cold[0][1]),
        "percent": percent,
        "runs": float(runs),
    }
    figures["ratio"] = figures["rebuild"] / figures["cold"]
    print(
        f"medians: cold {figures['cold']:.2f} s ({figures['cold_cpu']:.1f} CPU s),"
        f" rebuild {figures['rebuild']:.2f} s ({figures['rebuild_cpu']:.1f} CPU s):"
        f" {figures['ratio']:.3f} of cold; per turn"
        f" {', '.join(f'{a[0] / c[0]:.3f}' for a, c in zip(again, cold, strict=True))}"
    )
    if base:
        figures["baseline"] = statistics.median(r[0] for r in base)
        print(
            f"baseline cold {figures['baseline']:.2f} s ({statistics.median(r[3] for r in base):.1f} CPU s):"
            f" this cold / baseline {figures['cold'] / figures['baseline']:.3f}; per turn"
            f" {', '.join(f'{c[0] / b[0]:.3f}' for c, b in zip(cold, base, strict=True))}"
        )
    return figures


def main() -> None:
    """Generate each size, build it ``--runs`` times, print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,100000", help="comma-separated corpus sizes")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", default="auto", help="validation processes (default: one per core)")
    parser.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--rebuild", type=float, default=None, help="percent edited before each rebuild")
    parser.add_argument("--baseline", type=Path, default=None, help="source tree of a cold build to compare")
    parser.add_argument("--corpus", type=Path, default=None, help="an existing corpus to build (edited)")
    args = parser.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="fhir-pub-build-", dir=args.dir))
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; median of {args.runs} builds per size")
    print(f"{'resources':>10}{'seconds':>10}{'resources/s':>13}{'peak MiB':>10}{'CPU s':>8}   (generated in)")
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            corpus = args.corpus or scratch / f"corpus-{size}"
            start = time.perf_counter()
            if args.corpus is None:
                write(size, 1, corpus)
            generated = time.perf_counter() - start
            if args.rebuild is not None:
                rebuilds(corpus, scratch, args.runs, args.rebuild, args.workers, args.baseline)
                if args.corpus is None:
                    shutil.rmtree(corpus)
                continue
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
