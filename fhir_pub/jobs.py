"""Bulk export jobs, kept on disk so they survive restarts and are shared by every worker process.

Each job is a folder: ``job.json`` (its state, replaced atomically, written only by the job's own
thread or, once that is gone, by the sweep), ``files/`` (the export, which appears whole), and two
marker files written without touching the state: ``cancelled``, ``last-poll`` and ``heartbeat``.
A job whose worker process is gone while it ran is reported failed, never left running. https://hl7.org/fhir/uv/bulkdata/STU2/export.html#bulk-data-kick-off-request
"""

from __future__ import annotations

import fcntl
import os
import secrets
import shutil
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from fhir_pub.atomic import write_bytes
from fhir_pub.errors import FhirPubError
from fhir_pub.export import ExportRequest, ExportResult, export, manifest
from fhir_pub.processes import alive
from fhir_pub.search.versions import R5_TYPES
from fhir_pub.store import Store

ACTIVE = ("accepted", "running")
HEARTBEAT = 2.0  # seconds between a running job's heartbeats
STALE = 30.0  # a job silent this long has no thread left running it


class JobsUnavailable(FhirPubError):
    """The jobs folder cannot be written, so no export can start (503: the setup, not the request)."""

    code = "exception"
    status = 503


class Cancelled(Exception):
    """Raised inside a running export once its job is cancelled, to stop it early."""


