"""Reads as EHRs send them: a random resource of the whole publication per request, against nginx.

Issue 21's benchmark: every request reads a resource drawn at random from the whole publication (more
URLs than any response cache holds), against nginx serving the same bytes from ``fhir-pub export
--static`` in the same run. The two servers take turns (interleaved rounds, medians), at each number of
connections. Needs nginx and wrk (Debian: ``apt-get install nginx-light wrk``).

    .venv-test/bin/python bench/random_reads.py --publication P.sqlite [--rounds 3] [--seconds 5]
        [--connections 1,32] [--workers 2] [--gzip] [--bases R5,R4B,R4]

``measure_reads`` returns the figures (bench/results.py calls it); ``interleave``, ``summarise`` and
``table`` are shared with bench/random_searches.py. Build a publication of the size wanted first, for example
``bench/corpus.py --resources 100000 --seed 1 --out DIR`` then ``fhir-pub build --resources DIR``.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from serve import figures, floor, nginx, require_tools, serve, worker_memory

VERSIONS = {"R4B": "4.3", "R4": "4.0"}
FULL_PATH = "'full path': fhir-pub with FHIR_PUB_DIRECT_READS=false, FHIR_PUB_DIRECT_SEARCHES=false"
FLOOR = (
    "'floor': bench/floor.py, a WSGI app with no framework answering the same bytes from memory, with the"
    " headers of one fhir-pub answer, on granian as fhir-pub runs it (what any app on this server reaches"
    " at best; at the R5 base only)"
)
Wrk = tuple[
    float, float, float
]  # requests/s, p50 ms, p99 ms  # a version's base, and the converted table's fhir_version

# Each wrk thread reads the list of paths once, then sends one drawn at random for every request.
RANDOM_LUA = """
local paths = {}
for line in io.lines("%s") do paths[#paths + 1] = line end
math.randomseed(os.time() + math.floor(os.clock() * 1000000))
request = function()
  return wrk.format("GET", paths[math.random(#paths)])
end
"""


def random_wrk(
    url: str, paths: Path, seconds: int, connections: int, gzip: bool = False
) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 (ms) of one wrk run sending random paths from the file ``paths``."""
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        script.write(RANDOM_LUA % paths)
        if gzip:
            script.write('wrk.headers["Accept-Encoding"] = "gzip"\n')
        script.flush()
        command = ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s"]
        command += ["--timeout", "30s", "--latency", "-s", script.name, url]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return figures(out, url)


@dataclass
class Figure:
    """One server's medians over interleaved rounds: requests/s, p50, p99, ratio to nginx (and to R5)."""

    rate: float
    p50: float
    p99: float
    ratio: float
    of_r5: float = 1.0


@dataclass
class Random:
    """What one random-traffic run measured: figures by (connections, base, server), and its setting."""

    figures: dict[tuple[int, str, str], Figure]
    counts: dict[str, int]  # resources (reads) or distinct URLs (searches) by base
    rounds: int
    seconds: int
    workers: int
    memory: list[dict[str, float]] = field(default_factory=list)  # fhir-pub's workers after the load


def interleave(
    servers: Sequence[tuple[str, int, dict[str, Path]]],
    keys: Sequence[str],
    connections: Iterable[int],
    rounds: int,
    seconds: int,
    gzip: bool = False,
) -> dict[tuple[int, str, str], list[Wrk]]:
    """Interleaved wrk rounds, each (key, server) in turn: (connections, key, server) -> a figure a round.

    ``servers``: name, port and the file of paths to send by key (a base, or one list under any key); a
    server without a list for a key is not measured at that key.
    """
    results: dict[tuple[int, str, str], list[Wrk]] = {}
    for count in connections:
        for _ in range(rounds):
            for key in keys:
                for name, port, lists in servers:
                    if key not in lists:
                        continue
                    figure = random_wrk(f"http://127.0.0.1:{port}", lists[key], seconds, count, gzip)
                    results.setdefault((count, key, name), []).append(figure)
    return results


def summarise(
    results: dict[tuple[int, str, str], list[Wrk]], reference: str
) -> dict[tuple[int, str, str], Figure]:
    """Medians of each series' rounds; ratios per round to nginx's and to the ``reference`` key's, medians."""
    out = {}
    for (count, key, name), runs in results.items():
        nginx_runs, r5_runs = results[count, key, "nginx"], results[count, reference, name]
        out[count, key, name] = Figure(
            rate=statistics.median(f[0] for f in runs),
            p50=statistics.median(f[1] for f in runs),
            p99=statistics.median(f[2] for f in runs),
            ratio=statistics.median(f[0] / n[0] for f, n in zip(runs, nginx_runs, strict=True)),
            of_r5=statistics.median(f[0] / r[0] for f, r in zip(runs, r5_runs, strict=True)),
        )
    return out


def table(measured: Random, bases: bool) -> list[str]:
    """The printed table: one line per (connections, base, server), with ``base`` and ``of R5`` if asked."""
    heading = f"{'conns':>5}  {'base':<5}" if bases else f"{'conns':>5}  "
    lines = [f"{heading}{'server':<10}{'requests/s':>12}{'p50':>10}{'p99':>10}{'ratio':>8}"]
    lines[0] += f"{'of R5':>7}" if bases else ""
    for (count, base, name), f in sorted(measured.figures.items()):
        start = f"{count:>5}  {base:<5}" if bases else f"{count:>5}  "
        line = f"{start}{name:<10}{f.rate:>12,.0f}{f.p50:>8.2f}ms{f.p99:>8.2f}ms{f.ratio:>8.2f}"
        lines.append(line + (f"{f.of_r5:>7.2f}" if bases else ""))
    return lines


def stop_all(*processes: subprocess.Popen[bytes]) -> None:
    """Stop servers started here and wait for them."""
    for process in processes:
        process.terminate()
        process.wait()


def measure_reads(
    publication: Path,
    rounds: int = 3,
    seconds: int = 5,
    connections: Sequence[int] = (1, 32),
    workers: int = 2,
    gzip: bool = False,
    bases: Sequence[str] = ("R5",),
    port: int = 18290,
) -> Random:
    """Random reads of ``publication`` at each base: fhir-pub, its full path, nginx (ports from ``port``)."""
    bases = ["R5", *(b for b in bases if b != "R5")] if "R5" in bases else list(bases)  # 'of R5': the first
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        command = [python, "-m", "fhir_pub", "export", "--static", str(root / "www")]
        subprocess.run(
            [*command, "--publication", str(publication)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        lists, counts = {}, {}
        with sqlite3.connect(f"file:{publication}?mode=ro", uri=True) as db:
            for base in bases:
                if base == "R5":
                    rows = db.execute("SELECT type, id FROM resource").fetchall()
                else:
                    rows = db.execute(
                        "SELECT type, id FROM converted WHERE fhir_version = ?", (VERSIONS[base],)
                    ).fetchall()
                prefix = "/fhir" if base == "R5" else f"/fhir/{base}"
                lists[base] = root / f"paths-{base}.txt"
                lists[base].write_text("".join(f"{prefix}/{k}/{i}\n" for k, i in rows), encoding="utf-8")
                counts[base] = len(rows)
        db.close()
        app = serve(python, publication, port + 1, workers, cache=True)
        full = serve(python, publication, port + 2, workers, cache=True, direct=False)
        static = nginx(root, port, workers)
        first = lists["R5"].read_text(encoding="utf-8").split("\n", 1)[0] if "R5" in lists else None
        like = f"http://127.0.0.1:{port + 1}{first}"
        bare = floor(root, port + 3, workers, lists["R5"], like) if first else None
        try:
            servers = [("fhir-pub", port + 1, lists), ("full path", port + 2, lists), ("nginx", port, lists)]
            if bare is not None:
                servers.append(("floor", port + 3, {"R5": lists["R5"]}))
            results = interleave(servers, bases, connections, rounds, seconds, gzip)
            memory = worker_memory(app.pid)
        finally:
            stop_all(static, app, full, *([bare] if bare else []))
    return Random(summarise(results, bases[0]), counts, rounds, seconds, workers, memory)


def arguments(doc: str | None) -> argparse.ArgumentParser:
    """The options both random benchmarks take: publication, rounds, seconds, connections, workers."""
    parser = argparse.ArgumentParser(description=(doc or "").splitlines()[0])
    parser.add_argument("--publication", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", default="1,32")
    parser.add_argument("--workers", type=int, default=2)
    return parser


def main() -> None:
    """Serve the publication both ways and print medians of interleaved rounds, with ratios to nginx."""
    parser = arguments(__doc__)
    parser.add_argument("--gzip", action="store_true", help="send Accept-Encoding: gzip, as most clients do")
    parser.add_argument(
        "--bases", default="R5", help="comma-separated: R5, R4B, R4 (each version's base, its own resources)"
    )
    args = parser.parse_args()
    require_tools()
    connections = [int(c) for c in args.connections.split(",")]
    measured = measure_reads(
        args.publication,
        args.rounds,
        args.seconds,
        connections,
        args.workers,
        args.gzip,
        args.bases.split(","),
    )
    print(
        ", ".join(f"{count:,} resources at {base}" for base, count in measured.counts.items())
        + f"; a random one per request; {args.workers} workers each; "
        f"{args.rounds} interleaved rounds of {args.seconds} s; medians"
        + ("; Accept-Encoding: gzip" if args.gzip else "")
        + f"; {FULL_PATH}; {FLOOR}"
    )
    print("\n".join(table(measured, bases=True)))


if __name__ == "__main__":
    main()
