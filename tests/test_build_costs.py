"""bench/build_costs.py: each layer's timer is hooked into the build it times, and times add up."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from build_costs import Timer  # noqa: E402  (bench/ is not a package)


def test_nested_time_is_the_inner_layers() -> None:
    """A layer called inside another counts for itself; the outer keeps only its own time."""
    ticks = iter([0.0, 1.0, 3.0, 4.0, 4.5, 10.0])
    timer = Timer(clock=lambda: next(ticks))
    inner = timer.wrap("inner", lambda: None)
    numbers = timer.wrap("numbers", lambda: iter(range(3)), generates=True)

    def outer_body() -> list[int]:
        inner()  # 1.0 to 3.0
        return numbers()  # 4.0 to 4.5

    assert timer.wrap("outer", outer_body)() == [0, 1, 2]  # 0.0 to 10.0; a generator's items, as a list
    assert timer.own == {"inner": 2.0, "numbers": 0.5, "outer": 7.5}


def test_every_layer_is_timed(tmp_path: Path) -> None:
    """Each wrapped layer ran (a renamed or re-imported function would stay at zero).

    Own times, nested layers subtracted, add up to no more than the build took.
    """
    out = tmp_path / "costs.json"
    script = str(ROOT / "bench" / "build_costs.py")
    done = subprocess.run(
        [sys.executable, script, "--resources", "300", "--dir", str(tmp_path), "--json", str(out)],
        check=True,
        capture_output=True,
        text=True,
    )
    figures = json.loads(out.read_text())
    assert figures["resources"] == 300
    own = figures["own"]
    expected = {
        "start-up",
        "listing the files",
        "read (file, JSON)",
        "read ahead (posix_fadvise)",
        "input checks (shape)",
        "walk (the nodes the layers share)",
        "structure (fhir.resources)",
        "profiles (jsonschema)",
        "invariants (FHIRPath)",
        "graph",
        "search index rows",
        "rows (serialise, digest)",
        "SQLite: insert rows",
        "SQLite: index sorts, totals, NDJSON",
    }
    assert set(own) == expected
    assert all(seconds > 0 for seconds in own.values()), own
    assert sum(own.values()) <= figures["seconds"]
    assert "| **all** |" in done.stdout
    assert list(tmp_path.iterdir()) == [out]  # the corpus and its build are removed
