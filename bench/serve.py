"""Serving throughput: fhir-pub against nginx serving the same bytes, in the same run, with wrk.

Needs nginx and wrk (Debian: ``apt-get install nginx-light wrk``). For each request (a read, a typical
search, metadata) it saves fhir-pub's exact response bytes as a static file, serves them with nginx, and
loads both with wrk; then fhir-pub again with its response cache off (every request through Flask).

    .venv-test/bin/python bench/serve.py [--seconds 10] [--connections 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from soak import tree  # bench/soak.py, beside this script

HERE = Path(__file__).resolve().parent
# What granian adds to every answer itself (and hop-by-hop headers): left out of the headers replayed.
SERVER_HEADERS = {"date", "server", "content-length", "connection", "keep-alive", "transfer-encoding"}

REQUESTS = {
    "read": "/fhir/ClinicalUseDefinition/warning-bleeding",
    "search": "/fhir/ClinicalUseDefinition?subject=Medication/besponsa-vial&type=warning",
    "metadata": "/fhir/metadata",
}
NGINX_CONF = """worker_processes {workers};
error_log {root}/error.log;
pid {root}/nginx.pid;
events {{ worker_connections 1024; }}
http {{ access_log off; default_type application/fhir+json;
  server {{ listen 127.0.0.1:{port}; root {root}/www; }} }}
