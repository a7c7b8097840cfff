"""Reporting results: a line per test as it finishes, a per-group table and a summary; or JSON; or JUnit XML
for CI (wopihost/junit.py). Access tokens never appear: URLs are shown with their access_token value elided and
any other credential (a FileUrl's ticket) redacted, and what a check quotes of an answer comes redacted as the
logs redact it (runner.py).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TextIO

from .. import logs
from ..junit import Case, Suite, junit_xml
from .runner import ERROR, FAIL, PASS, SKIP, TestResult

_TOKEN = re.compile(r"(?i)([?&]access_token=)[^&#]*")


def redact(url: str) -> str:
    """`url` with its access token elided, and any other credential (the ticket in a FileUrl's path that
    GetFromFileUrl goes to) redacted as the logs redact it."""
    return _TOKEN.sub(r"\1...", logs.redact(url))


def result_line(result: TestResult) -> str:
    line = f"{result.status} {result.group}/{result.name}"
    return f"{line}: {result.reason}" if result.status != PASS else line


def details(result: TestResult) -> list[str]:
    """The requests of a test that did not pass, for --verbose."""
    lines = []
    for request in result.requests:
        where = f"{request.method} {redact(request.url)}" if request.url else "(not sent)"
        cleanup = " (cleanup)" if request.cleanup else ""
        lines.append(f"    {request.name}{cleanup}: {request.status} {where}")
        lines.extend(f"      {error}" for error in request.errors if not request.cleanup)
    return lines


@dataclass
class GroupCount:
    name: str
    passed: int = 0
    failed: int = 0
    skipped: int = 0
    errors: int = 0
    skip_reasons: list[str] = field(default_factory=list)


def by_group(results: Iterable[TestResult]) -> list[GroupCount]:
    groups: dict[str, GroupCount] = {}
    for result in results:
        count = groups.setdefault(result.group, GroupCount(result.group))
        if result.status == PASS:
            count.passed += 1
        elif result.status == FAIL:
            count.failed += 1
        elif result.status == ERROR:
            count.errors += 1
        else:
            count.skipped += 1
            reason = result.reason
            if reason not in count.skip_reasons:
                count.skip_reasons.append(reason)
    return list(groups.values())


def table(results: list[TestResult]) -> str:
    groups = by_group(results)
    width = max([len("group"), len("total"), *(len(g.name) for g in groups)])
    lines = [f"{'group':<{width}}  {'passed':>6}  {'failed':>6}  {'skipped':>7}  {'errors':>6}"]
    for g in groups:
        lines.append(f"{g.name:<{width}}  {g.passed:>6}  {g.failed:>6}  {g.skipped:>7}  {g.errors:>6}")
    lines.append(
        f"{'total':<{width}}  {sum(g.passed for g in groups):>6}  {sum(g.failed for g in groups):>6}  "
        f"{sum(g.skipped for g in groups):>7}  {sum(g.errors for g in groups):>6}"
    )
    return "\n".join(lines)


def counts(results: list[TestResult]) -> dict[str, int]:
    """How many tests there are, and how many passed, failed, were skipped or could not run."""
    by_status = Counter(r.status for r in results)
    return {
        "tests": len(results),
        "passed": by_status[PASS],
        "failed": by_status[FAIL],
        "skipped": by_status[SKIP],
        "errors": by_status[ERROR],
    }


def summary(results: list[TestResult]) -> str:
    n = counts(results)
    return (
        f"{n['tests']} tests: {n['passed']} passed, {n['failed']} failed, {n['skipped']} skipped, {n['errors']} errors"
    )


def broken_prereqs(results: list[TestResult]) -> list[str]:
    """A line per prerequisite whose failure kept tests from running (status ERROR): which, how many, why."""
    broken = [r for r in results if r.status == ERROR and r.prereq]
    counts = Counter(r.prereq for r in broken)
    first = {r.prereq: r for r in reversed(broken)}
    return [f"{n} test{'' if n == 1 else 's'} could not run: {first[name].reason}" for name, n in counts.items()]


def write_text(results: list[TestResult], out: TextIO) -> None:
    out.write("\n" + table(results) + "\n\n" + summary(results) + "\n")


def as_json(results: list[TestResult]) -> dict:
    return {
        "summary": counts(results),
        "groups": [
            {
                "name": g.name,
                "passed": g.passed,
                "failed": g.failed,
                "skipped": g.skipped,
                "errors": g.errors,
                "skip_reasons": g.skip_reasons,
            }
            for g in by_group(results)
        ],
        "tests": [
            {
                "group": r.group,
                "name": r.name,
                "status": r.status,
                "reason": r.reason,
                "prerequisite": r.prereq,
                "errors": r.errors,
                "seconds": round(r.elapsed, 3),
                "requests": [
                    {
                        "name": q.name,
                        "method": q.method,
                        "url": redact(q.url),
                        "status": q.status,
                        "errors": q.errors,
                        "cleanup": q.cleanup,
                    }
                    for q in r.requests
                ],
            }
            for r in results
        ],
    }


def write_json(results: list[TestResult], out: TextIO) -> None:
    json.dump(as_json(results), out, indent=2)
    out.write("\n")


def junit(results: list[TestResult]) -> bytes:
    suites = [
        Suite(
            group.name,
            [
                Case(
                    r.name,
                    r.elapsed,
                    failure=r.reason if r.status == FAIL else None,
                    error=r.reason if r.status == ERROR else None,
                    skipped=r.reason if r.status == SKIP else None,
                    details="\n".join([*r.errors, *details(r)]) if r.status in (FAIL, ERROR) else "",
                )
                for r in results
                if r.group == group.name
            ],
        )
        for group in by_group(results)
    ]
    return junit_xml("WOPI validator", suites)
