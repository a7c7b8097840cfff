"""What a replay prints and writes: a line per request (with the differences under a divergent one), a summary
line, latency percentiles per operation, or all of it as one JSON value; and JUnit XML (wopihost/junit.py) for
CI.

Requests are shown by their recorded URL, whose secrets the recording already replaced by placeholders;
whatever the host answered was redacted by the player (bindings.redact) before it reached a result.
"""

from __future__ import annotations

import math
from collections import defaultdict
from urllib.parse import urlsplit

from ..junit import Case, Suite, junit_xml
from .archive import Recording
from .player import DIVERGED, ERROR, MATCHED, Result, Run

LABELS = {MATCHED: "ok", DIVERGED: "DIVERGED", ERROR: "ERROR"}
SHOWN = 12  # differences printed under a request (JUnit gets them all): an error answer differs in every field
PERCENTILES = (50, 90, 99)


def target(result: Result) -> str:
    parts = urlsplit(result.exchange.url)
    return parts.path + (f"?{parts.query}" if parts.query else "")


def title(result: Result, clients: int = 1) -> str:
    exchange = result.exchange
    who = f"client {result.client} " if clients > 1 else ""
    return f"{who}#{exchange.number} {exchange.operation} {exchange.method} {target(result)}"


def lines(result: Result, clients: int = 1, shown: int | None = SHOWN) -> list[str]:
    """The line of a request, then one per difference (the first `shown` of them) or note under it."""
    head = f"{LABELS[result.outcome]:<8} {title(result, clients)}"
    if result.outcome == ERROR:
        return [f"{head}: {result.error}"]
    recorded = result.exchange.status
    status = f"{result.status}" if result.status == recorded else f"{result.status}, recorded {recorded}"
    out = [f"{head}: {status} ({result.seconds * 1000:.0f} ms)"]
    differences = result.differences if shown is None else result.differences[:shown]
    out.extend(f"    {d.where}: recorded {d.recorded}, actual {d.actual}" for d in differences)
    if len(differences) < len(result.differences):
        out.append(f"    ... and {len(result.differences) - len(differences)} more differences")
    out.extend(f"    note: {note}" for note in result.notes)
    return out


def summary(run: Run) -> str:
    count = counts(run)
    clients = f" from {run.clients} clients" if run.clients > 1 else ""
    errors = "error" if count[ERROR] == 1 else "errors"
    requests = "request" if len(run.results) == 1 else "requests"
    return (
        f"{len(run.results)} {requests}{clients}: {count[MATCHED]} matched, {count[DIVERGED]} diverged, "
        f"{count[ERROR]} {errors}"
    )


def counts(run: Run) -> dict[str, int]:
    return {outcome: sum(r.outcome == outcome for r in run.results) for outcome in (MATCHED, DIVERGED, ERROR)}


def percentile(sorted_values: list[float], p: float) -> float:
    """The nearest-rank percentile: the smallest value with at least p% of the values at or below it."""
    return sorted_values[max(0, math.ceil(p / 100 * len(sorted_values)) - 1)]


def latencies(run: Run) -> dict[str, list[float]]:
    """Milliseconds per operation, sorted, and over all requests that got an answer ("all", last)."""
    by_operation: dict[str, list[float]] = defaultdict(list)
    for result in run.results:
        if result.status is not None:
            by_operation[result.exchange.operation].append(result.seconds * 1000)
    if not by_operation:
        return {}
    every = sorted(ms for each in by_operation.values() for ms in each)
    return {**{name: sorted(values) for name, values in sorted(by_operation.items())}, "all": every}


def latency(run: Run) -> list[str]:
    """Latency percentiles in milliseconds, per operation and over all requests that got an answer."""
    rows = latencies(run)
    if not rows:
        return []
    width = max(len("operation"), *(len(name) for name in rows))
    header = f"{'operation':<{width}}  {'count':>6}" + "".join(f"  {f'p{p} ms':>8}" for p in PERCENTILES)
    out = [header + f"  {'max ms':>8}"]
    for name, values in rows.items():
        cells = "".join(f"  {percentile(values, p):>8.1f}" for p in PERCENTILES)
        out.append(f"{name:<{width}}  {len(values):>6}{cells}  {values[-1]:>8.1f}")
    answered = len(rows["all"])
    rate = answered / run.seconds if run.seconds > 0 else 0.0
    out.append(f"{answered} answers in {run.seconds:.2f} s: {rate:.1f} requests/s")
    return out


def as_json(run: Run) -> dict:
    """The whole report as one JSON value (`--json`): the counts, each request, the latency percentiles."""
    count = counts(run)
    return {
        "requests": len(run.results),
        "matched": count[MATCHED],
        "diverged": count[DIVERGED],
        "errors": count[ERROR],
        "clients": run.clients,
        "seconds": round(run.seconds, 3),
        "results": [
            {
                "client": r.client,
                "number": r.exchange.number,
                "operation": r.exchange.operation,
                "method": r.exchange.method,
                "url": target(r),
                "recorded_status": r.exchange.status,
                "status": r.status,
                "outcome": r.outcome,
                "seconds": round(r.seconds, 4),
                "differences": [{"where": d.where, "recorded": d.recorded, "actual": d.actual} for d in r.differences],
                "notes": r.notes,
                "error": r.error,
            }
            for r in run.results
        ],
        "latency_ms": {
            name: {
                "count": len(values),
                **{f"p{p}": round(percentile(values, p), 2) for p in PERCENTILES},
                "max": round(values[-1], 2),
            }
            for name, values in latencies(run).items()
        },
    }


def junit(run: Run, recording: Recording) -> bytes:
    """A test suite per client, a test case per request: failed when it diverged, in error when it could not be
    sent or got no answer."""
    suites: dict[int, Suite] = {}
    name = recording.name.rsplit("/", 1)[-1]
    for result in run.results:
        suite = suites.setdefault(
            result.client, Suite(name if run.clients == 1 else f"{name} (client {result.client})")
        )
        case = Case(title(result), result.seconds)
        if result.outcome == DIVERGED:
            first = result.differences[0]
            case.failure = f"{first.where}: recorded {first.recorded}, actual {first.actual}"
            case.details = "\n".join(lines(result, shown=None)[1:])
        elif result.outcome == ERROR:
            case.error = result.error or "error"
        else:
            case.output = "\n".join(f"note: {note}" for note in result.notes)
        suite.cases.append(case)
    return junit_xml("wopihost replay", suites.values())
