"""Serving throughput: fhir-pub against nginx serving the same bytes, in the same run, with wrk.

Needs nginx and wrk (Debian: ``apt-get install nginx-light wrk``). For each request (a read, a typical
search, metadata) it saves fhir-pub's exact response bytes as a static file, serves them with nginx, and
loads both with wrk; then fhir-pub again with its response cache off (every request through Flask).

    .venv/bin/python bench/serve.py [--seconds 10] [--connections 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

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


def wait(url: str) -> None:
    """Return once ``url`` answers 200."""
    for _ in range(100):
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing answered at {url}")


def wrk(url: str, seconds: int, connections: int) -> tuple[float, str, str]:
    """Requests/s, p50 and p99 of one wrk run."""
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    p99 = re.search(r"99%\s+(\S+)", out).group(1)  # type: ignore[union-attr]
    return rate, p50, p99


def serve(python: str, publication: Path, port: int, workers: int, cache: bool) -> subprocess.Popen[bytes]:
    """Start ``fhir-pub serve`` (response cache on or off) and wait until it answers."""
    env = {"FHIR_PUB_RESPONSE_CACHE": "64" if cache else "0", "PATH": "/usr/bin:/bin"}
    command = [python, "-m", "fhir_pub", "serve", "--port", str(port), "--workers", str(workers)]
    process = subprocess.Popen(
        [*command, "--publication", str(publication)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait(f"http://127.0.0.1:{port}/healthz")
    return process


def main() -> None:
    """Measure and print requests/s, p50 and p99 for fhir-pub (cached and not) and nginx."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            raise SystemExit(f"{tool} is needed: apt-get install nginx-light wrk")
    python = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        root.chmod(0o755)  # nginx's workers (user nobody) read the files below it
        publication = root / "p.sqlite"
        subprocess.run(
            [python, "-m", "fhir_pub", "build", "--out", str(publication)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        (root / "www").mkdir()
        (root / "nginx.conf").write_text(
            NGINX_CONF.format(workers=args.workers, root=root, port=18190), encoding="utf-8"
        )
        results = []
        app = serve(python, publication, 18191, args.workers, cache=True)
        try:
            for name, path in REQUESTS.items():
                body = urllib.request.urlopen(f"http://127.0.0.1:18191{path}").read()
                (root / "www" / name).write_bytes(body)
            nginx = subprocess.Popen(
                ["nginx", "-c", str(root / "nginx.conf"), "-p", str(root), "-g", "daemon off;"]
            )
            try:
                wait("http://127.0.0.1:18190/read")
                for name, path in REQUESTS.items():
                    ours = wrk(f"http://127.0.0.1:18191{path}", args.seconds, args.connections)
                    theirs = wrk(f"http://127.0.0.1:18190/{name}", args.seconds, args.connections)
                    results.append((name, "fhir-pub (response cache)", ours, theirs[0]))
                    results.append((name, "nginx, same bytes", theirs, theirs[0]))
            finally:
                nginx.terminate()
                nginx.wait()
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
        print(f"{name:<10}{server:<30}{rate:>12,.0f}{p50:>10}{p99:>10}{rate / nginx_rate:>8.2f}")


if __name__ == "__main__":
    main()
