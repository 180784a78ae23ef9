"""Reads as EHRs send them: a random resource of the whole publication per request, against nginx.

Issue 21's benchmark: every request reads a resource drawn at random from the whole publication (more
URLs than any response cache holds), against nginx serving the same bytes from ``fhir-pub export
--static`` in the same run. The two servers take turns (interleaved rounds, medians), at each number of
connections. Needs nginx and wrk (Debian: ``apt-get install nginx-light wrk``).

    .venv-test/bin/python bench/random_reads.py --publication P.sqlite [--rounds 3] [--seconds 5]
        [--connections 1,32] [--workers 2] [--gzip] [--bases R5,R4B,R4]

Build a publication of the size wanted first, for example
``bench/corpus.py --resources 100000 --seed 1 --out DIR`` then ``fhir-pub build --resources DIR``.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from serve import figures, nginx, require_tools, serve

VERSIONS = {"R4B": "4.3", "R4": "4.0"}  # a version's base, and the converted table's fhir_version

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


def main() -> None:
    """Serve the publication both ways and print medians of interleaved rounds, with ratios to nginx."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publication", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", default="1,32")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--gzip", action="store_true", help="send Accept-Encoding: gzip, as most clients do")
    parser.add_argument(
        "--bases", default="R5", help="comma-separated: R5, R4B, R4 (each version's base, its own resources)"
    )
    args = parser.parse_args()
    bases = args.bases.split(",")
    if bases[0] != "R5" and "R5" in bases:
        bases.remove("R5")
        bases.insert(0, "R5")  # 'of R5' compares with the first base
    counts: dict[str, int] = {}
    require_tools()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        subprocess.run(
            [
                python,
                "-m",
                "fhir_pub",
                "export",
                "--static",
                str(root / "www"),
                "--publication",
                str(args.publication),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        lists = {}
        with sqlite3.connect(f"file:{args.publication}?mode=ro", uri=True) as db:
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
        app = serve(python, args.publication, 18291, args.workers, cache=True)
        full = serve(python, args.publication, 18292, args.workers, cache=True, direct=False)
        static = nginx(root, 18290, args.workers)
        servers = (("fhir-pub", 18291), ("full path", 18292), ("nginx", 18290))
        results: dict[tuple[int, str, str], list[tuple[float, float, float]]] = {}
        try:
            for connections in (int(c) for c in args.connections.split(",")):
                for _ in range(args.rounds):
                    for base in bases:
                        for name, port in servers:
                            url = f"http://127.0.0.1:{port}"
                            figure = random_wrk(url, lists[base], args.seconds, connections, args.gzip)
                            results.setdefault((connections, base, name), []).append(figure)
        finally:
            static.terminate()
            static.wait()
            for process in (app, full):
                process.terminate()
                process.wait()
    print(
        ", ".join(f"{counts[base]:,} resources at {base}" for base in bases)
        + f"; a random one per request; {args.workers} workers each; "
        f"{args.rounds} interleaved rounds of {args.seconds} s; medians"
        + ("; Accept-Encoding: gzip" if args.gzip else "")
        + "; 'full path': fhir-pub with FHIR_PUB_DIRECT_READS=false, FHIR_PUB_DIRECT_SEARCHES=false"
    )
    heading = f"{'conns':>5}  {'base':<5}{'server':<10}{'requests/s':>12}{'p50':>10}{'p99':>10}"
    print(f"{heading}{'ratio':>8}{'of R5':>7}")
    for (connections, base, name), runs in sorted(results.items()):
        ratios = [f[0] / n[0] for f, n in zip(runs, results[(connections, base, "nginx")], strict=True)]
        of_r5 = [f[0] / r[0] for f, r in zip(runs, results[(connections, bases[0], name)], strict=True)]
        rate = statistics.median(f[0] for f in runs)
        p50 = statistics.median(f[1] for f in runs)
        p99 = statistics.median(f[2] for f in runs)
        print(
            f"{connections:>5}  {base:<5}{name:<10}{rate:>12,.0f}{p50:>8.2f}ms{p99:>8.2f}ms"
            f"{statistics.median(ratios):>8.2f}{statistics.median(of_r5):>7.2f}"
        )


if __name__ == "__main__":
    main()
