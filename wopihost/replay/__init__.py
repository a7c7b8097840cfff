"""`wopihost replay`: send a recorded client session (docs/testing.md) to any host, in order, and compare each
answer with the recorded one.

archive.py reads a recording; targets.py and bindings.py say where its requests go and fill them in with what
the replay learned from the host's own answers; outgoing.py builds each request; compare.py learns from an
answer and judges it; player.py sends and times the requests, one thread per client; report.py prints and
writes the results; command.py is the command.
"""

try:
    import requests  # noqa: F401  (the player's HTTP client)
except ModuleNotFoundError as missing:
    if missing.name != "requests":
        raise
    # installed without the extra: one line for `wopihost replay`, not a traceback
    raise SystemExit(
        "wopihost replay needs requests, which is not installed: pip install 'wopihost[validator]'"
    ) from None
