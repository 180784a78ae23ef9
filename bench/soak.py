"""Soak: minutes of mixed load on a real server; zero errors, memory and file descriptors flat.

One ``fhir-pub serve`` process (granian, ``--workers``) is loaded by wrk with a mix of reads, the
searches an EHR runs (with varying paging, so the response cache keeps filling and emptying), metadata,
history, XML and HTML, while a client thread runs Bulk Data exports end to end (kick-off, poll, download
every file, delete) over and over. Every few seconds the resident memory and open file descriptors of the
server and its workers are sampled from /proc.

An error is any non-2xx answer, socket error or timeout, or any export that does not finish with all of
its files. "Flat" compares the end of the run with its state after the warm-up (the first fifth): caches
and pools fill first, a leak keeps growing. The script exits 1 if there were errors or growth.

    .venv-test/bin/python bench/soak.py [--minutes 3] [--connections 16] [--workers 2]

Linux only (/proc); needs wrk.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from fhir_pub.build import build
from fhir_pub.store import Store

# The searches an EHR runs most, with {n} replaced per request so that many distinct URLs arrive.
SEARCHES = [
    "/fhir/ClinicalUseDefinition?subject=MedicationKnowledge/besponsa&type=warning&_offset={n}&_count=5",
    "/fhir/ClinicalUseDefinition?type=undesirable-effect&_count=10&_offset={n}",
    "/fhir/ClinicalUseDefinition?_text=bleeding&_count={n}",
    "/fhir/ClinicalUseDefinition?type=indication&_include=ClinicalUseDefinition:subject&_count={n}",
    "/fhir/Provenance?_count=10&_offset={n}",
    "/fhir/MedicationKnowledge?code=http://www.nlm.nih.gov/research/umls/rxnorm|1921589&_count={n}",
    "/fhir/DocumentReference?_elements=content&_count={n}",
    "/fhir/Organization?_format=xml&_count={n}",
    "/fhir/ClinicalUseDefinition/_history?_count={n}",
]
LUA = """
paths = {%s}
searches = {%s}
counter = 0
request = function()
  counter = counter + 1
  if counter %% 3 == 0 then
    local p = searches[math.random(#searches)]
    return wrk.format("GET", (p:gsub("{n}", tostring(math.random(1, 60)))))
  end
  return wrk.format("GET", paths[math.random(#paths)])
end
"""


def tree(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, stack = [], [root]
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(parents.get(pid, []))
    return found


def sample(root: int) -> tuple[float, int, int]:
    """(resident MiB of the whole tree, open file descriptors of the tree, processes)."""
    rss, fds, pids = 0, 0, tree(root)
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
            rss += int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS")))
            fds += sum(1 for _ in Path(f"/proc/{pid}/fd").iterdir())
        except (OSError, StopIteration):
            continue
    return rss / 1024, fds, len(pids)


def fetch(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, bytes, Any]:
    """Status, body and headers of one request (HTTP errors are answers too)."""
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers


def exports(base: str, stop: threading.Event, tally: dict[str, int]) -> None:
    """Run exports end to end until ``stop``; count the finished ones and the failures."""
    try:
        _exports(base, stop, tally)
    except Exception as error:  # a crashed client is a failed soak, not a silent pass
        tally["export_errors"] += 1
        print(f"export client stopped: {error!r}", file=sys.stderr)


def _exports(base: str, stop: threading.Event, tally: dict[str, int]) -> None:
    kinds = ["", "?_type=ClinicalUseDefinition", "?_type=Provenance,Organization", "?_elements=id"]
    turn = 0
    while not stop.is_set():
        query = kinds[turn % len(kinds)]
        turn += 1
        status, _, headers = fetch(f"{base}/$export{query}", headers={"Prefer": "respond-async"})
        if status == 429:
            time.sleep(float(headers.get("Retry-After", "1")))
            continue
        if status != 202:
            tally["export_errors"] += 1
            continue
        location = headers["Content-Location"]
        while True:
            status, body, headers = fetch(location)
            if status not in (202, 429):
                break
            time.sleep(min(float(headers.get("Retry-After", "1")), 0.5))
        ok = status == 200
        if ok:
            for item in json.loads(body)["output"]:
                got, data, _ = fetch(item["url"])
                ok = ok and got == 200 and data.count(b"\n") == item["count"]
        ok = ok and fetch(location, "DELETE")[0] == 202
        tally["exports" if ok else "export_errors"] += 1


def main() -> None:
    """Run the soak and print its report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--port", type=int, default=8787)
    args = parser.parse_args()
    seconds = int(args.minutes * 60)
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        path = build(folder / "p.sqlite").path
        reads = [f"/fhir/{key}" for key in Store(path).resources]
        reads += ["/fhir/metadata", "/fhir/Organization/fda?_format=html", "/fhir/Group?_format=xml"]
        script = folder / "mix.lua"
        script.write_text(
            LUA % (",".join(json.dumps(p) for p in reads), ",".join(json.dumps(s) for s in SEARCHES))
        )
        env = {
            **os.environ,
            "FHIR_PUB_JOBS_DIR": str(folder / "jobs"),
            "FHIR_PUB_EXPORT_POLL_INTERVAL": "0.2",
        }
        command = [sys.executable, "-m", "fhir_pub", "serve", "--port", str(args.port)]
        server = subprocess.Popen(
            [*command, "--workers", str(args.workers), "--publication", str(path)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        base = f"http://127.0.0.1:{args.port}/fhir"
        try:
            for _ in range(100):
                try:
                    if fetch(f"{base}/metadata")[0] == 200:
                        break
                except OSError:
                    time.sleep(0.1)
            samples: list[tuple[float, float, int, int]] = []
            stop = threading.Event()
            tally = {"exports": 0, "export_errors": 0}

            def sampler() -> None:
                started = time.monotonic()
                while not stop.wait(2.0):
                    samples.append((time.monotonic() - started, *sample(server.pid)))

            threads = [
                threading.Thread(target=sampler),
                threading.Thread(target=exports, args=(base, stop, tally)),
            ]
            for thread in threads:
                thread.start()
            result = subprocess.run(
                [
                    *("wrk", "-t2", f"-c{args.connections}", f"-d{seconds}s", "--timeout", "10s"),
                    *("--latency", "-s", str(script), f"http://127.0.0.1:{args.port}"),
                ],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
            stop.set()
            for thread in threads:
                thread.join()
        finally:
            server.terminate()
            server.wait(timeout=30)
    report(result, samples, tally, args)


def report(wrk_out: str, samples: list[tuple[float, float, int, int]], tally: dict[str, int], args) -> None:
    """Print the figures and exit 1 on errors or growth."""
    import re

    requests = int(re.search(r"(\d+) requests in", wrk_out).group(1))  # type: ignore[union-attr]
    non_2xx = int(m.group(1)) if (m := re.search(r"Non-2xx or 3xx responses: (\d+)", wrk_out)) else 0
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", wrk_out)
    socket_errors = sum(int(g) for g in socket.groups()) if socket else 0
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", wrk_out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"^\s+50%\s+(\S+)$", wrk_out, re.MULTILINE).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)$", wrk_out, re.MULTILINE).group(1)  # type: ignore[union-attr]
    warm = [s for s in samples if s[0] >= samples[-1][0] / 5]
    head, tail = warm[: max(1, len(warm) // 10)], warm[-max(1, len(warm) // 10) :]
    rss_start, rss_end = statistics.median(s[1] for s in head), statistics.median(s[1] for s in tail)
    fd_start, fd_end = statistics.median(s[2] for s in head), statistics.median(s[2] for s in tail)
    errors = non_2xx + socket_errors + tally["export_errors"]
    grew = rss_end > rss_start * 1.15 + 16 or fd_end > fd_start + 8
    print(f"# soak: {args.minutes} min, {args.connections} connections, {args.workers} workers\n")
    print("| figure | value |\n|---|---|")
    print(f"| HTTP requests (wrk) | {requests:,} ({rate:,.0f}/s, p50 {p50}, p99 {p99}) |")
    print(f"| exports finished and downloaded | {tally['exports']} |")
    failed = tally["export_errors"]
    print(f"| errors (non-2xx, socket, failed exports) | {non_2xx} + {socket_errors} + {failed} |")
    print(
        f"| resident memory, all processes: first sample / after warm-up / end / max | "
        f"{samples[0][1]:.0f} / {rss_start:.0f} / {rss_end:.0f} / {max(s[1] for s in samples):.0f} MiB |"
    )
    print(f"| open file descriptors: after warm-up / end | {fd_start:.0f} / {fd_end:.0f} |")
    print(f"| processes | {samples[-1][3]} |")
    bad = errors or grew or not tally["exports"]
    print(f"\nverdict: {'FAIL' if bad else 'pass'} (errors {errors}, growth {'yes' if grew else 'no'})")
    raise SystemExit(1 if bad else 0)


if __name__ == "__main__":
    main()
