"""Searches as EHRs send them: a different value on every request, against nginx serving the same answers.

Issue 21's search benchmark. The URLs are drawn from every drug of the publication, in the search shapes
an EHR sends (a drug's clinical uses of one type; paged and sorted at three page sizes; with
``_include``; a drug with its clinical uses by ``_revinclude``; one effect code), so nearly every request
asks something the server was not just asked. Each URL's answer is captured from fhir-pub once and
served by nginx as a static file (the same bytes), and wrk sends a URL drawn at random per request to
each server in turn (interleaved rounds, medians), at each number of connections. fhir-pub runs as
``fhir-pub serve`` does but with its response cache off (``FHIR_PUB_RESPONSE_CACHE=0``): the same few
thousand URLs come round again and again here, so a cache would soon hold most of them, while an EHR's
next search is almost never the one just answered. Needs nginx and wrk.

    .venv-test/bin/python bench/random_searches.py --publication P.sqlite [--urls 8000] [--rounds 3]
        [--seconds 5] [--connections 1,32] [--workers 2]

``measure_searches`` returns the figures (bench/results.py calls it).
"""

from __future__ import annotations

import random
import sqlite3
import sys
import tempfile
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from random_reads import FLOOR, FULL_PATH, Random, arguments, interleave, stop_all, summarise, table
from serve import floor, nginx, require_tools, serve, worker_memory

TYPES = ("indication", "contraindication", "interaction", "undesirable-effect", "warning")
PAGE_SIZES = (10, 20, 50)


def shapes(drug: str, rng: random.Random, codes: list[str]) -> list[str]:
    """Every search URL of one drug (``Medication/[drug]``), in the shapes an EHR sends."""
    subject = f"subject=Medication/{drug}"
    urls = [f"/fhir/ClinicalUseDefinition?{subject}&type={kind}" for kind in TYPES]
    urls += [
        f"/fhir/ClinicalUseDefinition?{subject}&_sort={sort}&_count={size}"
        for size in PAGE_SIZES
        for sort in ("type", "-_lastUpdated")
    ]
    urls.append(f"/fhir/ClinicalUseDefinition?{subject}&_sort=type&_count=10&_offset=10")
    urls.append(
        f"/fhir/ClinicalUseDefinition?{subject}&type={rng.choice(TYPES)}&_include=ClinicalUseDefinition:subject"
    )
    urls.append(f"/fhir/Medication?_id={drug}&_revinclude=ClinicalUseDefinition:subject")
    if codes:
        urls.append(f"/fhir/ClinicalUseDefinition?{subject}&effect={rng.choice(codes)}")
    return urls


def search_urls(publication: Path, count: int, seed: int) -> list[str]:
    """``count`` distinct search URLs drawn from all of the publication's drugs (deterministic)."""
    with sqlite3.connect(f"file:{publication}?mode=ro", uri=True) as db:
        rows = db.execute("SELECT id FROM resource WHERE type = 'Medication' ORDER BY id")
        drugs = [row[0] for row in rows]
        codes = [
            f"{system}|{code}"
            for system, code in db.execute(
                "SELECT DISTINCT system, code FROM search_token WHERE type = 'ClinicalUseDefinition' "
                "AND param = 'effect' AND system IS NOT NULL ORDER BY system, code"
            )
        ]
    db.close()
    rng = random.Random(seed)
    every = [url for drug in drugs for url in shapes(drug, rng, codes)]
    rng.shuffle(every)
    return sorted(every[:count])


def capture(base: str, urls: list[str], www: Path) -> list[str]:
    """Save each URL's answer under ``www/s/`` for nginx; the nginx paths, in the URLs' order."""
    (www / "s").mkdir(parents=True)
    static = []
    for number, url in enumerate(urls):
        with urllib.request.urlopen(base + url, timeout=60) as answer:
            body = answer.read()
        (www / "s" / f"{number}.json").write_bytes(body)
        static.append(f"/s/{number}.json")
    return static


def measure_searches(
    publication: Path,
    urls: int = 8000,
    seed: int = 1,
    rounds: int = 3,
    seconds: int = 5,
    connections: Sequence[int] = (1, 32),
    workers: int = 2,
    port: int = 18294,
) -> Random:
    """Random searches of ``publication``: fhir-pub, its full path, nginx on the captured answers.

    The figures are under base "R5"; ``counts["R5"]`` is the number of distinct URLs. Both fhir-pub
    servers run with the response cache off: over a few thousand URLs sent again and again, a 64 MiB
    cache would soon answer most of them, and the figure would measure the cache, not a search with a
    new value (what an EHR sends).
    """
    drawn = search_urls(publication, urls, seed)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        app = serve(sys.executable, publication, port + 1, workers, cache=0)
        full = serve(sys.executable, publication, port + 2, workers, cache=0, direct=False)
        try:
            static = capture(f"http://127.0.0.1:{port + 1}", drawn, root / "www")
            lists = {}
            for name, lines in (("fhir-pub", drawn), ("nginx", static)):
                lists[name] = root / f"{name}.txt"
                lists[name].write_text("\n".join(lines) + "\n", encoding="utf-8")
            web = nginx(root, port, workers)
            bare = floor(root, port + 3, workers, lists["nginx"], f"http://127.0.0.1:{port + 1}{drawn[0]}")
            try:
                servers = [
                    ("fhir-pub", port + 1, {"R5": lists["fhir-pub"]}),
                    ("full path", port + 2, {"R5": lists["fhir-pub"]}),
                    ("nginx", port, {"R5": lists["nginx"]}),
                    ("floor", port + 3, {"R5": lists["nginx"]}),
                ]
                results = interleave(servers, ["R5"], connections, rounds, seconds)
                memory = worker_memory(app.pid)
            finally:
                stop_all(web, bare)
        finally:
            stop_all(app, full)
    return Random(summarise(results, "R5"), {"R5": len(drawn)}, rounds, seconds, workers, memory)


def main() -> None:
    """Capture the answers, serve them both ways, print medians of interleaved rounds, ratios to nginx."""
    parser = arguments(__doc__)
    parser.add_argument("--urls", type=int, default=8000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    require_tools()
    connections = [int(c) for c in args.connections.split(",")]
    measured = measure_searches(
        args.publication, args.urls, args.seed, args.rounds, args.seconds, connections, args.workers
    )
    print(
        f"{measured.counts['R5']:,} distinct searches over every drug, one drawn at random per request; "
        f"{args.workers} workers each; {args.rounds} interleaved rounds of {args.seconds} s; medians; "
        + f"{FULL_PATH}; {FLOOR}"
    )
    print("\n".join(table(measured, bases=False)))


if __name__ == "__main__":
    main()