@dataclass(frozen=True)
class JobStore:
    """The folder of all jobs, and the rules they follow."""

    root: Path
    expiry_seconds: int = 3600
    max_active: int = 2
    clock: Callable[[], float] = time.time  # seconds since the epoch: expiry, heartbeats, polls

    def _path(self, job_id: str) -> Path | None:
        if not job_id.isalnum() or len(job_id) > 64:
            return None
        return self.root / job_id

    def read(self, job_id: str) -> dict[str, Any] | None:
        """A job's state, or None if there is no such job."""
        path = self._path(job_id)
        if path is None:
            return None
        try:
            state: dict[str, Any] = orjson.loads((path / "job.json").read_bytes())
        except (OSError, orjson.JSONDecodeError):
            return None
        if (path / "cancelled").exists():
            state["status"] = "cancelled"
        try:
            state["lastPoll"] = float((path / "last-poll").read_text())
        except (OSError, ValueError):
            state["lastPoll"] = 0.0
        return state

    def polled(self, job_id: str, when: float) -> bool:
        """Record a status poll (for the polling rate limit); False if the job is gone meanwhile."""
        try:
            (self.root / job_id / "last-poll").write_text(repr(when))
        except FileNotFoundError:
            return False
        return True

    def write(self, state: dict[str, Any]) -> None:
        """Replace a job's state atomically."""
        write_bytes(self.root / state["id"] / "job.json", orjson.dumps(state))

    def all(self) -> list[dict[str, Any]]:
        """Every job's state."""
        if not self.root.is_dir():
            return []
        states = (self.read(p.name) for p in self.root.iterdir() if p.is_dir())
        return [s for s in states if s is not None]

    def active(self) -> int:
        """How many jobs are accepted or running."""
        return sum(s["status"] in ACTIVE for s in self.all())

    def admit(
        self, request: ExportRequest, kickoff_url: str, base: str, warnings: list[str]
    ) -> dict[str, Any] | None:
        """A new job if fewer than ``max_active`` run, else None; atomic across worker processes."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            with (self.root / ".lock").open("a") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
                if self.active() >= self.max_active:
                    return None
                return self.create(request, kickoff_url, base, warnings)
        except OSError as exc:  # a read-only filesystem, say: the server's setup, not the client's request
            raise JobsUnavailable(
                f"bulk export is unavailable: the server's jobs folder is not writable ({exc.strerror}); "
                "its operator sets FHIR_PUB_JOBS_DIR to a writable folder"
            ) from exc

    def create(
        self, request: ExportRequest, kickoff_url: str, base: str, warnings: list[str]
    ) -> dict[str, Any]:
        """A new job in state ``accepted``."""
        job_id = secrets.token_hex(16)
        (self.root / job_id).mkdir(parents=True)
        now = self.clock()
        state = {
            "id": job_id,
            "status": "accepted",
            "request": kickoff_url,
            "base": base,
            "transactionTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "created": now,
            "expires": now + self.expiry_seconds,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "progress": "accepted",
            "warnings": warnings,
            "params": {
                "types": list(request.types),
                "since": request.since.isoformat() if request.since else None,
                "typeFilters": list(request.type_filters),
                "elements": list(request.elements),
                "fhirVersion": request.fhir_version,  # the files' FHIR version (4.3, 4.0: converted forms)
            },
        }
        self.beat(job_id)  # before the state: a sweep never sees this job without a heartbeat
        self.write(state)
        return state

    def beat(self, job_id: str) -> None:
        """Record that the job's thread is alive."""
        (self.root / job_id / "heartbeat").write_text(repr(self.clock()))

    def heartbeat(self, job_id: str) -> float:
        """When the job's thread last said it was alive (0 if never)."""
        try:
            return float((self.root / job_id / "heartbeat").read_text())
        except (OSError, ValueError):
            return 0.0

    def run(self, state: dict[str, Any], store: Store, request: ExportRequest) -> None:
        """Run the export (call in a background thread); the job ends complete or failed.

        A second thread beats every ``HEARTBEAT`` seconds while it runs, so a job is known to be orphaned
        even if a new process took the old one's pid.
        """
        stop = threading.Event()

        def beating() -> None:
            while not stop.wait(HEARTBEAT):
                self.beat(state["id"])

        threading.Thread(target=beating, daemon=True).start()
        try:
            self._run(state, store, request)
        finally:
            stop.set()

    def _run(self, state: dict[str, Any], store: Store, request: ExportRequest) -> None:
        job_id = state["id"]
        state = {**state, "status": "running", "progress": "exporting"}
        self.write(state)
        renamed = R5_TYPES.get(request.fhir_version, {})
        total = max(1, store.count(tuple(renamed.get(t, t) for t in request.types) or None))
        done = [0]
        last = [time.monotonic()]

        def progress(count: int) -> None:
            done[0] += count
            if time.monotonic() - last[0] > 0.5:
                last[0] = time.monotonic()
                latest = self.read(job_id)
                if latest is None or latest["status"] == "cancelled":
                    raise Cancelled(job_id)
                if latest["status"] == "running":
                    self.write({**latest, "progress": f"{min(99, done[0] * 100 // total)}%"})

        base = state["base"]
        files_url: Callable[[str], str] = lambda name: f"{base}/$export-file/{job_id}/{name}"  # noqa: E731
        error_url = files_url("errors.ndjson") if state["warnings"] else None
        outcome = {
            "resourceType": "OperationOutcome",
            "issue": [
                {"severity": "warning", "code": "not-supported", "details": {"text": w}}
                for w in state["warnings"]
            ],
        }
        extra = {"errors.ndjson": orjson.dumps(outcome) + b"\n"} if state["warnings"] else {}

        def manifest_for(result: ExportResult) -> dict[str, Any]:
            since = request.since is not None
            return manifest(result, state["transactionTime"], state["request"], files_url, error_url, since)

        try:
            export(store, request, self.root / job_id / "files", progress, manifest_for, extra)
        except Exception as exc:  # the job fails; the server goes on
            current = self.read(job_id) or state
            if current["status"] != "cancelled":
                self.write(
                    {
                        **current,
                        "status": "failed",
                        "progress": "failed",
                        "error": f"{type(exc).__name__}: {exc}",
                    }
                )
            return
        final = self.read(job_id)
        if final is None or final["status"] == "cancelled":
            shutil.rmtree(self.root / job_id / "files", ignore_errors=True)
            return
        body = orjson.loads((self.root / job_id / "files" / "manifest.json").read_bytes())
        self.write({**final, "status": "complete", "progress": "100%", "manifest": body})

    def cancel(self, job_id: str) -> bool:
        """Cancel a job and delete its files; False if there was none."""
        state = self.read(job_id)
        if state is None or state["status"] == "cancelled":
            return False
        (self.root / job_id / "cancelled").touch()
        shutil.rmtree(self.root / job_id / "files", ignore_errors=True)
        return True

    def sweep(self) -> None:
        """Fail orphaned running jobs; drop expired files (the state stays one more expiry period: 410)."""
        now = self.clock()
        for state in self.all():
            stale = now - self.heartbeat(state["id"]) > STALE
            here = state.get("host") == socket.gethostname()  # pids mean nothing across hosts
            dead = here and not alive(int(state.get("pid", 0)))
            if state["status"] in ACTIVE and (stale or dead):
                message = "the server stopped while this export ran; start a new export"
                self.write({**state, "status": "failed", "progress": "failed", "error": message})
            elif state["expires"] + self.expiry_seconds < now and state["status"] not in ACTIVE:
                shutil.rmtree(self.root / state["id"], ignore_errors=True)  # forgotten: 404 from now on
            elif state["expires"] < now and state["status"] not in (*ACTIVE, "expired"):
                shutil.rmtree(self.root / state["id"] / "files", ignore_errors=True)
                self.write({**state, "status": "expired"})
