"""bench/copied_pages.py against a real server: its master writes the object map, and the workers' copies are
found and attributed (the tool reads other processes' physical frames, which only root may)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(os.geteuid() != 0, reason="reading /proc/<pid>/pagemap's frames takes root"),
]

TOOL = Path(__file__).parents[2] / "bench" / "copied_pages.py"


def test_copied_pages_are_found_and_attributed_to_the_masters_objects():
    run = subprocess.run(
        [sys.executable, str(TOOL), "--ops", "checkfileinfo,lock", "--requests", "16", "--top", "5"],
        capture_output=True,
        text=True,
        timeout=600,  # a bound for a hung run, not a measure: under load it takes minutes
    )
    assert run.returncode == 0, run.stderr
    out = run.stdout
    for step in ("after starting", "after checkfileinfo", "after lock"):
        copies = re.search(rf"^{step} +([\d.]+) MiB +([\d.]+) MiB$", out, re.M)
        assert copies, out
        # a worker that has served writes to (at least) the reference counts of the objects it ran
        assert step == "after starting" or min(float(copies[1]), float(copies[2])) > 0.5, out
    summary = re.search(r"Pages both workers copied: (\d+) .*; (\d+) of them hold objects of the master's map", out)
    assert summary and 0 < int(summary[2]) <= int(summary[1]), out
    rows = re.findall(r"^(\S.*?) +(\d+) +(\d+) +(\d+)%$", out, re.M)
    assert len(rows) == 5, out
    assert "str" in [kind for kind, *_ in rows], out  # strings are on most pages of any Python heap
    assert all(0 < int(copied) <= int(holding) for _, copied, holding, _ in rows), out
