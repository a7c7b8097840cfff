"""`python -m wopihost.validator`: run Microsoft's WOPI validator test definitions against a WOPI host.

    python -m wopihost.validator --wopisrc URL --token T [--token-ttl MS] --testcases PATH/TestCases.xml
        [--group G] [--name N] [--category All|OfficeOnline|OfficeNativeClient] [--proof-keys DIR]
        [--include-delays] [--junit FILE] [--json] [--verbose] [--timeout S]

Prints a line per test (`PASS|FAIL|SKIP|ERROR group/name: first reason`), a table per group and a summary;
exits 1 when a test failed or could not run (ERROR: a failed prerequisite that says the host cannot be used,
not what it offers; runner.py), 2 when the definitions or arguments cannot be used, 130 when Ctrl-C stopped it.
The host must trust the proof keys in --proof-keys (created there on first use): point its discovery at
DIR/discovery.xml.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO
from urllib.parse import urlsplit

from ..text import digits
from . import definitions, dotnet, report
from .definitions import DefinitionError
from .httpclient import INTERRUPTED
from .requests import Target
from .resources import Layout, ResourceError, Resources, Schemas
from .runner import ERROR, FAIL, Runner, TestResult
from .signing import ProofSigner, default_directory
from .transport import Transport

CATEGORY_CHOICES = ("All", "OfficeOnline", "OfficeNativeClient")
MAX_TIMEOUT = 3600  # seconds: a request that waits an hour has failed; a larger wait overflows the socket's timeval


def parser(prog: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog or "python -m wopihost.validator",
        description="Run Microsoft's WOPI validator test definitions against a host.",
    )
    p.add_argument("--wopisrc", required=True, type=_wopisrc, help="WOPISrc of a .wopitest file on the host")
    p.add_argument("--token", required=True, help="an access token for that file")
    p.add_argument(
        "--token-ttl", type=_milliseconds, default=0, metavar="MS", help="the token's access_token_ttl (0: not known)"
    )
    p.add_argument(
        "--testcases",
        required=True,
        type=Path,
        metavar="PATH",
        help="TestCases.xml of a wopi-validator-core checkout (its schemas and resources are "
        "found beside it, in src/WopiValidator.Core)",
    )
    p.add_argument("--group", help="run only this test group")
    p.add_argument("--name", help="run only this test case")
    p.add_argument(
        "--category",
        default="All",
        type=_category,
        metavar="|".join(CATEGORY_CHOICES),
        help="All runs every test; the others the WopiCore tests and their own (default All)",
    )
    p.add_argument(
        "--proof-keys",
        type=Path,
        metavar="DIR",
        help=f"directory of the proof keys and discovery.xml (default {default_directory()})",
    )
    p.add_argument("--include-delays", action="store_true", help="also run the groups that wait minutes")
    p.add_argument("--junit", type=Path, metavar="FILE", help="also write JUnit XML to FILE")
    p.add_argument("--json", action="store_true", help="print the results as JSON instead of text")
    p.add_argument("--verbose", "-v", action="store_true", help="show the requests of tests that did not pass")
    p.add_argument(
        "--timeout", type=_seconds, default=100.0, metavar="S", help="seconds to wait for a response (default 100)"
    )
    return p


def _category(text: str) -> str:
    for choice in CATEGORY_CHOICES:
        if text.lower() == choice.lower():
            return choice
    raise argparse.ArgumentTypeError(f"must be one of {', '.join(CATEGORY_CHOICES)}")


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and 0 < seconds <= MAX_TIMEOUT):
        raise argparse.ArgumentTypeError(f"must be more than 0 and at most {MAX_TIMEOUT} seconds, not {text!r}")
    return seconds


def _wopisrc(text: str) -> str:
    """An http(s) URL, as .NET's Uri would take it: a port that is not one is refused here, where the URL
    sent without it would take every test, writes too, to whatever answers on port 80 or 443."""
    try:
        dotnet.absolute_uri(text)
        if not dotnet.is_absolute_uri(text) or urlsplit(text).scheme.lower() not in ("http", "https"):
            raise ValueError("not an absolute http(s) URL")
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"must be the WOPISrc of a file, an http(s) URL ({error})") from None
    return text


def _milliseconds(text: str) -> int:
    """access_token_ttl: a time in milliseconds since 1970, or 0 where it is not known; never negative."""
    if not digits(text):
        raise argparse.ArgumentTypeError(f"must be milliseconds since 1970, or 0, not {text!r}")
    return int(text)


def main(
    argv: Sequence[str] | None = None, out: TextIO | None = None, err: TextIO | None = None, prog: str | None = None
) -> int:
    """The command, for `python -m` or another command to call (`prog` names it in usage messages); returns
    the exit status rather than exiting, --help and argument errors included."""
    out = out or sys.stdout
    err = err or sys.stderr
    try:
        args = parser(prog).parse_args(argv)
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 2
    try:
        return _run(args, out, err)
    except KeyboardInterrupt:  # Ctrl-C: a line and the shell's status for it, as command line tools do
        print("interrupted", file=err)
        return INTERRUPTED


def _run(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    try:
        layout = Layout.find(args.testcases)
        loaded = definitions.load(layout.testcases)
        signer = ProofSigner.load_or_create(args.proof_keys)
        runner = Runner(
            loaded,
            Resources(layout, loaded.resources),
            Schemas(layout.schemas),
            Target(args.wopisrc, args.token, args.token_ttl),
            signer,
            Transport(args.timeout),
            category=args.category,
            include_delays=args.include_delays,
        )
        selected = runner.select(args.group, args.name)
    except (DefinitionError, ResourceError, OSError, ValueError) as error:
        print(f"error: {error}", file=err)
        return 2
    print(f"signing with the proof keys in {signer.directory}; the host must trust {signer.discovery_path}", file=err)

    results: list[TestResult] = []
    try:
        for selection in selected:
            for test in selection.tests:
                result = runner.execute(selection.group, test, selection.prereqs)
                results.append(result)
                if not args.json:
                    print(report.result_line(result), file=out, flush=True)
                    if args.verbose and result.status != "PASS":
                        print("\n".join(report.details(result)), file=out, flush=True)
    finally:
        runner.transport.close()
    if args.json:
        report.write_json(results, out)
    else:
        report.write_text(results, out)
    if args.junit:
        try:
            args.junit.write_bytes(report.junit(results))
        except OSError as error:
            print(f"error: --junit {args.junit}: {error.strerror or error}", file=err)
            return 2
    for line in report.broken_prereqs(results):
        print(f"error: {line}", file=err)
    return 1 if any(r.status in (FAIL, ERROR) for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
