"""bench/memory_growth.py against a real server: a line for each cycle, with every process's change, and the
mappings of a process that grew."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

TOOL = Path(__file__).parents[2] / "bench" / "memory_growth.py"


def test_memory_is_read_after_each_cycle_by_process_and_mapping():
    run = subprocess.run(
        [sys.executable, str(TOOL), "--cycles", "2", "--seconds", "0.5", "--sweep-interval", "1s", "--step", "-1000"],
        capture_output=True,
        text=True,
        timeout=600,  # a bound for a hung run, not a measure: under load it takes minutes
    )
    assert run.returncode == 0, run.stderr
    rows = re.findall(r"^ +(\d+) +(\d+) +([\d.]+)(?:   (.*))?$", run.stdout, re.M)
    assert [int(cycle) for cycle, *_ in rows] == [0, 1, 2], run.stdout
    assert all(20 < float(pss) < 1000 for _, _, pss, _ in rows), run.stdout
    for _, _, _, changes in rows[1:]:
        names = re.findall(r"(master|worker \d+) [+-][\d.]+", changes)
        assert names[0] == "master" and len(names) == 3, changes
    # every process's mappings are shown when any change is enough (--step below any)
    assert len(re.findall(r"^ +(?:master|worker \d+): [+-][\d.]+ MiB ", run.stdout, re.M)) >= 2 * 3, run.stdout
    assert "[heap]" in run.stdout, run.stdout
