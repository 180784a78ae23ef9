"""Writing so that nothing half-written is ever seen: a scratch beside the target, renamed into place.

A reader (or a crash) sees the old file or folder, or the whole new one; on any error the scratch is
removed. Scratch names carry the writing process's id, so a later writer can tell an abandoned one.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from fhir_pub.errors import Invalid


@contextmanager
def replacing(target: Path, *, durable: bool = False) -> Iterator[Path]:
    """A scratch path beside ``target`` that replaces ``target`` atomically when the block succeeds.

    ``durable``: the scratch is flushed to disk before the rename (a large artifact that must survive a
    crash whole). The scratch is ``.NAME.PID.THREAD.partial``: unique per writer, see :func:`writer_of`.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}.partial")
    partial.unlink(missing_ok=True)
    try:
        yield partial
        if durable:
            fsync(partial)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)


def scratches(target: Path) -> Iterator[tuple[Path, int | None]]:
    """The scratches :func:`replacing` left beside ``target``, each with its writing process id."""
    for scratch in target.parent.glob(f".{target.name}.*.partial"):
        pid = scratch.name[len(target.name) + 2 : -len(".partial")].split(".", 1)[0]
        yield scratch, int(pid) if pid.isdigit() else None


def write_bytes(target: Path, data: bytes) -> None:
    """Replace ``target`` with ``data`` atomically."""
    with replacing(target) as partial:
        partial.write_bytes(data)


def fsync(path: Path) -> None:
    """Flush a file's (or a folder's) data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


MANY_FILES = 256  # past this many entries a folder is flushed with one sync(2), not fsync(2) per file


@contextmanager
def new_folder(folder: Path) -> Iterator[Path]:
    """A scratch folder next to ``folder`` that becomes ``folder``, whole, when the block succeeds.

    Everything written in it (files and subfolders) is flushed to disk before the rename, and the rename
    itself after, so neither a reader nor a crash sees a half-written folder; on any error it is deleted.
    ``folder`` may exist only as an empty folder (rename(2) replaces an empty directory).
    """
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise Invalid(f"{folder} exists and is not empty; an export writes a new folder")
    scratch = folder.with_name(f".{folder.name}.partial")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    try:
        yield scratch
        written = sorted(scratch.rglob("*"), key=lambda p: len(p.parts), reverse=True)
        if len(written) > MANY_FILES:
            os.sync()  # one flush of everything beats an fsync per file (a static export has millions)
        else:
            for path in written:  # deepest first: each file, then the folder that lists it
                fsync(path)
        fsync(scratch)
        try:
            scratch.rename(folder)
        except OSError as exc:  # e.g. something was written into the empty folder meanwhile
            raise Invalid(f"{folder}: cannot move the export into place ({exc.strerror})") from exc
        fsync(folder.parent)  # the rename itself survives a crash: the folder is whole or absent
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
