"""Atomic writes: the old file or the whole new one, never a half-written one; abandoned scratches go."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from fhir_pub.atomic import replacing, scratches, write_bytes
from fhir_pub.build import build


def test_replaces_whole_on_success(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    target.write_bytes(b"old")
    with replacing(target, durable=True) as partial:
        partial.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # not yet: the scratch is beside it
    assert target.read_bytes() == b"new"
    assert list(tmp_path.iterdir()) == [target]


def test_keeps_the_old_file_on_error(tmp_path: Path) -> None:
    target = tmp_path / "f.json"
    write_bytes(target, b"old")

    def interrupted() -> None:
        with replacing(target) as partial:
            partial.write_bytes(b"half")
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        interrupted()
    assert target.read_bytes() == b"old"
    assert list(tmp_path.iterdir()) == [target]


def test_build_removes_scratches_of_dead_processes_only(tmp_path: Path) -> None:
    """A scratch left by a killed build goes; one a running build is writing stays."""
    gone = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, check=True
    )
    out = tmp_path / "p.sqlite"
    dead = tmp_path / f".p.sqlite.{int(gone.stdout)}.1.partial"
    live = tmp_path / f".p.sqlite.{os.getpid()}.1.partial"
    for scratch in (dead, live):
        scratch.write_bytes(b"half a database")
    assert dict(scratches(out)) == {dead: int(gone.stdout), live: os.getpid()}
    build(out)
    assert not dead.exists()
    assert live.exists()
    assert out.is_file()
