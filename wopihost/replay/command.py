"""The `wopihost replay` command: read the recording, check the command line against it, replay, report.

Exit status: 0 when every answer matched the recording, 1 when one diverged or a request could not be
replayed, 2 when the file is not a recording or the options do not fit it (one line on stderr), 130 when Ctrl-C
stopped it.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..validator.httpclient import INTERRUPTED
from ..validator.signing import ProofSigner
from . import report
from .archive import RecordingError, read
from .player import MATCHED, Options, Result, replay
from .targets import Targets, UsageProblem, bindings_for


def _interruptible(command: Callable[..., int]) -> Callable[..., int]:
    """Ctrl-C at any point of `command`, reading the recording too: a line and the shell's status for it."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> int:
        try:
            return command(*args, **kwargs)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            return INTERRUPTED

    return run


@_interruptible
def run(
    har: Path,
    targets: Targets,
    *,
    proof_keys: Path | None = None,
    speed: str | None = None,
    clients: int = 1,
    timeout: float = 60.0,
    junit: Path | None = None,
    as_json: bool = False,
) -> int:
    try:
        recording = read(har)
        bindings_for(recording, targets)  # refuse a command line that does not fit before anything is sent
    except (RecordingError, UsageProblem) as problem:
        return _bad(str(problem))
    try:
        signer = None if proof_keys is None else ProofSigner.load_or_create(proof_keys)
    except (OSError, ValueError) as problem:  # proof keys that cannot be made or read
        return _bad(f"--proof-keys {proof_keys}: {getattr(problem, 'strerror', None) or problem}")
    if any(exchange.header("X-WOPI-Proof") is not None for exchange in recording.exchanges):
        if signer is None:
            click.echo(
                "note: the recorded requests carry proofs (X-WOPI-Proof); without --proof-keys they are sent "
                "without proof headers",
                err=True,
            )
        else:
            click.echo(f"signing proofs with the keys {signer.discovery_path} publishes", err=True)

    def show(result: Result) -> None:
        if as_json:
            return
        if clients == 1 or result.outcome != MATCHED:  # many clients: only what went wrong
            for line in report.lines(result, clients):
                click.echo(line)

    done = replay(recording, lambda: bindings_for(recording, targets), Options(speed, clients, timeout, signer), show)
    if as_json:
        click.echo(json.dumps(report.as_json(done), indent=2))
    else:
        if speed is not None or clients > 1:
            for line in report.latency(done):
                click.echo(line)
        click.echo(report.summary(done))
    if junit is not None:
        try:
            junit.write_bytes(report.junit(done, recording))
        except OSError as error:
            return _bad(f"--junit {junit}: {error.strerror or error}")
    return 0 if all(result.outcome == MATCHED for result in done.results) else 1


def _bad(message: str) -> int:
    click.echo(f"Error: {message}", err=True)
    return 2