"""


def wait(url: str, seconds: float = 10) -> None:
    """Return once ``url`` answers 200 (within ``seconds``)."""
    for _ in range(int(seconds * 10)):
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered at {url}")


UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}
# A wrk script that sends the paths of the list it is given in turn, so that many distinct URLs arrive.
ROTATE_LUA = """
paths = {%s}
counter = 0
request = function()
  counter = counter + 1
  return wrk.format("GET", paths[(counter %% #paths) + 1])
end
"""


def milliseconds(text: str) -> float:
    """A wrk latency figure (``812.00us``, ``1.23ms``, ``2.10s``) in milliseconds."""
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()  # type: ignore[union-attr]
    return float(number) * UNITS_MS[unit]


def wrk(
    url: str, seconds: float, connections: int, paths: list[str] | None = None
) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 (ms) of one wrk run: ``url``, or each of ``paths`` below it in turn.

    Any non-2xx answer or socket error fails the run: a fast error page is not a result.
    """
    duration = f"-d{max(1, round(seconds))}s"  # whole seconds only
    # A 30 s timeout: a slow answer is measured (wrk drops those over its default 2 s from the figures).
    command = [
        "wrk",
        f"-t{min(2, connections)}",
        f"-c{connections}",
        duration,
        "--timeout",
        "30s",
        "--latency",
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".lua") as script:
        if paths:
            script.write(ROTATE_LUA % ", ".join(f'"{p}"' for p in paths))
            script.flush()
            command += ["-s", script.name]
        out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    return figures(out, url)


def figures(out: str, url: str) -> tuple[float, float, float]:
    """Requests/s, p50 and p99 (ms) from wrk's output; any error under load fails the run."""
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"errors under load at {url}:\n{out}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    # The distribution's lines only ("  50%  1.23ms"), not the stdev column's "75.50%".
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.MULTILINE).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.MULTILINE).group(1)  # type: ignore[union-attr]
    return rate, milliseconds(p50), milliseconds(p99)


def serve(
    python: str, publication: Path, port: int, workers: int, cache: bool | int, direct: bool = True
) -> subprocess.Popen[bytes]:
    """Start ``fhir-pub serve`` (response cache on, off, or this many MiB; direct reads or not), ready."""
    mib = 64 if cache is True else int(cache)
    env = {
        "FHIR_PUB_RESPONSE_CACHE": str(mib),
        "FHIR_PUB_DIRECT_READS": str(direct).lower(),
        "FHIR_PUB_DIRECT_SEARCHES": str(direct).lower(),
    }
    env["PATH"] = "/usr/bin:/bin"
    command = [python, "-m", "fhir_pub", "serve", "--port", str(port), "--workers", str(workers)]
    process = subprocess.Popen(
        [*command, "--publication", str(publication)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: it can be killed with its workers
    )
    wait(f"http://127.0.0.1:{port}/healthz")
    return process


def nginx(root: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    """Start nginx on the files of ``root``/www (written by the caller) at ``port``, once it answers."""
    root.chmod(0o755)  # nginx's workers (user nobody) read the files below it
    (root / "www").mkdir(exist_ok=True)
    (root / "www" / "ready").write_bytes(b"{}")
    conf = NGINX_CONF.format(workers=workers, root=root, port=port)
    (root / "nginx.conf").write_text(conf, encoding="utf-8")
    process = subprocess.Popen(
        ["nginx", "-c", str(root / "nginx.conf"), "-p", str(root), "-g", "daemon off;"],
        stderr=subprocess.DEVNULL,
    )
    wait(f"http://127.0.0.1:{port}/ready")
    return process


def floor(
    root: Path, port: int, workers: int, paths: Path | None = None, like: str | None = None
) -> subprocess.Popen[bytes]:
    """Start bench/floor.py (the same bytes from memory, no framework) on granian, as fhir-pub runs it.

    ``paths``: a file of the URL paths to hold, into ``root``/www (default: its top-level files).
    ``like``: a URL of fhir-pub whose answer's headers (but those granian adds) every answer repeats.
    """
    command = [sys.executable, "-m", "granian", "--interface", "wsgi", "--workers", str(workers)]
    command += ["--blocking-threads", "4", "--backpressure", "64", "--port", str(port)]  # as in cli.serve
    env = {"FLOOR_ROOT": str(root), "PATH": "/usr/bin:/bin"} | ({"FLOOR_PATHS": str(paths)} if paths else {})
    if like is not None:
        with urllib.request.urlopen(like, timeout=60) as answer:
            kept = [(k, v) for k, v in answer.getheaders() if k.lower() not in SERVER_HEADERS]
        (root / "floor-headers.json").write_text(json.dumps(kept), encoding="utf-8")
        env["FLOOR_HEADERS"] = str(root / "floor-headers.json")
    process = subprocess.Popen(
        [*command, "--working-dir", str(HERE), "floor:app"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    wait(f"http://127.0.0.1:{port}/ready", seconds=120)  # each worker reads every body first
    return process


def worker_memory(root: int) -> list[dict[str, float]]:
    """Each worker's memory (the server's descendants) in MiB, from /proc: ``uss``, ``pss`` and ``rss``.

    ``uss`` is the worker's own memory (Private_Clean + Private_Dirty of smaps_rollup); ``pss`` shares each
    shared page among the processes mapping it; ``rss`` counts every page mapped, so the pages of the
    memory-mapped SQLite file once in every worker that touched them.
    """
    out = []
    for pid in tree(root)[1:]:
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        kib = {}
        for line in rollup.splitlines()[1:]:
            key, _, rest = line.partition(":")
            if rest.strip().endswith("kB"):
                kib[key] = int(rest.split()[0])
        out.append(
            {
                "uss": (kib.get("Private_Clean", 0) + kib.get("Private_Dirty", 0)) / 1024,
                "pss": kib.get("Pss", 0) / 1024,
                "rss": kib.get("Rss", 0) / 1024,
            }
        )
    return sorted(out, key=lambda m: m["uss"])


def require_tools() -> None:
    """Exit with a hint when nginx or wrk is missing."""
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is needed: apt-get install nginx-light wrk")


def main() -> None:
    """Measure and print requests/s, p50 and p99 for fhir-pub (cached and not) and nginx."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    require_tools()
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        publication = root / "p.sqlite"
        subprocess.run(
            [python, "-m", "fhir_pub", "build", "--out", str(publication)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (root / "www").mkdir()
        results = []
        app = serve(python, publication, 18191, args.workers, cache=True)
        try:
            for name, path in REQUESTS.items():
                body = urllib.request.urlopen(f"http://127.0.0.1:18191{path}").read()
                (root / "www" / name).write_bytes(body)
            static = nginx(root, 18190, args.workers)
            try:
                for name, path in REQUESTS.items():
                    ours = wrk(f"http://127.0.0.1:18191{path}", args.seconds, args.connections)
                    theirs = wrk(f"http://127.0.0.1:18190/{name}", args.seconds, args.connections)
                    results.append((name, "fhir-pub (response cache)", ours, theirs[0]))
                    results.append((name, "nginx, same bytes", theirs, theirs[0]))
            finally:
                static.terminate()
                static.wait()
        finally:
            app.terminate()
            app.wait()
        uncached = serve(python, publication, 18192, args.workers, cache=False)
        try:
            for name, path in REQUESTS.items():
                nginx_rate = next(r[3] for r in results if r[0] == name)
                results.append(
                    (
                        name,
                        "fhir-pub, no cache (Flask)",
                        wrk(f"http://127.0.0.1:18192{path}", args.seconds, args.connections),
                        nginx_rate,
                    )
                )
        finally:
            uncached.terminate()
            uncached.wait()
    setup = f"wrk -t2 -c{args.connections} -d{args.seconds}s; {args.workers} workers each"
    print(f"{setup}; ratio = requests/s over nginx's")
    print(f"{'request':<10}{'server':<30}{'requests/s':>12}{'p50':>10}{'p99':>10}{'ratio':>8}")
    for name, server, (rate, p50, p99), nginx_rate in sorted(
        results, key=lambda r: (list(REQUESTS).index(r[0]), r[1])
    ):
        print(f"{name:<10}{server:<30}{rate:>12,.0f}{p50:>8.2f}ms{p99:>8.2f}ms{rate / nginx_rate:>8.2f}")


if __name__ == "__main__":
    main()
